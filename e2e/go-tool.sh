# Shared by the scripts that build one Go tool from a wrapper module (no release
# download): e2e/jaeger/build.sh, e2e/helm/build.sh, e2e/peers/centrifugo/build.sh.
#
# The calling script sets, then sources this file with its own arguments:
#   here    its wrapper module directory (go.mod with a `tool` line, go.sum)
#   name    the binary's name: $HERALD_CACHE/bin/$name, and its line in the stamp
#   module  the module the wrapper pins (its version names the build)
#   recipe  a number to bump when the build command changes the binary
# Sourcing parses `--force`, checks the tools, and exits 0 when $HERALD_CACHE/bin/VERSIONS
# already has "$name <version> inputs=<hash of go.mod, go.sum, recipe>" and the binary is
# there (a warm run takes a second). Otherwise the script goes on to call
#   go_tool_build PACKAGE LDFLAGS [CHECK_ARG...]
# which builds PACKAGE statically under `nice -n 19`, checks that `$name CHECK_ARG...` runs,
# installs it and records the stamp line. HERALD_CACHE defaults to $HOME/.cache/herald; Go's
# module and build caches live under $HERALD_CACHE/go. One build per tool at a time (its own
# flock), so different tools build side by side.
# shellcheck shell=bash

cache="${HERALD_CACHE:-$HOME/.cache/herald}"
bin="$cache/bin"
stamp="$bin/VERSIONS"
force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) printf 'usage: %s [--force]\n' "$0" >&2; exit 2 ;;
esac

die() { printf '%s: error: %s\n' "$0" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$0" "$*"; }

command -v go >/dev/null || die "Go is required (go 1.26 or newer on PATH) to build $name"
command -v sha256sum >/dev/null || die "sha256sum (coreutils) is required"

# Version of a module as required in the wrapper go.mod ("require X vN" or inside a block).
# awk alone (no pipe): an early `exit` must not SIGPIPE a writer under pipefail.
required() { awk -v m="$1" '{ sub(/^require /, "") } $1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"; }

version="$(required "$module")"
[ -n "$version" ] || die "no $module requirement in $here/go.mod"
inputs="$(cd "$here" && cat go.mod go.sum; echo "recipe=$recipe")"
line="$name $version inputs=$(printf '%s' "$inputs" | sha256sum | cut -c1-16)"

mkdir -p "$bin" "$cache/go"
if command -v flock >/dev/null; then
  exec 9>"$bin/.lock-$name"
  flock 9
fi

if [ "$force" = 0 ] && [ -x "$bin/$name" ] && [ -f "$stamp" ] && grep -qxF "$line" "$stamp"; then
  log "$name $version is up to date in $bin"
  exit 0
fi

export GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
# Static binary, committed go.sum only, no VCS stamping of the wrapper module.
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

# go_tool_build PACKAGE LDFLAGS [CHECK_ARG...]: see the header.
go_tool_build() {
  local package="$1" ldflags="$2"; shift 2
  log "building $name $version (cold: minutes to tens of minutes on 2 cores)"
  local start=$SECONDS tmp
  tmp="$(mktemp -d "$bin/.build.XXXXXX")"
  # shellcheck disable=SC2064 # expand $tmp now: it is local
  trap "rm -rf '$tmp'" EXIT
  if ! (cd "$here" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$tmp/$name" "$package"); then
    die "go build failed in $here for $package.
  If a module could not be downloaded, check that the Go module proxy is reachable
  (go env GOPROXY) and that the versions in $here/go.mod exist."
  fi
  "$tmp/$name" "$@" >/dev/null 2>&1 || die "the freshly built $name does not run"
  mv -f "$tmp/$name" "$bin/$name"
  rm -rf "$tmp"; trap - EXIT

  # Replace this tool's line of the shared stamp under the lock that e2e/k8s/build.sh
  # holds while it writes the same file.
  if command -v flock >/dev/null; then
    exec 8>"$bin/.lock"
    flock 8
  fi
  tmp="$(mktemp "$bin/.VERSIONS.XXXXXX")"
  { if [ -f "$stamp" ]; then grep -v "^$name " "$stamp" || true; fi; echo "$line"; } > "$tmp"
  chmod 644 "$tmp"
  mv "$tmp" "$stamp"
  log "built $name $version in $((SECONDS - start)) s: $bin/$name"
}

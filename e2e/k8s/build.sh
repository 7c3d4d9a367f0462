#!/usr/bin/env bash
# Builds the Kubernetes control plane that the operator tests run against:
# kube-apiserver, kube-controller-manager and kubectl from k8s.io/kubernetes,
# and the etcd server, all from Go modules (no release downloads).
#
#   e2e/k8s/build.sh            build what is missing or out of date
#   e2e/k8s/build.sh --force    rebuild everything
#
# Output: $HERALD_CACHE/bin/{kube-apiserver,kube-controller-manager,kubectl,etcd}
# (HERALD_CACHE defaults to $HOME/.cache/herald) and $HERALD_CACHE/bin/VERSIONS,
# one line per component with its version and a hash of the inputs it was built
# from. A component whose line matches is not rebuilt, so a warm run takes a
# second. Go's module and build caches live under $HERALD_CACHE/go.
#
# Inputs: e2e/k8s/kube (wrapper module pinning k8s.io/kubernetes and its staging
# modules; regenerate with e2e/k8s/kube/pin.sh) and e2e/k8s/etcd (wrapper module
# with etcd's main). Builds run under `nice -n 19`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${HERALD_CACHE:-$HOME/.cache/herald}"
bin="$cache/bin"
stamp="$bin/VERSIONS"
force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) printf 'usage: %s [--force]\n' "$0" >&2; exit 2 ;;
esac

# Bump when the build commands below change in a way that changes the binaries.
recipe=1

die() { printf 'e2e/k8s/build.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'e2e/k8s/build.sh: %s\n' "$*"; }

command -v go >/dev/null || die "Go is required (go 1.26 or newer on PATH) to build the control plane"
command -v sha256sum >/dev/null || die "sha256sum (coreutils) is required"

# Version of a module as required in a wrapper go.mod ("require X vN" or inside a block).
# awk alone (no pipe): an early `exit` must not SIGPIPE a writer under pipefail.
required() { awk -v m="$2" '{ sub(/^require /, "") } $1 == m && $2 ~ /^v/ { print $2; exit }' "$1/go.mod"; }
inputs_hash() { (cd "$1" && cat go.mod go.sum ./*.go 2>/dev/null; echo "recipe=$recipe") | sha256sum | cut -c1-16; }

kube_version="$(required "$here/kube" k8s.io/kubernetes)"
etcd_version="$(required "$here/etcd" go.etcd.io/etcd/server/v3)"
[ -n "$kube_version" ] || die "no k8s.io/kubernetes requirement in $here/kube/go.mod"
[ -n "$etcd_version" ] || die "no go.etcd.io/etcd/server/v3 requirement in $here/etcd/go.mod"
kube_line="kubernetes $kube_version inputs=$(inputs_hash "$here/kube")"
etcd_line="etcd $etcd_version inputs=$(inputs_hash "$here/etcd")"

# up_to_date LINE BINARY...: the stamp has LINE and every binary is there.
up_to_date() {
  local line="$1"; shift
  [ "$force" = 0 ] && [ -f "$stamp" ] && grep -qxF "$line" "$stamp" || return 1
  local b; for b in "$@"; do [ -x "$bin/$b" ] || return 1; done
}

# record LINE: replace the component's line (first word) in the stamp.
record() {
  local name="${1%% *}" tmp
  tmp="$(mktemp "$bin/.VERSIONS.XXXXXX")"
  { if [ -f "$stamp" ]; then grep -v "^$name " "$stamp" || true; fi; echo "$1"; } > "$tmp"
  chmod 644 "$tmp"
  mv "$tmp" "$stamp"
}

mkdir -p "$bin" "$cache/go"
# One build at a time per cache (a second run waits, then finds everything up to date).
if command -v flock >/dev/null; then
  exec 9>"$bin/.lock"
  flock 9
fi
export GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
# Static binaries, committed go.sum only, no VCS stamping of the wrapper modules.
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

# go_build DIR OUT_DIR LDFLAGS PACKAGE...: build main packages into OUT_DIR.
go_build() {
  local dir="$1" out="$2" ldflags="$3"; shift 3
  if ! (cd "$dir" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/" "$@"); then
    die "go build failed in $dir for: $*
  If a module could not be downloaded, check that the Go module proxy is reachable
  (go env GOPROXY) and that the versions in $dir/go.mod exist."
  fi
}

# install_from TMP BINARY...: move freshly built binaries into $bin atomically.
install_from() {
  local tmp="$1" b; shift
  for b in "$@"; do
    [ -x "$tmp/$b" ] || die "go build produced no $b in $tmp"
    mv -f "$tmp/$b" "$bin/$b"
  done
}

kube_bins=(kube-apiserver kube-controller-manager kubectl)
if up_to_date "$kube_line" "${kube_bins[@]}"; then
  log "kubernetes $kube_version is up to date in $bin"
else
  log "building kube-apiserver, kube-controller-manager, kubectl $kube_version (cold: about 12 minutes on 2 cores)"
  start=$SECONDS
  minor="${kube_version#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  tmp="$(mktemp -d "$bin/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  go_build "$here/kube" "$tmp" "$ldflags" "${kube_bins[@]/#/k8s.io/kubernetes/cmd/}"
  install_from "$tmp" "${kube_bins[@]}"
  rm -rf "$tmp"; trap - EXIT
  record "$kube_line"
  log "built kubernetes $kube_version in $((SECONDS - start)) s"
fi

if up_to_date "$etcd_line" etcd; then
  log "etcd $etcd_version is up to date in $bin"
else
  log "building etcd $etcd_version"
  start=$SECONDS
  tmp="$(mktemp -d "$bin/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  # The wrapper module's path ends in /etcd, so its main package builds as "etcd".
  go_build "$here/etcd" "$tmp" "-s -w" .
  install_from "$tmp" etcd
  rm -rf "$tmp"; trap - EXIT
  record "$etcd_line"
  log "built etcd $etcd_version in $((SECONDS - start)) s"
fi

"$bin/kubectl" version --client >/dev/null 2>&1 || die "$bin/kubectl does not run"
"$bin/etcd" --version >/dev/null 2>&1 || die "$bin/etcd does not run"
log "control plane binaries in $bin: $(tr '\n' ';' < "$stamp" | sed 's/;$//; s/;/; /g')"

#!/usr/bin/env bash
# Builds Jaeger v2 (the all-in-one OpenTelemetry Collector distribution) that
# the tracing tests export spans to, from Go modules (no release download).
#
#   e2e/jaeger/build.sh            build it if missing or out of date
#   e2e/jaeger/build.sh --force    rebuild it
#
# Output: $HERALD_CACHE/bin/jaeger (HERALD_CACHE defaults to $HOME/.cache/herald)
# and a "jaeger <version> inputs=<hash>" line in $HERALD_CACHE/bin/VERSIONS, the
# stamp file shared with e2e/k8s/build.sh. When the line matches, nothing is
# rebuilt, so a warm run takes a second. Go's module and build caches live under
# $HERALD_CACHE/go.
#
# Input: e2e/jaeger (wrapper module whose `tool` line pins
# github.com/jaegertracing/jaeger/cmd/jaeger). Builds run under `nice -n 19`;
# cold, the build is long (37 minutes on 2 cores shared with other builds).
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

# Bump when the build command below changes in a way that changes the binary.
recipe=1
module=github.com/jaegertracing/jaeger

die() { printf 'e2e/jaeger/build.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'e2e/jaeger/build.sh: %s\n' "$*"; }

command -v go >/dev/null || die "Go is required (go 1.26 or newer on PATH) to build Jaeger"
command -v sha256sum >/dev/null || die "sha256sum (coreutils) is required"

# awk alone (no pipe): an early `exit` must not SIGPIPE a writer under pipefail.
version="$(awk -v m="$module" '{ sub(/^require /, "") } $1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")"
[ -n "$version" ] || die "no $module requirement in $here/go.mod"
inputs="$(cd "$here" && cat go.mod go.sum; echo "recipe=$recipe")"
line="jaeger $version inputs=$(printf '%s' "$inputs" | sha256sum | cut -c1-16)"

mkdir -p "$bin" "$cache/go"
# One Jaeger build at a time per cache (a second run waits, then finds it up to
# date). A lock of its own, so it can build while e2e/k8s/build.sh runs.
if command -v flock >/dev/null; then
  exec 9>"$bin/.lock-jaeger"
  flock 9
fi

if [ "$force" = 0 ] && [ -x "$bin/jaeger" ] && [ -f "$stamp" ] && grep -qxF "$line" "$stamp"; then
  log "jaeger $version is up to date in $bin"
  exit 0
fi

export GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
# Static binary, committed go.sum only, no VCS stamping of the wrapper module.
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

log "building jaeger $version (cold: tens of minutes on 2 cores)"
start=$SECONDS
tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
ldflags="-s -w -X $module/internal/version.latestVersion=$version"
ldflags+=" -X $module/internal/version.date=1970-01-01T00:00:00Z"
if ! (cd "$here" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$tmp/jaeger" "$module/cmd/jaeger"); then
  die "go build failed in $here for $module/cmd/jaeger.
  If a module could not be downloaded, check that the Go module proxy is reachable
  (go env GOPROXY) and that the versions in $here/go.mod exist."
fi
"$tmp/jaeger" version >/dev/null 2>&1 || die "the freshly built jaeger does not run"
mv -f "$tmp/jaeger" "$bin/jaeger"
rm -rf "$tmp"; trap - EXIT

# Replace the jaeger line of the shared stamp under the lock that
# e2e/k8s/build.sh holds while it writes the same file.
if command -v flock >/dev/null; then
  exec 8>"$bin/.lock"
  flock 8
fi
tmp="$(mktemp "$bin/.VERSIONS.XXXXXX")"
{ if [ -f "$stamp" ]; then grep -v '^jaeger ' "$stamp" || true; fi; echo "$line"; } > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$stamp"
log "built jaeger $version in $((SECONDS - start)) s: $bin/jaeger"

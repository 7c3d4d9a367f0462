#!/usr/bin/env bash
# Builds helm v3, which the chart tests (e2e/tests/chart.rs) and the system stories
# (e2e/tests/system.rs) install charts/herald with, from Go modules (no release download).
#
#   e2e/helm/build.sh            build it if missing or out of date
#   e2e/helm/build.sh --force    rebuild it
#
# Output: $HERALD_CACHE/bin/helm (HERALD_CACHE defaults to $HOME/.cache/herald) and a
# "helm <version> inputs=<hash>" line in $HERALD_CACHE/bin/VERSIONS, the stamp file
# shared with e2e/k8s/build.sh and e2e/jaeger/build.sh. When the line matches, nothing
# is rebuilt, so a warm run takes a second. Go's module and build caches live under
# $HERALD_CACHE/go.
#
# Input: e2e/helm (wrapper module whose `tool` line pins helm.sh/helm/v3/cmd/helm).
# Builds run under `nice -n 19`; cold, the build takes a few minutes on 2 cores.
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
module=helm.sh/helm/v3

die() { printf 'e2e/helm/build.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'e2e/helm/build.sh: %s\n' "$*"; }

command -v go >/dev/null || die "Go is required (go 1.26 or newer on PATH) to build helm"
command -v sha256sum >/dev/null || die "sha256sum (coreutils) is required"

# Version of a module as required in the wrapper go.mod ("require X vN" or inside a block).
# awk alone (no pipe): an early `exit` must not SIGPIPE a writer under pipefail.
required() { awk -v m="$1" '{ sub(/^require /, "") } $1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"; }
version="$(required "$module")"
[ -n "$version" ] || die "no $module requirement in $here/go.mod"
client_go="$(required k8s.io/client-go)"
[ -n "$client_go" ] || die "no k8s.io/client-go requirement in $here/go.mod"
inputs="$(cd "$here" && cat go.mod go.sum; echo "recipe=$recipe")"
line="helm $version inputs=$(printf '%s' "$inputs" | sha256sum | cut -c1-16)"

mkdir -p "$bin" "$cache/go"
# One helm build at a time per cache (a second run waits, then finds it up to date).
# A lock of its own, so it can build while e2e/k8s/build.sh or e2e/jaeger/build.sh runs.
if command -v flock >/dev/null; then
  exec 9>"$bin/.lock-helm"
  flock 9
fi

if [ "$force" = 0 ] && [ -x "$bin/helm" ] && [ -f "$stamp" ] && grep -qxF "$line" "$stamp"; then
  log "helm $version is up to date in $bin"
  exit 0
fi

export GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
# Static binary, committed go.sum only, no VCS stamping of the wrapper module.
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

log "building helm $version (cold: a few minutes on 2 cores)"
start=$SECONDS
tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# As helm's Makefile: its version, and the Kubernetes version that `helm lint` and
# `helm template` assume (Capabilities.KubeVersion), from the client-go it links
# (client-go v0.N.x is Kubernetes 1.N).
k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"
ldflags="-s -w -X $module/internal/version.version=$version"
ldflags+=" -X $module/internal/version.gitTreeState=clean"
for pkg in "$module/pkg/lint/rules" "$module/pkg/chartutil"; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
if ! (cd "$here" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$tmp/helm" "$module/cmd/helm"); then
  die "go build failed in $here for $module/cmd/helm.
  If a module could not be downloaded, check that the Go module proxy is reachable
  (go env GOPROXY) and that the versions in $here/go.mod exist."
fi
"$tmp/helm" version --short >/dev/null 2>&1 || die "the freshly built helm does not run"
mv -f "$tmp/helm" "$bin/helm"
rm -rf "$tmp"; trap - EXIT

# Replace the helm line of the shared stamp under the lock that
# e2e/k8s/build.sh holds while it writes the same file.
if command -v flock >/dev/null; then
  exec 8>"$bin/.lock"
  flock 8
fi
tmp="$(mktemp "$bin/.VERSIONS.XXXXXX")"
{ if [ -f "$stamp" ]; then grep -v '^helm ' "$stamp" || true; fi; echo "$line"; } > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$stamp"
log "built helm $version in $((SECONDS - start)) s: $bin/helm ($("$bin/helm" version --short))"

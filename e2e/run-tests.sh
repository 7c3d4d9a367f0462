#!/usr/bin/env bash
# Herald's whole test suite, runnable on a fresh machine: installs what the tests
# need, then checks formatting and lints and runs every test against real processes.
# Build caches live under $HOME/.cache/herald so repeated runs are fast.
set -euo pipefail
cd "$(dirname "$0")/.."

export HERALD_CACHE="${HERALD_CACHE:-$HOME/.cache/herald}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERALD_CACHE/target}"
mkdir -p "$HERALD_CACHE"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
command -v cargo >/dev/null || { echo "cargo is required (rustup toolchain)"; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo --version

step "system packages"
# redis: the Redis Cluster stories; nginx, chromium, libnss3-tools (certutil) and openssl:
# the browser stories (TLS ingress, headless Chromium trusting a test CA).
missing=""
for pkg in redis-server redis-tools nginx chromium libnss3-tools openssl; do
  dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update
  # shellcheck disable=SC2086 # $missing is a space-separated package list
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
fi
redis-server --version
nginx -v
chromium --version

step "kubernetes control plane"; ./e2e/k8s/build.sh
step "jaeger (for the tracing stories)"; ./e2e/jaeger/build.sh
step "helm (for the chart and system stories)"; ./e2e/helm/build.sh
HELM_CACHE_HOME="$HERALD_CACHE/helm/cache" HELM_CONFIG_HOME="$HERALD_CACHE/helm/config" \
  HELM_DATA_HOME="$HERALD_CACHE/helm/data" "$HERALD_CACHE/bin/helm" lint --strict charts/herald

# The legacy Django Channels stack (tests/legacy_peer.rs, bench::peers::legacy): a Python
# virtualenv under $HERALD_CACHE, instant when requirements.txt is unchanged.
step "legacy peer (python venv)"; ./e2e/peers/legacy/setup.sh
# Centrifugo, the other peer (tests/centrifugo_peer.rs, bench::peers::centrifugo): built from
# Go modules into $HERALD_CACHE/bin, instant when e2e/peers/centrifugo/go.mod is unchanged.
step "centrifugo"; ./e2e/peers/centrifugo/build.sh

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# The end-to-end stories run the workspace's binaries (herald-node, herald-operator).
cargo build --workspace --bins --locked
# The system stories append one line each to this file; it is printed at the end.
export HERALD_E2E_SUMMARY="${HERALD_E2E_SUMMARY:-$(mktemp -t herald-e2e-summary.XXXXXX)}"
: > "$HERALD_E2E_SUMMARY"
status=0
# The Python client (clients/python): lint, types, unit tests, then its integration tests
# against the herald-node just built (its own node process, fresh secrets).
# The browser and Node.js SDK (clients/js): unit tests, type check and size budget on Node 22
# (installed from the npm registry into $HERALD_CACHE); it also builds clients/js/dist, which
# the SDK stories in e2e/tests/sdk.rs serve to Chromium.
step "js client"
./clients/js/run-tests.sh || status=$?
step "python client"
HERALD_NODE_BIN="$CARGO_TARGET_DIR/debug/herald-node" ./clients/python/run-tests.sh --all || status=$?
step "rust tests"
cargo test --workspace --locked --no-fail-fast || status=$?

step "scenario summary"
if [ -s "$HERALD_E2E_SUMMARY" ]; then
  sort "$HERALD_E2E_SUMMARY"
else
  echo "(no scenario wrote a summary line)"
fi
exit "$status"

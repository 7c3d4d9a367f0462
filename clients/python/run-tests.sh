#!/usr/bin/env bash
# Runs the Python client's tests in a virtualenv under $HOME/.cache/herald (made on first use,
# keyed by a hash of pyproject.toml and the interpreter, so a changed dependency list gets a
# fresh one; the package itself is installed editable).
#
#   ./run-tests.sh                 lint (ruff), type check (mypy --strict), unit tests (no
#                                  network beyond 127.0.0.1, no node needed)
#   ./run-tests.sh --integration   integration tests against a real herald-node: uses
#                                  HERALD_URL, HERALD_API_KEY and HERALD_JWT_SECRET when set;
#                                  otherwise starts the node binary at $HERALD_NODE_BIN
#                                  (default $HOME/.cache/herald/target/debug/herald-node) on
#                                  a free loopback port with fresh secrets, and stops it after.
#   ./run-tests.sh --all           both.
# Other arguments go to pytest (e.g. -k retry, -x).
#
# Without this script: pytest -m integration, with the three variables set (the tests fail,
# not skip, when they are missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HERALD_CACHE:-$HOME/.cache/herald}"
python="${HERALD_PYTHON:-python3}"
mode=unit
args=()
for arg in "$@"; do
  case "$arg" in
    --integration) mode=integration ;;
    --all) mode=all ;;
    *) args+=("$arg") ;;
  esac
done

key="$(cat "$here/pyproject.toml" <("$python" --version 2>&1) | sha256sum | cut -c1-16)"
venv="$cache/py-client-venv-$key"
mkdir -p "$cache"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.ready" ]; then
  echo "run-tests.sh: creating $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -e "$here[test]" >&2
  touch "$venv/.ready"
fi
# The venv outlives checkouts (CI clones into a new directory each time): the editable
# install must point at this one, or `import herald` finds nothing.
if ! "$venv/bin/python" -c 'import herald, os, sys; sys.exit(not os.path.realpath(herald.__file__).startswith(os.path.realpath(sys.argv[1])))' "$here/src" 2>/dev/null; then
  echo "run-tests.sh: pointing $venv at $here" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --no-deps -e "$here" >&2
fi
flock -u 9

cd "$here"
if [ "$mode" != integration ]; then
  "$venv/bin/ruff" check --quiet src tests
  "$venv/bin/mypy" --no-error-summary
fi
case "$mode" in
  unit) exec "$venv/bin/python" -m pytest -m "not integration" "${args[@]}" ;;
  all) "$venv/bin/python" -m pytest -m "not integration" "${args[@]}" ;;
esac

node_pid=""
log=""
cleanup() {
  status=$?
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  # The node's log is kept when the tests failed.
  if [ -n "$log" ] && [ "$status" = 0 ]; then rm -f "$log"; fi
}
trap cleanup EXIT
if [ -z "${HERALD_URL:-}" ]; then
  bin="${HERALD_NODE_BIN:-$cache/target/debug/herald-node}"
  [ -x "$bin" ] || { echo "run-tests.sh: no herald-node at $bin (build it, or set HERALD_URL, HERALD_API_KEY, HERALD_JWT_SECRET)" >&2; exit 1; }
  export HERALD_JWT_SECRET="$(head -c 32 /dev/urandom | sha256sum | cut -c1-48)"
  export HERALD_API_KEY="$(head -c 32 /dev/urandom | sha256sum | cut -c1-48)"
  log="$(mktemp)"
  HERALD_LISTEN=127.0.0.1:0 "$bin" >"$log" 2>&1 &
  node_pid=$!
  for _ in $(seq 200); do
    addr="$(sed -n 's/^herald-node listening on //p' "$log" | head -1)"
    [ -n "$addr" ] && break
    kill -0 "$node_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.05
  done
  [ -n "$addr" ] || { echo "run-tests.sh: herald-node did not start" >&2; cat "$log" >&2; exit 1; }
  export HERALD_URL="http://$addr"
  echo "run-tests.sh: herald-node at $HERALD_URL (log: $log)" >&2
fi
"$venv/bin/python" -m pytest -m integration "${args[@]}"

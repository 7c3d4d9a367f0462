#!/usr/bin/env bash
# Installs the legacy stack (requirements.txt) into a virtualenv under the Herald cache, then
# Herald's Python client (clients/python: the channel layer that LEGACY_CHANNEL_LAYER=herald
# selects, see legacy_push/settings.py), and prints the virtualenv's path as the last line of
# its output.
#
# Idempotent: a stamp holding the hash of requirements.txt (and of the interpreter) marks a
# finished install, and a second stamp the hash of the client's sources (a changed client is
# reinstalled alone), so a warm run only checks the stamps. Concurrent callers are serialised
# with a lock. Needs Python >= 3.10 with the venv module (installed from Debian's packages
# when missing and running as root).
#
# Env: HERALD_CACHE (default $HOME/.cache/herald), HERALD_PYTHON (default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HERALD_CACHE:-$HOME/.cache/herald}"
venv="$cache/legacy-venv"
python="${HERALD_PYTHON:-python3}"
mkdir -p "$cache"

exec 9>"$cache/legacy-venv.lock"
flock 9

if ! command -v "$python" >/dev/null || ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv >&2
    python=python3
  else
    echo "setup.sh: $python with the venv module is required (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup.sh: Python >= 3.10 is required, $python is $("$python" --version 2>&1)" >&2
  exit 1
fi

want="$(cat "$here/requirements.txt" <("$python" --version 2>&1) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$venv/.herald-stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup.sh: installing the legacy stack into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input -r "$here/requirements.txt" >&2
  echo "$want" >"$venv/.herald-stamp"
fi

client="$(cd "$here/../../../clients/python" && pwd)"
want_client="$(cd "$client" && find pyproject.toml src -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*' |
  LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$venv/.herald-client-stamp" 2>/dev/null)" != "$want_client" ]; then
  echo "setup.sh: installing Herald's Python client into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --force-reinstall --no-deps "$client" >&2
  echo "$want_client" >"$venv/.herald-client-stamp"
fi
echo "$venv"

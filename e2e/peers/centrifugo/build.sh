#!/usr/bin/env bash
# Builds Centrifugo, the peer that herald-bench compares Herald with, from Go modules
# (no release download).
#
#   e2e/peers/centrifugo/build.sh            build it if missing or out of date
#   e2e/peers/centrifugo/build.sh --force    rebuild it
#
# Output: $HERALD_CACHE/bin/centrifugo and its line in $HERALD_CACHE/bin/VERSIONS (see
# e2e/go-tool.sh). Input: e2e/peers/centrifugo (wrapper module whose `tool` line pins
# github.com/centrifugal/centrifugo/v6).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
name=centrifugo
module=github.com/centrifugal/centrifugo/v6
# Bump when the build command below changes in a way that changes the binary.
recipe=1
# shellcheck source=../../go-tool.sh
. "$here/../../go-tool.sh"

go_tool_build "$module" "-s -w -X $module/internal/build.Version=${version#v}" version

#!/usr/bin/env bash
# Builds Jaeger v2 (the all-in-one OpenTelemetry Collector distribution) that the
# tracing tests export spans to, from Go modules (no release download).
#
#   e2e/jaeger/build.sh            build it if missing or out of date
#   e2e/jaeger/build.sh --force    rebuild it
#
# Output: $HERALD_CACHE/bin/jaeger and its line in $HERALD_CACHE/bin/VERSIONS (see
# e2e/go-tool.sh). Input: e2e/jaeger (wrapper module whose `tool` line pins
# github.com/jaegertracing/jaeger/cmd/jaeger). Cold, the build is long (tens of
# minutes on 2 cores shared with other builds).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
name=jaeger
module=github.com/jaegertracing/jaeger
# Bump when the build command below changes in a way that changes the binary.
recipe=1
# shellcheck source=../go-tool.sh
. "$here/../go-tool.sh"

ldflags="-s -w -X $module/internal/version.latestVersion=$version"
ldflags+=" -X $module/internal/version.date=1970-01-01T00:00:00Z"
go_tool_build "$module/cmd/jaeger" "$ldflags" version

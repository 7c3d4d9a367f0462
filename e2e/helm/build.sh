#!/usr/bin/env bash
# Builds helm v3, which the chart tests (e2e/tests/chart.rs) and the system stories
# (e2e/tests/system.rs) install charts/herald with, from Go modules (no release download).
#
#   e2e/helm/build.sh            build it if missing or out of date
#   e2e/helm/build.sh --force    rebuild it
#
# Output: $HERALD_CACHE/bin/helm and its line in $HERALD_CACHE/bin/VERSIONS (see
# e2e/go-tool.sh). Input: e2e/helm (wrapper module whose `tool` line pins
# helm.sh/helm/v3/cmd/helm). Cold, the build takes a few minutes on 2 cores.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
name=helm
module=helm.sh/helm/v3
# Bump when the build command below changes in a way that changes the binary.
recipe=1
# shellcheck source=../go-tool.sh
. "$here/../go-tool.sh"

client_go="$(required k8s.io/client-go)"
[ -n "$client_go" ] || die "no k8s.io/client-go requirement in $here/go.mod"
# As helm's Makefile: its version, and the Kubernetes version that `helm lint` and
# `helm template` assume (Capabilities.KubeVersion), from the client-go it links
# (client-go v0.N.x is Kubernetes 1.N).
k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"
ldflags="-s -w -X $module/internal/version.version=$version"
ldflags+=" -X $module/internal/version.gitTreeState=clean"
for pkg in "$module/pkg/lint/rules" "$module/pkg/chartutil"; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
go_tool_build "$module/cmd/helm" "$ldflags" version --short

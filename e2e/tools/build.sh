#!/usr/bin/env bash
# Builds the real components pinned in go.mod into bin/ at the repository
# root. A binary is rebuilt only when it is missing or its stamp names another
# version, so a warm `make tools` costs nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIN_DIR:-$(cd "$here/../.." && pwd)/bin}
mkdir -p "$bin"
cd "$here"

modver() { go list -m -f '{{.Version}}' "$1"; }

kube=$(modver k8s.io/kubernetes)
vault=$(modver github.com/hashicorp/vault)
etcd=$(modver go.etcd.io/etcd/server/v3)
kubever="-X k8s.io/component-base/version.gitVersion=$kube -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$kube" | cut -d. -f2)"

build() { # name version package [extra ldflags] [build tags]
  local name=$1 version=$2 pkg=$3 extra=${4:-} tags=${5:-}
  local stamp="$bin/.$name.version"
  if [ -x "$bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    echo "tools: $name $version already built"
    return
  fi
  echo "tools: building $name $version"
  CGO_ENABLED=0 go build -trimpath -tags="$tags" -ldflags="-s -w $extra" -o "$bin/$name.tmp" "$pkg"
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$version" > "$stamp"
}

# promtool, then the Prometheus server from the same module, tag and
# (mostly) packages, so the server costs little once promtool is built
# (measured on 2 cores with an empty build cache: promtool 150 s, then the
# server 62 s more).
# The tag remove_all_sd leaves out every service discovery but file and
# HTTP, which cuts a fifth of the packages. Without the builtinassets tag
# the server embeds no web UI: the tests use its HTTP API only.
prometheus_tools() { # version
  local ver=$1 ld="-X github.com/prometheus/common/version.Version=$1"
  build promtool "$ver" github.com/prometheus/prometheus/cmd/promtool "$ld" remove_all_sd
  build prometheus "$ver" github.com/prometheus/prometheus/cmd/prometheus "$ld" remove_all_sd
}

# `build.sh bench` builds only the controllers `make bench` measures beside
# vaultkms's; `make tools` never builds them, so `make test` does not pay for
# their dependency graphs. Each lives in a module of its own, and the bench
# reads their CRDs from the module cache.
if [ "${1:-}" = bench ]; then
  cd "$here/vso"
  vsover=$(modver github.com/hashicorp/vault-secrets-operator)
  build vault-secrets-operator "$vsover" github.com/hashicorp/vault-secrets-operator \
    "-X github.com/hashicorp/vault-secrets-operator/internal/version.GitVersion=$vsover"
  cd "$here/eso"
  build external-secrets "$(modver github.com/external-secrets/external-secrets)" github.com/external-secrets/external-secrets
  exit 0
fi

# `build.sh prometheus` builds only Prometheus and promtool (the e2e
# alert test and `make test-alerts` need nothing else).
if [ "${1:-}" = prometheus ]; then
  cd "$here/prometheus"
  promver=$(modver github.com/prometheus/prometheus)
  prometheus_tools "$promver"
  exit 0
fi

# The real components the demo needs, all from this directory's module.
core() {
  build etcd "$etcd" go.etcd.io/etcd/server/v3
  build etcdctl "$etcd" go.etcd.io/etcd/etcdctl/v3
  build kube-apiserver "$kube" k8s.io/kubernetes/cmd/kube-apiserver "$kubever"
  build kube-controller-manager "$kube" k8s.io/kubernetes/cmd/kube-controller-manager "$kubever"
  # The node the chart's pods run on (e2e/harness/node.go): right after
  # kube-controller-manager, whose packages they mostly share, so the
  # build cache is warm. Without the version ldflags the node reports
  # v0.0.0-master.
  build kube-scheduler "$kube" k8s.io/kubernetes/cmd/kube-scheduler "$kubever"
  build kubelet "$kube" k8s.io/kubernetes/cmd/kubelet "$kubever"
  build vault "$vault" github.com/hashicorp/vault
}

# `build.sh demo` stops here: the demo runs etcd, kube-apiserver,
# kube-controller-manager and Vault (kube-scheduler and kubelet are built
# with them but the demo does not run them), nothing built below.
if [ "${1:-}" = demo ]; then core; exit 0; fi

# The developer tools, each in a module of its own so their dependency
# graphs stay apart from the real components' pins.
devtools() {
  # controller-gen (make generate, check-generated).
  (cd "$here/controller-gen" && build controller-gen "$(modver sigs.k8s.io/controller-tools)" sigs.k8s.io/controller-tools/cmd/controller-gen)
  # Helm renders and installs the chart in the e2e tests.
  (cd "$here/helm" && helmver=$(modver helm.sh/helm/v3) &&
    build helm "$helmver" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$helmver")
  # golangci-lint, run by `make lint` with .golangci.yml.
  (cd "$here/golangci-lint" && lintver=$(modver github.com/golangci/golangci-lint/v2) &&
    build golangci-lint "$lintver" github.com/golangci/golangci-lint/v2/cmd/golangci-lint "-X main.version=$lintver")
  # promtool (unit-tests the chart's alerting rules in `make test`) and
  # the Prometheus server (the e2e test TestPrometheusAlerts scrapes the
  # components with it and proves the chart's alerts fire and resolve).
  (cd "$here/prometheus" && prometheus_tools "$(modver github.com/prometheus/prometheus)")
}

# Two lanes at once: a single `go build` leaves a core idle while it links
# (a minute or more for Vault and kube-apiserver) and while a long package
# compiles alone, and on a fresh machine these builds are most of a CI
# run. Both lanes share the one build cache, which locks what it writes.
core & core_pid=$!
devtools & dev_pid=$!
rc=0
wait "$core_pid" || rc=1
wait "$dev_pid" || rc=1
if [ "$rc" -ne 0 ]; then echo "tools: a build failed (see above)" >&2; fi
exit "$rc"

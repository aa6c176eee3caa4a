# vaultkms — see README.md. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
GO    ?= go
# Tests run at once per package. Most e2e tests wait on Vault TTLs and
# controller intervals, leaving a core idle a third of the time at 2:
# at 3 the e2e package took 771 s instead of about 930 on 2 cores.
TEST_PARALLEL ?= 3
BIN   := $(CURDIR)/bin
# The release version is the chart's appVersion: the images `make image`
# tags, the chart's default image tags and deploy/static-pod.yaml all name
# it. Expanded once, so the binaries and the image tags of one run agree.
VERSION ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/vaultkms/Chart.yaml)
VERSION := $(VERSION)
LDFLAGS := -s -w -X github.com/vaultkms/vaultkms/internal/version.Version=$(VERSION) \
	-X github.com/vaultkms/vaultkms/kmsplugin.Version=$(VERSION)
export VAULTKMS_BIN_DIR := $(BIN)

# Every program with an image. A command whose cmd/ directory does not exist
# (yet) is skipped by build and image.
CMDS := vaultkms-plugin vaultkms-controller kubectl-vaultkms vaultkms-auditor
# BASE_IMAGE is what images are built on. The Dockerfile's default is a
# distroless static nonroot image; a machine that reaches no registry passes
# BASE_IMAGE=scratch (the binaries are static, so they run on either).
BASE_IMAGE ?=
# Fully qualified, as the chart and the static pod name the images.
IMAGE_PREFIX ?= docker.io/vaultkms

.PHONY: all help tools tools-demo bench-tools build generate check-generated test test-alerts unit bench demo cluster lint image clean

all: build

## help: list the targets and what they do
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST) | awk -F': ' '{printf "  %-16s %s\n", $$1, $$2}'

## tools: build the pinned real components (Vault, etcd, kube-apiserver, ...) into bin/, skipping what is current
tools:
	@e2e/tools/build.sh

## build: build vaultkms's own commands into bin/
build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do \
	  if [ ! -d cmd/$$c ]; then echo "build: cmd/$$c does not exist, skipping $$c"; continue; fi; \
	  CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$c ./cmd/$$c || exit 1; \
	done

## generate: deepcopy code and CRDs from api/ markers (controller-gen)
generate: tools
	$(BIN)/controller-gen object paths=./api/...
	$(BIN)/controller-gen crd paths=./api/... output:crd:artifacts:config=charts/vaultkms/crds

## check-generated: fail when generated files are not what api/ says
check-generated: tools
	@tmp=$$(mktemp -d); cp -r charts/vaultkms/crds $$tmp/crds; cp api/v1alpha1/zz_generated.deepcopy.go $$tmp/; \
	$(BIN)/controller-gen object paths=./api/... output:object:dir=$$tmp/obj >/dev/null && \
	$(BIN)/controller-gen crd paths=./api/... output:crd:artifacts:config=$$tmp/newcrds && \
	diff -r $$tmp/crds $$tmp/newcrds && diff $$tmp/zz_generated.deepcopy.go $$tmp/obj/zz_generated.deepcopy.go; \
	rc=$$?; rm -rf $$tmp; if [ $$rc -ne 0 ]; then echo "generated files are stale: run make generate"; exit 1; fi

## test: unit and integration tests against real components, with the race detector, and the alert tests
test: tools lint check-generated test-alerts
	$(GO) test -race -count=1 -parallel $(TEST_PARALLEL) -timeout 45m ./...

## test-alerts: promtool unit tests of the chart's alerting rules (rendered by helm template)
test-alerts: tools
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(BIN)/helm template alerts charts/vaultkms --namespace vaultkms-system --kube-version 1.37.2 --set vault.addr=https://vault.example:8200 \
	  --set metrics.prometheusRule.enabled=true --set auditor.enabled=true \
	  --set auditor.etcdEndpoints=https://etcd.example:2379 \
	  --set auditor.transitKey=kubernetes --set auditor.rotation.enabled=true --set auditor.rotation.encryptionConfigResources=secrets \
	  --show-only templates/prometheusrule.yaml | sed -n '/^spec:/,$$p' | sed '1d; s/^  //' > $$tmp/rules.yaml && \
	cp charts/tests/alerts_test.yaml $$tmp/ && \
	$(BIN)/promtool check rules $$tmp/rules.yaml && \
	$(BIN)/promtool test rules $$tmp/alerts_test.yaml

## unit: only the tests that need no real component (e2e tests skip under -short)
unit:
	@echo "unit: -short skips the e2e packages (they need the real components of make tools; go test -v -short ./e2e/ says so)"
	$(GO) test -race -count=1 -short ./...

## bench-tools: build the controllers the bench measures beside vaultkms's (Vault Secrets Operator, External Secrets Operator) into bin/
bench-tools:
	@e2e/tools/build.sh bench

## bench: measured figures (plugin vs direct Transit, batching, the controller beside VSO and ESO)
bench: tools bench-tools
	$(GO) test -run '^$$' -bench . -benchmem ./kmsplugin/
	$(GO) test -run '^$$' -bench AnsweredMetadata -benchmem ./syncer/
	$(GO) run ./e2e/bench

## tools-demo: build only the real components the demo runs (Vault, etcd, kube-apiserver)
tools-demo:
	@e2e/tools/build.sh demo

## demo: run the whole system locally; Ctrl-C stops everything
demo: tools-demo
	@$(GO) build -o $(BIN)/vaultkms-demo ./e2e/demo
	@$(BIN)/vaultkms-demo

## cluster: a one-node cluster (kubelet, containerd) with the chart installed; prints KUBECONFIG; Ctrl-C removes it (root)
cluster: tools
	@$(GO) build -o $(BIN)/vaultkms-cluster ./e2e/cluster
	@$(BIN)/vaultkms-cluster

## lint: go vet, gofmt and golangci-lint (pinned in e2e/tools/golangci-lint, config .golangci.yml)
# Both with -race, the flag `make test` compiles with: vet and golangci-lint
# (whose `go list -export` honours GOFLAGS) then build the dependencies once,
# in the variant the tests reuse, instead of a plain one first. On a fresh
# machine that is one whole compile of the dependency graph fewer.
lint: tools
	$(GO) vet -race ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	GOFLAGS="$$GOFLAGS -race" $(BIN)/golangci-lint run ./...

## image: one image per program (Dockerfile targets), from the binaries `make build` made
image: build
	@for c in $(CMDS); do \
	  if [ ! -x $(BIN)/$$c ]; then echo "image: bin/$$c not built, skipping"; continue; fi; \
	  target=$${c#vaultkms-}; \
	  docker build --target $$target $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	    --build-arg VERSION=$(VERSION) --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	    -t $(IMAGE_PREFIX)/$$c:$(VERSION) . || exit 1; \
	done

## clean: remove bin/
clean:
	rm -rf $(BIN)

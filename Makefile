# vaultkms — see README.md. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/vaultkms/vaultkms/kmsplugin.Version=$(VERSION)
export VAULTKMS_BIN_DIR := $(BIN)

CMDS := vaultkms-plugin

.PHONY: all tools build test unit integration fuzz-seeds bench demo lint clean

all: build

## tools: build the pinned real components (Vault, etcd, kube-apiserver, ...) into bin/, skipping what is current
tools:
	@e2e/tools/build.sh

## build: build vaultkms's own commands into bin/
build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$c ./cmd/$$c || exit 1; done

## test: unit and integration tests against real components, with the race detector
test: tools lint
	$(GO) test -race -count=1 -timeout 45m ./...

## unit: only the tests that need no real component
unit:
	$(GO) test -race -count=1 -short ./...

## bench: measured figures (plugin vs direct Transit, batching)
bench: tools
	$(GO) test -run '^$$' -bench . -benchmem ./kmsplugin/
	$(GO) run ./e2e/bench

## demo: run the whole system locally; Ctrl-C stops everything
demo: tools
	$(GO) run ./e2e/demo

## lint: go vet and gofmt
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf $(BIN)

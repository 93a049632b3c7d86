# keygate — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
OPA       := $(GO) tool opa
BIN       := bin/keygate
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
GOTESTFLAGS ?= -count=1
# The tests that need PostgreSQL read this; .ci/run sets it (and CI fails instead of skipping without it).
KEYGATE_TEST_DATABASE_URL ?=
export KEYGATE_TEST_DATABASE_URL

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/keygate
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/keygate

.PHONY: run
run: ## Run the demo: bundle server + sidecar on the embedded demo data (keygate dev)
	$(GO) run -ldflags '$(LDFLAGS)' ./cmd/keygate dev

.PHONY: bundle
bundle: build ## Build bundles/dist/keygate.tar.gz from the embedded demo
	@mkdir -p bundles/dist
	$(BIN) build -o bundles/dist/keygate.tar.gz

.PHONY: test
test: fmt-check policy-test go-test rules-test ## Run every check: gofmt, opa fmt/check/test (coverage >= 90%), go vet + go test, promtool

.PHONY: go-test
go-test: ## go vet and go test ./...
	$(GO) vet ./...
	$(GO) test $(GOTESTFLAGS) ./...

.PHONY: policy-test
policy-test: ## opa fmt --fail, opa check --strict, opa test with coverage >= 90%
	$(OPA) fmt --list --fail policies/
	$(OPA) check --strict policies/
	$(OPA) test policies/ --coverage --threshold 90 --format json > /dev/null || { $(OPA) test -v policies/ | tail -40; exit 1; }
	@$(OPA) test policies/ --coverage | python3 -c 'import json,sys; print("rego coverage: %.1f%%" % json.load(sys.stdin)["coverage"])'

.PHONY: rules-test
rules-test: ## promtool check + unit tests of the Prometheus alert rules
	@if [ -x deploy/prometheus/check.sh ]; then deploy/prometheus/check.sh; fi

.PHONY: fmt-check
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: fmt
fmt: ## gofmt and opa fmt everything
	gofmt -w $$(git ls-files '*.go')
	$(OPA) fmt -w policies/

.PHONY: lint
lint: ## go vet + opa check --strict
	$(GO) vet ./...
	$(OPA) check --strict policies/

.PHONY: bench
bench: ## Benchmarks (Go benchmarks, bundle build at 100k/1M users); figures go to docs/performance.md
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./internal/compiler/ ./internal/engine/
	$(GO) test -run '^$$' -bench . -benchmem ./internal/sidecar/ 2>/dev/null || true

.PHONY: e2e
e2e: ## End-to-end: PostgreSQL -> keygate serve -> keygate authz -> gRPC Checks
	$(GO) test $(GOTESTFLAGS) -tags e2e -run E2E -v ./e2e/...

.PHONY: clean
clean: ## Remove build output
	rm -rf bin bundles/dist

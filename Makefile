# keygate — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
OPA       := $(GO) tool opa
BIN       := bin/keygate
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# The container image (Dockerfile); deploy/kubernetes runs this name (deploy/deploy_test.go checks they agree).
IMAGE     ?= ghcr.io/keygate/keygate
# Profile-guided optimisation: `go build` of ./cmd/keygate uses cmd/keygate/default.pgo by itself (-pgo=auto);
# the benchmarks build with the same profile so they measure the code as the binary runs it. `make pgo`
# regenerates it.
PGO       := $(CURDIR)/cmd/keygate/default.pgo
GOTESTFLAGS ?= -count=1
# The tests that need PostgreSQL read this; .ci/run sets it (and CI fails instead of skipping without it).
KEYGATE_TEST_DATABASE_URL ?=
export KEYGATE_TEST_DATABASE_URL

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/keygate: a static binary (CGO_ENABLED=0, -trimpath), as in the container image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/keygate

.PHONY: image
image: ## Build the container image $(IMAGE):$(VERSION) (Dockerfile; needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .

DEV_DIR ?= .keygate-dev

.PHONY: run
run: ## Run the demo: bundle server + sidecar on the embedded demo data (bin/keygate dev; dev keys in $(DEV_DIR))
	@echo "make run: building $(BIN) (the first build compiles OPA and its dependencies: about a minute; later ones take seconds)"
	@CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/keygate
	@echo "make run: starting $(BIN) dev --dir $(DEV_DIR) (Ctrl-C stops it)"
	@exec $(BIN) dev --dir $(DEV_DIR)

.PHONY: bundle
bundle: build ## Build bundles/dist/keygate.tar.gz from the embedded demo
	@mkdir -p bundles/dist
	$(BIN) build -o bundles/dist/keygate.tar.gz

.PHONY: test
test: prereqs fmt-check policy-test go-test fuzz-short rules-test ## Run every check: gofmt, opa fmt/check/test (coverage >= 90%), go vet + go test, short fuzzing, promtool

.PHONY: prereqs
prereqs: ## Say which optional test prerequisites are missing and what is skipped without them (errors under CI=1)
	@.ci/prereqs

.PHONY: go-test
go-test: ## go vet and go test ./...
	$(GO) vet ./...
	$(GO) test $(GOTESTFLAGS) ./...

# Fuzz targets, package:Target (`go test -fuzz` takes one package and one target per run). docs/security.md
# says what each one holds.
FUZZ_TARGETS := \
	./internal/sidecar:FuzzCheck \
	./internal/sidecar:FuzzFastPathMatchesPolicy \
	./internal/envoyauth:FuzzNormalizePath \
	./internal/identity:FuzzVerify \
	./internal/identity:FuzzVerifyClaims \
	./internal/seed:FuzzParse \
	./internal/importer:FuzzImport
FUZZTIME       ?= 10m
FUZZTIME_SHORT ?= 5s

define run-fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz $$pkg $$name ($(1))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(1) $$pkg; \
	done
endef

.PHONY: fuzz-short
fuzz-short: ## Each fuzz target for FUZZTIME_SHORT (5s; part of make test)
	$(call run-fuzz,$(FUZZTIME_SHORT))

.PHONY: fuzz
fuzz: ## Each fuzz target for FUZZTIME (default 10m each, one at a time); failures land in testdata/fuzz/
	$(call run-fuzz,$(FUZZTIME))

.PHONY: policy-test
policy-test: ## opa fmt --fail, opa check --strict, opa test with coverage >= 90%
	$(OPA) fmt --list --fail policies/
	$(OPA) check --strict policies/
	$(OPA) test policies/ --timeout 120s --coverage --threshold 90 --format json > /dev/null || { $(OPA) test --timeout 120s -v policies/ | tail -40; exit 1; }
	@$(OPA) test policies/ --timeout 120s --coverage | python3 -c 'import json,sys; print("rego coverage: %.1f%%" % json.load(sys.stdin)["coverage"])'

.PHONY: rules-test
rules-test: ## promtool check + unit tests of the Prometheus alert rules (skipped without promtool, except under CI=1)
	@if ! command -v promtool >/dev/null 2>&1 && [ -z "$$CI" ]; then \
	  echo "rules-test: SKIPPED: promtool not found (apt-get install -y prometheus)"; \
	else deploy/prometheus/check.sh; fi

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
bench: ## All benchmarks (figures in docs/performance.md); KEYGATE_BENCH_USERS=100000,1000000 sizes the scale runs
	KEYGATE_BENCH_USERS=$${KEYGATE_BENCH_USERS:-100000,1000000} $(GO) test -pgo=$(PGO) -run '^$$' -bench 'Build|LoadedHeap' -benchtime 1x -timeout 60m ./internal/engine/
	KEYGATE_BENCH_USERS=$${KEYGATE_BENCH_USERS:-100000,1000000} $(GO) test -pgo=$(PGO) -run '^$$' -bench 'Decision|OPABaseline' -benchtime 20000x -timeout 60m ./internal/engine/
	$(GO) test -pgo=$(PGO) -run '^$$' -bench 'Check' -benchtime 20000x -benchmem ./internal/sidecar/
	@if [ -n "$$KEYGATE_TEST_DATABASE_URL" ]; then \
	  KEYGATE_BENCH_USERS=$${KEYGATE_BENCH_DB_USERS:-100000} $(GO) test -pgo=$(PGO) -run '^$$' -bench 'BuildFromDatabase' -benchtime 2x -timeout 60m -v ./internal/bundleserver/ | grep -E 'Benchmark|build|loaded'; \
	  $(GO) test -pgo=$(PGO) -run '^$$' -bench 'Flip' -benchtime 1x -v ./internal/bundleserver/ | grep -E 'Benchmark|flip'; \
	else echo "KEYGATE_TEST_DATABASE_URL unset: skipping the PostgreSQL benchmarks"; fi
	$(MAKE) load

.PHONY: load
load: ## Load runs (ghz): no-op, keygate authz (JWT and metadata), stock opa-envoy-plugin on keygate's bundle; 100k and 1M users
	bench/ghz.sh 100000 15
	bench/ghz.sh 1000000 10

.PHONY: pgo
pgo: ## Regenerate cmd/keygate/default.pgo from the decision and Check benchmarks (CPU profiles, merged)
	@tmp=$$(mktemp -d); \
	KEYGATE_BENCH_USERS=100000 $(GO) test -run '^$$' -bench 'Decision' -benchtime 20000x -cpuprofile $$tmp/engine.pprof -o $$tmp/engine.test ./internal/engine/ >/dev/null && \
	$(GO) test -run '^$$' -bench 'Check' -benchtime 30000x -cpuprofile $$tmp/sidecar.pprof -o $$tmp/sidecar.test ./internal/sidecar/ >/dev/null && \
	$(GO) tool pprof -proto $$tmp/engine.pprof $$tmp/sidecar.pprof > $(PGO) && rm -rf $$tmp && ls -l $(PGO)

.PHONY: grpcurl
grpcurl: ## Ask a running `make run` over gRPC reflection: list services, then one allowed Check (u-alice)
	$(GO) tool grpcurl -plaintext 127.0.0.1:9191 list
	@tok=$$($(BIN) token --user u-alice --jti tok-alice --key $(DEV_DIR)/dev-signing-key.pem); \
	$(GO) tool grpcurl -plaintext -d "{\"attributes\":{\"request\":{\"http\":{\"method\":\"GET\",\"path\":\"/api/identity/orgs/org-layer5/teams\",\"headers\":{\"authorization\":\"Bearer $$tok\"}}},\"contextExtensions\":{\"service\":\"identity\"}}}" \
	  127.0.0.1:9191 envoy.service.auth.v3.Authorization/Check

.PHONY: e2e
e2e: ## End-to-end: PostgreSQL -> keygate serve -> keygate authz -> gRPC Checks (needs KEYGATE_TEST_DATABASE_URL)
	@.ci/prereqs database
	$(GO) test $(GOTESTFLAGS) -tags e2e -run E2E -v ./e2e/...

.PHONY: clean
clean: ## Remove build output
	rm -rf bin bundles/dist

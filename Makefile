# Build, lint, test, run and benchmark qnbd. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Go lives in /usr/local/go on the project's machines; tools installed with
# `go install` land in $(go env GOPATH)/bin.
export PATH := /usr/local/go/bin:$(PATH)
GOBIN := $(shell go env GOPATH 2>/dev/null || echo $(HOME)/go)/bin
export PATH := $(GOBIN):$(PATH)

GO          ?= go
CMDS        := qnbd qnbd-img
# The per-package timeout has margin for a loaded machine: with both cores busy with other
# work (a load average of about 12), the qcow2 package alone took 31 minutes under -race.
TEST_TIMEOUT ?= 60m
# The longest test packages, named first so that `go test` starts them first: with the
# default -p (one package per CPU) a long package started last sets the wall time.
TEST_FIRST  := ./qcow2 ./cmd/qnbd-img ./e2e
GOTESTFLAGS ?=
# Race detector options for the tests and every race-built child they start.
# - clear_shadow_mmap_threshold: the detector frees the shadow of a freed heap object over
#   64 KiB by remapping it, and every later object there faults its shadow in again, page by
#   page. The tests allocate many such buffers (one per request, image or cluster), and on
#   a VM those faults were half of all test CPU: TestPropertyRandomOps took 86 CPU s, 48 of
#   them in the kernel. Clearing the shadow by writing brings it to 29 CPU s.
# - atexit_sleep_ms=0: a race-built program otherwise sleeps a second before it exits, and
#   the tests run qnbd-img and qnbd as children thousands of times.
export GORACE ?= clear_shadow_mmap_threshold=1073741824 atexit_sleep_ms=0
FUZZTIME    ?= 30s
BENCH_FLAGS ?=
RUN_IMAGE   ?= var/default.qcow2
RUN_SIZE    ?= 10G
RUN_ADDR    ?= 127.0.0.1
RUN_PORT    ?= 10809

.PHONY: help build deps lint test run bench bench-scale fuzz clean

help: ## List the targets.
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

build: ## Build bin/qnbd and bin/qnbd-img (a cmd dir without Go files is skipped).
	@mkdir -p bin
	@for c in $(CMDS); do \
	  if ls cmd/$$c/*.go >/dev/null 2>&1; then \
	    echo "go build -o bin/$$c ./cmd/$$c"; \
	    $(GO) build -o bin/$$c ./cmd/$$c; \
	  else \
	    echo "build: skipping cmd/$$c: no Go files yet"; \
	  fi; \
	done

deps: ## Install the Debian packages and Go tools the tests need (only what is missing).
	@tools/deps.sh

lint: ## gofmt, go vet, staticcheck and go mod tidy must all be clean.
	@echo "gofmt -l ."; out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt: these files need formatting:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	staticcheck ./...

test: deps lint build ## deps + lint + build + go test -race ./...
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) $(TEST_FIRST) ./...

run: build ## Serve var/default.qcow2 (10 GiB, created if absent) on 127.0.0.1:10809.
	@test -x bin/qnbd || { echo "run: bin/qnbd was not built (cmd/qnbd has no Go files yet)"; exit 1; }
	@if [ ! -e $(RUN_IMAGE) ]; then \
	  test -x bin/qnbd-img || { echo "run: bin/qnbd-img was not built (cmd/qnbd-img has no Go files yet)"; exit 1; }; \
	  mkdir -p $(dir $(RUN_IMAGE)); \
	  echo "bin/qnbd-img create -f qcow2 $(RUN_IMAGE) $(RUN_SIZE)"; \
	  bin/qnbd-img create -f qcow2 $(RUN_IMAGE) $(RUN_SIZE); \
	fi
	@echo "Serving $(RUN_IMAGE) on nbd://$(RUN_ADDR):$(RUN_PORT) (Ctrl-C stops). Connect with:"
	@echo "  nbdinfo nbd://$(RUN_ADDR):$(RUN_PORT)"
	@echo "  qemu-io -f raw -c 'read -v 0 512' nbd://$(RUN_ADDR):$(RUN_PORT)"
	@echo "  qemu-img map -f raw --output=json nbd://$(RUN_ADDR):$(RUN_PORT)"
	@echo "  nbd-client $(RUN_ADDR) $(RUN_PORT) /dev/nbd0   (as root, needs the nbd kernel module)"
	exec bin/qnbd -t -b $(RUN_ADDR) -p $(RUN_PORT) -f qcow2 $(RUN_IMAGE)

bench: build ## fio over NBD against qnbd, qemu-nbd and nbdkit; table + var/bench/results.json.
	$(GO) run ./bench -out var/bench/results.json $(BENCH_FLAGS)

bench-scale: build ## Random 4k writes/reads at 1G..4T, qnbd vs qemu-nbd; table + var/bench/scale.json.
	$(GO) run ./bench -scale -out var/bench/scale.json $(BENCH_FLAGS)

fuzz: ## Run every Go fuzz target for FUZZTIME (default 30s) each.
	@FUZZTIME=$(FUZZTIME) tools/fuzz.sh

clean: ## Remove bin/ and var/ (including the default image).
	rm -rf bin var

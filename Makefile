# cartpanda-redtrack — every command a developer or CI needs. Tools install themselves into
# .tools/ (a git-ignored Python virtualenv): cargo-lambda, moto (DynamoDB), cfn-lint, SAM CLI.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TOOLS      := .tools
PY         := $(TOOLS)/bin/python
STAMP      := $(TOOLS)/.installed-v1
MOTO_PORT  ?= 5055
MOTO_URL   := http://127.0.0.1:$(MOTO_PORT)
MOTO_PID   := $(TOOLS)/moto-$(MOTO_PORT).pid
MOTO_LOG   := $(TOOLS)/moto-$(MOTO_PORT).log
EVENT      ?= events/paid-brl.json
export SAM_CLI_TELEMETRY := 0
export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)

# Test environment: the AWS SDK talks to moto with dummy credentials.
TEST_ENV := AWS_ENDPOINT_URL_DYNAMODB=$(MOTO_URL) AWS_ENDPOINT_URL_SQS=$(MOTO_URL) AWS_REGION=us-east-1 \
	AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true

STACK      ?= cartpanda-redtrack
# moto instances of their own for the arm64 check and the stack test (IAM enforcement there).
ARM64_MOTO_PORT ?= 5057
STACK_MOTO_PORT ?= 5056
# The program `make redrive` runs (the stack test points it at its own debug build of
# cartpanda-redtrack-admin).
ADMIN      ?= cargo run --quiet --release --bin cartpanda-redtrack-admin --

FUZZ_SECONDS ?= 60

# Where cargo puts what it builds: `target/` unless CARGO_TARGET_DIR (or a cargo config) says
# otherwise. Asked of cargo, evaluated only by the targets that use it.
TARGET_DIR = $(shell cargo metadata --format-version 1 --no-deps | python3 -c "import json, sys; print(json.load(sys.stdin)['target_directory'])")

.PHONY: sim sim-moto browser bench bench-reconcile fuzz redrive replay sam-build qemu arm64-check stack-test help tools test check fmt-check clippy unit lint moto-start moto-stop demo watch invoke build deploy deploy-cargo-lambda clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(STAMP):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check cargo-lambda 'moto[server]' cfn-lint aws-sam-cli
	touch $@

tools: $(STAMP) ## install cargo-lambda, moto, cfn-lint and SAM CLI into .tools/

test: tools browser ## everything CI checks: fmt, clippy, all tests against moto (and headless Chromium), template lint, the arm64 build, its check and the stack test
	$(MAKE) --no-print-directory fmt-check clippy
	$(MAKE) --no-print-directory moto-start
	set +e; $(TEST_ENV) cargo test --no-fail-fast 2>&1 | tee $(TOOLS)/test.log; status=$${PIPESTATUS[0]}; set -e; \
	  $(MAKE) --no-print-directory moto-stop; exit $$status
	$(MAKE) --no-print-directory lint sam-build arm64-check stack-test
	@awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i } } \
	  END { printf "tests: %d passed, %d failed\n", p, f }' $(TOOLS)/test.log

sim: ## the deterministic simulation of orders' lives (tests/sim.rs): SIMS=<n> histories (10,000) from SIM_BASE=<n> (0), SEED=<n> replays one and prints its trace
	@set +e; $(if $(SIMS),SIMS=$(SIMS)) $(if $(SIM_BASE),SIM_BASE=$(SIM_BASE)) $(if $(SEED),SEED=$(SEED)) cargo test --quiet --test sim -- --nocapture 2>&1 | grep -v '^{"'; exit $${PIPESTATUS[0]}

sim-moto: tools ## the simulation over the DynamoDB ledger in moto, with reconciliation (tests/sim_moto.rs): SIMS=<n> histories (200)
	$(MAKE) --no-print-directory moto-start
	set +e; $(TEST_ENV) $(if $(SIMS),SIMS_MOTO=$(SIMS)) cargo test --quiet --test sim_moto -- --nocapture 2>&1 | grep -v '^{"'; status=$${PIPESTATUS[0]}; set -e; \
	  $(MAKE) --no-print-directory moto-stop; exit $$status

sam-build: tools ## sam build as `make deploy` runs it: arm64, one program built once for every function
	@start=$$(date +%s); \
	$(TOOLS)/bin/sam build --template template.yaml --build-dir .aws-sam/build; \
	echo "sam build: $$(( $$(date +%s) - start )) s"

qemu: ## install qemu-user and the arm64 C library (Debian packages) when missing
	@if [ "$$(uname -m)" != aarch64 ] && { ! command -v qemu-aarch64 >/dev/null || [ ! -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; }; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing qemu-user and libc6-arm64-cross (apt-get)"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq qemu-user libc6-arm64-cross >/dev/null; \
	fi

browser: ## install Debian's chromium (headless, for the HTML report's test) when missing
	@if ! command -v chromium >/dev/null && ! command -v chromium-headless-shell >/dev/null && [ -z "$${REPORT_BROWSER:-}" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing chromium (apt-get)"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; \
	fi

arm64-check: tools qemu sam-build ## the arm64 bootstrap under qemu-user: a new conversion sent, its duplicate answered duplicate
	$(PY) scripts/arm64_check.py .aws-sam/build/BridgeFunction/bootstrap --moto-port $(ARM64_MOTO_PORT)

stack-test: tools qemu sam-build ## template.yaml stood up in moto (SAM translator, CloudFormation), the bridge and redrive functions run with their roles and environment
	cargo build --quiet --bin cartpanda-redtrack-admin
	$(PY) scripts/stack_test.py --build-dir .aws-sam/build --moto-port $(STACK_MOTO_PORT) --admin "$(TARGET_DIR)/debug/cartpanda-redtrack-admin"

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --all-targets -- -D warnings

lint: tools ## lint the SAM template (cfn-lint and sam validate --lint)
	$(TOOLS)/bin/cfn-lint template.yaml
	$(TOOLS)/bin/sam validate --lint --template template.yaml

moto-start: tools ## start moto (DynamoDB and SQS) on 127.0.0.1:$(MOTO_PORT), one request at a time
	@if [ -f $(MOTO_PID) ] && kill -0 $$(cat $(MOTO_PID)) 2>/dev/null; then echo "moto already running"; exit 0; fi; \
	$(PY) scripts/moto_serial.py -H 127.0.0.1 -p $(MOTO_PORT) >$(MOTO_LOG) 2>&1 & echo $$! > $(MOTO_PID); \
	for i in $$(seq 1 100); do \
	  if curl -s -o /dev/null $(MOTO_URL)/moto-api/; then echo "moto ready on $(MOTO_URL)"; exit 0; fi; sleep 0.1; \
	done; echo "moto did not start; see $(MOTO_LOG)"; cat $(MOTO_LOG); exit 1

moto-stop: ## stop moto
	@if [ -f $(MOTO_PID) ]; then kill $$(cat $(MOTO_PID)) 2>/dev/null || true; rm -f $(MOTO_PID); echo "moto stopped"; fi

demo: tools ## run the function under cargo lambda watch (dry run, moto as DynamoDB) on the sample events
	$(PY) scripts/demo.py --moto-port $(MOTO_PORT)

watch: tools ## run the function locally under cargo lambda watch, environment from .env.local
	@test -f .env.local || { cp .env.example .env.local; echo "created .env.local from .env.example: edit it"; }
	cargo lambda watch -A 127.0.0.1 -P 9000 --env-file .env.local

invoke: tools ## send one sample event to a running `make watch`: make invoke EVENT=events/x.json
	cargo lambda invoke cartpanda-redtrack -A 127.0.0.1 -P 9000 --data-file $(EVENT)

build: tools ## release build of the Lambda (x86_64; add ARCH=--arm64 for Graviton)
	cargo lambda build --release $(ARCH)

deploy: tools ## sam build + sam deploy (guided the first time, samconfig.toml after)
	$(TOOLS)/bin/sam build
	@if [ -f samconfig.toml ]; then $(TOOLS)/bin/sam deploy; else $(TOOLS)/bin/sam deploy --guided; fi

deploy-cargo-lambda: tools ## the other route: cargo lambda build --arm64 + cargo lambda deploy (see README)
	cargo lambda build --release --arm64
	cargo lambda deploy cartpanda-redtrack --env-file .env.deploy

replay: tools ## send the sample events to a deployed endpoint: make replay URL=https://.../cartpanda TOKEN=... [LIVE=1]
	@URL="$(URL)" TOKEN="$(TOKEN)" LIVE="$(LIVE)" $(PY) scripts/replay.py

redrive: tools ## move conversions from the DLQ back to the redrive queue: make redrive [STACK=cartpanda-redtrack]
	@outputs=$$($(TOOLS)/bin/sam list stack-outputs --stack-name $(STACK) --output json); \
	pick() { echo "$$outputs" | $(PY) -c "import json,sys; print(next(o['OutputValue'] for o in json.load(sys.stdin) if o['OutputKey']=='$$1'))"; }; \
	dlq=$$(pick RedriveDLQUrl); queue=$$(pick RedriveQueueUrl); \
	echo "moving messages from $$dlq to $$queue"; \
	$(ADMIN) redrive --from "$$dlq" --to "$$queue"

fuzz: tools ## fuzz webhook parsing, money parsing and template rendering, FUZZ_SECONDS each (nightly)
	@test -x $(TOOLS)/bin/cargo-fuzz || cargo install --locked --root $(TOOLS) cargo-fuzz
	@$(PY) scripts/fuzz_seeds.py
	@for target in webhook money template; do \
	  echo "== fuzz $$target for $(FUZZ_SECONDS) s"; \
	  cargo +nightly fuzz run -O $$target fuzz/corpus/$$target -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	    >$(TOOLS)/fuzz-$$target.log 2>&1 || { tail -n 40 $(TOOLS)/fuzz-$$target.log; echo "fuzz $$target FAILED: crash input in fuzz/artifacts/$$target"; exit 1; }; \
	  grep -E "^Done [0-9]+ runs" $(TOOLS)/fuzz-$$target.log | sed "s/^/   $$target: /"; \
	done

bench: tools ## performance figures (docs/performance.md): CPU per delivery, cold start, CPU per invocation, RSS, DynamoDB calls, zip size
	cargo lambda build --release --output-format zip --bin cartpanda-redtrack
	@target="$(TARGET_DIR)"; mkdir -p "$$target/bench" && rm -f "$$target/bench/bootstrap" && $(PY) -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1] + '/lambda/cartpanda-redtrack/bootstrap.zip').extract('bootstrap', sys.argv[1] + '/bench')" "$$target" && chmod +x "$$target/bench/bootstrap"
	cargo bench --bench delivery
	@target="$(TARGET_DIR)"; BENCH_BINARY="$$target/bench/bootstrap" BENCH_PYTHON=$(CURDIR)/$(PY) BENCH_JSON="$$target/bench/lambda.json" cargo bench --bench lambda
	@echo "deployment zip (cargo lambda build --release --output-format zip, x86_64): $$(stat -c %s "$(TARGET_DIR)/lambda/cartpanda-redtrack/bootstrap.zip") bytes"

bench-reconcile: tools ## reconciliation at scale (docs/performance.md): BENCH_SHOPS (200) shops x BENCH_ORDERS (50) orders against moto and local stand-ins, then BENCH_GROWTH (10)x more records in the table
	$(MAKE) --no-print-directory moto-start
	set +e; $(TEST_ENV) RUST_LOG=off cargo test --test bench_reconcile -- --ignored --nocapture 2>&1 | grep -v '^{'; status=$${PIPESTATUS[0]}; set -e; \
	  $(MAKE) --no-print-directory moto-stop; exit $$status

clean: moto-stop ## remove build output and local tools
	cargo clean
	rm -rf $(TOOLS) .aws-sam

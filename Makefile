# Bananastand — the two commands a new machine needs:
#   make serve   set up and serve the API on the embedded default
#   make test    set up and run the whole test suite (what CI runs); it needs the
#                local PostgreSQL and Redis and starts them if they are down, and
#                installs Debian's chromium for the console's browser tests

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test test-quick lint bench bench-all clean

# What `make lint`, `make test`, `make test-quick` and the pre-commit hook all run.
LINT = $(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

# torch is pinned to the CPU build these machines carry; on a GPU host install the
# torch build for your hardware before `pip install -e '.[diffusers]'`.
TORCH  ?= torch==2.13.0

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,gemini,openai,stripe,scale,s3]'
	touch $(STAMP)

$(VENV)/.installed-test: $(STAMP)
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[server,gemini,openai,stripe,diffusers,scale,s3,test]'
	touch $@

serve: $(STAMP)
	$(BIN)/bananastand serve

test: $(VENV)/.installed-test
	scripts/services-up
	scripts/browser-up
	$(LINT)
	$(BIN)/python -m pytest

# The inner loop, under two minutes: lint and the embedded unit tests (no real
# server, browser, PostgreSQL or Redis; see QUICK in CONTRIBUTING.md).
QUICK_TESTS = tests/test_client.py tests/test_client_package.py tests/test_catalog.py \
	tests/test_cli.py tests/test_docs.py tests/test_usage.py tests/web/test_usage_chart.py \
	tests/test_render.py tests/test_billing.py tests/test_auth.py \
	tests/test_api_generate.py tests/test_api_cancel.py tests/test_idempotency.py \
	tests/test_error_boundary.py tests/providers/test_backoff.py
test-quick: $(VENV)/.installed-test
	$(LINT)
	$(BIN)/python -m pytest -q -x -k "not scale-out" $(QUICK_TESTS)

lint: $(VENV)/.installed-test
	$(LINT)

# Bananastand beside its peers (a bare-framework floor, LiteLLM), in one run; needs
# Debian's wrk, and installs LiteLLM into bench/.peers (never into the project).
bench: $(VENV)/.installed-test
	scripts/services-up
	$(BIN)/python bench/bench_gateway.py

bench-all: bench
	$(BIN)/python bench/bench_render.py
	$(BIN)/python bench/bench_api.py
	$(BIN)/python bench/bench_diffusers.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache

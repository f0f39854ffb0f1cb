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

# torch is pinned to the CPU build these machines carry; on a GPU host install the
# torch build for your hardware before `pip install -e '.[diffusers]'`.
TORCH  ?= torch==2.13.0

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[gemini,openai,stripe,scale,s3]'
	touch $(STAMP)

$(VENV)/.installed-test: $(STAMP)
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[gemini,openai,stripe,diffusers,scale,s3,test]'
	touch $@

serve: $(STAMP)
	$(BIN)/bananastand serve

test: $(VENV)/.installed-test
	scripts/services-up
	scripts/browser-up
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# The inner loop: lint and the in-process tests (no real servers, embedded only), ~4 min.
test-quick: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -x --ignore=tests/e2e -k "not scale-out"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

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
	rm -rf $(VENV) data .pytest_cache

# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
DATA_DIR ?= ./data

.PHONY: run test reliability setup install install-dev fmt lint check-placeholders bench eval plots notebook ts-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files make re-runs instant while pyproject.toml is unchanged.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,eval]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
setup: install-dev

# Formatting and lint are habits, not chores: `make fmt` rewrites, `make lint` only checks
# (ruff, mypy strict on journal/actors/gateway, the placeholder ledger) and runs in .ci/run.
fmt: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: install-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python tools/check_placeholders.py

run: install
	DATA_DIR=$(DATA_DIR) $(BIN)/dpdau serve --host $(HOST) --port $(PORT)

# The TypeScript client's npm packages (clients/ts, locked by package-lock.json). Without npm the
# client's tests are skipped, loudly; .ci/run installs Node and requires them.
TS := clients/ts
$(TS)/node_modules/.installed: $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

ts-deps:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(TS)/node_modules/.installed; \
	else echo "*** npm not found: the TypeScript client tests will be SKIPPED (install Node >= 20 to run them) ***"; fi

test: install-dev ts-deps
	$(BIN)/python -m pytest -q

# The fault-injection suites CI runs in their own blocks (see .ci/run); minutes, not seconds.
reliability: install-dev
	$(BIN)/python -m pytest -q -m crash tests/e2e/test_crash_cycles.py
	$(BIN)/python -m pytest -q -m fuzz tests/e2e/test_openapi_fuzz.py
	$(BIN)/python -m pytest -q -m load tests/e2e/test_load.py

check-placeholders:
	$(PYTHON) tools/check_placeholders.py

bench: install-dev
	$(BIN)/python scripts/bench.py

eval: install-dev
	$(BIN)/python -m eval.run

plots: install-dev
	$(BIN)/python -m eval.run --quick

# The evaluation notebook, executed headlessly on the newest results under DATA_DIR
# (`make plots` and `make bench` write them); outputs are discarded, never committed.
notebook: install-dev
	DATA_DIR=$(abspath $(DATA_DIR)) $(BIN)/jupyter-execute --timeout=900 eval/notebooks/evaluation.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

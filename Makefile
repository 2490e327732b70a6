# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
DATA_DIR ?= ./data

.PHONY: run test install install-dev check-placeholders bench eval clean

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

run: install
	DATA_DIR=$(DATA_DIR) $(BIN)/dpdau serve --host $(HOST) --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest -q

check-placeholders:
	$(PYTHON) tools/check_placeholders.py

bench: install-dev
	$(BIN)/python scripts/bench.py

eval: install-dev
	$(BIN)/python -m eval.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Two entry points (see README): `make run` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned exactly: the CPU 2.13.0 wheel; a looser spec would pull CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/nodegraph run workflows/default.json --out outputs

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check nodegraph nodes ui tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

ui: $(STAMP)
	$(BIN)/nodegraph ui

clean:
	rm -rf $(VENV) outputs

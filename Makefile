# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: venv demo test lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[mpich,dev]"
	touch $@

demo: venv
	$(BIN)/distnn train --procs 3 --strategy ps-sync

lint: venv
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/pytest

bench: venv
	$(BIN)/python benchmarks/speed.py --rounds 3

clean:
	rm -rf $(VENV) runs bench-out .pytest_cache .ruff_cache

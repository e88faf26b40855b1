# Two commands for a fresh machine: `make demo` and `make test`.
# torch is pinned to the CPU wheel that lies on this machine's disk *before* the package is
# installed: the package itself asks only for torch>=2.4, which on a machine without torch would
# pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: setup demo test check bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,tensorboard,slurm,dask]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m genlab demo

test: setup
	$(PY) -m pytest -q

check: setup
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf $(VENV) runs .pytest_cache

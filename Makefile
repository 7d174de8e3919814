# Quantdesk: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint typecheck contracts ci bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel
	# llama-cpp-python compiles llama.cpp the first time (about 10 minutes); pip caches the wheel.
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) $(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/quantdesk

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

contracts: setup
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) benchmarks/startup.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Quantdesk: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint typecheck contracts ci bench package package-test clean

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

# The desktop bundle (packaging/README.md): dist/quantdesk/, about 40 s on 2 cores.
# STARTER=0 leaves the 253 MB starter model out.
PACKAGE_STAMP := $(VENV)/.package-installed
STARTER ?= 1

$(PACKAGE_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[package]'
	touch $(PACKAGE_STAMP)

package: $(PACKAGE_STAMP)
	$(PY) packaging/build.py $(if $(filter 0,$(STARTER)),--without-starter)

# Build, then run the bundle's own --self-test (not the source tree's).
package-test: package
	QT_QPA_PLATFORM=offscreen ./dist/quantdesk/quantdesk --self-test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist

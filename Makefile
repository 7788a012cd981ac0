# capsafe developer tasks. `make test` installs everything it needs into .venv and runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DB ?=

.DEFAULT_GOAL := check
.PHONY: check test lint dashboard benchmarks bench-import clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# light install: store, CLI, dashboard (no torch)
$(VENV)/.light: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# everything: CPU torch from the local wheel first (an unpinned torch pulls a CUDA build), then the extras
# llama.cpp is built for a generic x86-64 CPU: a native build can use instructions a VM does not allow
$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -q --no-cache-dir "llama-cpp-python[server]==0.3.36"
	$(BIN)/pip install -q -e ".[models,demo,importers,test,ray]"
	touch $@

# headless Chromium for the browser tests (Debian packages; Playwright's own download does not work offline)
/usr/bin/chromium:
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver

test: $(VENV)/.full /usr/bin/chromium
	$(BIN)/pytest -q

lint: $(VENV)/.full
	$(BIN)/ruff check capsafe_core tests bench scripts app.py pages setup.py
	$(BIN)/mypy capsafe_core

check: test lint

dashboard: $(VENV)/.light
	$(BIN)/capsafe serve $(if $(DB),--db $(DB),)

# rebuild data/benchmarks from ../shared/datasets
benchmarks: $(VENV)/.light
	$(BIN)/python scripts/build_benchmarks.py

bench-import: $(VENV)/.light
	$(BIN)/python bench/import.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

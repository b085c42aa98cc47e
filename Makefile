# speechpipe: the two commands of the README are `make demo` and `make test`; everything they
# need is installed here, from requirements.lock, into a project-local .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
HOME_DIR  ?= speechpipe_home
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
UV        := $(BIN)/uv
UV_PIN    := $(shell grep -m1 '^uv==' requirements.lock)
# TFX 1.16 installs on Python 3.9-3.10 only: find a 3.10 on PATH or under pyenv.
PYTHON310 ?= $(shell for p in python3.10 $$(pyenv root 2>/dev/null)/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONWARNINGS ?= ignore::FutureWarning

.PHONY: help env demo lint test test-fast bench lock clean

help:
	@echo "make demo   synthesise the demo corpus and run the pipeline on embedded defaults"
	@echo "make test   lint, then the whole test suite (installs the environment first)"
	@echo "make lint   ruff (format and lint) and the import contract of the package layers"
	@echo "make test-fast  the suite without end-to-end runs and learning tests (markers e2e, slow)"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make lock   re-resolve requirements.in into requirements.lock"

env: $(STAMP)

$(STAMP): requirements.lock setup.py
	@test -n "$(PYTHON310)" || { echo "error: Python 3.10 not found (TFX 1.16 needs 3.9-3.10); set PYTHON310=/path/to/python3.10" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON310) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/python -m pip install --quiet --disable-pip-version-check "$(UV_PIN)"
	# Bytecode compiled once here: every later process (Beam workers, tests' subprocesses) then
	# imports TensorFlow and Beam from .pyc, also where PYTHONDONTWRITEBYTECODE is set, which
	# otherwise recompiles them in every process.
	$(UV) pip sync --compile-bytecode --python $(BIN)/python requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	@touch $@

demo: $(STAMP)
	$(BIN)/speechpipe run --home $(HOME_DIR)

# The layers of docs/architecture.md, as an import-linter contract over the installed layout.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python .ci/import_contract.py

test: lint
	$(BIN)/python -m pytest tests

test-fast: lint
	$(BIN)/python -m pytest tests -m "not e2e and not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

lock: $(STAMP)
	$(UV) pip compile requirements.in --python-version 3.10 --universal --custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf $(HOME_DIR) build *.egg-info .pytest_cache

# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap uv when it is
# missing, install the locked dependencies into .venv and run.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --locked --no-progress

.PHONY: help setup demo test bench lint clean

help:
	@echo "make demo   set up and run the main job on the embedded default (SQLite, simulator)"
	@echo "make test   set up and run the whole test suite"
	@echo "make bench  set up and print the benchmark figures"
	@echo "make lint   ruff"

setup:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --locked --no-progress --quiet

demo: setup
	@bash tests/demo.sh

test: setup
	@$(RUN) pytest

bench: setup
	@$(RUN) python -m tests.bench

lint: setup
	@$(RUN) ruff check dispatcher tests
	@$(RUN) ruff format --check dispatcher tests

clean:
	rm -rf .venv var .pytest_cache .hypothesis

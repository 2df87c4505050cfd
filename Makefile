# Two commands for a fresh machine (no network needed beyond the package index):
#   make run    install, then train PaLoRA on the embedded MultiDigits data
#   make test   install, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: install
	$(BIN)/pareto-ray train --config jobs/configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf ray_results mlruns mlartifacts mlflow.db .pytest_cache

# Everything runs in a local virtual environment that `make install` builds from scratch.
# On a CPU-only machine torch comes from the CPU build; with a GPU, set TORCH to the build you want
# (e.g. `make install TORCH=torch`), or install it into .venv first: an importable torch is kept.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install test demo demo-full quality style benchmarks

$(BIN)/persyn-hf: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/persyn-hf

test: install
	$(BIN)/python -m pytest tests

demo: install
	$(BIN)/persyn-hf demo --config recipes/demo/config_demo.yaml

demo-full: install
	$(BIN)/persyn-hf demo --config recipes/demo/config_demo.yaml --full true

quality: install
	$(BIN)/ruff check persyn_hf tests benchmarks
	$(BIN)/ruff format --check persyn_hf tests benchmarks

style: install
	$(BIN)/ruff check --fix persyn_hf tests benchmarks
	$(BIN)/ruff format persyn_hf tests benchmarks

benchmarks: install
	for script in benchmarks/*.py; do $(BIN)/python $$script --json $${script%.py}.json || exit 1; done

# mesa-hf developer commands. `make setup` then `make test` on a fresh machine (Python >= 3.10, CPU).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint format benchmark demo

setup:  ## virtual environment with the CPU build of torch, then the package and its test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"

lint:
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

test: lint  ## lint, then the offline test suite; "no tests ran" (pytest exit 5) counts as a failure
	@HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

format:
	$(BIN)/ruff check --fix src tests benchmarks examples
	$(BIN)/ruff format src tests benchmarks examples

benchmark:
	$(BIN)/python benchmarks/inference.py

demo:  ## the main job: every stage on the synthetic world, fine-tuning, held-out evaluation, a depth picture
	PYTHON=$(BIN)/python examples/main_job.sh outputs/main-job

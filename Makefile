# mesa-hf developer commands. On a fresh machine `make demo` and `make test` each create the environment first
# when it is missing (Python >= 3.10, CPU); `make setup` does only that.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint format benchmark demo

setup: $(VENV)/.installed  ## virtual environment with the CPU build of torch, then the package and its test tools

# Rebuilt when missing or when pyproject.toml changes (new dependencies); the stamp is written last, so an
# interrupted set-up is redone.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --quiet -e ".[dev]"
	touch $@

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

test: lint  ## lint, then the offline test suite; "no tests ran" (pytest exit 5) counts as a failure
	@HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

format:
	$(BIN)/ruff check --fix src tests benchmarks examples
	$(BIN)/ruff format src tests benchmarks examples

benchmark: setup
	$(BIN)/python benchmarks/inference.py

demo: setup  ## the main job: every stage on the synthetic world, fine-tuning, held-out evaluation, a depth picture
	PYTHON=$(BIN)/python examples/main_job.sh outputs/main-job

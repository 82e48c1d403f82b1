# Everything a newcomer needs: `make demo` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mmtok-installed

.PHONY: install demo demo-probe test lint bench clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch and torchvision come as a pinned pair from pyproject.toml (the `models` extra), so pip
# cannot pick a torch whose torchvision is missing. The first install takes a few minutes.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing mmtok and its dependencies into $(VENV) (first time: a few minutes)..."
	$(BIN)/python -m pip install -qq -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  # the budget comparison: mmtok's main job
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/budget.sh

demo-probe: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check mmtok tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/probe.py
	$(BIN)/python benchmarks/layout.py
	$(BIN)/python benchmarks/tile.py
	$(BIN)/python benchmarks/budget.py
	$(BIN)/python benchmarks/dedup.py

clean:
	rm -rf $(VENV) examples/out build *.egg-info

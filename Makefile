# Everything a newcomer needs: `make demo` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Two stamps, one per install: the demo needs mmtok and matplotlib (header-only work, no torch);
# the tests need everything. Installing everything also satisfies the demo, so `make test`
# then `make demo` installs nothing more, and `make demo` then `make test` installs the rest.
DEMO_STAMP := $(VENV)/.mmtok-demo
DEV_STAMP  := $(VENV)/.mmtok-dev

.PHONY: install demo demo-probe demo-video test lint bench clean

install: $(DEV_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing mmtok for the demo into $(VENV) (no torch)..."
	$(BIN)/python -m pip install -qq -e '.[plot]'
	@touch $(DEMO_STAMP)

# torch and torchvision come as a pinned pair from pyproject.toml (the `models` extra), so pip
# cannot pick a torch whose torchvision is missing. The first install takes a few minutes.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing mmtok and every dependency into $(VENV) (first time: a few minutes)..."
	$(BIN)/python -m pip install -qq -e '.[dev]'
	@touch $(DEV_STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)  # the budget comparison: mmtok's main job
	@PATH="$(abspath $(BIN)):$$PATH" bash examples/budget.sh

demo-probe: $(DEMO_STAMP)
	@PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh

demo-video: $(DEMO_STAMP)  # sample-frames -> tile -> estimate-budget on generated clips
	@$(BIN)/python -c "import av, decord" 2>/dev/null || $(BIN)/python -m pip install -qq -e '.[plot,video]'
	@PATH="$(abspath $(BIN)):$$PATH" bash examples/video_demo.sh

test: $(DEV_STAMP)
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check mmtok tests benchmarks examples

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/probe.py
	$(BIN)/python benchmarks/layout.py
	$(BIN)/python benchmarks/tile.py
	$(BIN)/python benchmarks/budget.py
	$(BIN)/python benchmarks/dedup.py

clean:
	rm -rf $(VENV) examples/out build *.egg-info

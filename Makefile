# The two set-up commands of the README are `make demo` and `make test`; both build .venv when it
# is missing and reuse it otherwise.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.socialalign-installed
# torch first, pinned, so that pip keeps the CPU build that lies on disk instead of resolving CUDA.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: venv test test-multinode lint demo bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Every test, tests/multinode included (a real 3-node Ray cluster on this machine; docs/scaling.md).
test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The multi-node group alone.
test-multinode: venv
	$(BIN)/python -m pytest -m multinode tests/multinode $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

demo: venv
	$(BIN)/socialalign demo

bench: venv
	@set -e; for b in bench/*.py; do echo "== $$b"; $(BIN)/python "$$b"; done

clean-venv:
	rm -rf $(VENV)

# Two commands for a newcomer: `make run` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-record lint bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/gps

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The recorder's torch tests: a separate venv with the [record] extra (torch, transformers), so
# `make test` never downloads torch (torch==2.13.0: the CPU wheel this machine has on disk).
# Tiny random models built from transformers' config classes: no download of weights.
RVENV := .venv-record
RSTAMP := $(RVENV)/.installed
$(RSTAMP): pyproject.toml
	@test -x $(RVENV)/bin/python || $(PY) -m venv $(RVENV)
	$(RVENV)/bin/python -m pip install --quiet --upgrade pip
	$(RVENV)/bin/python -m pip install --quiet 'torch==2.13.0' -e '.[record]' 'pytest>=8'
	@touch $(RSTAMP)

test-record: $(RSTAMP)
	$(RVENV)/bin/python -m pytest tests/test_traces_record_torch.py tests/test_torch_pickle_torch.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV) $(RVENV)

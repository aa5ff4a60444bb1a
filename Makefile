# Two commands for a newcomer: `make run` and `make test`. Both create .venv on first use.
# `make run` installs only what a run needs (the base package); `make test` adds the dev extras
# (pytest, hypothesis, ruff and the joblib/Ray launchers the scale-out tests exercise). Each
# install step re-runs only when pyproject.toml changes; the dev install covers the run's.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test test-record lint bench clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	@touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[dev]'
	@touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/gps

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The recorder's torch tests: a separate venv with the [record] extra (torch, transformers), so
# `make test` never downloads torch (torch==2.13.0: the CPU wheel this machine has on disk).
# Tiny random models built from transformers' config classes: no download of weights.
RVENV := .venv-record
RSTAMP := $(RVENV)/.installed
$(RSTAMP): pyproject.toml
	@test -x $(RVENV)/bin/python || $(PY) -m venv $(RVENV)
	$(RVENV)/bin/python -m pip install --quiet --disable-pip-version-check 'torch==2.13.0' \
		-e '.[record]' 'pytest>=8'
	@touch $(RSTAMP)

test-record: $(RSTAMP)
	$(RVENV)/bin/python -m pytest tests/test_traces_record_torch.py tests/test_torch_pickle_torch.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(DEV_STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV) $(RVENV)

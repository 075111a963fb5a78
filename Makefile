# Two entry points do all set-up on a fresh machine (see README):
#   make estimate   installs ftplan (no torch) and plans a fine-tune of a bundled data set
#   make test       installs ftplan with the dev, train, modal, plot and keyring extras (CPU torch pinned) and runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := constraints/ci.txt

.PHONY: estimate test lint bench

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(CONSTRAINTS) $(VENV)/.base
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev,train,modal,plot,keyring]'
	touch $@

estimate: $(VENV)/.base
	$(VENV)/bin/ftplan estimate examples/chat.jsonl --model llama-3.1-8b --local RTX-4090

test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 tests

bench: $(VENV)/.dev
	$(PY) bench/calibration.py
	$(PY) bench/startup.py
	$(PY) bench/plan_speed.py

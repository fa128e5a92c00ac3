# The two commands of the README. Both create the venv first if it is missing
# ($PIT_DET_VENV, default .venv/; see tools/setup_env.sh).
VENV ?= $(or $(PIT_DET_VENV),.venv)
PY := $(VENV)/bin/python

.PHONY: env demo test lint
env:
	PIT_DET_VENV=$(VENV) bash tools/setup_env.sh

demo: env
	$(PY) tools/quickstart.py

test: env
	$(PY) -m pytest -q

lint: env
	$(VENV)/bin/ruff check .

# The two commands of the README. Both create the venv first if it is missing
# ($PIT_DET_VENV, default .venv/; see tools/setup_env.sh).
VENV ?= $(or $(PIT_DET_VENV),.venv)
PY := $(VENV)/bin/python

.PHONY: env demo test lint table5-toy
env:
	PIT_DET_VENV=$(VENV) bash tools/setup_env.sh

demo: env
	$(PY) tools/quickstart.py

# R50, ViT-S, ViT-S pyramid and PiT-S trained on the toy set with one recipe, then Table 5 (docs/analysis.md).
table5-toy: env
	$(PY) tools/table5_toy.py

test: env
	$(PY) -m pytest -q

lint: env
	$(VENV)/bin/ruff check .

# The two commands of the README. Both create .venv/ first if it is missing.
PY := .venv/bin/python

.PHONY: env demo test
env:
	bash tools/setup_env.sh

demo: env
	$(PY) tools/quickstart.py

test: env
	$(PY) -m pytest -q

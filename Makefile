# The two commands of the README. Both create the venv first if it is missing
# ($PIT_DET_VENV, default .venv/; see tools/setup/setup_env.sh).
VENV ?= $(or $(PIT_DET_VENV),.venv)
PY := $(VENV)/bin/python

.PHONY: env demo test test-fast test-gpu lint table5-toy
env:
	PIT_DET_VENV=$(VENV) bash tools/setup/setup_env.sh

demo: env
	$(PY) tools/quickstart.py

# R50, ViT-S, ViT-S pyramid and PiT-S trained on the toy set with one recipe, then Table 5 (docs/analysis.md).
table5-toy: env
	$(PY) tools/analysis/table5_toy.py

# The CPU suite, then the GPU tier where a CUDA GPU is visible. One pytest-xdist worker per core (at
# most 4: a worker holds up to 5 GB), each test file on one worker, so its fixtures are built once
# (a session fixture that files share is built by the first worker that needs it: tests/conftest.py),
# the longest files first (tests/conftest.py; --no-loadscope-reorder keeps that order); the 25
# slowest tests are listed at the end. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
test: env
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25
	@if $(PY) -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then $(MAKE) --no-print-directory test-gpu; fi

# The GPU tier (tests/gpu; docs/testing.md): the compiled Triton kernel and the toy detector on a CUDA
# GPU, in a pytest run of its own with Triton's interpreter off. Without a GPU each test says so and skips.
test-gpu: env
	env -u TRITON_INTERPRET PIT_DET_GPU_TESTS=1 $(PY) -m pytest -q tests/gpu

# Without the end-to-end runs of the tools and whole detectors (-m "not slow"), for development.
test-fast: env
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

# ruff's linter and its formatter's check (pyproject.toml: [tool.ruff.lint], [tool.ruff.format]).
lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

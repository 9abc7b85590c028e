# The two commands: `make demo` (the whole pipeline on the embedded default) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
export DAGSTER_HOME := $(CURDIR)/.dagster
export PTR_HOME ?= $(CURDIR)/.ptr
export OMP_NUM_THREADS ?= 1
DEMO_THREADS ?= 2
export TOKENIZERS_PARALLELISM := false
# Every `dagster` CLI command (job execute, asset materialize, dev) warns that it is "superseded by
# dg": a FutureWarning its decorator raises at click's call of the command. The project keeps the
# dagster CLI, so that notice alone is dropped; FutureWarnings raised anywhere else still show.
comma := ,
DAGSTER_CLI_NOTICE := ignore:Function:FutureWarning:click.core
export PYTHONWARNINGS := $(if $(PYTHONWARNINGS),$(PYTHONWARNINGS)$(comma))$(DAGSTER_CLI_NOTICE)
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
# where the CPU torch wheel is not already on a find-links path.
PIP_ARGS ?=

.PHONY: demo test test-fast test-gpu dev lint fmt clean

.venv/installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install $(PIP_ARGS) -e '.[dev,embeddings,bench]'
	# DeepSpeed's CPU communication op, compiled once into this venv (30-60 s), not on first training
	DS_ACCELERATOR=cpu TORCH_EXTENSIONS_DIR=$(CURDIR)/.venv/torch_extensions \
		$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	touch $@

# The instance template lives in instance/, not the root: `dagster dev` warns about a dagster.yaml
# in its working folder that is not DAGSTER_HOME.
$(DAGSTER_HOME)/dagster.yaml: instance/dagster.yaml
	mkdir -p $(DAGSTER_HOME) && cp instance/dagster.yaml $@

# The demo has the machine to itself: torch may use two threads (the tests keep one; the world's
# build pins its own count, WorldRecipe.torch_threads).
demo: .venv/installed $(DAGSTER_HOME)/dagster.yaml
	OMP_NUM_THREADS=$(DEMO_THREADS) .venv/bin/dagster job execute -m ptr_pipeline.definitions -j ptr_full_job -c ptr_pipeline/configs/console.yaml
	$(PY) -m ptr_pipeline report

test: .venv/installed
	.venv/bin/pytest -m "not gpu"

test-fast: .venv/installed
	.venv/bin/pytest -m "not gpu and not slow"

test-gpu: .venv/installed
	.venv/bin/pytest -m gpu

dev: .venv/installed $(DAGSTER_HOME)/dagster.yaml
	.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: .venv/installed
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports

fmt: .venv/installed
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

clean:
	rm -rf .ptr .dagster

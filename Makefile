# bertlab's two commands: `make demo` and `make test` do all the set-up on a fresh machine.
#
# Without an active virtual environment, one is created in .venv. The pinned torch is installed
# first, before anything that depends on torch, so pip never pulls a multi-GB CUDA build for a
# CPU machine (on a GPU machine, set TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0").

SHELL := /bin/bash
ENV_DIR := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
PYTHON := $(ENV_DIR)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(ENV_DIR)/.bertlab-installed
# The demo's data: the text CPython ships as its own documentation, unless CORPUS names files.
CORPUS ?=
DEMO_DIR ?= demo
SHARED_DATA ?= $(CURDIR)/../shared/data
# What the demo (tools/demo.sh) trains on its MLM-only samples with configs/tiny.yaml; the soak too.
DEMO_RECIPE := --model.objective=mlm --model.position_embedding=rotary --data.mlm_probability=0.4
PYTEST_ARGS ?=
# Test processes of `make test` (pytest-xdist; each test file in one of them, so a file's fixtures
# are built once). 0 runs the suite in this process, for a debugger or -s.
TEST_WORKERS ?= 2

.PHONY: install test lint format demo soak clean gpu-check gpu-wheels

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(PYTHON) || python3 -m venv $(ENV_DIR)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet "$(TORCH_SPEC)"
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP)
	BERTLAB_SHARED_DATA=$(SHARED_DATA) $(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(PYTHON) -m ruff check bertlab tools tests setup.py
	$(PYTHON) -m ruff format --check bertlab tools tests setup.py
	$(ENV_DIR)/bin/hadolint docker/Dockerfile

format: $(STAMP)
	$(PYTHON) -m ruff format bertlab tools tests setup.py
	$(PYTHON) -m ruff check --fix bertlab tools tests setup.py

demo: $(STAMP)
	CORPUS="$(CORPUS)" DEMO_DIR="$(DEMO_DIR)" PYTHON="$(PYTHON)" bash tools/demo.sh

# The long checks kept out of `make test`: a thousands-of-steps tiny run whose memory must stay
# flat (on the demo's samples, made first if missing), then the tests marked slow.
soak: $(STAMP)
	@test -f $(DEMO_DIR)/samples/train/meta.json || $(MAKE) demo
	$(PYTHON) tools/soak.py --output_dir runs/soak --overwrite "--overrides=$(DEMO_RECIPE)"
	BERTLAB_SHARED_DATA=$(SHARED_DATA) $(PYTHON) -m pytest -m slow $(PYTEST_ARGS)

# The GPU check (tools/gpu_check.py): on a GPU machine with its own torch stack, no network and no
# .venv, the image's python3 runs it (wheels of what the image lacks, from `make gpu-wheels` on a
# machine with a registry, are installed first from GPU_WHEELS). Where .venv exists it is used.
# `make gpu-check GPU_CHECK_ARGS="--device cpu --smoke --output_dir DIR"` runs it tiny on a CPU.
GPU_PYTHON ?= $(if $(wildcard $(PYTHON)),$(PYTHON),python3)
GPU_WHEELS ?= $(CURDIR)/.gpu-wheels
GPU_CHECK_ARGS ?= --output_dir runs/gpu-check --overwrite
GPU_PACKAGES := fire termcolor jsonargparse docstring-parser typeshed-client mwparserfromhell isal

gpu-check:
	@if ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1 && ! $(GPU_PYTHON) -c "import fire, jsonargparse, docstring_parser, typeshed_client, mwparserfromhell, isal" 2>/dev/null; then \
	  $(GPU_PYTHON) -m pip install --quiet --no-index --no-deps $(GPU_WHEELS)/*.whl; fi
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

# Wheels for the GPU image's Python (3.12, x86_64 Linux) of the packages it lacks.
gpu-wheels: $(STAMP)
	$(PYTHON) -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 \
	  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux_2_28_x86_64 -d $(GPU_WHEELS) $(GPU_PACKAGES)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

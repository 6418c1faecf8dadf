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
PYTEST_ARGS ?=

.PHONY: install test lint format demo soak clean

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(PYTHON) || python3 -m venv $(ENV_DIR)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet "$(TORCH_SPEC)"
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP)
	BERTLAB_SHARED_DATA=$(SHARED_DATA) $(PYTHON) -m pytest $(PYTEST_ARGS)

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
	$(PYTHON) tools/soak.py --output_dir runs/soak --overwrite
	BERTLAB_SHARED_DATA=$(SHARED_DATA) $(PYTHON) -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

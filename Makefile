# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Both create .venv (idempotently) and install what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test setup docs check-sync clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned, so nothing later can pull a newer (CUDA) build
$(VENV)/.installed: $(BIN)/python settings.ini setup.py
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/easyanimate generate "a red circle moving left" --out samples/

check-sync: setup
	bash scripts/check_sync.sh

test: setup
	bash scripts/test.sh

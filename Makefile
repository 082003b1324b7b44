# easyanimate: two commands for a fresh machine, `make demo` and `make test`.
# Both first set up .venv (idempotently: torch==2.13.0 unless one is importable, then `pip install -e ".[dev]"`).
# Use another environment (say one with a CUDA torch) with `make demo VENV=/path/to/env`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= a big red circle moving right
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export BIN

.PHONY: setup demo test docs readme export clean demo-model

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first (2.13.0, CPU build here), then the package with whatever torch is there held fixed, so that no
# dependency can drag in another (multi-GB CUDA) torch: pip picks versions of the others that work with it instead
$(VENV)/.installed: $(BIN)/python settings.ini setup.py
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-pin.txt
	$(BIN)/python -m pip install -q -e ".[dev]" -c $(VENV)/torch-pin.txt
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/easyanimate generate "$(PROMPT)" --out samples/ --gif

test: setup
	bash scripts/install_browser.sh
	bash scripts/test.sh

docs: setup
	OMP_NUM_THREADS=1 $(BIN)/python scripts/render_docs.py site --out _docs --execute

readme: setup
	$(BIN)/python scripts/render_docs.py meta --execute

export: setup
	$(BIN)/nbdev_export

clean: setup
	$(BIN)/nbdev_clean

# Performance: the benchmarks behind nbs/16_performance.ipynb (about half an hour on a loaded 2-core machine); results go
# to bench/results/ (json + md) and plots to nbs/images/perf_*.png. The denoiser is measured twice: wall-clock with 2
# threads, and CPU time with one thread (steady on a shared machine). MODEL=path/to/pipeline benchmarks another pipeline
# folder (default: the bundled demo model, or a stand-in of its size). On a GPU machine: python bench/bench_gpu.py
.PHONY: bench
bench: setup
	$(BIN)/python bench/bench_transformer.py
	$(BIN)/python bench/bench_transformer.py --threads 1 --clock cpu --rounds 5 --no-memory --compile --out transformer_1thread --plot nbs/images/perf_denoiser_1thread.png
	$(BIN)/python bench/bench_kernels.py
	$(BIN)/python bench/bench_pipeline.py --threads 1 --clock cpu $(if $(MODEL),--model $(MODEL),--sweep-frames 8,16,32,64)
	$(BIN)/python bench/bench_training.py --threads 1 --clock cpu $(if $(MODEL),--model $(MODEL))
	$(BIN)/python bench/bench_latent_cache.py
	$(BIN)/python bench/bench_step_cache.py

# The bundled demo model, trained from nothing on this machine (82 min measured on an AVX2-only 2-core machine; nbs/13_demo_model.ipynb):
# data, VAE, the four `easyanimate train` stages, evaluation of every mode; the result replaces easyanimate/demo_model/.
demo-model: setup
	bash scripts/train_demo.sh

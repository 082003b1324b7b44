#!/usr/bin/env bash
# The whole test suite: sync checks, every notebook, end-to-end tests.
set -euo pipefail
BIN=${BIN:-.venv/bin}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bash scripts/check_sync.sh
$BIN/nbdev_test --n_workers 2 --do_print
$BIN/python -m pytest -q tests

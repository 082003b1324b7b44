#!/usr/bin/env bash
# The whole test suite: `make test` runs it, and `.ci/run` runs `make test`.
# Every step runs even when an earlier one fails, so one run reports every problem; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
docs=$(mktemp -d); trap 'rm -rf "$docs"' EXIT
passed=0; failed=(); start=$SECONDS

step() {
  local name=$1 t=$SECONDS; shift
  echo; echo "=== $name"
  if "$@"; then passed=$((passed+1)); echo "--- ok: $name ($((SECONDS-t))s)"
  else failed+=("$name"); echo "--- FAILED: $name ($((SECONDS-t))s)"; fi
}

step "easyanimate/ and notebooks in sync (nbdev_export, nbdev_clean)" bash scripts/check_sync.sh
step "sidebar, chapter list and README.md match the notebooks" $BIN/python scripts/render_docs.py meta --check
step "documentation site builds (saved outputs)" $BIN/python scripts/render_docs.py site --out "$docs"
export EASYANIMATE_DOCS="$docs"   # the browser tests (tests/test_browser.py) check this build instead of making another
# two notebooks at a time, one torch thread each: on 2 cores that beat 1 worker, and 2 workers of 2 threads each
step "every notebook runs (nbdev_test)" env OMP_NUM_THREADS="${NB_THREADS:-1}" $BIN/nbdev_test --n_workers "${NB_WORKERS:-2}" --timing
step "end-to-end tests (pytest tests/)" $BIN/python -m pytest -q tests

echo; echo "=== $((SECONDS-start))s in all"
for f in "${failed[@]}"; do echo "FAILED: $f"; done
echo "steps: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} = 0 ]

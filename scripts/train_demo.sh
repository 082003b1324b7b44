#!/usr/bin/env bash
# Train the bundled demo model from scratch on a CPU (82 min measured on an AVX2-only 2-core machine) and install it as package data:
#   bash scripts/train_demo.sh                  # work in demo_work/, write easyanimate/demo_model/
#   WORK=/tmp/dm OUT=/tmp/dm_model bash scripts/train_demo.sh
# Every step is recorded in $WORK/recipe.json; re-running skips finished steps and resumes an interrupted stage.
# The stages are `easyanimate train --config configs/demo_stage{1_image,2_motion,3_video,4_inpaint}.yaml` (see nbs/13_demo_model.ipynb).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
exec "${BIN:-.venv/bin}/python" -m easyanimate.demo_model --work "${WORK:-demo_work}" --out "${OUT:-easyanimate/demo_model}" "$@"

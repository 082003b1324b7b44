#!/usr/bin/env bash
# Fails when the exported package or the notebooks are not what nbdev_export / nbdev_clean would make them.
set -euo pipefail
BIN=${BIN:-.venv/bin}
snap() { find "$1" -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 md5sum; }
before=$(snap easyanimate); $BIN/nbdev_export; after=$(snap easyanimate)
if [ "$before" != "$after" ]; then
  echo "FAIL: easyanimate/ is out of sync with nbs/ (run nbdev_export and commit):"; diff <(echo "$before") <(echo "$after") || true; exit 1
fi
before=$(snap nbs); $BIN/nbdev_clean; after=$(snap nbs)
if [ "$before" != "$after" ]; then
  echo "FAIL: notebooks are not clean (run nbdev_clean and commit):"; diff <(echo "$before") <(echo "$after") || true; exit 1
fi
echo "sync: package and notebooks are clean"

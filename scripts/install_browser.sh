#!/usr/bin/env bash
# Chromium for the browser tests (tests/test_browser.py): Debian's `chromium` package, installed once with apt-get.
# Idempotent and never fatal: without a browser those tests are skipped (on CI, where CI is set, they fail instead).
set -uo pipefail
found() { for exe in chromium chromium-browser google-chrome; do command -v "$exe" && return 0; done; return 1; }

if exe=$(found); then echo "browser: $exe ($("$exe" --version 2>/dev/null | head -1))"; exit 0; fi
if ! command -v apt-get >/dev/null; then
  why="no apt-get on this system (install Chromium with your package manager)"
elif [ "$(id -u)" = 0 ]; then sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n)
else why="not root and no password-less sudo (run: sudo apt-get install chromium)"
fi
if [ -z "${why:-}" ]; then
  echo "browser: installing Debian's chromium for the browser tests (apt-get install chromium)"
  if "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null && exe=$(found); then
    echo "browser: $exe ($("$exe" --version 2>/dev/null | head -1))"; exit 0
  fi
  why="apt-get install chromium failed (see above)"
fi
echo "browser: no Chromium: $why; the browser tests will be skipped (on CI they fail)"
exit 0

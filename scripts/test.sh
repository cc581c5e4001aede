#!/usr/bin/env bash
# Set everything up, then check the code (ruff, the import contracts) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Browser tests drive Debian's chromium through Playwright (executable_path); nothing is downloaded at run time.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: chromium could not be installed; the browser tests will skip and say so" >&2
fi
.venv/bin/ruff check --quiet src tests bench
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"

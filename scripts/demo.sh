#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default model (SmolLM2-135M-Instruct).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sftpipe render --input examples/support_sample.jsonl --output out/rendered.jsonl "$@"

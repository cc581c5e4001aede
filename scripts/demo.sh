#!/usr/bin/env bash
# Set everything up, then run the main job: the Harbor demo end to end on the embedded default model
# (SmolLM2-135M-Instruct): generate -> curate -> train (SFT) -> eval -> DPO -> eval, then report.html and doctor.
# Extra args go to `sftpipe demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sftpipe demo --out demo-out "$@"

#!/usr/bin/env bash
# Gem-Miner's score mining on this CPU: burn-flex against PyTorch doing the same work.
# Uses the torch 2.9.0 of .venv-torch (scripts/setup-tch.sh installs it). A benchmark, never a test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p lottery-gem-miner --bench mining_step 2>/dev/null | grep '^mining'
if [ ! -x .venv-torch/bin/python ]; then
  bash scripts/setup-tch.sh
fi
.venv-torch/bin/python benches/torch_mining.py "$(nproc)"

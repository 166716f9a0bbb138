#!/usr/bin/env bash
# Gem-Miner's score mining on this CPU: burn-flex against PyTorch doing the same work.
# Installs torch from PyPI into .venv-bench on first use. A benchmark, never a test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p lottery-gem-miner --bench mining_step 2>/dev/null | grep '^mining'
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q torch
fi
.venv-bench/bin/python benches/torch_mining.py "$(nproc)"

#!/usr/bin/env bash
# One training step on this CPU: burn-flex (plain, simd, simd+rayon) against PyTorch.
# Installs torch from PyPI into .venv-bench on first use. A benchmark, never a test.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
for features in "" "simd" "simd,rayon"; do
  echo "# burn-flex features: ${features:-none}" >&2
  cargo bench -q -p lottery-train --bench train_step ${features:+--features $features} 2>/dev/null | grep '^step'
done
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q torch
fi
.venv-bench/bin/python benches/torch_step.py "$threads"

#!/usr/bin/env bash
# One training step on this CPU: burn-flex (plain, simd, simd+rayon) against PyTorch.
# Uses the torch 2.9.0 of .venv-torch (scripts/setup-tch.sh installs it). A benchmark, never a test.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
for features in "" "simd" "simd,rayon"; do
  echo "# burn-flex features: ${features:-none}" >&2
  cargo bench -q -p lottery-train --bench train_step ${features:+--features $features} 2>/dev/null | grep '^step'
done
if [ ! -x .venv-torch/bin/python ]; then
  bash scripts/setup-tch.sh
fi
.venv-torch/bin/python benches/torch_step.py "$threads"

#!/usr/bin/env bash
# SynFlow, 100 rounds on VGG-16 at CIFAR shape: burn-flex (simd, rayon) against PyTorch doing the
# same computation on this CPU, and their ratio. Uses the torch 2.9.0 of .venv-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
ours=$(cargo bench -q -p lottery-plugins --bench synflow --features simd,rayon 2>/dev/null | grep '^synflow' | tee /dev/stderr | tail -1)
if [ ! -x .venv-torch/bin/python ]; then
  bash scripts/setup-tch.sh
fi
theirs=$(.venv-torch/bin/python benches/torch_synflow.py "$(nproc)" | tee /dev/stderr | tail -1)
seconds() { sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$1"; }
echo "synflow vgg-16: lottery $(seconds "$ours") s, PyTorch $(seconds "$theirs") s, lottery/PyTorch time ratio $(python3 -c "print(round($(seconds "$ours")/$(seconds "$theirs"), 2))")"

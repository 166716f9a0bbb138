#!/usr/bin/env bash
# GraSP's scores against PyTorch's autograd double backward (Synaptic-Flow's GraSP) on the same
# weights and batch: configs/parity/grasp-lenet-300-100.toml. A parity check, never a test.
# Uses the torch 2.9.0 of .venv-torch (scripts/setup-tch.sh), adding numpy and safetensors to it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p lottery-cli
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
config=configs/parity/grasp-lenet-300-100.toml
./target/release/lottery export-weights "$config" --out "$out/weights.safetensors"
./target/release/lottery score "$config" --out "$out/scores.safetensors"
if [ ! -x .venv-torch/bin/python ]; then
  bash scripts/setup-tch.sh
fi
if ! .venv-torch/bin/python -c 'import numpy, safetensors' 2>/dev/null; then
  .venv-torch/bin/python -m pip install -q --disable-pip-version-check numpy safetensors
fi
.venv-torch/bin/python benches/torch_grasp.py "$out/weights.safetensors" "$out/scores.safetensors" \
  /usr/share/datasets/fashion-mnist 256

#!/usr/bin/env bash
# GraSP's scores against PyTorch's autograd double backward (Synaptic-Flow's GraSP) on the same
# weights and batch: configs/parity/grasp-lenet-300-100.toml. A parity check, never a test.
# Installs torch and safetensors into .venv-bench on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p lottery-cli
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
config=configs/parity/grasp-lenet-300-100.toml
./target/release/lottery export-weights "$config" --out "$out/weights.safetensors"
./target/release/lottery score "$config" --out "$out/scores.safetensors"
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
.venv-bench/bin/python -c "import torch, safetensors" 2>/dev/null || .venv-bench/bin/pip install -q torch safetensors numpy
.venv-bench/bin/python benches/torch_grasp.py "$out/weights.safetensors" "$out/scores.safetensors" \
  /usr/share/datasets/fashion-mnist 256

#!/usr/bin/env bash
# Installs PyTorch 2.9.0 from PyPI into the project-local virtual environment .venv-torch, for the
# LibTorch backend (`--features tch`): torch-sys 0.22 builds against the libtorch inside that wheel
# (LIBTORCH_USE_PYTORCH=1 with the venv's python first on PATH). The Linux wheel brings its CUDA
# libraries with it: several GB to download and about 7 GB on disk. Safe to run again: it does
# nothing when torch 2.9.0 is already there. `just build-tch` then builds with it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-torch
want=2.9.0

have=""
if [ -x "$venv/bin/python" ]; then
  have=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
fi
if [ "$have" != "$want" ]; then
  need_gb=12
  free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
  if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "setup-tch: need about ${need_gb} GB free here for torch==$want (download and install), have $((free_kb / 1024 / 1024)) GB" >&2
    exit 1
  fi
  echo "setup-tch: installing torch==$want from PyPI into $venv (several GB, once)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$want"
fi

echo "setup-tch: torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') in $venv"

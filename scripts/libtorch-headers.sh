#!/usr/bin/env bash
# Prints a libtorch 2.9.0 directory (include/ and lib/) for compile-checking the LibTorch backend
# (`just test`'s `cargo check --features lottery-core/tch`): the torch of .venv-torch when
# scripts/setup-tch.sh installed it, otherwise the torch==2.9.0 wheel alone from PyPI, without its
# CUDA dependencies (about 0.9 GB to download, into vendor/libtorch-headers once). That wheel's
# libraries cannot be loaded without those dependencies, so it serves to compile, not to link or
# run; `just build-tch` installs the whole of it. Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

want=2.9.0
venv_torch=$(ls -d .venv-torch/lib/python3*/site-packages/torch 2>/dev/null | head -n 1 || true)
is_wanted() { grep -q "^__version__ = '$want" "$1/version.py" 2>/dev/null && [ -d "$1/include" ] && [ -d "$1/lib" ]; }
if [ -n "$venv_torch" ] && is_wanted "$venv_torch"; then
  echo "$PWD/$venv_torch"
  exit 0
fi

dir=vendor/libtorch-headers
if ! is_wanted "$dir/torch"; then
  echo "libtorch-headers: installing the torch==$want wheel without its dependencies into $dir" >&2
  rm -rf "$dir.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --target "$dir.tmp" "torch==$want" >&2
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
fi
is_wanted "$dir/torch" || {
  echo "libtorch-headers: $dir does not hold torch $want" >&2
  exit 1
}
echo "$PWD/$dir/torch"

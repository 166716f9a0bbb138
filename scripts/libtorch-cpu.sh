#!/usr/bin/env bash
# Prints a libtorch 2.9.0 directory (include/ and lib/) that builds and runs the LibTorch backend on
# the CPU, for `just test`: build with LIBTORCH set to it, run with LD_LIBRARY_PATH=<it>/lib.
# It is the torch of .venv-torch when scripts/setup-tch.sh installed it; otherwise the torch==2.9.0
# wheel from PyPI without its dependencies, plus the only two CUDA libraries that its CPU library
# loads (the CUDA runtime and CUPTI, at the versions torch 2.9.0 pins), without the wheel's CUDA
# libraries so that nothing links them: about 0.9 GB to download, 0.7 GB kept in
# vendor/libtorch-cpu, fetched once. Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

want=2.9.0
venv_torch=$(ls -d .venv-torch/lib/python3*/site-packages/torch 2>/dev/null | head -n 1 || true)
is_wanted() { grep -q "^__version__ = '$want" "$1/version.py" 2>/dev/null && [ -d "$1/include" ] && [ -d "$1/lib" ]; }
if [ -n "$venv_torch" ] && is_wanted "$venv_torch"; then
  echo "$PWD/$venv_torch"
  exit 0
fi

dir=vendor/libtorch-cpu
# Written last: a directory without it is an interrupted install.
done_mark=$dir/torch/lib/.cpu-only
if ! { is_wanted "$dir/torch" && [ -f "$done_mark" ]; }; then
  echo "libtorch-cpu: fetching the torch==$want wheel and the CUDA runtime and CUPTI it loads into $dir" >&2
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp/wheels"
  python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir --no-deps --only-binary=:all: \
    --dest "$dir.tmp/wheels" "torch==$want" nvidia-cuda-runtime-cu12==12.8.90 nvidia-cuda-cupti-cu12==12.8.90 >&2
  # Unpacked file by file, leaving out the wheel's CUDA libraries (torch-sys links libtorch_cuda when
  # it finds it, and that library needs gigabytes of CUDA), each wheel deleted once unpacked: the
  # wheels and the CPU part, 1.3 GB at the most, never the whole unpacked wheel (`pip install` and
  # deleting the CUDA part afterwards took 2.6 GB).
  python3 - "$dir.tmp" >&2 <<'PY'
import glob, os, re, sys, zipfile

out = sys.argv[1]
cuda_only = re.compile(r"torch/lib/(libtorch_cuda.*|libc10_cuda|libtorch_nvshmem|libcaffe2_nvrtc)\.so")
for wheel in sorted(glob.glob(os.path.join(out, "wheels", "*.whl"))):
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if cuda_only.fullmatch(member.filename):
                continue
            path = archive.extract(member, out)
            mode = member.external_attr >> 16
            if mode:
                os.chmod(path, mode & 0o777)
    os.remove(wheel)
PY
  rmdir "$dir.tmp/wheels"
  touch "$dir.tmp/torch/lib/.cpu-only"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
fi
is_wanted "$dir/torch" || {
  echo "libtorch-cpu: $dir does not hold torch $want" >&2
  exit 1
}
echo "$PWD/$dir/torch"

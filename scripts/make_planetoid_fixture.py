"""Writes the small Planetoid-format fixtures of lottery-data's tests (run once; needs numpy and
scipy): the same 12-node graph twice, as Python 2 wrote the original files (protocol 2, byte
strings, the old module paths) in `tiny/` and as today's Python 3 pickles it in `tiny3/`.

Graph: 12 nodes, 5 features, 3 classes; x/y hold nodes 0-2 (the training nodes), allx/ally nodes
0-7; the test index lists 10, 8, 11 in that order, so node 9 lies in the test range without being
listed (CiteSeer's isolated nodes): zero features, label 0.

    python3 scripts/make_planetoid_fixture.py crates/lottery-data/tests/fixtures/planetoid
"""

import collections
import os
import pickle
import struct
import sys

import numpy as np
import scipy.sparse as sp


def features_of(node):
    row = np.zeros(5, dtype=np.float32)
    row[node % 5] = 1.0
    row[(node * 2 + 1) % 5] = 2.0
    return row


def label_of(node):
    return node % 3


def one_hot(nodes):
    y = np.zeros((len(nodes), 3), dtype=np.int32)
    for i, n in enumerate(nodes):
        y[i, label_of(n)] = 1
    return y


class Python2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 pickled str (SHORT_BINSTRING / BINSTRING) and names the modules
    as Python 2 era numpy and scipy did."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "")
        name = name or obj.__qualname__
        renames = {
            "numpy._core.multiarray": "numpy.core.multiarray",
            "numpy._core.numeric": "numpy.core.numeric",
            "scipy.sparse._csr": "scipy.sparse.csr",
            "builtins": "__builtin__",
        }
        module = renames.get(module, module)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global


def main(out):
    graph = collections.defaultdict(list)
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (8, 10), (10, 11),
             (11, 0), (9, 1), (2, 2)]
    for u, v in edges:
        graph[u].append(v)
        graph[v].append(u)
    test_index = [10, 8, 11]
    objects = {
        "x": sp.csr_matrix(np.stack([features_of(n) for n in range(3)])),
        "y": one_hot(range(3)),
        "allx": sp.csr_matrix(np.stack([features_of(n) for n in range(8)])),
        "ally": one_hot(range(8)),
        "tx": sp.csr_matrix(np.stack([features_of(n) for n in test_index])),
        "ty": one_hot(test_index),
        "graph": graph,
    }
    for folder, dump in [
        ("tiny", lambda o, f: Python2Pickler(f, protocol=2).dump(o)),
        ("tiny3", lambda o, f: pickle.dump(o, f, protocol=4)),
    ]:
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        for part, obj in objects.items():
            with open(os.path.join(out, folder, f"ind.tiny.{part}"), "wb") as f:
                dump(obj, f)
        with open(os.path.join(out, folder, "ind.tiny.test.index"), "w") as f:
            f.write("".join(f"{i}\n" for i in test_index))


if __name__ == "__main__":
    main(sys.argv[1])

"""GraSP in PyTorch as Synaptic-Flow computes it, on the weights and batch that `lottery score`
used, and the agreement of the two. LeNet-300-100 in eval mode, float64: g = ∇L of the mean
cross-entropy of logits / 200 (no graph), then the gradient of g_stopped · ∇L taken with
create_graph=True (autograd's double backward), score θ ⊙ Hg divided by |Σ θ ⊙ Hg| + 1e-10,
over the weights of the linear layers.

usage: torch_grasp.py WEIGHTS SCORES DATA_ROOT IMAGES"""
import gzip
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

weights_path, scores_path, root, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4 : 4 + 4 * dims])
    return np.frombuffer(raw[4 + 4 * dims :], dtype=np.uint8).reshape(shape)


images = idx(f"{root}/train-images-idx3-ubyte.gz")[:count].astype(np.float32) / 255.0
labels = idx(f"{root}/train-labels-idx1-ubyte.gz")[:count].astype(np.int64)
# The project normalises with the mean and std of the training subset it loads.
images = (images - images.astype(np.float64).mean()) / images.astype(np.float64).std()
x = torch.tensor(images.reshape(count, -1), dtype=torch.float64)
y = torch.tensor(labels)

w = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in load_file(weights_path).items()}
layers = ["fc_layers.0", "fc_layers.1", "fc"]
weights = [w[f"{l}.weight"] for l in layers]


def loss():
    h = x
    for i, l in enumerate(layers):
        h = F.linear(h, w[f"{l}.weight"], w[f"{l}.bias"])
        if i + 1 < len(layers):
            h = F.relu(h)
    return F.cross_entropy(h / 200.0, y)


stopped = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss(), weights)])
grads = torch.autograd.grad(loss(), weights, create_graph=True)
(stopped * torch.cat([g.reshape(-1) for g in grads])).sum().backward()
theirs = {f"{l}.weight": (p.grad * p.data).detach() for l, p in zip(layers, weights)}
norm = torch.abs(torch.sum(torch.cat([s.flatten() for s in theirs.values()]))) + 1e-10
theirs = {k: v / norm for k, v in theirs.items()}

ours = {k: torch.tensor(v, dtype=torch.float64) for k, v in load_file(scores_path).items()}
names = [f"{l}.weight" for l in layers]
flat_ours = torch.cat([ours[n].flatten() for n in names])
flat_theirs = torch.cat([theirs[n].flatten() for n in names])
k = flat_theirs.numel() // 100
top_ours = set(torch.topk(flat_ours, k).indices.tolist())
top_theirs = set(torch.topk(flat_theirs, k).indices.tolist())
overlap = len(top_ours & top_theirs) / k
worst = 0.0
for n in names:
    gap = (ours[n] - theirs[n]).abs().max() / theirs[n].abs().max()
    worst = max(worst, gap.item())
    print(f"{n}: max |ours − PyTorch| / max |PyTorch| = {gap.item():.2e}")
print(f"grasp lenet-300-100: top-1% overlap {overlap * 100:.2f}% of {k}, worst relative gap {worst:.2e}")

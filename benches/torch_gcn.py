"""One GCN epoch in PyTorch on this CPU, the same work as the Rust benchmark
crates/lottery-gcn/benches/gcn_epoch.rs on the same graph (the JSON it writes): the 2-layer
bias-free GCN at 512 hidden units with the same sparse aggregation, Â h = D̃^-½ (A + I) D̃^-½ h
as a gather of the source rows and a scatter-add (index_add_) into the targets, one Adam step
(dropout 0.5 on the hidden layer, cross-entropy on the training nodes, weight decay 5e-4) and the
evaluation forward pass on the validation and test nodes. Prints a line in the Rust form.

usage: torch_gcn.py THREADS GRAPH_JSON"""
import json
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
g = json.load(open(sys.argv[2]))
HIDDEN, EPOCHS, CHUNKS = 512, 10, 5
n = g["nodes"]
edges = torch.tensor(g["edges"], dtype=torch.long)
src = torch.cat([edges[:, 0], edges[:, 1]])
dst = torch.cat([edges[:, 1], edges[:, 0]])
x = torch.tensor(g["features"], dtype=torch.float32).reshape(n, g["feature_dim"])
y = torch.tensor(g["labels"], dtype=torch.long)
train, val, test = (torch.tensor(g[k], dtype=torch.long) for k in ("train", "val", "test"))
w = torch.ones(src.shape[0])


def aggregate(h):
    degree = torch.ones(n).index_add_(0, dst, w)
    d = degree.clamp_min(1e-12).pow(-0.5)
    coef = w * d[src] * d[dst]
    own = h * (d * d).unsqueeze(1)
    return own + torch.zeros_like(h).index_add_(0, dst, h[src] * coef.unsqueeze(1))


bound0, bound1 = 1 / g["feature_dim"] ** 0.5, 1 / HIDDEN ** 0.5
w0 = torch.empty(HIDDEN, g["feature_dim"]).uniform_(-bound0, bound0).requires_grad_()
w1 = torch.empty(g["classes"], HIDDEN).uniform_(-bound1, bound1).requires_grad_()
opt = torch.optim.Adam([w0, w1], lr=0.01, weight_decay=5e-4)


def forward(training):
    h = torch.relu(aggregate(x) @ w0.T)
    if training:
        h = F.dropout(h, 0.5)
    return aggregate(h) @ w1.T


chunk_ms = []
for chunk in range(CHUNKS + 1):
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        opt.zero_grad()
        logits = forward(True)
        loss = F.cross_entropy(logits[train], y[train])
        (logits[train].argmax(1) == y[train]).float().mean().item()
        loss.backward()
        opt.step()
        loss.item()
        with torch.no_grad():
            logits = forward(False)
            (logits[val].argmax(1) == y[val]).float().mean().item()
            F.cross_entropy(logits[test], y[test]).item()
            (logits[test].argmax(1) == y[test]).float().mean().item()
    if chunk > 0:
        chunk_ms.append((time.perf_counter() - t0) * 1e3 / EPOCHS)
chunk_ms.sort()
print(f"gcn sbm hidden={HIDDEN} median_ms={chunk_ms[len(chunk_ms) // 2]:.2f} min_ms={chunk_ms[0]:.2f} backend=pytorch-{torch.__version__}_threads{torch.get_num_threads()}")

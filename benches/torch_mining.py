"""Gem-Miner's score mining in PyTorch on this CPU, as the reference (`hc_iter`) computes it:
LeNet-300-100 with frozen weights, one score per weight in [0, 1], forward with the score rounded
at 0.5 times the flag (straight-through gradient), L2 penalty 7e-6 on the scores, SGD 0.1 with
momentum 0.9 on the scores, clamp to [0, 1]; batch 128, 50 steps an epoch, 4 epochs, each epoch
ending as the Rust benchmark's does (scores to NumPy, the rounded net's accuracy on 128 images).
Prints a line in the same form as `cargo bench -p lottery-gem-miner --bench mining_step`."""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
torch.manual_seed(0)
BATCH, STEPS = 128, 50


class Round(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores):
        return (scores > 0.5).float()

    @staticmethod
    def backward(ctx, g):
        return g


class SubnetLinear(nn.Linear):
    def __init__(self, i, o):
        super().__init__(i, o)
        self.weight.requires_grad = False
        self.bias.requires_grad = False
        self.scores = nn.Parameter(torch.rand_like(self.weight))
        self.register_buffer("flag", torch.ones_like(self.weight))

    def forward(self, x):
        return F.linear(x, self.weight * (Round.apply(self.scores) * self.flag), self.bias)


class LeNet300(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([SubnetLinear(784, 300), SubnetLinear(300, 100), SubnetLinear(100, 10)])

    def forward(self, x):
        x = x.flatten(1)
        for i, l in enumerate(self.layers):
            x = l(x)
            if i < 2:
                x = torch.relu(x)
        return x


model = LeNet300()
scores = [l.scores for l in model.layers]
opt = torch.optim.SGD(scores, lr=0.1, momentum=0.9)
x = torch.randn(STEPS, BATCH, 1, 28, 28)
y = torch.randint(0, 10, (STEPS, BATCH))
xt, yt = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
epochs = []
for epoch in range(4):
    t = time.perf_counter()
    for s in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[s]), y[s]) + 7e-6 * sum((p ** 2).sum() for p in scores)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p in scores:
                p.clamp_(0.0, 1.0)
    with torch.no_grad():
        _ = [p.detach().clone() for p in scores]  # the per-epoch copy of the scores to host memory
        _ = (model(xt).argmax(1) == yt).float().mean().item()
    epochs.append((time.perf_counter() - t) * 1e3 / STEPS)
epochs = sorted(epochs[1:])
print(f"mining lenet-300-100 batch={BATCH} ms_per_step={epochs[len(epochs) // 2]:.2f} backend=pytorch-{torch.__version__}_threads{torch.get_num_threads()}")

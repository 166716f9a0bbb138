"""SynFlow in PyTorch, as Synaptic-Flow computes it: VGG-16 (batch norm, CIFAR form as OpenLTH)
in eval mode, masks multiplied into conv and linear weights in the forward pass, 100 rounds of
(|θ| everywhere, all-ones input, sum of the output backward, score |θ ⊙ ∂R/∂θ|, global threshold
by kthvalue on the exponential schedule to density 1%, signs restored). float32, this CPU.
Prints a line in the same form as the Rust benchmark."""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
torch.manual_seed(0)

PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class MaskedConv(nn.Conv2d):
    def __init__(self, cin, cout):
        super().__init__(cin, cout, 3, padding=1)
        self.register_buffer("weight_mask", torch.ones_like(self.weight))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.weight_mask, self.bias, padding=1)


class MaskedLinear(nn.Linear):
    def __init__(self, cin, cout):
        super().__init__(cin, cout)
        self.register_buffer("weight_mask", torch.ones_like(self.weight))

    def forward(self, x):
        return F.linear(x, self.weight * self.weight_mask, self.bias)


class VGG16(nn.Module):
    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for p in PLAN:
            if p == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [MaskedConv(c, p), nn.BatchNorm2d(p), nn.ReLU()]
                c = p
        self.layers = nn.Sequential(*layers)
        self.fc = MaskedLinear(512, 10)

    def forward(self, x):
        x = self.layers(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def synflow(model, density, rounds):
    masked = [(m.weight_mask, m.weight) for m in model.modules() if hasattr(m, "weight_mask")]
    model.eval()
    for r in range(rounds):
        with torch.no_grad():
            signs = {k: torch.sign(v) for k, v in model.state_dict().items() if v.is_floating_point()}
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    v.abs_()
        model.zero_grad()
        torch.sum(model(torch.ones(1, 3, 32, 32))).backward()
        scores = [torch.clone(w.grad * w).detach().abs_() for _, w in masked]
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    v.mul_(signs[k])
            flat = torch.cat([s.flatten() for s in scores])
            d = density ** ((r + 1) / rounds)
            k = int((1.0 - d) * flat.numel())
            if k >= 1:
                threshold, _ = torch.kthvalue(flat, k)
                for (mask, _), s in zip(masked, scores):
                    mask.copy_(torch.where(s <= threshold, torch.zeros_like(mask), torch.ones_like(mask)))
    return sum(int(m.sum()) for m, _ in masked)


for rep in range(2):
    model = VGG16()
    t = time.perf_counter()
    kept = synflow(model, 0.01, 100)
    s = time.perf_counter() - t
    print(f"synflow vgg-16 rounds=100 rep={rep} seconds={s:.2f} per_round_ms={1000 * s / 100:.1f} kept={kept} backend=pytorch-{torch.__version__}_threads{torch.get_num_threads()}")

"""One SGD step (forward, cross-entropy, backward, momentum update) in PyTorch on this CPU:
LeNet-300-100 at batch 128 and VGG-16 (batch norm, CIFAR form as OpenLTH) at batch 64.
Prints lines in the same form as the Rust benchmark."""
import sys
import time

import torch
import torch.nn as nn

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
torch.manual_seed(0)


class LeNet300(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc_layers = nn.ModuleList([nn.Linear(784, 300), nn.Linear(300, 100)])
        self.fc = nn.Linear(100, 10)

    def forward(self, x):
        x = x.flatten(1)
        for l in self.fc_layers:
            x = torch.relu(l(x))
        return self.fc(x)


class ConvModule(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class VGG16(nn.Module):
    PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for p in self.PLAN:
            if p == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(ConvModule(c, p))
                c = p
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        x = self.layers(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def bench(name, model, shape, batch, warmup, reps):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape)
    y = torch.arange(batch) % 10
    times = []
    for i in range(warmup + reps):
        t = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(f"step {name} batch={batch} median_ms={times[len(times) // 2]:.2f} min_ms={times[0]:.2f} backend=pytorch-{torch.__version__}_threads{torch.get_num_threads()}")


only = sys.argv[2] if len(sys.argv) > 2 else None
if only in (None, "lenet"):
    bench("lenet-300-100", LeNet300(), (1, 28, 28), 128, 5, 50)
if only in (None, "vgg"):
    bench("vgg-16", VGG16(), (3, 32, 32), 64, 1, 5)

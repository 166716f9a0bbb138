"""One SGD step (forward, cross-entropy, backward, momentum update) in PyTorch on this CPU:
LeNet-300-100 at batch 128; Conv-2 (Frankle & Carbin), VGG-16 (batch norm, CIFAR form as
OpenLTH) and ResNet-20 (OpenLTH's cifar_resnet_20, 1×1 projection shortcuts) at batch 64.
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


class Conv2(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2, 2))
        self.fc_layers = nn.Sequential(
            nn.Linear(64 * 16 * 16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(self.fc_layers(self.layers(x).flatten(1)))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, c = [], 16
        for stage, width in enumerate([16, 32, 64]):
            for b in range(3):
                blocks.append(Block(c, width, 2 if stage > 0 and b == 0 else 1))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


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
if only in (None, "conv2"):
    bench("conv-2", Conv2(), (3, 32, 32), 64, 3, 20)
if only in (None, "resnet20"):
    bench("resnet-20", ResNet20(), (3, 32, 32), 64, 2, 10)
if only in (None, "vgg"):
    bench("vgg-16", VGG16(), (3, 32, 32), 64, 1, 5)

"""One BERT fine-tuning step in PyTorch on this CPU, the same work as the Rust benchmark
crates/lottery-bert/benches/fine_tune_step.rs: the packaged MiniLM-L6 (its safetensors weights,
read here without extra packages) written out as a plain module with the same operations,
a fresh 8-class classifier on the pooled output, a batch of 16 generated sequences of 32 pieces
(the same ids), dropout 0.1 at BERT's places, cross-entropy, clip_grad_norm_(1.0) and an Adam step
on every parameter. Prints a line in the Rust benchmark's form.

usage: torch_bert.py THREADS CHECKPOINT_DIR"""
import json
import math
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
CKPT = sys.argv[2]
BATCH, TOKENS, CLASSES, STEPS, CHUNKS = 16, 32, 8, 4, 5


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        a, b = meta["data_offsets"]
        out[name] = torch.frombuffer(data[a:b], dtype=torch.float32).reshape(meta["shape"]).clone()
    return out


class Layer(nn.Module):
    def __init__(self, h, inner, heads, p):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attention_output = nn.Linear(h, h)
        self.attention_norm = nn.LayerNorm(h, eps=1e-12)
        self.intermediate, self.output = nn.Linear(h, inner), nn.Linear(inner, h)
        self.output_norm = nn.LayerNorm(h, eps=1e-12)
        self.heads, self.p = heads, p

    def forward(self, x, b, t):
        h = x.shape[1]
        d = h // self.heads
        split = lambda y: y.reshape(b, t, self.heads, d).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        probs = F.dropout(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1), self.p)
        context = (probs @ v).transpose(1, 2).reshape(b * t, h)
        x = self.attention_norm(F.dropout(self.attention_output(context), self.p) + x)
        return self.output_norm(F.dropout(self.output(F.gelu(self.intermediate(x))), self.p) + x)


class Bert(nn.Module):
    def __init__(self, w, classes, p=0.1):
        super().__init__()
        h, self.p = w["embeddings.word_embeddings.weight"].shape[1], p
        self.word = nn.Parameter(w["embeddings.word_embeddings.weight"])
        self.position = nn.Parameter(w["embeddings.position_embeddings.weight"])
        self.token_type = nn.Parameter(w["embeddings.token_type_embeddings.weight"])
        self.norm = nn.LayerNorm(h, eps=1e-12)
        self.layers = nn.ModuleList([Layer(h, 4 * h, 12, p) for _ in range(6)])
        self.pooler = nn.Linear(h, h)
        self.classifier = nn.Linear(h, classes)
        with torch.no_grad():
            self.norm.weight.copy_(w["embeddings.LayerNorm.weight"])
            self.norm.bias.copy_(w["embeddings.LayerNorm.bias"])
            for i, l in enumerate(self.layers):
                pre = f"encoder.layer.{i}."
                for mod, name in [
                    (l.query, "attention.self.query"), (l.key, "attention.self.key"),
                    (l.value, "attention.self.value"), (l.attention_output, "attention.output.dense"),
                    (l.attention_norm, "attention.output.LayerNorm"),
                    (l.intermediate, "intermediate.dense"), (l.output, "output.dense"),
                    (l.output_norm, "output.LayerNorm"),
                ]:
                    mod.weight.copy_(w[pre + name + ".weight"])
                    mod.bias.copy_(w[pre + name + ".bias"])
            self.pooler.weight.copy_(w["pooler.dense.weight"])
            self.pooler.bias.copy_(w["pooler.dense.bias"])

    def forward(self, ids):
        b, t = ids.shape
        x = self.word[ids.reshape(-1)] + self.position[:t].repeat(b, 1) + self.token_type[0]
        x = F.dropout(self.norm(x), self.p)
        for l in self.layers:
            x = l(x, b, t)
        pooled = torch.tanh(self.pooler(x.reshape(b, t, -1)[:, 0]))
        return self.classifier(F.dropout(pooled, self.p))


def token(s, t):
    if t == 0:
        return 101
    if t == TOKENS - 1:
        return 102
    return 1996 + (s * 7919 + t * 104729) % (30522 - 1996)


model = Bert(read_safetensors(f"{CKPT}/model.safetensors"), CLASSES)
model.train()
opt = torch.optim.Adam(model.parameters(), lr=2e-5)
chunk_ms = []
step = 0
for chunk in range(CHUNKS + 1):
    t0 = time.perf_counter()
    for _ in range(STEPS):
        rows = range(step * BATCH, (step + 1) * BATCH)
        ids = torch.tensor([[token(s, t) for t in range(TOKENS)] for s in rows])
        labels = torch.tensor([s % CLASSES for s in rows])
        opt.zero_grad()
        loss = F.cross_entropy(model(ids), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        step += 1
    if chunk > 0:
        chunk_ms.append((time.perf_counter() - t0) * 1e3 / STEPS)
chunk_ms.sort()
print(f"bert minilm-l6 batch={BATCH}x{TOKENS} median_ms={chunk_ms[len(chunk_ms) // 2]:.1f} min_ms={chunk_ms[0]:.1f} backend=pytorch-{torch.__version__}_threads{torch.get_num_threads()}")

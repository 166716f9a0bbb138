#!/usr/bin/env bash
# The same small seeded runs with two `lottery` binaries built for different backends (burn-flex
# and burn-tch by default), compared: the masks must keep the same number of weights, and test
# accuracy and loss (after training, and at initialisation) must agree within floating-point
# tolerance. Prints one line per run and metric; exits 1 on a difference over tolerance.
#   scripts/cross-backend.sh [REFERENCE_BINARY] [OTHER_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:-target/release/lottery}
other=${2:-target/tch/release/lottery}
for b in "$ref" "$other"; do
  [ -x "$b" ] || { echo "cross-backend: no binary $b" >&2; exit 2; }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The quickstart cut down to one epoch on a tenth of Fashion-MNIST (a data-free and a gradient
# score), a convolutional net (conv, max-pool) on generated images, and a residual net with batch
# norm (the one-operation train-mode batch norm: LibTorch's native kernel against flex's
# composition) on five generated batches, at a small learning rate: at the quickstart's 0.1 the
# two test losses differed by 1.3e-3 relative (14.546 against 14.564; not measured before batch
# norm became one operation), at 0.001 by about 1e-5. The test loss stays far above chance's
# (eval mode uses running statistics five steps old), so the case checks the kept count (SNIP's
# gradients through batch norm), the running statistics and the loss, not training.
tenth="--set data.train_subset=6000 --set data.test_subset=2000"
cases=(
  "configs/quickstart.toml --set prune.method=magnitude --set prune.density=0.1 $tenth"
  "configs/quickstart.toml --set prune.method=snip --set prune.density=0.02 $tenth"
  "configs/quickstart.toml --set model.name=conv-2 --set data.name=synthetic --set prune.method=snip --set prune.density=0.1 $tenth"
  "configs/quickstart.toml --set model.name=resnet-20 --set data.name=synthetic --set prune.method=snip --set prune.density=0.1 --set data.train_subset=640 --set data.test_subset=500 --set train.lr=0.001"
)
common=(--set seed=0 --set train.epochs=1 --no-table)
for c in "${cases[@]}"; do
  read -r -a args <<<"$c"
  for side in ref other; do
    bin=$ref; [ "$side" = other ] && bin=$other
    start=$(date +%s%N)
    "$bin" run "${args[@]}" "${common[@]}" --results "$out/$side" >"$out/$side.log" 2>&1 || {
      cat "$out/$side.log" >&2
      echo "cross-backend: $bin failed on: $c" >&2
      exit 1
    }
    echo "cross-backend: $side ($bin) $c: $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2
  done
done

python3 - "$out/ref" "$out/other" <<'PY'
import glob, json, os, sys

ref_root, other_root = sys.argv[1], sys.argv[2]
# (metric, absolute tolerance): accuracy to 0.5 % of the test examples, loss to 1e-3 (flex and
# LibTorch were measured 1e-8 apart in loss after an epoch).
tolerance = [("test_accuracy_at_init", 0.005), ("test_accuracy", 0.005), ("test_loss", 1e-3)]
exact = ["kept", "prunable"]
failed = 0
runs = 0
for path in sorted(glob.glob(os.path.join(ref_root, "*", "*", "summary.json"))):
    rel = os.path.relpath(path, ref_root)
    a = json.load(open(path))
    b = json.load(open(os.path.join(other_root, rel)))
    runs += 1
    name = f"{a['model']} {a['dataset']} {a['method']} {a['density_requested']}"
    print(f"{name}: {a['backend']} vs {b['backend']}")
    for key in exact:
        ok = a[key] == b[key]
        failed += not ok
        print(f"  {key:22} {a[key]:>12} {b[key]:>12} {'ok' if ok else 'DIFFERENT'}")
    for key, tol in tolerance:
        x, y = a.get(key), b.get(key)
        if x is None and y is None:
            continue
        d = abs(x - y)
        ok = d <= tol
        failed += not ok
        print(f"  {key:22} {x:.10f} {y:.10f}  |diff| {d:.2e} (tol {tol}) {'ok' if ok else 'OVER'}")
print(f"cross-backend: {runs} runs compared, {failed} differences over tolerance")
sys.exit(1 if failed or runs == 0 else 0)
PY

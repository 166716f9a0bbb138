#!/usr/bin/env bash
# Every registered pruning method once, at a tiny size, with one `lottery` binary (the LibTorch one
# by default): each study config cut to one seed, one density and an epoch or two on a subset.
# A smoke test that the backend runs every method end to end (prune, train, record), not a
# comparison: it fails when a run fails or a method of `lottery list` has no case here.
#   scripts/every-method.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/tch/release/lottery}
[ -x "$bin" ] || { echo "every-method: no binary $bin" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

small="--set seed=0 --set data.train_subset=2000 --set data.test_subset=1000"
# method(s) | config and overrides
cases=(
  "random magnitude snip grasp synflow|configs/quickstart.toml --set prune.method=[\"random\",\"magnitude\",\"snip\",\"grasp\",\"synflow\"] --set prune.density=0.1 --set train.epochs=1 $small"
  "imp|configs/imp/lenet-300-100.toml --set prune.density=0.64 --set train.epochs=1 $small"
  "gem-miner|configs/gem-miner/lenet-300-100-gem-miner-5pct.toml --set methods.gem-miner.epochs=2 --set methods.gem-miner.iter_period=1 --set train.epochs=1 $small"
  "edge-popup|configs/gem-miner/lenet-300-100-edge-popup.toml --set prune.density=0.5 --set methods.edge-popup.epochs=1 --set train.epochs=1 $small"
  "early-bird|configs/early-bird/vgg-11.toml --set prune.density=0.5 --set train.epochs=3 --set train.milestones=[2] --set methods.early-bird.window=2 --set seed=0 --set data.train_subset=256 --set data.test_subset=256"
  "bert-tickets|configs/bert-tickets/supersenses.toml --set prune.density=0.9 --set train.epochs=1 --set seed=0 --set data.train_subset=64 --set data.test_subset=32"
  "gcn-tickets ugs graph-random graph-magnitude|configs/gcn-tickets/karate-club.toml --set prune.method=[\"gcn-tickets\",\"ugs\",\"graph-random\",\"graph-magnitude\"] --set prune.density=0.8 --set seed=0"
)

covered=()
for c in "${cases[@]}"; do
  methods=${c%%|*}
  read -r -a args <<<"${c#*|}"
  start=$(date +%s)
  "$bin" run "${args[@]}" --no-table --results "$out" >"$out/log" 2>&1 || {
    cat "$out/log" >&2
    echo "every-method: $methods failed: ${c#*|}" >&2
    exit 1
  }
  echo "every-method: $methods: $(( $(date +%s) - start )) s" >&2
  read -r -a ms <<<"$methods"
  covered+=("${ms[@]}")
done

# Every method `lottery list` names has a case, and each case wrote a summary per method.
missing=0
for m in $("$bin" list | awk '/^methods/{on=1; next} /^[a-z]+:?$/{on=0} on && NF {print $1}'); do
  if [[ ! " ${covered[*]} " =~ " $m " ]]; then
    echo "every-method: no case for method $m" >&2
    missing=1
  fi
done
runs=$(find "$out" -name summary.json | wc -l)
echo "every-method: ${#covered[@]} methods, $runs runs finished with $bin" >&2
exit $missing

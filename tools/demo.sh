#!/usr/bin/env bash
# The README's main job: install what is missing, build, and run `pipeline demo`
# (the Rust feed server streamed through a veth pair over AF_XDP, then over the kernel
# transport, summaries side by side and a latency picture; without root, the kernel
# transport on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash tools/setup.sh
cargo build --release --bin pipeline
exec ./target/release/pipeline demo "$@"

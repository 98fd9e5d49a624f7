#!/usr/bin/env bash
# The README's main job: install what is missing, build, and run `pipeline demo`
# (a local exchange simulator streamed over AF_XDP through a veth pair; without root,
# over the kernel transport on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash tools/setup.sh
cargo build --release --bin pipeline
exec ./target/release/pipeline demo "$@"

#!/usr/bin/env bash
# Fails when include/pipeline.h differs from what cbindgen generates from the code.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cbindgen --quiet --config cbindgen.toml --output "$tmp" src/ffi/mod.rs
if ! diff -u include/pipeline.h "$tmp"; then
  echo "include/pipeline.h is stale: run tools/gen-header.sh and commit include/pipeline.h" >&2
  exit 1
fi
echo "header: include/pipeline.h matches cbindgen"

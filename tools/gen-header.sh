#!/usr/bin/env bash
# Regenerates include/pipeline.h from src/ffi (only that module tree is parsed, so
# internal #[repr(C)] types elsewhere never leak into the public header).
set -euo pipefail
cd "$(dirname "$0")/.."
cbindgen --quiet --config cbindgen.toml --output include/pipeline.h src/ffi/mod.rs

#!/usr/bin/env bash
# A short libFuzzer run of the header-only consumer (tests/c/fuzz_consumer.c): the
# fuzz input becomes the region files, the real plc_open / plc_next read them, under
# ASan + UBSan. Any crash, sanitizer report or broken invariant fails, and the input
# that did it is printed (hex) so it can be added to tests/c/fuzz_corpus/consumer.
# Needs clang with its libFuzzer runtime (Debian: clang pulls libclang-rt-14-dev in).
#
#   bash tools/test.d/fuzz_consumer.sh          (FUZZ_SECONDS, default 20; CARGO_TARGET_DIR honoured)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
SECS=${FUZZ_SECONDS:-20}
BIN=$TARGET/fuzz_consumer
WORK=$(mktemp -d /tmp/plfuzz-ci.XXXXXX)
# The region files are rewritten for every input: keep them on tmpfs when there is one.
SHM=$(mktemp -d /dev/shm/plfuzz-ci.XXXXXX 2>/dev/null || mktemp -d "$WORK/shm.XXXXXX")
trap 'rm -rf "$WORK" "$SHM"' EXIT

mkdir -p "$TARGET" "$WORK/corpus"
echo "== build $BIN (clang -fsanitize=fuzzer,address,undefined)"
clang -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror \
  -I"$REPO/include" "$REPO/tests/c/fuzz_consumer.c" -o "$BIN"

echo "== fuzz plc_open / plc_next for ${SECS}s (seeds: tests/c/fuzz_corpus/consumer)"
rc=0
(cd "$WORK" && PLC_FUZZ_TMP="$SHM" "$BIN" "$WORK/corpus" "$REPO/tests/c/fuzz_corpus/consumer" \
  -max_total_time="$SECS" -timeout=10 -print_final_stats=1 -artifact_prefix="$WORK/") >"$WORK/log" 2>&1 || rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/log" | tail -n1)
if [ "$rc" != 0 ] || grep "ERROR: \|runtime error\|deadly signal" >/dev/null "$WORK/log"; then
  tail -n 40 "$WORK/log"
  for a in "$WORK"/crash-* "$WORK"/timeout-* "$WORK"/leak-* "$WORK"/oom-*; do
    [ -e "$a" ] || continue
    echo "--- $(basename "$a") ($(stat -c %s "$a") bytes):"
    od -An -tx1 -v "$a" | head -n 100
  done
  echo "fuzz_consumer: ${runs:-?} runs in ${SECS}s, FAILED (exit $rc)"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
echo "fuzz_consumer: ${runs:-?} runs in ${SECS}s, 0 crashes"
echo "fuzz: 1 passed, 0 failed"

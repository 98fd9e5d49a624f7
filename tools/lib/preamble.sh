# Sourced by tools/test.d/*.sh after `cd` to the repository root (not a test itself:
# tools/test.sh runs every tools/test.d/*.sh). Sets REPO, PATH (+ ~/.cargo/bin),
# CARGO_TARGET_DIR (default $REPO/target), PY (PL_PYTHON or the project venv), the result
# counters and PIDS; `result NAME ok|FAIL [detail]` records one check.
REPO=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
PY=${PL_PYTHON:-/opt/libpipeline-venv/bin/python}
FAILED=0
PASSED=0
declare -a RESULTS=()
PIDS=()
result() {
  RESULTS+=("$1: $2${3:+ ($3)}")
  if [ "$2" = ok ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
  echo "--- $1: $2${3:+ ($3)}"
}
# kill_pids: signal every process in PIDS (for the scripts' EXIT traps).
kill_pids() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
}

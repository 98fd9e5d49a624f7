# Shared by tools/test.d/*.sh; sourced from the repository root after `cd`. Not a test
# itself (tools/test.sh runs every tools/test.d/*.sh, so this lives outside it).
#   . tools/lib/testlib.sh
# Sets REPO, PATH (+ ~/.cargo/bin), CARGO_TARGET_DIR (default $REPO/target), PY
# (PL_PYTHON or the project venv), PASSED/FAILED/RESULTS, PIDS, t0; defines result,
# kill_pids, use_tmp, sim_start/stop_sim and summary.
REPO=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
PY=${PL_PYTHON:-/opt/libpipeline-venv/bin/python}
FAILED=0
PASSED=0
declare -a RESULTS=()
PIDS=()
t0=$SECONDS

# kill_pids: kill every background process recorded in PIDS.
kill_pids() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
}

# use_tmp TAG: TMP = a fresh /tmp/TAG.XXXXXX; on exit the processes in PIDS are killed,
# the script's cleanup_extra (if it defines one) runs and TMP is removed.
use_tmp() {
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  trap tl_cleanup EXIT
}
tl_cleanup() {
  kill_pids
  if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
  rm -rf "$TMP"
}

result() { # name ok|FAIL [detail]
  RESULTS+=("$1: $2${3:+ ($3)}")
  if [ "$2" = ok ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
  echo "--- $1: $2${3:+ ($3)}"
}

# sim_start HOST CERT ARGS... -> SIM_PID, URL. Starts tools/exchange_sim.py --once on
# HOST with $TMP/certs/CERT.{pem,key} (inside network namespace $SIM_NETNS if set) and
# waits for it to report its port.
sim_start() {
  local host=$1 cert=$2; shift 2
  local out=$TMP/sim.$RANDOM.out
  local -a wrap=()
  if [ -n "${SIM_NETNS:-}" ]; then wrap=(ip netns exec "$SIM_NETNS"); fi
  "${wrap[@]}" "$PY" tools/exchange_sim.py --host "$host" --port 0 --once \
    --cert "$TMP/certs/$cert.pem" --key "$TMP/certs/$cert.key" "$@" >"$out" 2>&1 </dev/null &
  SIM_PID=$!
  PIDS+=("$SIM_PID")
  local port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*"port": \([0-9]*\).*/\1/p' "$out" | head -n1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$out"; return 1; }
  URL="wss://$host:$port/"
}
stop_sim() { kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; }

# summary NAME: print the results; succeeds iff nothing failed (use as the last command).
summary() {
  echo
  echo "== $1: $PASSED passed, $FAILED failed ($((SECONDS - t0)) s)"
  printf '  %s\n' "${RESULTS[@]}"
  [ "$FAILED" = 0 ]
}

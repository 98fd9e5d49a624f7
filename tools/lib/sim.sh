# Sourced by tools/test.d/*.sh: helpers around tools/exchange_sim.py.
# sim_port OUT: wait (up to 10 s) for the simulator writing to OUT to report its port;
# prints it, or fails.
sim_port() {
  local p=""
  for _ in $(seq 100); do
    p=$(sed -n 's/.*"port": \([0-9]*\).*/\1/p' "$1" | head -n1)
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.1
  done
  return 1
}
# start_sim_in NS HOST LEAF ARGS...: start tools/exchange_sim.py --once on HOST (port 0)
# with TLS leaf $TMP/certs/LEAF.{pem,key} and ARGS, in network namespace NS ("": this
# one); sets SIM_PID (also added to PIDS) and URL, or prints the output and fails.
start_sim_in() {
  local ns=$1 host=$2 leaf=$3; shift 3
  local out=$TMP/sim.$RANDOM.out
  local -a run=("$PY")
  if [ -n "$ns" ]; then run=(ip netns exec "$ns" "$PY"); fi
  "${run[@]}" tools/exchange_sim.py --host "$host" --port 0 --once \
    --cert "$TMP/certs/$leaf.pem" --key "$TMP/certs/$leaf.key" "$@" >"$out" 2>&1 </dev/null &
  SIM_PID=$!
  PIDS+=("$SIM_PID")
  local port
  port=$(sim_port "$out") || { cat "$out"; return 1; }
  URL="wss://$host:$port/"
}
# start_sim ARGS...: the same on loopback with the "server" leaf.
start_sim() { start_sim_in "" 127.0.0.1 server "$@"; }
# stop_sim: end the simulator started last (SIM_PID).
stop_sim() { kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; }

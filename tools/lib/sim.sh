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
# stop_sim: end the simulator started last (SIM_PID).
stop_sim() { kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; }

#!/usr/bin/env bash
# The three consumers (C++ strategy, Python package, header-only C reader) each read a
# stream from the local exchange simulator (tools/exchange_sim.py, TLS, fresh test CA)
# over the kernel transport on loopback AND over AF_XDP through a veth pair between two
# network namespaces; each checks count, order and content (seq, size, crc32).
# Also builds cpp_examples (make, pkg-config), installs ./python into the venv and runs
# the Python unittest suite. XDP cases need root: with CI set, missing root FAILS.
#
#   bash tools/test.d/consumers.sh        (CARGO_TARGET_DIR honoured; N=messages per run)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/lib/sim.sh
. tools/lib/preamble.sh
TARGET=$CARGO_TARGET_DIR
N=${N:-20000}
PIPELINE=$TARGET/release/pipeline

TMP=$(mktemp -d /tmp/plcons.XXXXXX)
NS_C=plt$$c
NS_S=plt$$s
SERVER_IP=10.202.1.1
CLIENT_IP=10.202.1.2
cleanup() {
  kill_pids
  ip netns del "$NS_C" 2>/dev/null || true
  ip netns del "$NS_S" 2>/dev/null || true
  rm -rf "$TMP"
  rm -rf /dev/shm/pipeline_plt$$* 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build: libpipeline (release), cpp_examples (make + pkg-config), pip install ./python"
cargo build --release -j2 --lib --bin pipeline
make -C cpp_examples CARGO_TARGET_DIR="$TARGET"
"$PY" -m pip install --quiet ./python
# The installed package (not the source tree) must find the library.
(cd "$TMP" && "$PY" -c 'import pipeline; print("python package:", pipeline.__file__, "library:", pipeline.library_path(), pipeline.version())')

echo "== certificates"
sh tools/testcerts.sh "$TMP/certs" >/dev/null
CA=$TMP/certs/ca.pem
# A leaf for the veth address (testcerts.sh names localhost / 127.0.0.1).
printf 'subjectAltName=IP:%s\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' "$SERVER_IP" >"$TMP/certs/veth.ext"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/certs/veth.key" 2>/dev/null
openssl req -new -key "$TMP/certs/veth.key" -subj /CN=veth -out "$TMP/certs/veth.csr" 2>/dev/null
openssl x509 -req -in "$TMP/certs/veth.csr" -CA "$CA" -CAkey "$TMP/certs/ca.key" -CAcreateserial -days 2 -sha256 \
  -extfile "$TMP/certs/veth.ext" -out "$TMP/certs/veth.pem" 2>/dev/null

echo "== python unittest (kernel transport on loopback)"
if (cd "$TMP" && PL_PYTHON="$PY" "$PY" -m unittest discover -s "$REPO/python/tests" -v); then
  result python-unittest ok
else
  result python-unittest FAIL
fi

# sim_for MODE ARGS... -> sets SIM_PID, URL (MODE kernel|xdp: loopback, or the server
# namespace behind the veth pair).
sim_for() {
  local mode=$1; shift
  if [ "$mode" = xdp ]; then start_sim_in "$NS_S" "$SERVER_IP" veth "$@"; else start_sim "$@"; fi
}

# in_client MODE CMD...: run in the client namespace for xdp.
in_client() {
  local mode=$1; shift
  if [ "$mode" = xdp ]; then ip netns exec "$NS_C" "$@"; else "$@"; fi
}

expect_summary() { # name logfile
  if grep -q "summary: messages=$N gaps=0 bad=0" "$2"; then
    result "$1" ok "$(grep summary: "$2" | head -n1 | cut -c1-150)"
  else
    tail -n 15 "$2"
    result "$1" FAIL
  fi
}

run_consumers() { # MODE
  local mode=$1 xargs=() log
  [ "$mode" = xdp ] && xargs=(--transport xdp --iface "$NS_C")
  local ca=$CA

  echo "== [$mode] C++ strategy (libpipeline.so via pkg-config)"
  log=$TMP/strategy-$mode.log
  sim_for "$mode" --count "$N" --fragment-every 50
  if in_client "$mode" timeout 120 cpp_examples/build/strategy "$URL" "${xargs[@]}" --ca-file "$ca" --count "$N" \
      --quiet --layout inline --wait backoff --send "hello strategy" >"$log" 2>&1; then :; fi
  stop_sim
  grep -q "summary: .* text=1 " "$log" || echo "(echo of --send not seen)" >>"$log"
  expect_summary "strategy-$mode" "$log"

  echo "== [$mode] Python package (examples/market_data_reader.py)"
  log=$TMP/python-$mode.log
  sim_for "$mode" --count "$N" --fragment-every 50
  if (cd "$TMP" && in_client "$mode" timeout 180 "$PY" "$REPO/python/examples/market_data_reader.py" "$URL" \
      "${xargs[@]}" --ca-file "$ca" --count "$N" --quiet --layout inline --wait backoff) >"$log" 2>&1; then :; fi
  stop_sim
  expect_summary "python-$mode" "$log"

  echo "== [$mode] header-only C consumer (pipeline connect --external-consumer --send cmd:ping + consumer_reader)"
  log=$TMP/reader-$mode.log
  local name=plt$$$mode
  # Paced, so that the ping round trip (queued behind the stream in the server) ends mid-stream.
  sim_for "$mode" --count "$N" --close-after "$N" --fragment-every 50 --rate 8000
  in_client "$mode" timeout 120 "$PIPELINE" connect "$URL" "${xargs[@]}" --ca-file "$ca" --name "$name" \
    --external-consumer --layout inline --wait backoff --send cmd:ping >"$TMP/connect-$mode.log" 2>&1 &
  local cpid=$!
  PIDS+=("$cpid")
  timeout 120 cpp_examples/build/consumer_reader "$name" --count "$N" --quiet --timeout 30 >"$log" 2>&1 || true
  local crc=0
  wait "$cpid" || crc=$?
  stop_sim
  if [ "$crc" != 0 ]; then
    echo "pipeline connect exited $crc:" >>"$log"
    cat "$TMP/connect-$mode.log" >>"$log"
    sed -i 's/^summary:/summary(connect failed):/' "$log"
  fi
  # cmd:ping: the server PINGs mid-stream (a release-only control entry that plc_next
  # must skip) and then sends the text "pong-ok ...".
  grep -q "summary: .* text=1 " "$log" || sed -i 's/^summary:/summary(no pong-ok text: control frame not skipped?):/' "$log"
  expect_summary "consumer_reader-$mode" "$log"
}

run_consumers kernel

root_ok=""
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip netns add "$NS_C" 2>/dev/null; then
  root_ok=1
fi
if [ -z "$root_ok" ]; then
  if [ -n "${CI:-}" ]; then
    result "xdp consumers" FAIL "needs root + network namespaces (euid $(id -u)); CI is set, so this is a failure"
  else
    echo "skipped: the XDP consumer runs need root (euid $(id -u))"
  fi
else
  echo "== test bed: netns $NS_C / $NS_S, veth $NS_C <-> $NS_S"
  ip netns add "$NS_S"
  ip link add "$NS_C" netns "$NS_C" type veth peer name "$NS_S" netns "$NS_S"
  for side in "$NS_C $CLIENT_IP" "$NS_S $SERVER_IP"; do
    set -- $side
    ip -n "$1" addr add "$2/24" dev "$1"
    ip -n "$1" link set dev "$1" up
    ip -n "$1" link set dev lo up
    ip netns exec "$1" ethtool -K "$1" tx off tso off gso off gro off >/dev/null 2>&1 ||
      ip netns exec "$1" ethtool -K "$1" tx off >/dev/null
  done
  run_consumers xdp
fi

echo
echo "== consumers: $PASSED passed, $FAILED failed"
printf '  %s\n' "${RESULTS[@]}"
[ "$FAILED" = 0 ]

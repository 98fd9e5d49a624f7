#!/bin/sh
# Instructions per message of the client's receive path (benches/hotpath.rs) under
# callgrind: repeatable for a fixed binary (to ~0.01 %), whatever else the machine does.
#   tools/hotpath.sh                 # 64 B, 256 B, 16 KiB, one TLS record per message
#                                    # and 16 KiB records; table + bench-results/hotpath.json
#   tools/hotpath.sh 256             # one size; HOTPATH_TOP=N top functions (default 12)
#   HOTPATH_OUT=/tmp/x tools/hotpath.sh   # keep the callgrind files there (default: a temp dir)
#   tools/hotpath.sh --check         # fail (exit 1) if any figure is over 1.3x the committed
#                                    # bench-results/hotpath.json (counts move with the compiler)
# Only `hotpath::measured` is counted (set-up, handshakes and encryption are not).
set -eu
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "hotpath: valgrind is not installed" >&2; exit 1; }
check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
sizes=${*:-64 256 16384}
budget_file=bench-results/hotpath.json
over=0
top=${HOTPATH_TOP:-12}
out=${HOTPATH_OUT:-$(mktemp -d)}
mkdir -p "$out"
bin=$(cargo bench --bench hotpath --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*hotpath[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "hotpath: cannot build benches/hotpath.rs (cargo bench --bench hotpath --no-run)" >&2; exit 1; }
rows=""
# paced: one TLS record per message; packed: 16 KiB records (the peer benchmark's flat-out feed).
for mode in paced packed; do
for s in $sizes; do
    f="$out/callgrind.$mode.$s"
    packed=0; [ "$mode" = packed ] && packed=1
    log=$(HOTPATH_PACKED=$packed valgrind --tool=callgrind --collect-atstart=no --toggle-collect='hotpath::measured' \
        --callgrind-out-file="$f" "$bin" "$s" 2>&1) || { echo "$log" >&2; exit 1; }
    msgs=$(printf "%s\n" "$log" | sed -n 's/^hotpath: \([0-9]*\) messages.*/\1/p')
    ir=$(printf "%s\n" "$log" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    per=$((ir / msgs))
    printf '\n%s, %6s B: %d instructions per message (%d messages, %d instructions)\n' "$mode" "$s" "$per" "$msgs" "$ir"
    # By layer (inclusive): TLS = SSL_read_ex (OpenSSL's record layer and AES-GCM; a
    # library function, so never inlined away like our wrapper can be), WebSocket = WebSocketStage::poll, the rest = TCP receive (parse,
    # checksum, ACKs), the ciphertext hand-over to TLS, the rings and the consumer.
    incl=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null)
    # A function's biggest entry is the whole of it (inlined code is listed per file too).
    layer() { printf "%s\n" "$incl" | grep -F ":$1" | grep -v "=>" | sed -n 's/^ *\([0-9,]*\) .*/\1/p' | tr -d , | sort -n | tail -n 1; }
    tls=$(layer 'SSL_read_ex'); tls=${tls:-0}
    ws=$(layer '<pipeline::stage::websocket::WebSocketStage as pipeline::stage::Stage>::poll'); ws=${ws:-0}
    printf '  by layer: TLS %d, WebSocket %d, TCP + hand-over + rings + consumer %d\n' \
        $((tls / msgs)) $((ws / msgs)) $(((ir - tls - ws) / msgs))
    echo "  top functions (exclusive, instructions per message):"
    # Exclusive cost per function, as instructions per message.
    callgrind_annotate "$f" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) ([ 0-9.]*%)  \(.*\)$/\1 \2/p' |
        grep -v 'PROGRAM TOTALS' | head -n "$top" |
        awk -v m="$msgs" '{ n = $1; gsub(",", "", n); $1 = ""; sub(/^ /, ""); sub(/ \[.*\]$/, "");
            sub(/^.*\.rs:/, ""); sub(/^\?\?\?:/, ""); sub(/^\.\/.*\.S:/, ""); printf "  %8.0f  %s\n", n / m, $0 }'
    if [ $check = 1 ]; then
        was=$(sed -n "s/.*\"records\": \"$mode\", \"payload_bytes\": $s,.*\"instructions_per_message\": \([0-9]*\),.*/\1/p" "$budget_file")
        if [ -z "$was" ]; then
            echo "  budget: no committed figure for $mode $s B in $budget_file" >&2; over=1
        elif [ $((per * 10)) -gt $((was * 13)) ]; then
            echo "  budget: OVER: $per > 1.3 x $was (committed)" >&2; over=1
        else
            echo "  budget: ok ($per <= 1.3 x $was committed)"
        fi
    fi
    rows="$rows${rows:+,
}    {\"records\": \"$mode\", \"payload_bytes\": $s, \"messages\": $msgs, \"instructions\": $ir, \"instructions_per_message\": $per, \"tls_per_message\": $((tls / msgs)), \"websocket_per_message\": $((ws / msgs)), \"rest_per_message\": $(((ir - tls - ws) / msgs))}"
done
done
if [ $check = 1 ]; then
    echo "callgrind files in $out"
    exit $over
fi
if [ -z "${*:-}" ]; then
    cat > bench-results/hotpath.json <<EOF
{
  "bench": "hotpath",
  "tool": "valgrind --tool=callgrind, only hotpath::measured counted",
  "path": "Ethernet/IPv4/TCP frames -> tcp::Connection::on_frame -> TlsSession (TLS 1.3 AES-128-GCM; paced: one record per message, packed: 16 KiB records) -> TransportStage -> MSG_INBOX -> WebSocketStage -> FrameReader",
  "results": [
$rows
  ]
}
EOF
    echo; echo "wrote bench-results/hotpath.json"
fi
echo "callgrind files in $out (callgrind_annotate $out/callgrind.<paced|packed>.<size>)"

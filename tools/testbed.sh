#!/bin/sh
# Manual version of netbed/src/netns.rs (the tests' and the demo's bed), for poking at the XDP path by hand.
#   tools/testbed.sh up   [name]   # netns <name>c / <name>s, veth <name>c <-> <name>s,
#                                  # 10.200.1.2/24 (client) <-> 10.200.1.1/24 (server)
#   tools/testbed.sh down [name]   # deletes both namespaces (veth + XDP programs go too)
#   tools/testbed.sh show [name]   # addresses and XDP attachment
# Run a command inside: ip netns exec <name>c <cmd>
set -eu
cmd=${1:-}; name=${2:-plman}
c=${name}c; s=${name}s
case "$cmd" in
up)
    ip netns add "$c"; ip netns add "$s"
    ip link add "$c" netns "$c" type veth peer name "$s" netns "$s"
    ip -n "$c" addr add 10.200.1.2/24 dev "$c"; ip -n "$s" addr add 10.200.1.1/24 dev "$s"
    for ns in "$c" "$s"; do
        ip -n "$ns" link set dev "$ns" up; ip -n "$ns" link set dev lo up
        # partial checksums / TSO frames must not reach the AF_XDP socket
        ip netns exec "$ns" ethtool -K "$ns" tx off tso off gso off gro off >/dev/null
    done
    echo "client: ip netns exec $c ...   server: ip netns exec $s ..." ;;
down)
    ip netns del "$c" 2>/dev/null || true; ip netns del "$s" 2>/dev/null || true ;;
show)
    for ns in "$c" "$s"; do echo "== $ns"; ip -n "$ns" -br addr; ip -n "$ns" -d link show dev "$ns" | grep -E 'xdp|prog' || echo "(no XDP program)"; done ;;
*)
    echo "usage: $0 up|down|show [name]" >&2; exit 2 ;;
esac

#!/usr/bin/env python3
"""Local exchange simulator: a TLS WebSocket server that streams a feed.

usage: exchange_sim.py --cert CERT --key KEY [--host 0.0.0.0] [--port 8443]
                       [--count N] [--sizes mixed|256|64,1024] [--rate MSGS_PER_S]
                       [--fragment-every K] [--text-every K]
                       [--close-after N | --rst-after N]
                       [--once] [--exit-on-stdin-eof] [--no-tls]

Needs Python >= 3.10 and `websockets` >= 13 (tools/setup.sh installs both in
/opt/libpipeline-venv).

Per connection, after the WebSocket handshake, it streams --count binary messages
(0 = none, -1 = until the client goes away). Message `seq` (0, 1, 2, ...) has the size
sizes(seq) and the content

    byte i = (seq * 131 + i) & 0xff                        for every i, then, if size >= 24,
    bytes 0..24 = <seq u64 LE><send time u64 LE, CLOCK_MONOTONIC ns><size u32 LE>
                  <crc32 of bytes 24.. u32 LE>

so a client checks order (seq), completeness (size, crc32, pattern) and one-way latency
(the clock is shared by every network namespace of a host). --sizes mixed: size 65536
for seq % 997 == 996, 1024 + h % 15361 for seq % 101 == 100, else 1 + h % 1024, with
h = (seq * 2654435761) mod 2**32. A list "64,1024" cycles; one number is fixed.
--fragment-every K: every K-th message (seq % K == K-1, size >= 3) is sent as three
fragments. --text-every K: every K-th message (seq % K == 0) is a *text* message of
the same size instead, with the content byte i = 'a' + (seq * 131 + i) % 26 (no header).
--rate: messages per second (paced; 0 = flat out).

Client messages: text "cmd:close" -> close 1000 "closing on request"; "cmd:rst" -> TCP
RST (SO_LINGER 0 + abort); "cmd:ping" -> the server pings and answers the text
"pong-ok <µs>" once the pong is back; anything else is echoed unchanged (same type).
Pings from the client are answered (pong) by the library.
--close-after N / --rst-after N: close 1000 / RST right after the N-th stream message.

Prints {"event": "listening", "port": P} once listening, and one JSON summary line on
exit (--once: after the first connection; else on SIGINT/SIGTERM or stdin EOF with
--exit-on-stdin-eof).
"""
import argparse
import asyncio
import json
import signal
import socket
import ssl
import struct
import sys
import time
import zlib

from websockets.asyncio.server import serve

PATTERN = bytes(i & 0xFF for i in range(65536 + 512))
LETTERS = "".join(chr(97 + i % 26) for i in range(65536 + 512 + 26))
HDR = struct.Struct("<QQII")


def size_fn(spec):
    if spec == "mixed":
        def mixed(seq):
            h = (seq * 2654435761) & 0xFFFFFFFF
            if seq % 997 == 996:
                return 65536
            if seq % 101 == 100:
                return 1024 + h % 15361
            return 1 + h % 1024
        return mixed
    sizes = [int(x) for x in spec.split(",") if x]
    if not sizes or any(s < 1 or s > 16 << 20 for s in sizes):
        raise SystemExit(f"--sizes {spec!r}: want 'mixed' or sizes >= 1")
    return lambda seq: sizes[seq % len(sizes)]


def message(seq, size):
    o = (seq * 131) & 0xFF
    if size > 65536:
        body = bytes(((seq * 131) + i) & 0xFF for i in range(size))
    else:
        body = PATTERN[o:o + size]
    if size < HDR.size:
        return body
    rest = body[HDR.size:]
    return HDR.pack(seq, time.monotonic_ns(), size, zlib.crc32(rest)) + rest


def text_message(seq, size):
    o = (seq * 131) % 26
    if size > 65536:
        return "".join(chr(97 + (o + i) % 26) for i in range(size))
    return LETTERS[o:o + size]


class Stats:
    def __init__(self):
        self.connections = 0
        self.sent = 0
        self.sent_bytes = 0
        self.fragmented = 0
        self.text = 0
        self.received = 0
        self.received_bytes = 0
        self.echoed = 0
        self.pings = 0
        self.pongs = 0
        self.ended = []
        self.t0 = time.monotonic()
        self.t_first = None
        self.t_last = None


def rst(ws):
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def stream(ws, args, st, sizes, done):
    seq = 0
    t0 = time.monotonic()
    k = args.fragment_every
    try:
        while args.count < 0 or seq < args.count:
            if args.rate > 0:
                target = t0 + seq / args.rate
                now = time.monotonic()
                if target > now:
                    await asyncio.sleep(target - now)
            size = sizes(seq)
            if args.text_every > 0 and seq % args.text_every == 0:
                m = text_message(seq, size)
                st.text += 1
            else:
                m = message(seq, size)
            if st.t_first is None:
                st.t_first = time.monotonic()
            if k > 0 and seq % k == k - 1 and size >= 3:
                a, b = size // 3, 2 * size // 3
                await ws.send([m[:a], m[a:b], m[b:]])
                st.fragmented += 1
            else:
                await ws.send(m)
            st.sent += 1
            st.sent_bytes += size
            seq += 1
            st.t_last = time.monotonic()
            if args.close_after and seq == args.close_after:
                st.ended.append("close-after")
                await ws.close(1000, "closing after %d messages" % seq)
                break
            if args.rst_after and seq == args.rst_after:
                st.ended.append("rst-after")
                rst(ws)
                break
    except Exception as e:  # connection gone
        st.ended.append("stream: %s" % type(e).__name__)
    done.set()


async def handler(ws, args, st, sizes, finished):
    st.connections += 1
    done = asyncio.Event()
    task = asyncio.create_task(stream(ws, args, st, sizes, done))
    try:
        async for msg in ws:
            st.received += 1
            st.received_bytes += len(msg)
            if msg == "cmd:close":
                st.ended.append("cmd-close")
                await ws.close(1000, "closing on request")
                break
            if msg == "cmd:rst":
                st.ended.append("cmd-rst")
                rst(ws)
                break
            if msg == "cmd:ping":
                st.pings += 1
                t = time.monotonic_ns()
                waiter = await ws.ping(b"sim-ping")
                await waiter
                st.pongs += 1
                await ws.send("pong-ok %d" % ((time.monotonic_ns() - t) // 1000))
                continue
            st.echoed += 1
            await ws.send(msg)
    except Exception as e:
        st.ended.append("recv: %s" % type(e).__name__)
    if not task.done():
        if args.count >= 0 and not ws.close_code:
            # Let the stream finish when the client is still reading.
            try:
                await asyncio.wait_for(done.wait(), timeout=1)
            except asyncio.TimeoutError:
                pass
        task.cancel()
    if ws.close_code is not None and not st.ended:
        st.ended.append("client-close %s" % ws.close_code)
    finished.set()


async def main_async(args):
    sizes = size_fn(args.sizes)
    st = Stats()
    ctx = None
    if not args.no_tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
    finished = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:
        def on_stdin():
            if not sys.stdin.buffer.read1(4096):
                loop.remove_reader(sys.stdin.fileno())
                stop.set()
        loop.add_reader(sys.stdin.fileno(), on_stdin)

    async def h(ws):
        await handler(ws, args, st, sizes, finished)

    async with serve(h, args.host, args.port, ssl=ctx,
                     compression="deflate" if args.compression else None, max_size=None,
                     ping_interval=None, max_queue=None, write_limit=1 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"event": "listening", "port": port}), flush=True)
        waits = [asyncio.create_task(stop.wait())]
        if args.once:
            waits.append(asyncio.create_task(finished.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
    dur = (st.t_last - st.t_first) if st.t_first and st.t_last else 0.0
    print(json.dumps({
        "event": "summary", "connections": st.connections, "sent": st.sent,
        "sent_bytes": st.sent_bytes, "fragmented": st.fragmented, "text": st.text, "received": st.received,
        "received_bytes": st.received_bytes, "echoed": st.echoed, "pings": st.pings,
        "pongs": st.pongs, "ended": st.ended, "stream_seconds": round(dur, 6),
        "msgs_per_s": round(st.sent / dur, 1) if dur > 0 else None,
    }), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--no-tls", action="store_true", help="plain ws:// (for debugging)")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--sizes", default="mixed")
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--fragment-every", type=int, default=0)
    p.add_argument("--text-every", type=int, default=0)
    p.add_argument("--close-after", type=int, default=0)
    p.add_argument("--rst-after", type=int, default=0)
    p.add_argument("--once", action="store_true")
    p.add_argument("--compression", action="store_true",
                   help="accept permessage-deflate (websockets' defaults) when the client offers it")
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    args = p.parse_args()
    if not args.no_tls and not (args.cert and args.key):
        p.error("--cert and --key are required (or --no-tls)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

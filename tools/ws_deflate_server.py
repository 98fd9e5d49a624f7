#!/usr/bin/env python3
"""permessage-deflate server (Python `websockets`, asyncio API) for libpipeline's
compression interop tests (tests/interop_deflate.rs).

usage: ws_deflate_server.py HOST PORT [--cert CERT --key KEY]
                            [--server-max-window-bits N] [--client-max-window-bits N]
                            [--server-no-context-takeover] [--client-no-context-takeover]

Without the parameter options it uses websockets' default permessage-deflate
(compression="deflate": server_max_window_bits=12, client_max_window_bits=12,
memLevel 5). With any of them, exactly those parameters. PORT 0 picks a free port;
prints "PORT <n>" once listening; exits when stdin closes or on SIGTERM.

Behaviour by request path:
  /echo                      echo every message (text as text, binary as binary)
  /stream?n=N&size=S&type=T  send N messages of S bytes (T = binary|text|json; message i
                             is pattern(i, S)), then close 1000 "stream done"
  /fragmented                send a JSON text message in 5 fragments and a 1 MiB binary
                             message in 64 KiB fragments (each one compressed message),
                             then echo
  /negotiated                send the negotiated extension header as text, then echo

pattern(i, S): binary: a xorshift stream seeded with i (poorly compressible) for odd
i, (i + j) % 251 for even i; text: chr(97 + (i + j) % 26); json: a trade record padded
to S bytes.
"""
import argparse
import asyncio
import os
import ssl
import sys
import threading

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

# The plain test server's echo, patterns, request parsing and /stream (same directory):
# one copy of each.
from ws_interop_server import echo, request_target, stream, text_pattern
from ws_interop_server import pattern as plain_pattern


def pattern(i, size):
    if i % 2:
        x = (i * 2654435761 + 1) & 0xFFFFFFFF
        out = bytearray(size)
        for j in range(size):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            out[j] = x & 0xFF
        return bytes(out)
    return plain_pattern(i, size)


def json_pattern(i, size):
    s = '{"e":"trade","E":%d,"s":"BTCUSDT","t":%d,"p":"%d.%02d","q":"0.%03d","m":%s}' % (
        1700000000000 + i, 4000000 + i, 60000 + i % 977, i % 100, i % 1000,
        "true" if i % 2 else "false")
    return (s + " " * max(0, size - len(s)))[:max(size, len(s))]


async def handler(ws):
    path, q = request_target(ws)
    try:
        if path == "/echo":
            await echo(ws)
        elif path == "/stream":
            await stream(ws, q, {"binary": pattern, "text": text_pattern, "json": json_pattern})
        elif path == "/fragmented":
            j = "".join(json_pattern(i, 0) for i in range(200))
            await ws.send([j[k:k + len(j) // 5 + 1] for k in range(0, len(j), len(j) // 5 + 1)])
            big = pattern(0, 1 << 20)
            await ws.send([big[k:k + 65536] for k in range(0, len(big), 65536)])
            await echo(ws)
        elif path == "/negotiated":
            await ws.send(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
            await echo(ws)
        else:
            await ws.close(1008, "unknown path")
    except ConnectionClosed:
        pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--server-max-window-bits", type=int)
    ap.add_argument("--client-max-window-bits", type=int)
    ap.add_argument("--server-no-context-takeover", action="store_true")
    ap.add_argument("--client-no-context-takeover", action="store_true")
    a = ap.parse_args()
    custom = (a.server_max_window_bits or a.client_max_window_bits
              or a.server_no_context_takeover or a.client_no_context_takeover)
    kw = {}
    if custom:
        kw["extensions"] = [ServerPerMessageDeflateFactory(
            server_no_context_takeover=a.server_no_context_takeover,
            client_no_context_takeover=a.client_no_context_takeover,
            server_max_window_bits=a.server_max_window_bits,
            client_max_window_bits=a.client_max_window_bits,
        )]
        kw["compression"] = None
    else:
        kw["compression"] = "deflate"
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
    stop = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

    threading.Thread(target=watch_stdin, daemon=True).start()
    async with serve(handler, a.host, a.port, ssl=ctx, max_size=None, **kw) as server:
        port = server.sockets[0].getsockname()[1]
        print("PORT %d" % port, flush=True)
        await stop
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())

#!/usr/bin/env python3
"""Scripted WebSocket server (Python `websockets`, asyncio API) for libpipeline's
interop tests.

usage: ws_interop_server.py HOST PORT [--cert CERT --key KEY]

PORT 0 picks a free port. Prints "PORT <n>" on stdout (flushed) once listening. With
--cert/--key it serves wss:// (TLS), otherwise ws://. Exits when stdin closes (so a
test that dies takes the server with it) or on SIGTERM.

Behaviour by request path:
  /echo                      echo every message (text as text, binary as binary)
  /stream?n=N&size=S&type=T  send N messages of S bytes (T = binary|text; message i
                             holds pattern(i, S)), then close 1000 "stream done"
  /fragmented                send three fragmented messages (text "fragmented tëxt" in
                             3 fragments, binary 0..2 in 3 fragments one empty, binary
                             1 MiB in 64 KiB fragments), then echo
  /ping                      ping with payload "srv-ping-1", wait for the pong, send
                             text "pong received: srv-ping-1", then echo
  /close?code=C&reason=R     close right away with code C (default 1000) and reason R
  /big?size=S                send one binary message of S bytes (pattern(0, S)), then echo
  /headers                   send one text message, JSON {"headers": [[name, value], ...],
                             "subprotocol": the one chosen or null}, then echo
  /forbidden                 refuse the upgrade: HTTP 403
  anything else              HTTP 404

The server chooses the first subprotocol a client offers (none if none is offered).

pattern(i, S): byte j is (i + j) % 251 (binary); for text, chr(97 + (i + j) % 26).
"""
import asyncio
import http
import json
import os
import ssl
import sys
import threading
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

BASE = bytes(range(251))


def pattern(i, size):
    start = i % 251
    reps = (start + size) // 251 + 1
    return (BASE * reps)[start:start + size]


def text_pattern(i, size):
    letters = "abcdefghijklmnopqrstuvwxyz"
    start = i % 26
    reps = (start + size) // 26 + 1
    return (letters * reps)[start:start + size]


async def echo(ws):
    try:
        async for msg in ws:
            await ws.send(msg)
    except ConnectionClosed:
        pass


def request_target(ws):
    """The upgrade request's path and its query (the first value of each parameter)."""
    url = urlsplit(ws.request.path)
    return url.path, {k: v[0] for k, v in parse_qs(url.query).items()}


async def stream(ws, q, patterns):
    """/stream: n messages of size bytes, message i made by patterns[type] (binary for a
    type it does not name), then close 1000 "stream done"."""
    n, size = int(q.get("n", "10")), int(q.get("size", "100"))
    make = patterns.get(q.get("type", "binary"), patterns["binary"])
    for i in range(n):
        await ws.send(make(i, size))
    await ws.close(1000, "stream done")


async def handler(ws):
    path, q = request_target(ws)
    try:
        if path == "/echo":
            await echo(ws)
        elif path == "/stream":
            await stream(ws, q, {"binary": pattern, "text": text_pattern})
        elif path == "/fragmented":
            await ws.send(["frag", "mented ", "tëxt"])
            await ws.send([b"\x00", b"", b"\x01\x02"])
            big = pattern(0, 1 << 20)
            await ws.send([big[i:i + 65536] for i in range(0, len(big), 65536)])
            await echo(ws)
        elif path == "/ping":
            waiter = await ws.ping(b"srv-ping-1")
            await asyncio.wait_for(waiter, 10)
            await ws.send("pong received: srv-ping-1")
            await echo(ws)
        elif path == "/close":
            await ws.close(int(q.get("code", "1000")), q.get("reason", ""))
        elif path == "/big":
            await ws.send(pattern(0, int(q.get("size", "1048576"))))
            await echo(ws)
        elif path == "/headers":
            await ws.send(json.dumps({
                "headers": [[k, v] for k, v in ws.request.headers.raw_items()],
                "subprotocol": ws.subprotocol,
            }))
            await echo(ws)
    except ConnectionClosed:
        pass


def process_request(connection, request):
    path = urlsplit(request.path).path
    if path == "/forbidden":
        return connection.respond(http.HTTPStatus.FORBIDDEN, "forbidden\n")
    if path not in ("/echo", "/stream", "/fragmented", "/ping", "/close", "/big", "/headers"):
        return connection.respond(http.HTTPStatus.NOT_FOUND, "no such behaviour\n")
    return None


def watch_stdin():
    try:
        sys.stdin.read()
    finally:
        os._exit(0)


async def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port = args[0], int(args[1])
    ctx = None
    if "--cert" in args:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[args.index("--cert") + 1], args[args.index("--key") + 1])
    threading.Thread(target=watch_stdin, daemon=True).start()
    async with serve(
        handler,
        host,
        port,
        ssl=ctx,
        process_request=process_request,
        max_size=None,         # the tests echo up to 16 MiB
        compression=None,      # we never negotiate permessage-deflate
        ping_interval=None,    # no keepalive pings in the middle of the scripts
        write_limit=1 << 20,
        select_subprotocol=lambda connection, offered: offered[0] if offered else None,
    ) as server:
        sock = next(iter(server.sockets))
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

#!/usr/bin/env python3
"""Tiny TLS echo server for libpipeline's tests.

usage: tls_echo_server.py HOST PORT CERT KEY [--tls 1.2|1.3|any] [--garbage]

PORT 0 picks a free port. Prints "PORT <n>" on stdout (flushed) once listening, then
serves each connection in a thread: everything received is sent back. One SSLContext
for all connections, so session tickets from one connection resume on the next.
--garbage: no TLS at all; answer every connection with non-TLS bytes and close.
Exits when stdin closes (so a test that dies takes the server with it) or on SIGTERM.
"""
import socket
import ssl
import sys
import threading


def serve_conn(conn, ctx, garbage):
    try:
        if garbage:
            try:
                conn.recv(4096)
            except OSError:
                pass
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
            return
        with ctx.wrap_socket(conn, server_side=True) as s:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                s.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    args = sys.argv[1:]
    if len(args) < 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, cert, key = args[0], int(args[1]), args[2], args[3]
    ver = "any"
    if "--tls" in args:
        ver = args[args.index("--tls") + 1]
    garbage = "--garbage" in args
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if ver == "1.2":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif ver == "1.3":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    lsock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(64)
    print(f"PORT {lsock.getsockname()[1]}", flush=True)

    def watch_stdin():
        try:
            sys.stdin.read()
        finally:
            import os
            os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve_conn, args=(conn, ctx, garbage), daemon=True).start()


if __name__ == "__main__":
    main()

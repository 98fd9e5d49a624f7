#!/usr/bin/env python3
"""Read tools/exchange_sim.py's feed through libpipeline and check it.

usage: market_data_reader.py URL [--ca-file F] [--transport kernel|xdp] [--iface IF]
                             [--count N] [--layout L] [--wait W] [--quiet]

Prints the rate once a second, then a summary line:
  summary: messages=N gaps=0 bad=0 seconds=S rate=R/s latency_us p50=.. p99=.. max=..
Each payload is read in place (a memoryview into shared memory); only the 24-byte
header is unpacked. Exit status 0 when N messages arrived in order and intact.
"""
import argparse
import struct
import sys
import time
import zlib

import pipeline

HDR = struct.Struct("<QQII")


def check(payload, want):
    """(seq, send_ns or 0, ok) for the message expected as number `want`."""
    n = len(payload)
    if n < HDR.size:
        ok = all(payload[i] == (want * 131 + i) & 0xFF for i in range(n))
        return want, 0, ok
    seq, sent, size, crc = HDR.unpack_from(payload)
    ok = size == n and zlib.crc32(payload[HDR.size:]) == crc
    return seq, sent, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("--ca-file")
    ap.add_argument("--transport", default="kernel")
    ap.add_argument("--iface")
    ap.add_argument("--count", type=int, default=-1)
    ap.add_argument("--layout", default="auto")
    ap.add_argument("--wait", default="auto")
    ap.add_argument("--name")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--quiet", action="store_true", help="no per-second lines")
    a = ap.parse_args()

    opts = dict(transport=a.transport, layout=a.layout, wait=a.wait, timeout=a.timeout)
    for k in ("ca_file", "iface", "name"):
        if getattr(a, k):
            opts[k] = getattr(a, k)
    want = gaps = bad = 0
    lat = []
    t_first = t_last = None
    try:
        with pipeline.Pipeline(a.url, **opts) as p:
            next_report = time.monotonic() + 1.0
            last_count = 0
            for msg in p:
                if msg.opcode != 2:  # text: not part of the feed
                    print("text", msg.text())
                    continue
                now = time.monotonic_ns()
                seq, sent, ok = check(msg.payload, want)
                if t_first is None:
                    t_first = now
                t_last = now
                if seq > want:
                    gaps += seq - want
                    print("gap: expected seq %d, got %d" % (want, seq), file=sys.stderr)
                elif seq < want or not ok:
                    bad += 1
                    print("bad message at seq %d" % want, file=sys.stderr)
                want = seq + 1
                if sent:
                    lat.append(now - sent)
                if not a.quiet and time.monotonic() >= next_report:
                    print("%d messages, %d msg/s" % (want, want - last_count), flush=True)
                    last_count = want
                    next_report += 1.0
                if a.count >= 0 and want >= a.count:
                    p.close(1000, "done")
                    break
            stats = p.stats()
    except pipeline.PipelineError as e:
        print("market_data_reader: %s" % e, file=sys.stderr)
        return 1
    lat.sort()

    def pct(q):
        return lat[int(q / 100 * (len(lat) - 1) + 0.5)] / 1e3 if lat else 0.0

    secs = (t_last - t_first) / 1e9 if t_first and t_last and t_last > t_first else 0.0
    print("summary: messages=%d gaps=%d bad=%d seconds=%.3f rate=%.0f/s latency_us p50=%.1f p99=%.1f max=%.1f "
          "drops=%d" % (want, gaps, bad, secs, want / secs if secs else 0, pct(50), pct(99), pct(100),
                        stats["drops"]), flush=True)
    if gaps or bad or (a.count >= 0 and want < a.count):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

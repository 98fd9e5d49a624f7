"""A typed use of the package (CI runs `mypy --strict` on it) that also runs: it reads
a feed, counting messages, while an asyncio task ticks alongside (the reads happen on a
worker thread so the event loop stays free).

    python typed_reader.py URL --ca-file CA --count N
"""
import argparse
import asyncio
from typing import Optional

import pipeline


def read(p: pipeline.Pipeline, count: int) -> int:
    n = 0
    while n < count:
        m: Optional[pipeline.Message] = p.recv(timeout=10.0)
        if m is None:
            raise TimeoutError("no message for 10 s")
        if not m.is_text:
            n += 1
    return n


async def main(url: str, ca: str, count: int) -> int:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    t = asyncio.create_task(ticker())
    with pipeline.Pipeline(url, ca_file=ca, layout="inline", wait="backoff", quiet=True) as p:
        n = await asyncio.get_running_loop().run_in_executor(None, read, p, count)
        p.close(1000, "done")
        try:
            while p.recv(timeout=5.0) is not None:
                pass
        except pipeline.EndOfStream:
            pass
        d: pipeline.Disconnect = p.disconnect()
    t.cancel()
    print("summary: messages=%d ticks=%d kind=%s" % (n, ticks, pipeline.DisconnectKind(d.kind).name))
    return 0 if n == count and ticks > 0 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--ca-file", required=True)
    ap.add_argument("--count", type=int, default=1000)
    a = ap.parse_args()
    raise SystemExit(asyncio.run(main(a.url, a.ca_file, a.count)))

"""A typed use of the package (CI runs `mypy --strict` on it) that also runs: it reads
a feed with `async for` (the task awaits the pipeline's event fd between messages, so
nothing spins and the event loop stays free) while an asyncio task ticks alongside.

    python typed_reader.py URL --ca-file CA --count N
"""
import argparse
import asyncio

import pipeline


async def read(p: pipeline.Pipeline, count: int) -> int:
    n = 0
    async for m in p:  # ends at the end of the stream
        if not m.is_text:
            n += 1
            if n == count:
                p.close(1000, "done")  # iteration goes on until the server answered
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
        n = await asyncio.wait_for(read(p, count), 60.0)
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

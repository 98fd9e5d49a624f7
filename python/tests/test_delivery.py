"""Delivery without busy loops and without dangling views: `async for` on the event fd,
callback delivery (`on_message`), and payload views (numpy) that outlive their step."""
import asyncio
import gc
import os
import time
import unittest
import weakref

import pipeline
from test_pipeline import Sim, WithCerts

try:
    import numpy
except ImportError:  # tools/setup.sh and tools/test.d/python_pkg.sh install it
    numpy = None


def text_frames(n, close=True):
    out = bytearray()
    for i in range(n):
        p = ("msg %d" % i).encode()
        out += bytes([0x81, len(p)]) + p
    return bytes(out) + (bytes([0x88, 0x02, 0x03, 0xE8]) if close else b"")


def binary_frames(n, size):
    """n binary messages of `size` bytes (126 <= size < 65536), byte j of message i =
    (i * 7 + j) & 0xff, then the server's close."""
    out = bytearray()
    for i in range(n):
        out += bytes([0x82, 126]) + size.to_bytes(2, "big") + pattern(i, size)
    return bytes(out) + bytes([0x88, 0x02, 0x03, 0xE8])


def pattern(i, size):
    return bytes((i * 7 + j) & 0xFF for j in range(size))


def synthetic(data, **kw):
    opts = dict(transport="synthetic", synthetic=data, layout="threads", wait="backoff", quiet=True)
    opts.update(kw)
    return pipeline.Pipeline("wss://synthetic.test/x", **opts)


def need_numpy(test):
    if numpy is None:
        if os.environ.get("CI"):
            test.fail("numpy is not installed (tools/setup.sh installs it)")
        test.skipTest("numpy is not installed (tools/setup.sh installs it)")


class Async(unittest.TestCase):
    def test_async_for_reads_while_another_task_runs(self):
        n = 3000
        ticks = 0

        async def main():
            nonlocal ticks

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            t = asyncio.create_task(ticker())
            got = []
            with synthetic(text_frames(n), synthetic_chunk=97) as p:
                async for m in p:
                    got.append(m.text())
                    if len(got) % 500 == 0:
                        await asyncio.sleep(0.01)  # let the ticker run mid-stream too
                self.assertEqual(p.state().kind, pipeline.DisconnectKind.SERVER_CLOSED)
            t.cancel()
            return got

        got = asyncio.run(main())
        self.assertEqual(got, ["msg %d" % i for i in range(n)])
        self.assertGreater(ticks, 0)

    def test_a_quiet_feed_costs_the_event_loop_no_cpu(self):
        """5 messages, then nothing for 1 s: the task awaiting `async for` must not spin.
        A busy loop burns ~1 s of CPU on its thread in that second; allow 0.15 s (and
        0.7 s for the whole process)."""
        out = {}

        async def main():
            with synthetic(text_frames(5, close=False)) as p:
                got = []

                async def consume():
                    async for m in p:
                        got.append(m.text())

                task = asyncio.create_task(consume())
                while len(got) < 5:
                    await asyncio.sleep(0.01)
                c0, w0, p0 = time.thread_time(), time.monotonic(), time.process_time()
                await asyncio.sleep(1.0)  # the consumer is parked on the event fd
                out["thread_cpu"] = time.thread_time() - c0
                out["process_cpu"] = time.process_time() - p0
                out["wall"] = time.monotonic() - w0
                self.assertFalse(task.done())
                p.close(1000, "done")  # the close answer ends `async for`
                await asyncio.wait_for(task, 10)
                self.assertEqual(got, ["msg %d" % i for i in range(5)])

        asyncio.run(main())
        print("\nquiet feed, 1 s: event-loop thread CPU %.4f s, process CPU %.3f s (stages on backoff)"
              % (out["thread_cpu"], out["process_cpu"]))
        self.assertGreaterEqual(out["wall"], 0.95)
        self.assertLess(out["thread_cpu"], 0.15, out)
        # The whole process, the stages' own backoff included (~0.2 s here): a spinning
        # loop alone would be 1 s.
        self.assertLess(out["process_cpu"], 0.7, out)

    def test_blocking_recv_sleeps_on_the_event_fd(self):
        with synthetic(text_frames(3, close=False)) as p:
            for i in range(3):
                self.assertEqual(p.recv(timeout=5).text(), "msg %d" % i)
            c0, w0 = time.thread_time(), time.monotonic()
            self.assertIsNone(p.recv(timeout=1.0))
            cpu, wall = time.thread_time() - c0, time.monotonic() - w0
        self.assertGreaterEqual(wall, 0.95)
        self.assertLess(cpu, 0.15, "recv(timeout=1) burned %.3f s of CPU" % cpu)


class Callback(WithCerts):

    def test_callback_receives_and_replies_through_its_sender(self):
        for layout in ("inline", "processes"):
            with self.subTest(layout=layout):
                sim = Sim(self.certs, "--count", "0")  # echoes what we send
                seen = []

                def on_message(msg, sender):
                    seen.append(msg.text())
                    if msg.text() == "first":
                        sender.send("reply from the callback")
                    elif msg.text() == "reply from the callback":
                        sender.send(b"\x00binary")
                    elif msg.opcode == 2:
                        sender.send("cmd:close")  # the simulator closes 1000

                try:
                    p = pipeline.Pipeline(sim.url, ca_file=str(self.certs / "ca.pem"), layout=layout,
                                          wait="backoff", quiet=True, on_message=on_message)
                    with p:
                        with self.assertRaises(pipeline.ConfigError):
                            p.poll()  # callback delivery: no polling
                        p.send("first")
                        self.assertTrue(p.wait_closed(10), p.state())
                        self.assertEqual(p.state().kind, pipeline.DisconnectKind.SERVER_CLOSED, p.state())
                    self.assertEqual(seen, ["first", "reply from the callback", "\x00binary"])
                finally:
                    sim.kill()

    def test_an_exception_in_the_callback_ends_the_connection_with_its_reason(self):
        for layout in ("inline", "threads", "processes"):
            with self.subTest(layout=layout):
                seen = []
                kept = []

                def on_message(msg, sender):
                    seen.append(msg.text())
                    kept.append(sender)
                    if len(seen) == 3:
                        raise ValueError("boom at %s" % msg.text())

                name = "pycb%d%s" % (os.getpid(), layout[:3])
                p = synthetic(text_frames(50, close=False), layout=layout, name=name, on_message=on_message)
                with p:
                    self.assertTrue(p.wait_closed(10), p.state())
                    st = p.state()
                    self.assertEqual(st.kind, pipeline.DisconnectKind.CALLBACK_ERROR, st)
                    self.assertIn("on_message raised ValueError: boom at msg 2", st.reason)
                self.assertEqual(seen, ["msg 0", "msg 1", "msg 2"])
                with self.assertRaises(pipeline.ClosedError):
                    kept[0].send("after its call")  # a Sender is valid during its call only
                self.assertFalse(os.path.exists("/dev/shm/pipeline_" + name))

    def test_the_callback_reads_its_messages_timestamps(self):
        stamps, held = [], []
        t0 = time.monotonic_ns()

        def on_message(msg, sender):
            stamps.append(msg.timestamps)
            held.append(msg)

        with synthetic(text_frames(200, close=False), on_message=on_message) as p:
            deadline = time.monotonic() + 10
            while len(stamps) < 200 and time.monotonic() < deadline:
                time.sleep(0.01)
        self.assertEqual(len(stamps), 200)
        for t in stamps:
            self.assertTrue(t0 <= t.arrival_ns <= t.decrypted_ns <= t.parsed_ns <= t.delivered_ns
                            <= time.monotonic_ns(), t)
        with self.assertRaises(ValueError):
            held[0].timestamps  # after its call: gone with the message

    def test_a_view_kept_past_the_callback_ends_the_connection(self):
        kept = []

        def on_message(msg, sender):
            kept.append(msg.payload[0:3])  # a slice: would read reused memory later

        with synthetic(text_frames(10, close=False), layout="inline", on_message=on_message) as p:
            self.assertTrue(p.wait_closed(10), p.state())
            st = p.state()
            self.assertEqual(st.kind, pipeline.DisconnectKind.CALLBACK_ERROR, st)
            self.assertIn("kept a view of the payload", st.reason)
        self.assertEqual(len(kept), 1)
        self.assertEqual(bytes(kept[0]), b"msg")  # still mapped (and unchanged) while kept


class Views(unittest.TestCase):
    """A numpy view of a payload never reads freed or reused shared memory: the release
    of its bytes (and of every later message's) is deferred while it lives."""

    SIZE, N = 1000, 400  # 400 KB through a 64 KiB MSG_INBOX: it wraps ~6 times

    def feed(self, **kw):
        return synthetic(binary_frames(self.N, self.SIZE), inbox_size=1 << 16, max_message=4096,
                         synthetic_chunk=1500, **kw)

    def test_a_numpy_view_holds_its_bytes_and_the_feed_waits_for_it(self):
        need_numpy(self)
        with self.feed() as p:
            m = p.recv(timeout=5)
            arr = numpy.frombuffer(m.payload, dtype=numpy.uint8)
            want = pattern(0, self.SIZE)
            self.assertEqual(arr.tobytes(), want)
            got, last = 1, m
            # Read on while the view lives: the inbox fills (nothing after message 0 can
            # be released) and the feed stalls instead of overwriting message 0.
            while True:
                m = p.recv(timeout=0.5)
                if m is None:
                    break
                self.assertEqual(m.bytes(), pattern(got, self.SIZE), got)
                got, last = got + 1, m
            self.assertLess(got, self.N, "the inbox never filled: did the view hold anything?")
            self.assertEqual(arr.tobytes(), want, "message 0's bytes were reused under a live view")
            with self.assertRaises(ValueError):
                last.payload[0]  # a message without other views: released by its step
            del arr
            gc.collect()
            while got < self.N:  # the view is gone: the rest flows
                m = p.recv(timeout=5)
                self.assertIsNotNone(m, "stalled at %d after the view went" % got)
                self.assertEqual(m.bytes(), pattern(got, self.SIZE), got)
                got += 1
        self.assertEqual(got, self.N)

    def test_the_payload_itself_raises_after_the_step_and_slices_stay_valid(self):
        with self.feed() as p:
            m0 = p.recv(timeout=5)
            view = m0.payload
            piece = m0.payload[10:20]
            m1 = p.recv(timeout=5)
            with self.assertRaises(ValueError):
                view[0]  # released by the step
            self.assertEqual(bytes(piece), pattern(0, self.SIZE)[10:20])
            self.assertEqual(m1.bytes(), pattern(1, self.SIZE))

    def test_a_view_outliving_the_pipeline_keeps_the_mapping(self):
        need_numpy(self)
        name = "pyview%d" % os.getpid()
        p = self.feed(name=name)
        m = p.recv(timeout=5)
        arr = numpy.frombuffer(m.payload, dtype=numpy.uint8)
        handle = weakref.ref(p._owner_handle)
        p.shutdown()
        self.assertFalse(os.path.exists("/dev/shm/pipeline_" + name), "the stages did not stop")
        self.assertIsNotNone(handle(), "pl_free ran under a live view")
        self.assertEqual(arr.tobytes(), pattern(0, self.SIZE))  # mapped, intact: no crash
        del arr, m
        gc.collect()
        self.assertIsNone(handle(), "the pipeline was not freed once the last view went")


if __name__ == "__main__":
    unittest.main()

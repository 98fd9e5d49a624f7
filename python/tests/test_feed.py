"""pipeline.Feed: two legs (two small ws:// servers in this process sending {"seq":N}
with disjoint drops and one sequence neither sends), merged by the JSON key in
contiguous mode: every sequence once and in order, a "gap" event for the missing one,
wins split between the legs, counters that add up; polled, and by callback
(`on_message`, on the library's thread; an exception there ends delivery and `wait()`
raises it)."""
import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
import unittest

import pipeline

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def serve(drop, delay, n, ready):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    ready.append(ls.getsockname()[1])

    def conn(s):
        try:
            serve_conn(s)
        except OSError:
            pass  # the client went first (a test closed its feed)

    def serve_conn(s):
        req = b""
        while b"\r\n\r\n" not in req:
            req += s.recv(4096)
        key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
        acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        time.sleep(delay)
        for i in range(n):
            if not drop(i):
                p = json.dumps({"seq": i, "pad": "x" * (i % 50)}).encode()
                s.sendall(bytes([0x81, len(p)]) + p if len(p) < 126 else bytes([0x81, 126]) + struct.pack(">H", len(p)) + p)
            if i % 20 == 0:
                time.sleep(0.002)
        time.sleep(5)
        s.close()

    def accept():
        while True:
            try:
                s, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=conn, args=(s,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return ls


def two_legs(n):
    """Two servers of `n` sequences with disjoint drops (and 1000 on neither), B 3 ms
    late: their listeners and the two URLs."""
    pa, pb = [], []
    la = serve(lambda i: i % 10 == 3 or i == 1000, 0.0, n, pa)
    lb = serve(lambda i: i % 10 == 7 or i == 1000, 0.003, n, pb)
    return la, lb, ["ws://127.0.0.1:%d/feed" % pa[0], "ws://127.0.0.1:%d/feed" % pb[0]]


class FeedAB(unittest.TestCase):
    def test_two_legs_merged(self):
        n = 2000
        la, lb, urls = two_legs(n)
        try:
            seqs, events = [], []
            with pipeline.Feed(urls, key="seq", contiguous=True, hold_ms=250, layout="inline", wait="backoff",
                               quiet=True) as f:
                deadline = time.monotonic() + 20
                while (not seqs or seqs[-1] != n - 1) and time.monotonic() < deadline:
                    item = f.recv(timeout=0.1)
                    if item is None:
                        continue
                    if isinstance(item, pipeline.FeedEvent):
                        events.append(item)
                        continue
                    self.assertIsInstance(item.payload, memoryview)
                    self.assertEqual(json.loads(item.bytes())["seq"], item.seq)
                    seqs.append(item.seq)
                self.assertEqual(seqs, [i for i in range(n) if i != 1000])
                gaps = [e for e in events if e.kind == "gap"]
                self.assertEqual([(g.stream, g.first, g.last) for g in gaps], [(0, 1000, 1000)])
                self.assertEqual(gaps[0].text, "gap: stream 0 sequence 1000")
                self.assertEqual(sorted(e.leg for e in events if e.kind == "leg_up"), [0, 1])
                s0, s1, all_ = f.stats(0), f.stats(1), f.stats()
                self.assertGreater(s0["feed_won"], 0)
                self.assertGreater(s1["feed_won"], 0)
                self.assertEqual(s0["feed_won"] + s1["feed_won"], len(seqs))
                self.assertEqual(all_["feed_gaps"], 1)
                for s in (s0, s1):
                    self.assertEqual(s["feed_received"], s["feed_won"] + s["feed_dups"])
                f.close()
        finally:
            la.close()
            lb.close()


class FeedCallback(unittest.TestCase):
    def test_two_legs_merged_by_callback(self):
        n = 2000
        la, lb, urls = two_legs(n)
        try:
            seqs, events, threads = [], [], set()
            done = threading.Event()

            def on_message(item):
                threads.add(threading.get_ident())
                if isinstance(item, pipeline.FeedEvent):
                    events.append(item)
                    return
                self.assertEqual(json.loads(item.bytes())["seq"], item.seq)
                seqs.append(item.seq)
                if item.seq == n - 1:
                    done.set()

            with pipeline.Feed(urls, key="seq", contiguous=True, hold_ms=250, layout="inline", wait="backoff",
                               quiet=True, on_message=on_message) as f:
                with self.assertRaises(pipeline.ConfigError):
                    f.poll()  # callback delivery: no polling
                self.assertTrue(done.wait(20), "the last sequence arrived")
                self.assertEqual(seqs, [i for i in range(n) if i != 1000])
                self.assertEqual([(g.first, g.last) for g in events if g.kind == "gap"], [(1000, 1000)])
                self.assertEqual(sorted(e.leg for e in events if e.kind == "leg_up"), [0, 1])
                self.assertNotIn(threading.get_ident(), threads, "the library's thread calls back")
                s0, s1 = f.stats(0), f.stats(1)
                self.assertEqual(s0["feed_won"] + s1["feed_won"], len(seqs))
                self.assertGreater(s0["feed_won"], 0)
                self.assertGreater(s1["feed_won"], 0)
                self.assertFalse(f.wait(timeout=0.05), "still delivering: the legs are open")
                f.close()
                self.assertTrue(f.wait(timeout=10), "closing every leg ends delivery")
        finally:
            la.close()
            lb.close()

    def test_an_exception_in_the_callback_ends_delivery_and_wait_raises_it(self):
        ports = []
        ls = serve(lambda i: False, 0.0, 1000, ports)
        try:
            got = []

            class Enough(Exception):
                pass

            def on_message(item):
                if isinstance(item, pipeline.FeedMessage):
                    got.append(item.seq)
                    if item.seq == 99:
                        raise Enough("seq 99")

            with pipeline.Feed(["ws://127.0.0.1:%d/feed" % ports[0]], key="seq", layout="inline", wait="backoff",
                               quiet=True, on_message=on_message) as f:
                with self.assertRaises(Enough):
                    f.wait(timeout=10)
                self.assertEqual(got, list(range(100)), "nothing after the exception")
        finally:
            ls.close()


class FeedPublished(unittest.TestCase):
    def test_publish_for_other_processes(self):
        n = 2000
        la, lb, urls = two_legs(n)
        name = "pyfpub%d" % os.getpid()
        try:
            with pipeline.Feed(urls, key="seq", contiguous=True, hold_ms=250, layout="inline", wait="backoff",
                               quiet=True, name=name, publish=True) as f:
                self.assertTrue(os.path.exists("/dev/shm/pipeline_%s/ws_frame_info.shm" % name))
                with self.assertRaises(pipeline.ConfigError):
                    f.poll()
                deadline = time.monotonic() + 20
                while f.stats()["feed_delivered"] < n - 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual(f.stats()["feed_delivered"], n - 1, "every sequence but 1000, published")
                self.assertEqual(f.stats()["feed_gaps"], 1)
                f.close()
                self.assertTrue(f.wait(timeout=10))
        finally:
            la.close()
            lb.close()


if __name__ == "__main__":
    unittest.main()

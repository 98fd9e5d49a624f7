"""Exception types, end-of-stream versus timeout, and Ctrl-C during start."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import pipeline


def frames(n):
    out = bytearray()
    for i in range(n):
        p = ("msg %d" % i).encode()
        out += bytes([0x81, len(p)]) + p
    return bytes(out) + bytes([0x88, 0x02, 0x03, 0xE8])  # then the server closes (1000)


class Errors(unittest.TestCase):
    def test_config_error_is_a_value_error(self):
        with self.assertRaises(ValueError) as c:
            pipeline.Pipeline("ws://127.0.0.1:1/", layout="sideways")
        self.assertIsInstance(c.exception, pipeline.ConfigError)
        with self.assertRaises(ValueError):
            pipeline.Pipeline("not a url", quiet=True)

    def test_refused_is_a_connection_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        with self.assertRaises(ConnectionError) as c:
            pipeline.Pipeline("ws://127.0.0.1:%d/" % port, quiet=True, timeout=2)
        self.assertIsInstance(c.exception, pipeline.PipelineConnectionError)

    def test_setup_timeout_is_a_timeout_error(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)  # accepts TCP, never answers the upgrade
        try:
            t0 = time.monotonic()
            with self.assertRaises(TimeoutError) as c:
                pipeline.Pipeline("ws://127.0.0.1:%d/" % srv.getsockname()[1], quiet=True, timeout=0.5)
            self.assertIsInstance(c.exception, pipeline.PipelineTimeoutError)
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            srv.close()

    def test_end_of_stream_is_not_a_timeout(self):
        with pipeline.Pipeline("wss://synthetic.test/x", transport="synthetic", synthetic=frames(5),
                               layout="inline", wait="backoff", quiet=True) as p:
            got = []
            while len(got) < 5:
                m = p.recv(timeout=5)
                self.assertIsNotNone(m, "a timeout before the 5 messages")
                got.append(m.text())
            self.assertEqual(got, ["msg %d" % i for i in range(5)])
            # The server closed after its 5 messages: end-of-stream, not a timeout.
            with self.assertRaises(pipeline.EndOfStream):
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    p.recv(timeout=0.05)  # None (timeout) until the end is seen
            with self.assertRaises(EOFError):
                p.poll()
            with self.assertRaises(pipeline.ClosedError):
                p.send("late")

    def test_ctrl_c_during_start_is_honoured(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)  # the upgrade never completes: pl_start waits for its timeout
        code = textwrap.dedent("""
            import sys, time, pipeline
            t0 = time.monotonic()
            try:
                pipeline.Pipeline("ws://127.0.0.1:%d/", quiet=True, timeout=30)
            except KeyboardInterrupt:
                print("interrupted after %%.2f s" %% (time.monotonic() - t0), flush=True)
                sys.exit(0)
            sys.exit(1)
        """ % srv.getsockname()[1])
        try:
            p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)
            t0 = time.monotonic()
            p.send_signal(signal.SIGINT)
            out, _ = p.communicate(timeout=10)
            self.assertEqual(p.returncode, 0, out)
            self.assertLess(time.monotonic() - t0, 2.0, out)
            self.assertIn("interrupted", out)
        finally:
            srv.close()
            # The interrupted start may leave its shared memory behind (the process
            # exits while the set-up thread still holds it): remove what it created.
            import glob
            import shutil
            for d in glob.glob("/dev/shm/pipeline_%d-*" % p.pid):
                shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()

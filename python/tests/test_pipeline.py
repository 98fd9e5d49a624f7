"""Tests of the Python package (unittest; `python -m unittest discover -s python/tests`).

The live tests start tools/exchange_sim.py on loopback (TLS, certificates from
tools/testcerts.sh) and read its feed over the kernel transport. The XDP run of the
same reader is in tools/test.d/consumers.sh (needs root and network namespaces)."""
import ctypes
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import pipeline
from pipeline import _ffi

REPO = pathlib.Path(__file__).resolve().parents[2]
PY = os.environ.get("PL_PYTHON", sys.executable)


class Layout(unittest.TestCase):
    """ctypes structures against the C compiler's view of include/pipeline.h."""

    def test_struct_layout_matches_header(self):
        if not shutil.which("cc"):
            self.skipTest("no C compiler")
        fields = {
            "PlConfig": [f[0] for f in _ffi.PlConfig._fields_],
            "PlFrame": [f[0] for f in _ffi.PlFrame._fields_],
            "PlStats": [f[0] for f in _ffi.PlStats._fields_],
            "PlDisconnect": [f[0] for f in _ffi.PlDisconnect._fields_],
            "PlFeedConfig": [f[0] for f in _ffi.PlFeedConfig._fields_],
            "PlFeedItem": [f[0] for f in _ffi.PlFeedItem._fields_],
            "PlTimestamps": [f[0] for f in _ffi.PlTimestamps._fields_],
        }
        src = ['#include "pipeline.h"', "#include <stdio.h>", "#include <stddef.h>", "int main(void){"]
        for st, names in fields.items():
            src.append('printf("%s %%zu\\n", sizeof(%s));' % (st, st))
            for n in names:
                src.append('printf("%s.%s %%zu\\n", offsetof(%s, %s));' % (st, n, st, n))
        src.append("return 0;}")
        with tempfile.TemporaryDirectory() as d:
            c = pathlib.Path(d, "l.c")
            c.write_text("\n".join(src))
            subprocess.run(["cc", "-I", str(REPO / "include"), "-o", str(pathlib.Path(d, "l")), str(c)], check=True)
            out = subprocess.run([str(pathlib.Path(d, "l"))], check=True, capture_output=True, text=True).stdout
        want = dict(line.split() for line in out.splitlines())
        for st in fields:
            cls = getattr(_ffi, st)
            self.assertEqual(int(want[st]), ctypes.sizeof(cls), st)
            for n in fields[st]:
                self.assertEqual(int(want["%s.%s" % (st, n)]), getattr(cls, n).offset, "%s.%s" % (st, n))

    def test_disconnect_kinds_match_header(self):
        text = (REPO / "include/pipeline.h").read_text()
        body = text.split("typedef enum PlDisconnectKind {")[1].split("} PlDisconnectKind;")[0]
        consts = [l.strip().rstrip(",").split(" = ") for l in body.splitlines() if l.strip().startswith("PL_DISCONNECT_")]
        self.assertEqual([(n, int(v)) for n, v in consts],
                         [("PL_DISCONNECT_" + k.name, k.value) for k in pipeline.DisconnectKind])
        for k in pipeline.DisconnectKind:
            self.assertEqual(pipeline._l().pl_disconnect_kind_name(k.value).decode(), "PL_DISCONNECT_" + k.name)

    def test_stats_names_match_header(self):
        text = (REPO / "include/pipeline.h").read_text()
        body = text.split("typedef struct PlStats {")[1].split("} PlStats;")[0]
        names = [l.strip().split()[1].rstrip(";") for l in body.splitlines() if l.strip().startswith("uint64_t")]
        self.assertEqual(names, _ffi.STAT_NAMES)


class Errors(unittest.TestCase):
    def test_unknown_option(self):
        with self.assertRaises(pipeline.PipelineError) as e:
            pipeline.Pipeline("wss://127.0.0.1:1/", bogus=1)
        self.assertEqual(e.exception.code_name, "PL_ERR_CONFIG")

    def test_server_stamp_options(self):
        cfg = pipeline._make_config("wss://x/", {"server_stamp": "E", "server_stamp_unit_ns": 1000000}, [])
        self.assertEqual((cfg.server_stamp_field, cfg.server_stamp_width, cfg.server_stamp_unit_ns), (b"E", 0, 1000000))
        cfg = pipeline._make_config("wss://x/", {"server_stamp": {"offset": 8, "width": 4, "big_endian": True}}, [])
        self.assertEqual((cfg.server_stamp_offset, cfg.server_stamp_width, cfg.server_stamp_big_endian), (8, 4, True))
        with self.assertRaises(pipeline.ConfigError):
            pipeline._make_config("wss://x/", {"server_stamp": {"offset": 8, "bits": 64}}, [])
        with self.assertRaises(pipeline.ConfigError) as e:  # checked by the library at start
            pipeline.Pipeline("wss://127.0.0.1:1/", server_stamp={"width": 3}, quiet=True)
        self.assertIn("width 3", str(e.exception))

    def test_bad_url_carries_library_message(self):
        with self.assertRaises(pipeline.PipelineError) as e:
            pipeline.Pipeline("http://nope", quiet=True)
        self.assertEqual(e.exception.code_name, "PL_ERR_CONFIG")
        self.assertTrue(e.exception.message)

    def test_out_of_range_enum_values_are_config_errors(self):
        for key in ("transport", "layout", "wait", "delivery", "overrun"):
            with self.assertRaises(pipeline.PipelineError) as e:
                pipeline.Pipeline("ws://127.0.0.1:1/", quiet=True, timeout=2, **{key: 9})
            self.assertEqual(e.exception.code_name, "PL_ERR_CONFIG", key)
            self.assertIn("PlConfig.%s = 9" % key, e.exception.message)

    def test_unknown_result_code_name(self):
        lib = _ffi.load()
        self.assertEqual(lib.pl_result_name(42), b"unknown")
        self.assertEqual(lib.pl_result_name(-1), b"unknown")
        self.assertEqual(lib.pl_result_name(13), b"PL_ERR_PANIC")

    def test_refused(self):
        with self.assertRaises(pipeline.PipelineError) as e:
            pipeline.Pipeline("wss://127.0.0.1:1/", quiet=True, timeout=3)
        self.assertIn(e.exception.code_name, ("PL_ERR_NET", "PL_ERR_TIMEOUT"))
        self.assertIn(e.exception.code_name, str(e.exception))


class Sim:
    def __init__(self, certs, *args):
        self.p = subprocess.Popen(
            [PY, str(REPO / "tools/exchange_sim.py"), "--host", "127.0.0.1", "--port", "0", "--once",
             "--exit-on-stdin-eof", "--cert", str(certs / "server.pem"), "--key", str(certs / "server.key"), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.p.stdout.readline())["port"]
        self.url = "wss://127.0.0.1:%d/" % self.port

    def finish(self):
        self.p.stdin.close()
        out = self.p.stdout.read()
        self.p.wait(10)
        return json.loads([l for l in out.splitlines() if '"summary"' in l][-1])

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        for f in (self.p.stdin, self.p.stdout):
            if f and not f.closed:
                f.close()


class WithCerts(unittest.TestCase):
    """A test CA and server certificate (tools/testcerts.sh) in `cls.certs` for the class."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.certs = pathlib.Path(cls.tmp.name)
        subprocess.run(["sh", str(REPO / "tools/testcerts.sh"), cls.tmp.name], check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()


class Live(WithCerts):

    def opts(self):
        return dict(ca_file=str(self.certs / "ca.pem"), layout="inline", wait="backoff", quiet=True)

    def test_feed_in_order_zero_copy(self):
        n = 3000
        sim = Sim(self.certs, "--count", str(n), "--fragment-every", "7")
        try:
            with pipeline.Pipeline(sim.url, **self.opts()) as p:
                self.assertEqual(p.state().name, "connected")
                want, held = 0, None
                for msg in p:
                    self.assertEqual(msg.opcode, 2)
                    self.assertIsInstance(msg.payload, memoryview)
                    self.assertTrue(msg.payload.readonly)
                    if len(msg) >= 24:
                        seq = int.from_bytes(msg.payload[:8], "little")
                        self.assertEqual(seq, want)
                        self.assertEqual(int.from_bytes(msg.payload[16:20], "little"), len(msg))
                    else:
                        self.assertEqual(msg.bytes(), bytes((want * 131 + i) & 0xFF for i in range(len(msg))))
                    if want == 10:
                        held = msg
                    if want == 11:
                        with self.assertRaises(ValueError):
                            held.payload[0]  # released by the step: no dangling view
                    want += 1
                    if want == n:
                        p.close(1000, "done")
                        break
                self.assertTrue(p.wait_closed(5))
                st = p.state()
                self.assertEqual(st.name, "disconnected")
                self.assertEqual(st.kind, pipeline.DisconnectKind.CLOSE_COMPLETED, st.reason)
                d = p.disconnect()
                self.assertEqual((d.kind, d.close_code, d.message), (st.kind, 1000, st.reason))
                s = p.stats()
                self.assertGreaterEqual(s["messages"], n)
                self.assertEqual(s["overruns"], 0)
            self.assertEqual(want, n)
            self.assertEqual(sim.finish()["sent"], n)
        finally:
            sim.kill()

    def test_message_timestamps_in_stage_order(self):
        n = 500
        sim = Sim(self.certs, "--count", str(n))
        try:
            t0 = time.monotonic_ns()
            with pipeline.Pipeline(sim.url, **self.opts()) as p:
                got, held = 0, None
                for msg in p:
                    t = msg.timestamps
                    self.assertIsInstance(t, pipeline.Timestamps)
                    self.assertTrue(t0 <= t.arrival_ns <= t.decrypted_ns <= t.parsed_ns <= t.delivered_ns
                                    <= time.monotonic_ns(), t)
                    if got == 0:
                        held = msg
                    if got == 1:
                        with self.assertRaises(ValueError):
                            held.timestamps  # released by the step: its stamps are gone too
                    got += 1
                    if got == n:
                        break
                self.assertEqual(got, n)
        finally:
            sim.kill()

    def test_compressed_feed_and_echo(self):
        # permessage-deflate (compression=True): the simulator compresses with
        # websockets' defaults; messages arrive inflated and read as usual.
        n = 2000
        sim = Sim(self.certs, "--count", str(n), "--fragment-every", "7", "--compression")
        try:
            with pipeline.Pipeline(sim.url, compression=True, **self.opts()) as p:
                want = 0
                for msg in p:
                    if len(msg) >= 24:
                        self.assertEqual(int.from_bytes(msg.payload[:8], "little"), want)
                        self.assertEqual(int.from_bytes(msg.payload[16:20], "little"), len(msg))
                    else:
                        self.assertEqual(msg.bytes(), bytes((want * 131 + i) & 0xFF for i in range(len(msg))))
                    want += 1
                    if want == n:
                        break
                p.send("compressed hello " * 20)
                self.assertEqual(p.recv(timeout=5).text(), "compressed hello " * 20)
                s = p.stats()
                self.assertEqual(s["deflate"] & 0x100, 0x100)
                self.assertGreater(s["inflated_messages"], n // 2)
                self.assertEqual(s["compressed_sent"], 1)
                p.close(1000, "done")
                self.assertTrue(p.wait_closed(5))
            self.assertEqual(want, n)
        finally:
            sim.kill()

    def test_compression_option_errors(self):
        # ConfigError (a ValueError) like every other bad option, before any connect.
        for bad in ({"bogus": 1}, {"server_max_window_bits": 16}, {"threshold": -1}, "gzip"):
            with self.assertRaises(pipeline.ConfigError, msg=repr(bad)):
                pipeline.Pipeline("ws://127.0.0.1:1/", compression=bad, quiet=True)

    def test_send_echo_text(self):
        sim = Sim(self.certs, "--count", "0")
        try:
            with pipeline.Pipeline(sim.url, **self.opts()) as p:
                p.send("hello from python")
                p.send(b"\x00\x01binary")
                m = p.recv(timeout=5)
                self.assertIsNotNone(m)
                self.assertEqual((m.opcode, m.text()), (1, "hello from python"))
                m = p.recv(timeout=5)
                self.assertEqual((m.opcode, m.bytes()), (2, b"\x00\x01binary"))
                self.assertTrue(p.name)
            with self.assertRaises(pipeline.PipelineError):
                p.state()  # shut down by the context manager
        finally:
            sim.kill()

    def test_example_reader(self):
        sim = Sim(self.certs, "--count", "2000")
        try:
            out = subprocess.run(
                [PY, str(REPO / "python/examples/market_data_reader.py"), sim.url, "--ca-file",
                 str(self.certs / "ca.pem"), "--count", "2000", "--quiet", "--layout", "inline", "--wait", "backoff"],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr + out.stdout)
            self.assertIn("summary: messages=2000 gaps=0 bad=0", out.stdout)
        finally:
            sim.kill()


if __name__ == "__main__":
    unittest.main()

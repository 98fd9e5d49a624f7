"""libpipeline from Python (ctypes over libpipeline.so).

    import pipeline
    with pipeline.Pipeline("wss://127.0.0.1:8443/", ca_file="ca.pem") as p:
        p.send("hello")
        for msg in p:                 # msg.payload: memoryview into shared memory, no copy
            handle(msg.payload)       # valid until the next iteration step (or msg.release())
            data = msg.bytes()        # a copy, kept as long as you like

The library is found through $PIPELINE_LIB, then libpipeline.so next to this package,
then the checkout's target/release ($CARGO_TARGET_DIR/release first). See docs/consumers.md.
"""
import collections
import ctypes
import time

from . import _ffi
from ._ffi import PlConfig, PlFrame, PlStats

__all__ = ["Pipeline", "Message", "PipelineError", "State", "version", "library_path"]

_lib = None


def _l():
    global _lib
    if _lib is None:
        _lib = _ffi.load()
    return _lib


def version():
    """The library's version string."""
    return _l().pl_version().decode()


def library_path():
    """The libpipeline.so in use."""
    return str(_l().path)


class PipelineError(Exception):
    """A libpipeline failure: `.code` (int), `.code_name` ("PL_ERR_TLS" ...), `.message`
    (the library's one-line message from pl_last_error)."""

    def __init__(self, code, message, what=""):
        self.code = code
        self.code_name = _ffi.RESULT_NAMES.get(code, "PL_ERR_%d" % code)
        self.message = message
        super().__init__("%s%s: %s" % (what + ": " if what else "", self.code_name, message))


def _check(code, what):
    if code == _ffi.PL_OK:
        return
    n = _l().pl_last_error(None, 0)
    buf = ctypes.create_string_buffer(n + 1)
    _l().pl_last_error(buf, n + 1)
    raise PipelineError(code, buf.value.decode("utf-8", "replace"), what)


State = collections.namedtuple("State", "name reason")


class Message:
    """One received message (or frame with delivery="frames").

    `payload` is a read-only memoryview over the message's bytes in the pipeline's
    shared memory: no copy. It is valid until the next iteration step, `recv()`, or
    `release()`; after that it is released (using it raises ValueError). `bytes()` and
    `text()` copy."""

    __slots__ = ("payload", "opcode", "more", "after_overrun", "_owner", "_frame")

    def __init__(self, owner, frame):
        n = frame.len
        if n:
            mv = memoryview((ctypes.c_char * n).from_address(frame.payload)).cast("B")
            self.payload = mv.toreadonly()
            mv.release()
        else:
            self.payload = memoryview(b"")
        self.opcode = frame.opcode & 0xFF
        self.more = bool(frame.opcode & _ffi.PL_OPCODE_MORE)
        self.after_overrun = bool(frame.after_overrun)
        self._owner = owner
        self._frame = frame

    @property
    def is_text(self):
        return self.opcode == 1

    def bytes(self):
        """A copy of the payload."""
        return self.payload.tobytes()

    def text(self):
        """The payload decoded as UTF-8 (a copy)."""
        return str(self.payload, "utf-8")

    def __len__(self):
        return len(self.payload)

    def release(self):
        """Give the bytes back to the pipeline now (also done by the next step)."""
        if self._owner is not None:
            self._owner._release(self)

    def __repr__(self):
        return "<Message opcode=%d len=%d>" % (self.opcode, len(self.payload))


def _cstr(s):
    return None if s is None else (s.encode() if isinstance(s, str) else bytes(s))


class Pipeline:
    """A running pipeline (one WebSocket connection). Options map to PlConfig fields:

    transport "kernel"|"xdp", iface, layout "auto"|"processes"|"threads"|"inline",
    wait "auto"|"spin"|"yield"|"backoff", cores [int], ca_file, insecure, timeout
    (seconds), name, max_message, inbox_size, outbox_size, delivery "messages"|"frames",
    overrun "backpressure"|"overwrite", headers (list of "Name: value" or dict),
    subprotocols [str], quiet, external_consumer, compression (False/None, True or
    "permessage-deflate", or a dict of client_max_window_bits, server_max_window_bits,
    client_no_context_takeover, server_no_context_takeover, threshold: RFC 7692 offered
    with those parameters; compressed messages arrive inflated, read as usual).
    """

    def __init__(self, url, **options):
        lib = _l()
        self._handle = None
        self._current = None
        self._keep = []
        cfg = PlConfig()
        _check(lib.pl_config_init(ctypes.byref(cfg)), "config")
        self._keep.append(_cstr(url))
        cfg.url = self._keep[-1]

        def enum(key, table):
            v = options.pop(key)
            if isinstance(v, int):
                return v
            try:
                return table[str(v).lower()]
            except KeyError:
                raise PipelineError(2, "%s=%r: expected one of %s" % (key, v, ", ".join(table)), "config")

        for key, table in (("transport", _ffi.TRANSPORTS), ("layout", _ffi.LAYOUTS), ("wait", _ffi.WAITS),
                           ("delivery", _ffi.DELIVERIES), ("overrun", _ffi.OVERRUNS)):
            if key in options:
                setattr(cfg, key, enum(key, table))
        for key in ("name", "iface", "ca_file"):
            if key in options:
                v = options.pop(key)
                v = None if v is None else _cstr(str(v))
                self._keep.append(v)
                setattr(cfg, key, v)
        for key in ("insecure", "quiet", "external_consumer"):
            if key in options:
                setattr(cfg, key, bool(options.pop(key)))
        for key in ("max_message", "inbox_size", "outbox_size"):
            if key in options:
                setattr(cfg, key, int(options.pop(key)))
        if "compression" in options:
            c = options.pop("compression")
            if c in (None, False, 0, "none", "off"):
                cfg.compression = 0
            elif c in (True, 1, "permessage-deflate", "deflate") or isinstance(c, dict):
                cfg.compression = 1
                params = dict(c) if isinstance(c, dict) else {}
                for k in ("client_max_window_bits", "server_max_window_bits", "threshold"):
                    if k in params:
                        setattr(cfg, "deflate_" + k, int(params.pop(k)))
                for k in ("client_no_context_takeover", "server_no_context_takeover"):
                    if k in params:
                        setattr(cfg, "deflate_" + k, bool(params.pop(k)))
                if params:
                    raise PipelineError(2, "compression: unknown parameter(s) %s" % ", ".join(sorted(params)), "config")
            else:
                raise PipelineError(2, "compression=%r: expected False, True, \"permessage-deflate\" or a dict" % (c,), "config")
        if "timeout" in options:
            cfg.timeout_ms = int(float(options.pop("timeout")) * 1000)
        if "cores" in options:
            cores = list(options.pop("cores") or [])
            arr = (ctypes.c_uint32 * len(cores))(*cores)
            self._keep.append(arr)
            cfg.cores, cfg.cores_len = arr, len(cores)
        for key in ("headers", "subprotocols"):
            if key in options:
                v = options.pop(key) or []
                if isinstance(v, dict):
                    v = ["%s: %s" % kv for kv in v.items()]
                items = [_cstr(x) for x in v]
                arr = (ctypes.c_char_p * len(items))(*items)
                self._keep += [items, arr]
                setattr(cfg, key, arr)
                setattr(cfg, key + "_len", len(items))
        if options:
            raise PipelineError(2, "unknown option(s): %s" % ", ".join(sorted(options)), "config")
        self.external_consumer = bool(cfg.external_consumer)
        h = ctypes.c_void_p()
        _check(lib.pl_start(ctypes.byref(cfg), ctypes.byref(h)), "start")
        self._handle = h
        self._frame = PlFrame()

    # -- lifetime ------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False

    def __del__(self):
        try:
            self.shutdown(graceful=False)
        except Exception:
            pass

    def _h(self):
        if self._handle is None:
            raise PipelineError(9, "the pipeline was shut down", "use")
        return self._handle

    def shutdown(self, graceful=True, timeout=5.0):
        """Close (1000) if still connected, drain, stop and free. Idempotent."""
        if self._handle is None:
            return
        try:
            if graceful and self.state().name in ("connected", "closing"):
                if self.state().name == "connected":
                    try:
                        self.close(1000, "bye")
                    except PipelineError:
                        pass
                self.wait_closed(timeout)
        finally:
            self._release_current()
            h, self._handle = self._handle, None
            _l().pl_free(h)

    # -- receive -------------------------------------------------------------------
    def _release_current(self):
        m = self._current
        if m is not None:
            self._current = None
            m._owner = None
            try:
                m.payload.release()
            except BufferError:
                pass  # the caller still exports it (e.g. numpy); bytes go back anyway
            if self._handle is not None:
                _l().pl_release(self._handle, ctypes.byref(m._frame))

    def _release(self, m):
        if m is self._current:
            self._release_current()

    def poll(self):
        """The next message without waiting, or None. Releases the previous one."""
        self._release_current()
        f = PlFrame()
        r = _l().pl_poll(self._h(), ctypes.byref(f))
        if r == _ffi.PL_ERR_WOULD_BLOCK:
            return None
        if r == _ffi.PL_ERR_CLOSED:
            raise StopIteration
        _check(r, "poll")
        self._current = Message(self, f)
        return self._current

    def recv(self, timeout=None):
        """The next message, waiting up to `timeout` seconds (None: until closed).
        None on timeout or once the connection is closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        idle = 0
        while True:
            try:
                m = self.poll()
            except StopIteration:
                return None
            if m is not None:
                return m
            idle += 1
            if deadline is not None and time.monotonic() > deadline:
                return None
            if idle > 64:
                time.sleep(0.00005 if idle < 2000 else 0.0005)

    def __iter__(self):
        while True:
            m = self.recv()
            if m is None:
                return
            yield m

    # -- send / close ----------------------------------------------------------------
    def send(self, data, timeout=5.0):
        """Send a str as a text message, bytes-like as binary. Waits (up to `timeout`)
        while MSG_OUTBOX is full."""
        if isinstance(data, str):
            b, fn = data.encode(), _l().pl_send_text
        else:
            b, fn = bytes(data), _l().pl_send_binary
        deadline = time.monotonic() + timeout
        while True:
            r = fn(self._h(), b, len(b))
            if r != _ffi.PL_ERR_WOULD_BLOCK or time.monotonic() > deadline:
                break
            time.sleep(0.0001)
        _check(r, "send")

    def close(self, code=1000, reason=""):
        """Start the close handshake; iteration ends once the server answered."""
        _check(_l().pl_close(self._h(), code, _cstr(reason or "")), "close")

    def wait_closed(self, timeout=5.0):
        """Drain (release) messages until DISCONNECTED or `timeout`; True if disconnected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                while self.poll() is not None:
                    pass
            except StopIteration:
                return True
            except PipelineError:
                pass
            if self.state().name == "disconnected" and _l().pl_wait_disconnected(self._h(), 0) == 0:
                return True
            time.sleep(0.001)
        return self.state().name == "disconnected"

    # -- introspection ---------------------------------------------------------------
    def state(self):
        """State(name, reason): name in connecting/connected/closing/disconnected."""
        st = ctypes.c_int()
        buf = ctypes.create_string_buffer(512)
        _check(_l().pl_get_state(self._h(), ctypes.byref(st), buf, len(buf)), "state")
        return State(_ffi.STATES.get(st.value, str(st.value)), buf.value.decode("utf-8", "replace"))

    def stats(self):
        """Every counter (the names of `pipeline stat`) as a dict."""
        s = PlStats()
        _check(_l().pl_get_stats(self._h(), ctypes.byref(s)), "stats")
        return {n: getattr(s, n) for n in _ffi.STAT_NAMES}

    @property
    def name(self):
        """The shared-memory name (/dev/shm/pipeline_<name>/)."""
        buf = ctypes.create_string_buffer(256)
        _l().pl_get_name(self._h(), buf, len(buf))
        return buf.value.decode()

    def stop(self):
        """Stop the stages now (no close handshake) and remove the shared memory."""
        self._release_current()
        _check(_l().pl_stop(self._h()), "stop")

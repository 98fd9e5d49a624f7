"""libpipeline from Python (ctypes over libpipeline.so).

    import pipeline
    with pipeline.Pipeline("wss://127.0.0.1:8443/", ca_file="ca.pem") as p:
        p.send("hello")
        for msg in p:                 # msg.payload: memoryview into shared memory, no copy
            handle(msg.payload)       # valid until the next iteration step (or msg.release())
            data = msg.bytes()        # a copy, kept as long as you like

    async for msg in p:               # asyncio: waits on the pipeline's event fd (no busy loop)
        ...
    pipeline.Pipeline(url, on_message=lambda msg, sender: sender.send("ack"))  # callback delivery

The library is found through $PIPELINE_LIB, then libpipeline.so next to this package,
then the checkout's target/release ($CARGO_TARGET_DIR/release first). See docs/consumers.md.
"""
import collections
import ctypes
import enum
import select
import time
import weakref

from . import _ffi
from ._ffi import PlConfig, PlDisconnect, PlFrame, PlStats

__all__ = ["Pipeline", "Message", "Sender", "Timestamps", "Feed", "FeedMessage", "FeedEvent", "PipelineError", "ConfigError",
           "PipelineConnectionError", "ClosedError", "EndOfStream", "PipelineTimeoutError", "State", "Disconnect",
           "DisconnectKind", "version",
           "library_path"]

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


class ConfigError(PipelineError, ValueError):
    """A bad option, URL, size or argument (PL_ERR_CONFIG, PL_ERR_NULL_ARG)."""


class PipelineConnectionError(PipelineError, ConnectionError):
    """The network, TLS or WebSocket failed, or the connection is closed (PL_ERR_NET,
    PL_ERR_TLS, PL_ERR_WEBSOCKET, PL_ERR_CLOSED)."""


class ClosedError(PipelineConnectionError):
    """The connection is closed (PL_ERR_CLOSED): e.g. a send after the disconnect."""


class EndOfStream(ClosedError, EOFError):
    """poll() after the stream ended and every message was read: not a timeout
    (recv(timeout) returns None for that)."""


class PipelineTimeoutError(PipelineError, TimeoutError):
    """A timeout expired (PL_ERR_TIMEOUT), e.g. the set-up deadline."""


_ERRORS = {1: ConfigError, 2: ConfigError, 6: PipelineConnectionError, 7: PipelineConnectionError,
           8: PipelineConnectionError, 9: ClosedError, 12: PipelineTimeoutError}


def _last_error():
    n = _l().pl_last_error(None, 0)
    buf = ctypes.create_string_buffer(n + 1)
    _l().pl_last_error(buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def _check(code, what):
    if code == _ffi.PL_OK:
        return
    raise _ERRORS.get(code, PipelineError)(code, _last_error(), what)


def _start(cfg, keep):
    """pl_start on a worker thread, so that Ctrl-C (KeyboardInterrupt) reaches the
    caller at once instead of after the set-up timeout. If interrupted, the set-up
    finishes in the background and its pipeline (if any) is freed there."""
    import threading
    h = ctypes.c_void_p()
    out = {"keep": keep}  # the strings cfg points to live as long as the worker

    def run():
        r = _l().pl_start(ctypes.byref(cfg), ctypes.byref(h))
        out["r"] = r
        if r != _ffi.PL_OK:
            out["msg"] = _last_error()  # thread-local in the library
        if out.get("abandoned") and r == _ffi.PL_OK:
            _l().pl_free(h)

    t = threading.Thread(target=run, name="pipeline-start", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(0.05)
    except BaseException:
        out["abandoned"] = True
        if not t.is_alive() and out.get("r") == _ffi.PL_OK and h.value:
            _l().pl_free(h)  # it finished just now: free it here
        raise
    r = out["r"]
    if r != _ffi.PL_OK:
        raise _ERRORS.get(r, PipelineError)(r, out.get("msg", ""), "start")
    return h


DisconnectKind = enum.IntEnum("DisconnectKind", [(n, i) for i, n in enumerate(_ffi.DISCONNECT_KINDS)])
DisconnectKind.__doc__ = """Why a pipeline disconnected (PL_DISCONNECT_* in pipeline.h): decide on this,
never on the reason text. NONE while not disconnected."""


def _kind(code):
    """A DisconnectKind, or the bare int for a code a newer library added."""
    try:
        return DisconnectKind(code)
    except ValueError:
        return code


State = collections.namedtuple("State", "name reason kind", defaults=(DisconnectKind.NONE,))
State.__doc__ = """name: connecting/connected/closing/disconnected; reason: the disconnect message
(for people); kind: a DisconnectKind (NONE until disconnected)."""

Disconnect = collections.namedtuple(
    "Disconnect", "kind message close_code close_reason pid signal exit_status stage")
Disconnect.__doc__ = """Pipeline.disconnect(): kind (DisconnectKind); message; close_code (the
server's for SERVER_CLOSED / CLOSE_COMPLETED, ours for PROTOCOL_ERROR, else 0); close_reason
(SERVER_CLOSED); pid, signal, exit_status (-1 if it did not exit), stage (STAGE_DIED,
STAGE_PANICKED)."""


Timestamps = collections.namedtuple("Timestamps", "arrival_ns decrypted_ns parsed_ns delivered_ns")
Timestamps.__doc__ = """Per-message stage timestamps, CLOCK_MONOTONIC ns (see Message.timestamps)."""


# A released view: what Message.payload becomes when something else (numpy, a slice)
# still exports the original, so that the Message itself no longer keeps it alive.
_RELEASED = memoryview(b"")
_RELEASED.release()


def _view(addr, n, keeper):
    """A read-only memoryview of `n` bytes of shared memory at `addr`, and a weak
    reference to the object exporting them. Every view derived from it (slices,
    numpy.frombuffer) keeps that exporter alive, so the weak reference says whether any
    view is left; the exporter keeps `keeper` (the pipeline handle) alive, so the
    mapping outlives every view of it."""
    if not n:
        return memoryview(b""), None
    arr = (ctypes.c_char * n).from_address(addr)
    arr._keeper = keeper
    mv = memoryview(arr).cast("B")
    ro = mv.toreadonly()
    mv.release()
    return ro, weakref.ref(arr)


class Message:
    """One received message (or frame with delivery="frames").

    `payload` is a read-only memoryview over the message's bytes in the pipeline's
    shared memory: no copy. It is valid until the next iteration step, `recv()`, or
    `release()`; after that it is released (using it raises ValueError). A view made
    from it (a slice, numpy.frombuffer) keeps the bytes: their release to the pipeline
    waits until the last such view is gone (see python/README.md). `bytes()` and
    `text()` copy."""

    __slots__ = ("payload", "opcode", "more", "after_overrun", "after_reconnect", "_owner", "_frame", "_ref", "_in_call")

    def __init__(self, owner, frame, keeper=None):
        self.payload, self._ref = _view(frame.payload, frame.len, keeper)
        self.opcode = frame.opcode & 0xFF
        self.more = bool(frame.opcode & _ffi.PL_OPCODE_MORE)
        self.after_overrun = bool(frame.after_overrun)
        # The first frame of a new connection after a reconnect (a message the
        # disconnect cut was not delivered).
        self.after_reconnect = bool(frame.flags & _ffi.PL_FRAME_AFTER_RECONNECT)
        self._owner = owner
        self._frame = frame
        # Callback delivery: the message is current only during on_message.
        self._in_call = False

    def _drop_view(self):
        """Release `payload`; True if no view of the bytes is left anywhere."""
        try:
            self.payload.release()
        except BufferError:
            self.payload = _RELEASED  # numpy & co. still export it: they alone keep it
        ref, self._ref = self._ref, None
        return ref is None or ref() is None

    @property
    def is_text(self):
        return self.opcode == 1

    @property
    def timestamps(self):
        """When the message arrived, was decrypted, parsed and delivered: a
        `Timestamps` of CLOCK_MONOTONIC ns (0: not known; `time.monotonic_ns()` is the
        same clock). Read it on the thread that received the message, before the next
        `recv()`/`poll()`, or inside `on_message` (it is looked up then, not copied for
        every message)."""
        if self._owner is None and not self._in_call:
            raise ValueError("the message was released: read timestamps before the next recv()")
        t = _ffi.PlTimestamps(struct_size=ctypes.sizeof(_ffi.PlTimestamps))
        _check(_l().pl_message_timestamps(ctypes.byref(t)), "message_timestamps")
        return Timestamps(t.arrival_ns, t.decrypted_ns, t.parsed_ns, t.delivered_ns)

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


class Sender:
    """Sends from inside an `on_message` callback: `send(str)` text, `send(bytes-like)`
    binary. Valid only during the call it was passed to (ClosedError afterwards);
    PipelineError PL_ERR_WOULD_BLOCK when MSG_OUTBOX is full (it does not wait: the
    callback runs on a stage)."""

    __slots__ = ("_s",)

    def __init__(self, s):
        self._s = s

    def send(self, data):
        if self._s is None:
            raise ClosedError(9, "a callback's Sender is valid only during that call", "send")
        if isinstance(data, str):
            b, fn = data.encode(), _l().pl_sender_send_text
        else:
            b, fn = bytes(data), _l().pl_sender_send_binary
        _check(fn(self._s, b, len(b)), "send")


class _Handle:
    """Owns the pl_pipeline*: pl_free once the last reference goes, the Pipeline's or
    that of a payload view still exported after the pipeline shut down (the shared
    memory stays mapped while any view of it exists). Also keeps the ctypes callback
    alive as long as the stages may call it."""

    __slots__ = ("h", "keep", "__weakref__")

    def __init__(self, h, keep):
        self.h = h
        self.keep = keep

    def __del__(self):
        h, self.h = self.h, None
        if h is not None and _lib is not None:
            _lib.pl_free(h)


def _cstr(s):
    return None if s is None else (s.encode() if isinstance(s, str) else bytes(s))



def _wait_for(poll, timeout, fd=None):
    """Call `poll` until it returns something; None once `timeout` seconds (None: no
    limit) have passed. Between empty polls: sleep on `fd` (a pipeline's event fd, which
    the empty poll armed), or without one back off (spin, then 50 us, then 0.5 ms
    sleeps)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    idle = 0
    while True:
        m = poll()
        if m is not None:
            return m
        idle += 1
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        if fd is not None:
            select.select([fd], [], [], left)
        elif idle > 64:
            time.sleep(0.00005 if idle < 2000 else 0.0005)

def _make_config(url, options, keep):
    """A PlConfig from Pipeline-style options (the strings it points to go in `keep`)."""
    lib = _l()
    cfg = PlConfig()
    _check(lib.pl_config_init_size(ctypes.byref(cfg), ctypes.sizeof(cfg)), "config")
    keep.append(_cstr(url))
    cfg.url = keep[-1]

    def enum(key, table):
        v = options.pop(key)
        if isinstance(v, int):
            return v
        try:
            return table[str(v).lower()]
        except KeyError:
            raise ConfigError(2, "%s=%r: expected one of %s" % (key, v, ", ".join(table)), "config")

    for key, table in (("transport", _ffi.TRANSPORTS), ("layout", _ffi.LAYOUTS), ("wait", _ffi.WAITS),
                       ("delivery", _ffi.DELIVERIES), ("overrun", _ffi.OVERRUNS)):
        if key in options:
            setattr(cfg, key, enum(key, table))
    for key in ("name", "iface", "ca_file"):
        if key in options:
            v = options.pop(key)
            v = None if v is None else _cstr(str(v))
            keep.append(v)
            setattr(cfg, key, v)
    for key in ("insecure", "quiet", "external_consumer"):
        if key in options:
            setattr(cfg, key, bool(options.pop(key)))
    for key in ("max_message", "inbox_size", "outbox_size"):
        if key in options:
            setattr(cfg, key, int(options.pop(key)))
    if "timeout" in options:
        cfg.timeout_ms = int(float(options.pop("timeout")) * 1000)
    if "cores" in options:
        cores = list(options.pop("cores") or [])
        arr = (ctypes.c_uint32 * len(cores))(*cores)
        keep.append(arr)
        cfg.cores, cfg.cores_len = arr, len(cores)
    for key in ("headers", "subprotocols"):
        if key in options:
            v = options.pop(key) or []
            if isinstance(v, dict):
                v = ["%s: %s" % kv for kv in v.items()]
            items = [_cstr(x) for x in v]
            arr = (ctypes.c_char_p * len(items))(*items)
            keep += [items, arr]
            setattr(cfg, key, arr)
            setattr(cfg, key + "_len", len(items))
    if "synthetic" in options:  # transport="synthetic": the server's bytes after the upgrade
        data = bytes(options.pop("synthetic"))
        buf = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data or b"\0")
        keep.append(buf)
        cfg.synthetic_data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_uint8))
        cfg.synthetic_len = len(data)
    if "synthetic_chunk" in options:
        cfg.synthetic_chunk = int(options.pop("synthetic_chunk"))
    if "reconnect" in options:
        cfg.reconnect = bool(options.pop("reconnect"))
    for key in ("reconnect_initial", "reconnect_max", "ping_interval", "liveness_timeout"):
        if key in options:
            setattr(cfg, key + "_ms", int(float(options.pop(key)) * 1000))
    if "reconnect_max_attempts" in options:
        cfg.reconnect_max_attempts = int(options.pop("reconnect_max_attempts"))
    if "subscriptions" in options:
        items = [_cstr(x) for x in (options.pop("subscriptions") or [])]
        arr = (ctypes.c_char_p * len(items))(*items)
        keep += [items, arr]
        cfg.subscriptions, cfg.subscriptions_len = arr, len(items)
    if "compression" in options:
        c = options.pop("compression")
        if c in (None, False, 0, "none", "off"):
            cfg.compression = 0
        elif c in (True, 1, "permessage-deflate", "deflate") or isinstance(c, dict):
            cfg.compression = 1
            params = dict(c) if isinstance(c, dict) else {}
            for k, lo, hi in (("client_max_window_bits", 0, 15), ("server_max_window_bits", 0, 15), ("threshold", 0, 1 << 62)):
                if k in params:
                    v = int(params.pop(k))
                    if not lo <= v <= hi:
                        raise ConfigError(2, "compression: %s=%d is out of range %d..%d" % (k, v, lo, hi), "config")
                    setattr(cfg, "deflate_" + k, v)
            for k in ("client_no_context_takeover", "server_no_context_takeover"):
                if k in params:
                    setattr(cfg, "deflate_" + k, bool(params.pop(k)))
            if params:
                raise ConfigError(2, "compression: unknown parameter(s) %s" % ", ".join(sorted(params)), "config")
        else:
            raise ConfigError(2, "compression=%r: expected False, True, \"permessage-deflate\" or a dict" % (c,), "config")
    if "server_stamp" in options:
        # One-way server -> client latency (the stats region's server_to_delivered):
        # a JSON member name, or {"offset": N, "width": 4|8, "big_endian": bool}.
        st = options.pop("server_stamp")
        if isinstance(st, str):
            f = _cstr(st)
            keep.append(f)
            cfg.server_stamp_field = f
        elif isinstance(st, dict):
            st = dict(st)
            cfg.server_stamp_offset = int(st.pop("offset", 0))
            cfg.server_stamp_width = int(st.pop("width", 8))
            cfg.server_stamp_big_endian = bool(st.pop("big_endian", False))
            if st:
                raise ConfigError(2, "server_stamp: unknown key(s) %s" % ", ".join(sorted(st)), "config")
        elif st is not None:
            raise ConfigError(2, "server_stamp=%r: expected a JSON field name or a dict" % (st,), "config")
    if "server_stamp_unit_ns" in options:
        cfg.server_stamp_unit_ns = int(options.pop("server_stamp_unit_ns"))
    if options:
        raise ConfigError(2, "unknown option(s): %s" % ", ".join(sorted(options)), "config")
    return cfg


class Pipeline:
    """A running pipeline (one WebSocket connection). Options map to PlConfig fields:

    transport "kernel"|"xdp", iface, layout "auto"|"processes"|"threads"|"inline",
    wait "auto"|"spin"|"yield"|"backoff", cores [int], ca_file, insecure, timeout
    (seconds), name, max_message, inbox_size, outbox_size, delivery "messages"|"frames",
    overrun "backpressure"|"overwrite", headers (list of "Name: value" or dict),
    subprotocols [str], quiet, external_consumer; reconnect (bool), reconnect_initial
    and reconnect_max (seconds), reconnect_max_attempts, subscriptions [str] (sent after
    every (re)connect before "connected"), ping_interval and liveness_timeout (seconds);
    compression (False/None, True or "permessage-deflate", or a dict of
    client_max_window_bits, server_max_window_bits, client_no_context_takeover,
    server_no_context_takeover, threshold: RFC 7692 offered with those parameters;
    compressed messages arrive inflated, read as usual); server_stamp (a JSON member
    name such as "E", or a dict offset/width/big_endian for a binary stamp) and
    server_stamp_unit_ns (1 ns, 1_000_000 ms): the one-way server_to_delivered histogram.
    """

    def __init__(self, url, on_message=None, **options):
        lib = _l()
        self._handle = None
        self._owner_handle = None
        self._current = None
        self._pending = collections.deque()  # (frame, weakref to its exporter), in order
        self._releasable = None  # the last frame whose bytes may go back (batched)
        self._unreleased = 0
        self._fd = None
        self._keep = []
        cfg = _make_config(url, options, self._keep)
        self.external_consumer = bool(cfg.external_consumer)
        self._callback = on_message is not None
        # Before the start: the callback may run before pl_start returns, and its views
        # keep the handle alive too.
        keeper = _Handle(None, None)
        if on_message is not None:
            if not callable(on_message):
                raise ConfigError(2, "on_message must be callable (msg, sender) -> None", "config")
            keeper.keep = _ffi.ON_MESSAGE_EX(self._trampoline(on_message, weakref.ref(keeper)))
            cfg.on_message_ex = keeper.keep
        self._handle = keeper.h = _start(cfg, self._keep)
        self._owner_handle = keeper

    @staticmethod
    def _trampoline(on_message, keeper):
        """The pl_on_message_ex callback around `on_message(msg, sender)`: an exception
        (or a payload view kept past the call) ends the connection with
        DisconnectKind.CALLBACK_ERROR and says why, instead of unwinding into C.
        `keeper`: a weak reference to the handle (a strong one would be a cycle through
        the ctypes callback the handle keeps)."""

        def call(_user, sender, payload, n, opcode):
            s = Sender(sender)
            why = None
            m = None
            try:
                f = PlFrame(payload=ctypes.cast(payload, ctypes.c_void_p).value, len=n, opcode=opcode)
                m = Message(None, f, keeper())
                m._in_call = True
                on_message(m, s)
            except BaseException as e:  # nothing may unwind into the stage
                why = "on_message raised %s: %s" % (type(e).__name__, e)
            finally:
                s._s = None
                if m is not None:
                    m._in_call = False
            if m is not None and not m._drop_view() and why is None:
                # The bytes go back to the pipeline as this returns: a view of them kept
                # now (numpy.frombuffer, a slice) would read reused memory.
                why = ("on_message kept a view of the payload past the call (a slice or numpy.frombuffer): "
                       "copy what you keep (msg.bytes(), numpy.array(view))")
            if why is None:
                return 0
            _l().pl_sender_set_error(sender, why.encode("utf-8", "replace")[:400])
            return 1

        return call

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
            raise ClosedError(9, "the pipeline was shut down", "use")
        return self._handle

    def shutdown(self, graceful=True, timeout=5.0):
        """Close (1000) if still connected, drain, stop and free. Idempotent. If a view
        of a payload (numpy, a slice) is still alive, the stages stop now and the shared
        memory is unmapped when the last such view goes."""
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
            if self._pending:
                _l().pl_stop(h)
            self._pending.clear()
            self._owner_handle = None  # pl_free, now or with the last view

    # -- receive -------------------------------------------------------------------
    def _release_current(self):
        m = self._current
        if m is not None:
            self._current = None
            m._owner = None
            ref = m._ref
            if m._drop_view() and not self._pending:
                self._releasable = m._frame
                self._unreleased += 1
            else:
                self._pending.append((m._frame, ref))
        if self._pending:
            self._flush()
        if self._unreleased >= 32:
            self._give_back()

    def _flush(self):
        """Mark every message whose views are all gone as releasable, up to the first one
        that still has one (pl_release frees everything before a frame too, so a frame
        whose bytes are still viewed holds back the ones after it)."""
        while self._pending and (self._pending[0][1] is None or self._pending[0][1]() is None):
            self._releasable = self._pending.popleft()[0]
            self._unreleased += 1

    def _give_back(self):
        """pl_release up to the last releasable message: once per 32 messages, and
        whenever nothing new is there (so an idle reader holds nothing back)."""
        f, self._releasable, self._unreleased = self._releasable, None, 0
        if f is not None and self._handle is not None:
            _l().pl_release(self._handle, ctypes.byref(f))

    def _release(self, m):
        if m is self._current:
            self._release_current()
            self._give_back()  # msg.release() means now, not with the next batch

    def event_fd(self):
        """The pipeline's event fd (pl_event_fd): readable when messages are ready or the
        state changed; every poll() that returns None has armed it. For an event loop
        other than asyncio (async for does this for you); do not read or close it."""
        if self._fd is None:
            fd = ctypes.c_int(-1)
            _check(_l().pl_event_fd(self._h(), ctypes.byref(fd)), "event_fd")
            self._fd = fd.value
        return self._fd

    def poll(self):
        """The next message without waiting, or None if none yet; raises EndOfStream once
        the connection ended and every message was read. Releases the previous one."""
        self._release_current()
        f = PlFrame()
        r = _l().pl_poll(self._h(), ctypes.byref(f))
        if r == _ffi.PL_ERR_WOULD_BLOCK:
            self._give_back()  # before the caller sleeps: the transport may need the room
            return None
        if r == _ffi.PL_ERR_CLOSED:
            self._give_back()
            raise EndOfStream(r, "the stream ended and every message was read", "poll")
        _check(r, "poll")
        self._current = Message(self, f, self._owner_handle)
        return self._current

    def recv(self, timeout=None):
        """The next message, waiting up to `timeout` seconds (None: until it comes), asleep
        on the event fd meanwhile. None on timeout; raises EndOfStream once the
        connection ended and is drained."""
        return _wait_for(self.poll, timeout, self.event_fd())

    def __iter__(self):
        while True:
            try:
                m = self.recv()
            except EndOfStream:
                return
            if m is not None:
                yield m

    def __aiter__(self):
        """`async for msg in p`: the same messages as `for msg in p`, for asyncio. Between
        messages the task awaits the event fd (loop.add_reader), so the loop runs other
        tasks and nothing spins. Ends at the end of the stream."""
        return self._messages()

    async def _messages(self):
        import asyncio
        loop = asyncio.get_running_loop()
        fd = self.event_fd()
        burst = 0
        while True:
            try:
                m = self.poll()
            except EndOfStream:
                return
            if m is not None:
                yield m
                burst += 1
                if burst & 255 == 0:
                    await asyncio.sleep(0)  # a feed that never pauses must not starve other tasks
                continue
            # The empty poll armed the fd. A reader only while waiting: the fd stays
            # readable until the next arm, so a permanent reader would fire every turn.
            woke = loop.create_future()
            loop.add_reader(fd, lambda: woke.done() or woke.set_result(None))
            try:
                await woke
            finally:
                loop.remove_reader(fd)

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
        if self._callback:
            return _l().pl_wait_disconnected(self._h(), int(timeout * 1000)) == 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                while self.poll() is not None:
                    pass
            except EndOfStream:
                return True
            except PipelineError:
                pass
            if self.state().name == "disconnected" and _l().pl_wait_disconnected(self._h(), 0) == 0:
                return True
            time.sleep(0.001)
        return self.state().name == "disconnected"

    # -- introspection ---------------------------------------------------------------
    def state(self):
        """State(name, reason, kind): name in connecting/connected/closing/disconnected;
        kind a DisconnectKind (NONE until disconnected)."""
        st = ctypes.c_int()
        buf = ctypes.create_string_buffer(512)
        _check(_l().pl_get_state(self._h(), ctypes.byref(st), buf, len(buf)), "state")
        name = _ffi.STATES.get(st.value, str(st.value))
        kind = self.disconnect().kind if name == "disconnected" else DisconnectKind.NONE
        return State(name, buf.value.decode("utf-8", "replace"), kind)

    def reconnect_info(self):
        """(attempt, cause kind, generation, reconnects): attempt is 1-based while the
        state is "reconnecting" (0 otherwise) and cause the DisconnectKind of the loss;
        generation counts connections after the first."""
        a, k = ctypes.c_uint32(), ctypes.c_uint32()
        g, r = ctypes.c_uint64(), ctypes.c_uint64()
        _check(_l().pl_get_reconnect(self._h(), ctypes.byref(a), ctypes.byref(k), ctypes.byref(g),
                                     ctypes.byref(r)), "reconnect")
        return a.value, _kind(k.value), g.value, r.value

    def disconnect(self):
        """Why the pipeline disconnected, as a Disconnect (kind NONE while it has not)."""
        d = PlDisconnect()
        buf = ctypes.create_string_buffer(512)
        _check(_l().pl_get_disconnect(self._h(), ctypes.byref(d), buf, len(buf)), "disconnect")
        dec = lambda b: b.decode("utf-8", "replace")
        return Disconnect(_kind(d.kind), dec(buf.value), d.close_code, dec(d.close_reason), d.pid,
                          d.signal, d.exit_status, dec(d.stage))

    def stats(self):
        """Every counter (the names of `pipeline stat`) as a dict."""
        s = PlStats()
        _check(_l().pl_get_stats_size(self._h(), ctypes.byref(s), ctypes.sizeof(s)), "stats")
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


FeedEvent = collections.namedtuple("FeedEvent", "kind leg old_leg stream first last generation cause in_step text")
FeedEvent.__doc__ = """An event of a feed's merged stream. `kind`: "gap" (sequences first..=last of
`stream` came from no leg within the hold window), "leg_up" (`generation`), "leg_down"
(`cause`: a DisconnectKind; `generation`: the reconnect attempt, 0 if it will not come
back), "rotation_started", "rotation_done" (`in_step`), "rotation_aborted" (`leg` is the
new leg, `old_leg` the one it replaces). `text`: one line for people."""


def _feed_event(it):
    return FeedEvent(_ffi.FEED_ITEM_KINDS.get(it.kind, "unknown"), it.leg, it.old_leg, it.stream, it.seq, it.to,
                     it.generation, _kind(it.cause), bool(it.flags & _ffi.FEED_IN_STEP),
                     it.text.decode("utf-8", "replace"))


def _trampoline(on_message, error):
    """The pl_feed_on_item callback around `on_message`: an exception is kept in
    `error[0]` and ends delivery (non-zero return), never unwinding into the library."""
    def cb(_user, p):
        it = p.contents
        m = FeedMessage(None, it) if _ffi.FEED_ITEM_KINDS.get(it.kind) == "frame" else _feed_event(it)
        try:
            on_message(m)
            return 0
        except BaseException as e:
            error[0] = e
            return 1
        finally:
            if isinstance(m, FeedMessage):
                try:
                    m.payload.release()  # the bytes go back when we return
                except BufferError:
                    pass
    return cb


class FeedMessage(Message):
    """A message of a feed's merged stream: a `Message` (payload in place in its leg's
    shared memory, valid until the next step) plus `leg`, `stream` and `seq` (None
    without a key)."""

    __slots__ = ("leg", "stream", "seq")

    @property
    def timestamps(self):
        """Not for feeds yet: a merged message's stamps are not carried through the
        arbiter (each leg's stage histograms are: `pipeline stat NAME-<leg>`)."""
        raise NotImplementedError("feeds do not expose per-message timestamps; see pipeline stat NAME-<leg>")

    def __init__(self, owner, item):
        n = item.len
        if n:
            mv = memoryview((ctypes.c_char * n).from_address(item.payload)).cast("B")
            self.payload = mv.toreadonly()
            mv.release()
        else:
            self.payload = memoryview(b"")
        self.opcode = item.opcode & 0xFF
        self.more = False
        self.after_overrun = False
        self.after_reconnect = bool(item.flags & _ffi.FEED_AFTER_RECONNECT)
        self._owner = owner
        self._frame = item
        self._in_call = False
        self.leg = item.leg
        has = bool(item.flags & _ffi.FEED_HAS_KEY)
        self.stream = item.stream if has else None
        self.seq = item.seq if has else None

    def __repr__(self):
        return "<FeedMessage leg=%d seq=%r len=%d>" % (self.leg, self.seq, len(self.payload))


class Feed:
    """K legs carrying the same feed, one merged stream (docs/feed.md).

    `urls`: one URL per leg (or a list of (url, options) pairs); `key`: the JSON field
    holding the sequence ("seq", Binance's "u", a dotted path), a dict
    {"offset": n, "width": 8, "big_endian": False} for a binary integer, a callable
    `f(payload_bytes) -> (stream, seq) or None`, or None (one leg, no key).
    `stream_key`: a JSON field naming the stream. `contiguous`: hold messages ahead of a
    gap for `hold_ms` (default 1), then a "gap" event. `rotate_every`: seconds between
    planned rotations (make before break). Other keyword options apply to every leg
    (as for Pipeline: layout, wait, reconnect, subscriptions, ...).

        with pipeline.Feed(["ws://a/feed", "ws://b/feed"], key="seq", contiguous=True) as f:
            for item in f:
                if isinstance(item, pipeline.FeedEvent):
                    print(item.text, file=sys.stderr)
                else:
                    handle(item.seq, item.payload)

    `publish=True`: the merged stream (frames and events) goes to header-only readers
    in other processes (`include/pipeline_consumer.h`: `plc_open(c, name)`,
    `plc_next_feed`) instead of this one; use `wait()`, `stats()`, `close()`.

    `on_message`: callback delivery instead of polling. The merge runs on a thread the
    library owns and calls `on_message(item)` for every FeedMessage (its payload valid
    during the call only: copy with `bytes()` to keep it) and FeedEvent, in stream
    order; `poll`/`recv`/iteration are then refused. An exception from it closes every
    leg and ends delivery; `wait()` raises it.

        def on_message(item):
            if isinstance(item, pipeline.FeedEvent):
                print(item.text, file=sys.stderr)
            else:
                handle(item.seq, item.bytes())
        with pipeline.Feed(urls, key="seq", on_message=on_message) as f:
            f.wait()  # until every leg is gone (or f.close() from another thread)
    """

    def __init__(self, urls, key="seq", stream_key=None, contiguous=False, hold_ms=1.0, hold_capacity=4096,
                 primary=0, rotate_every=None, name=None, quiet=False, on_message=None, publish=False,
                 **leg_options):
        lib = _l()
        self._handle = None
        self._current = None
        self._keep = []
        # The callback's exception, in a list: the trampoline holds the list, not the
        # Feed (no cycle keeping a dropped Feed alive).
        self._callback_error = [None]
        legs = []
        for u in urls:
            url, opts = (u, {}) if isinstance(u, str) else u
            o = dict(leg_options)
            o.setdefault("quiet", quiet)
            o.update(opts)
            legs.append(_make_config(url, o, self._keep))
        arr = (PlConfig * len(legs))(*legs)
        self._keep.append(arr)
        fc = _ffi.PlFeedConfig()
        _check(lib.pl_feed_config_init(ctypes.byref(fc)), "feed config")
        fc.legs, fc.legs_len = arr, len(legs)
        if name is not None:
            self._keep.append(_cstr(name))
            fc.name = self._keep[-1]
        if key is None:
            fc.key = _ffi.KEY_NONE
        elif isinstance(key, str):
            fc.key = _ffi.KEY_JSON
            self._keep.append(_cstr(key))
            fc.json_field = self._keep[-1]
            if stream_key is not None:
                self._keep.append(_cstr(stream_key))
                fc.json_stream_field = self._keep[-1]
        elif isinstance(key, dict):
            fc.key = _ffi.KEY_BINARY
            fc.binary_offset = int(key.get("offset", 0))
            fc.binary_width = int(key.get("width", 8))
            fc.binary_big_endian = bool(key.get("big_endian", False))
        elif callable(key):
            fc.key = _ffi.KEY_CALLBACK

            def cb(_user, p, n, stream, seq, _f=key):
                try:
                    k = _f(ctypes.string_at(p, n))
                except Exception:
                    return 0
                if k is None:
                    return 0
                stream[0], seq[0] = int(k[0]), int(k[1])
                return 1

            fn = _ffi.KEY_FN(cb)
            self._keep.append(fn)
            fc.key_fn = fn
        else:
            raise PipelineError(2, "key: a JSON field name, a binary dict, a callable or None", "config")
        fc.mode = _ffi.FEED_CONTIGUOUS if contiguous else _ffi.FEED_MONOTONIC
        fc.hold_us = int(float(hold_ms) * 1000)
        fc.hold_capacity = int(hold_capacity)
        fc.primary = int(primary)
        fc.rotate_every_ms = int(float(rotate_every) * 1000) if rotate_every else 0
        fc.quiet = bool(quiet)
        h = ctypes.c_void_p()
        if publish and on_message is not None:
            raise ConfigError(2, "publish=True hands the stream to other processes: no on_message", "config")
        if publish:
            _check(lib.pl_feed_start_published(ctypes.byref(fc), 0, 0, ctypes.byref(h)), "feed start")
        elif on_message is None:
            _check(lib.pl_feed_start(ctypes.byref(fc), ctypes.byref(h)), "feed start")
        else:
            fn = _ffi.FEED_ON_ITEM(_trampoline(on_message, self._callback_error))
            self._keep.append(fn)  # the library calls it until pl_feed_free returns
            _check(lib.pl_feed_start_callback(ctypes.byref(fc), fn, None, ctypes.byref(h)), "feed start")
        self._handle = h

    def wait(self, timeout=None):
        """Callback delivery: wait until every leg is gone and everything was delivered
        (True), or `timeout` seconds pass (False). Raises what the callback raised if it
        ended delivery."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
            r = _l().pl_feed_wait(self._h(), int(left * 1000))
            if r == _ffi.PL_OK:
                return True
            if r == _ffi.PL_ERR_CLOSED and self._callback_error[0] is not None:
                raise self._callback_error[0]
            if r != _ffi.PL_ERR_TIMEOUT:
                _check(r, "feed wait")
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False

    def __del__(self):
        try:
            self.shutdown()
        except Exception:
            pass

    def _h(self):
        if self._handle is None:
            raise PipelineError(9, "the feed was shut down", "use")
        return self._handle

    def _release_current(self):
        m = self._current
        if m is not None:
            self._current = None
            m._owner = None
            try:
                m.payload.release()
            except BufferError:
                pass
            if self._handle is not None:
                _l().pl_feed_release(self._handle, ctypes.byref(m._frame))

    def _release(self, m):
        if m is self._current:
            self._release_current()

    def poll(self):
        """The next item without waiting: a FeedMessage, a FeedEvent, or None.
        Releases the previous message. StopIteration once every leg is gone."""
        self._release_current()
        it = _ffi.PlFeedItem()
        r = _l().pl_feed_poll(self._h(), ctypes.byref(it))
        if r == _ffi.PL_ERR_WOULD_BLOCK:
            return None
        if r == _ffi.PL_ERR_CLOSED:
            raise StopIteration
        _check(r, "feed poll")
        if _ffi.FEED_ITEM_KINDS.get(it.kind) == "frame":
            self._current = FeedMessage(self, it)
            return self._current
        return _feed_event(it)

    def recv(self, timeout=None):
        """The next item, waiting up to `timeout` seconds (None: until every leg is gone)."""
        try:
            return _wait_for(self.poll, timeout)
        except StopIteration:  # every leg is gone
            return None

    def __iter__(self):
        while True:
            m = self.recv()
            if m is None:
                return
            yield m

    def rotate(self, forced=False):
        """Rotate now (make before break). `forced`: the server announced its shutdown."""
        _check(_l().pl_feed_rotate(self._h(), bool(forced)), "rotate")

    def stats(self, leg=None):
        """The feed's counters (leg=None: feed_delivered, feed_gaps, ... and the legs'
        feed counters summed), or leg `leg`'s (its pipeline counters and feed_won,
        feed_dups, the lag histogram feed_lag_b00..b23)."""
        s = PlStats()
        _check(_l().pl_feed_get_stats_size(self._h(), -1 if leg is None else int(leg), ctypes.byref(s), ctypes.sizeof(s)),
               "stats")
        return {n: getattr(s, n) for n in _ffi.STAT_NAMES}

    def close(self, code=1000, reason=""):
        """Close every leg (iteration ends once they are gone)."""
        _check(_l().pl_feed_close(self._h(), code, _cstr(reason or "")), "close")

    def shutdown(self):
        """Stop every leg and free the feed. Idempotent."""
        if self._handle is None:
            return
        self._release_current()
        h, self._handle = self._handle, None
        _l().pl_feed_free(h)

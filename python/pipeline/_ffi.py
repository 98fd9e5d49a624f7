"""ctypes declarations mirroring include/pipeline.h (keep in step with it: the tests
compare the structure sizes and offsets with the C compiler's)."""
import ctypes
import os
import pathlib
from ctypes import (CFUNCTYPE, POINTER, c_bool, c_char, c_char_p, c_int, c_int32, c_size_t, c_uint8,
                    c_uint16, c_uint32, c_uint64, c_void_p)

# enum values (include/pipeline.h). The library takes them as integers (uint32_t in
# PlConfig, int for pl_result_name) and answers an unknown value with PL_ERR_CONFIG /
# "unknown", so passing a raw int through is safe.
RESULT_NAMES = {
    0: "PL_OK", 1: "PL_ERR_NULL_ARG", 2: "PL_ERR_CONFIG", 3: "PL_ERR_IO", 4: "PL_ERR_SHM",
    5: "PL_ERR_CAPABILITY", 6: "PL_ERR_NET", 7: "PL_ERR_TLS", 8: "PL_ERR_WEBSOCKET",
    9: "PL_ERR_CLOSED", 10: "PL_ERR_OVERRUN", 11: "PL_ERR_WOULD_BLOCK", 12: "PL_ERR_TIMEOUT",
    13: "PL_ERR_PANIC",
}
PL_OK, PL_ERR_CLOSED, PL_ERR_WOULD_BLOCK, PL_ERR_TIMEOUT = 0, 9, 11, 12
TRANSPORTS = {"kernel": 0, "xdp": 1, "synthetic": 2}
LAYOUTS = {"auto": 0, "processes": 1, "threads": 2, "inline": 3}
WAITS = {"auto": 0, "spin": 1, "yield": 2, "backoff": 3}
DELIVERIES = {"messages": 0, "frames": 1}
OVERRUNS = {"backpressure": 0, "overwrite": 1}
STATES = {0: "connecting", 1: "connected", 2: "closing", 3: "disconnected", 4: "reconnecting"}
PL_FRAME_AFTER_RECONNECT = 1
# PlDisconnectKind (PL_DISCONNECT_<NAME>), in code order; PlDisconnect.kind is a uint32_t
# and a newer library may add codes.
DISCONNECT_KINDS = [
    "NONE", "SERVER_CLOSED", "CLOSE_COMPLETED", "CLOSE_TIMEOUT", "CLOSED_AFTER_OUR_CLOSE",
    "PROTOCOL_ERROR", "UPGRADE_FAILED", "TCP_RESET", "TCP_CLOSED", "TLS", "NETWORK", "TIMEOUT",
    "STAGE_DIED", "STAGE_PANICKED", "STOPPED", "OVERRUN", "IO", "INTERNAL", "CALLBACK_ERROR",
]
PL_OPCODE_MORE = 256

ON_MESSAGE = CFUNCTYPE(None, c_void_p, POINTER(c_uint8), c_size_t, c_uint32)
# pl_on_message_ex: (user, sender, payload, len, opcode) -> 0 to continue.
ON_MESSAGE_EX = CFUNCTYPE(c_int32, c_void_p, c_void_p, POINTER(c_uint8), c_size_t, c_uint32)


class PlConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_size_t),  # sizeof(PlConfig): pl_config_init_size sets it
        ("url", c_char_p),
        ("name", c_char_p),
        ("transport", c_uint32),  # a PlTransport value: uint32_t at the ABI
        ("iface", c_char_p),
        ("layout", c_uint32),  # a PlLayout value: uint32_t at the ABI
        ("wait", c_uint32),  # a PlWait value: uint32_t at the ABI
        ("cores", POINTER(c_uint32)),
        ("cores_len", c_size_t),
        ("ca_file", c_char_p),
        ("insecure", c_bool),
        ("timeout_ms", c_uint32),
        ("max_message", c_size_t),
        ("inbox_size", c_size_t),
        ("outbox_size", c_size_t),
        ("delivery", c_uint32),  # a PlDelivery value: uint32_t at the ABI
        ("overrun", c_uint32),  # a PlOverrun value: uint32_t at the ABI
        ("headers", POINTER(c_char_p)),
        ("headers_len", c_size_t),
        ("subprotocols", POINTER(c_char_p)),
        ("subprotocols_len", c_size_t),
        ("on_message", ON_MESSAGE),
        ("on_message_user", c_void_p),
        ("external_consumer", c_bool),
        ("quiet", c_bool),
        ("synthetic_data", POINTER(c_uint8)),
        ("synthetic_len", c_size_t),
        ("synthetic_chunk", c_size_t),
        ("reconnect", c_bool),
        ("reconnect_initial_ms", c_uint32),
        ("reconnect_max_ms", c_uint32),
        ("reconnect_max_attempts", c_uint32),
        ("subscriptions", POINTER(c_char_p)),
        ("subscriptions_len", c_size_t),
        ("ping_interval_ms", c_uint32),
        ("liveness_timeout_ms", c_uint32),
        ("on_message_ex", ON_MESSAGE_EX),
        ("compression", c_uint32),
        ("deflate_client_max_window_bits", c_uint32),
        ("deflate_server_max_window_bits", c_uint32),
        ("deflate_client_no_context_takeover", c_bool),
        ("deflate_server_no_context_takeover", c_bool),
        ("deflate_threshold", c_size_t),
        ("server_stamp_field", c_char_p),
        ("server_stamp_offset", c_size_t),
        ("server_stamp_width", c_uint32),
        ("server_stamp_big_endian", c_bool),
        ("server_stamp_unit_ns", c_uint64),
    ]


class PlFrame(ctypes.Structure):
    _fields_ = [
        ("payload", c_void_p),
        ("len", c_size_t),
        ("opcode", c_uint32),
        ("after_overrun", c_bool),
        ("pos", c_uint64),
        ("flags", c_uint32),
    ]


class PlTimestamps(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("arrival_ns", c_uint64),
        ("decrypted_ns", c_uint64),
        ("parsed_ns", c_uint64),
        ("delivered_ns", c_uint64),
    ]


class PlDisconnect(ctypes.Structure):
    _fields_ = [
        ("kind", c_uint32),  # a PlDisconnectKind value
        ("close_code", c_uint32),
        ("pid", c_int32),
        ("signal", c_int32),
        ("exit_status", c_int32),
        ("close_reason", c_char * 124),
        ("stage", c_char * 32),
    ]


STAT_NAMES = [
    "state", "layout", "wait", "stages", "connected_at_ns", "rx_packets", "rx_bytes",
    "tx_packets", "tx_bytes", "tx_kicks", "rx_refilled", "tx_drops", "inbox_bytes",
    "sent_bytes", "sent_messages", "pongs_sent", "pings_sent", "inbox_full",
    "inbox_high_water", "retransmits", "dup_acks", "drops", "reconnects", "frames",
    "messages", "payload_bytes", "pings_received", "pongs_received", "reassembled",
    "overruns", "frame_ring_high_water", "frame_ring_full", "app_frames", "app_bytes",
    "polled_frames", "generation", "generation_start", "reconnect_attempt", "reconnect_cause",
    "liveness_timeouts", "user_close",
    "feed_received", "feed_won", "feed_dups", "feed_keyless_won", "feed_keyless_dropped",
    "feed_held", "feed_ups", "feed_downs", "feed_lag_sum_ns", "feed_lag_max_ns",
    "feed_lag_unknown",
] + ["feed_lag_b%02d" % b for b in range(24)] + [
    "feed_delivered", "feed_gaps", "feed_gap_seqs", "feed_rotations",
    "feed_rotation_aborts", "feed_legs_up", "feed_held_now",
    "deflate", "inflated_messages", "inflated_bytes", "compressed_sent",
]


class PlStats(ctypes.Structure):
    _fields_ = [(n, c_uint64) for n in STAT_NAMES]


KEY_NONE, KEY_JSON, KEY_BINARY, KEY_CALLBACK = 0, 1, 2, 3
FEED_MONOTONIC, FEED_CONTIGUOUS = 0, 1
FEED_ITEM_KINDS = {1: "frame", 2: "gap", 3: "leg_up", 4: "leg_down", 5: "rotation_started",
                   6: "rotation_done", 7: "rotation_aborted"}
FEED_AFTER_RECONNECT, FEED_HAS_KEY, FEED_IN_STEP = 1, 2, 4

KEY_FN = CFUNCTYPE(c_int, c_void_p, POINTER(c_uint8), c_size_t, POINTER(c_uint32), POINTER(c_uint64))


class PlFeedConfig(ctypes.Structure):
    _fields_ = [
        ("legs", POINTER(PlConfig)),
        ("legs_len", c_size_t),
        ("name", c_char_p),
        ("key", c_uint32),  # a PlKeyKind value
        ("json_field", c_char_p),
        ("json_stream_field", c_char_p),
        ("binary_offset", c_size_t),
        ("binary_width", c_uint32),
        ("binary_big_endian", c_bool),
        ("key_fn", KEY_FN),
        ("key_user", c_void_p),
        ("mode", c_uint32),  # a PlFeedMode value
        ("hold_us", c_uint32),
        ("hold_capacity", c_uint32),
        ("primary", c_uint32),
        ("rotate_every_ms", c_uint32),
        ("quiet", c_bool),
    ]


class PlFeedItem(ctypes.Structure):
    _fields_ = [
        ("kind", c_uint32),  # a PlFeedItemKind value
        ("leg", c_uint32),
        ("payload", c_void_p),
        ("len", c_size_t),
        ("opcode", c_uint32),
        ("flags", c_uint32),
        ("pos", c_uint64),
        ("stream", c_uint32),
        ("old_leg", c_uint32),
        ("seq", c_uint64),
        ("to", c_uint64),
        ("generation", c_uint64),
        ("cause", c_uint32),
        ("text", c_char * 160),
    ]


# pl_feed_on_item: (user, item) -> 0 to continue (the feed's own thread).
FEED_ON_ITEM = CFUNCTYPE(c_int, c_void_p, POINTER(PlFeedItem))


def _candidates():
    env = os.environ.get("PIPELINE_LIB")
    if env:
        yield pathlib.Path(env)
        return
    here = pathlib.Path(__file__).resolve().parent
    # Built into the package by setup.py (setuptools-rust names it like an extension:
    # libpipeline.cpython-311-x86_64-linux-gnu.so), or copied as libpipeline.so.
    for p in sorted(here.glob("libpipeline*.so")):
        yield p
    # Running from (or installed from) a checkout: the repo's target/release.
    roots = [here.parent.parent]
    marker = here / "_repo_root.txt"  # written by setup.py at install time
    if marker.exists():
        roots.insert(0, pathlib.Path(marker.read_text().strip()))
    for root in roots:
        target = os.environ.get("CARGO_TARGET_DIR")
        if target:
            yield pathlib.Path(target) / "release" / "libpipeline.so"
        yield root / "target" / "release" / "libpipeline.so"


def load():
    tried = []
    for path in _candidates():
        tried.append(str(path))
        if path.exists():
            lib = ctypes.CDLL(str(path))
            break
    else:
        raise OSError("libpipeline.so not found (tried %s); build it with `cargo build --release` "
                      "or set PIPELINE_LIB=/path/to/libpipeline.so" % ", ".join(tried))
    lib.pl_version.restype = c_char_p
    lib.pl_version.argtypes = []
    lib.pl_result_name.restype = c_char_p
    lib.pl_result_name.argtypes = [c_int]
    lib.pl_last_error.restype = c_size_t
    lib.pl_last_error.argtypes = [c_void_p, c_size_t]
    lib.pl_config_init_size.restype = c_int
    lib.pl_config_init_size.argtypes = [POINTER(PlConfig), c_size_t]
    lib.pl_abi_version.restype = c_uint32
    lib.pl_abi_version.argtypes = []
    lib.pl_sender_send_text.restype = c_int
    lib.pl_sender_send_text.argtypes = [c_void_p, c_char_p, c_size_t]
    lib.pl_sender_send_binary.restype = c_int
    lib.pl_sender_send_binary.argtypes = [c_void_p, c_char_p, c_size_t]
    lib.pl_sender_set_error.restype = c_int
    lib.pl_sender_set_error.argtypes = [c_void_p, c_char_p]
    lib.pl_start.restype = c_int
    lib.pl_start.argtypes = [POINTER(PlConfig), POINTER(c_void_p)]
    lib.pl_poll.restype = c_int
    lib.pl_event_fd.restype = c_int
    lib.pl_event_fd.argtypes = [c_void_p, POINTER(c_int)]
    lib.pl_get_reconnect.argtypes = [c_void_p, POINTER(c_uint32), POINTER(c_uint32), POINTER(c_uint64),
                                     POINTER(c_uint64)]
    lib.pl_get_reconnect.restype = c_int
    lib.pl_poll.argtypes = [c_void_p, POINTER(PlFrame)]
    lib.pl_message_timestamps.restype = c_int
    lib.pl_message_timestamps.argtypes = [POINTER(PlTimestamps)]
    lib.pl_monotonic_to_unix_ns.restype = c_uint64
    lib.pl_monotonic_to_unix_ns.argtypes = [c_uint64]
    lib.pl_release.restype = c_int
    lib.pl_release.argtypes = [c_void_p, POINTER(PlFrame)]
    lib.pl_send_text.restype = c_int
    lib.pl_send_text.argtypes = [c_void_p, c_char_p, c_size_t]
    lib.pl_send_binary.restype = c_int
    lib.pl_send_binary.argtypes = [c_void_p, c_char_p, c_size_t]
    lib.pl_close.restype = c_int
    lib.pl_close.argtypes = [c_void_p, c_uint16, c_char_p]
    lib.pl_wait_disconnected.restype = c_int
    lib.pl_wait_disconnected.argtypes = [c_void_p, c_uint32]
    lib.pl_get_state.restype = c_int
    lib.pl_get_state.argtypes = [c_void_p, POINTER(c_int), c_void_p, c_size_t]
    lib.pl_get_disconnect.restype = c_int
    lib.pl_get_disconnect.argtypes = [c_void_p, POINTER(PlDisconnect), c_void_p, c_size_t]
    lib.pl_disconnect_kind_name.restype = c_char_p
    lib.pl_disconnect_kind_name.argtypes = [c_uint32]
    lib.pl_get_stats_size.restype = c_int
    lib.pl_get_stats_size.argtypes = [c_void_p, POINTER(PlStats), c_size_t]
    lib.pl_get_name.restype = c_size_t
    lib.pl_get_name.argtypes = [c_void_p, c_void_p, c_size_t]
    lib.pl_stop.restype = c_int
    lib.pl_stop.argtypes = [c_void_p]
    lib.pl_free.restype = None
    lib.pl_free.argtypes = [c_void_p]
    lib.pl_feed_config_init.restype = c_int
    lib.pl_feed_config_init.argtypes = [POINTER(PlFeedConfig)]
    lib.pl_feed_start.restype = c_int
    lib.pl_feed_start.argtypes = [POINTER(PlFeedConfig), POINTER(c_void_p)]
    lib.pl_feed_start_callback.restype = c_int
    lib.pl_feed_start_callback.argtypes = [POINTER(PlFeedConfig), FEED_ON_ITEM, c_void_p, POINTER(c_void_p)]
    lib.pl_feed_start_published.restype = c_int
    lib.pl_feed_start_published.argtypes = [POINTER(PlFeedConfig), c_size_t, c_size_t, POINTER(c_void_p)]
    lib.pl_feed_wait.restype = c_int
    lib.pl_feed_wait.argtypes = [c_void_p, c_uint32]
    lib.pl_feed_poll.restype = c_int
    lib.pl_feed_poll.argtypes = [c_void_p, POINTER(PlFeedItem)]
    lib.pl_feed_release.restype = c_int
    lib.pl_feed_release.argtypes = [c_void_p, POINTER(PlFeedItem)]
    lib.pl_feed_rotate.restype = c_int
    lib.pl_feed_rotate.argtypes = [c_void_p, c_bool]
    lib.pl_feed_get_stats_size.restype = c_int
    lib.pl_feed_get_stats_size.argtypes = [c_void_p, c_int, POINTER(PlStats), c_size_t]
    lib.pl_feed_close.restype = c_int
    lib.pl_feed_close.argtypes = [c_void_p, c_uint16, c_char_p]
    lib.pl_feed_free.restype = None
    lib.pl_feed_free.argtypes = [c_void_p]
    lib.path = path
    return lib

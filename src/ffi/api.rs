//! The pipeline's C API: config, start, send, receive (callback or polling), state,
//! stats, close, stop, free. Thin wrappers over [`crate::pipeline::Pipeline`].

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::boundary;
use crate::error::{Error, Result};
use crate::ffi_nonnull;
use crate::pipeline::{Config, Pipeline, Polled, Receiver, TransportKind};
use crate::ring::OverrunPolicy;
use crate::runner::{Layout, WaitKind};
use crate::stage::{Delivery, SyntheticScript};
use crate::stats::{Counter, DisconnectKind, StageExit, State, COUNTERS};

/// Which transport carries the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlTransport {
    /// Kernel TCP socket + OpenSSL (default; no privileges).
    PL_TRANSPORT_KERNEL = 0,
    /// AF_XDP + userspace TCP + OpenSSL (root or capabilities).
    PL_TRANSPORT_XDP = 1,
    /// Scripted in-process server replaying `synthetic_data` (tests, demos).
    PL_TRANSPORT_SYNTHETIC = 2,
}

/// Where the stages run. AUTO: chosen from the number of cores (and said on stderr).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlLayout {
    PL_LAYOUT_AUTO = 0,
    PL_LAYOUT_PROCESSES = 1,
    PL_LAYOUT_THREADS = 2,
    PL_LAYOUT_INLINE = 3,
}

/// How idle stages wait. AUTO: chosen with the layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlWait {
    PL_WAIT_AUTO = 0,
    PL_WAIT_SPIN = 1,
    PL_WAIT_YIELD = 2,
    PL_WAIT_BACKOFF = 3,
}

/// What a receive hands out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlDelivery {
    /// Whole messages (fragments reassembled in place).
    PL_DELIVERY_MESSAGES = 0,
    /// Every frame; continuation frames have opcode 0.
    PL_DELIVERY_FRAMES = 1,
}

/// What happens when the reader falls behind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlOverrun {
    /// Stop reading from the network (TCP window closes); nothing is lost.
    PL_OVERRUN_BACKPRESSURE = 0,
    /// Keep writing; overwritten frames are lost and reported.
    PL_OVERRUN_OVERWRITE = 1,
}

/// `TryFrom<u32>` for an enum whose values come from C. C may store any integer in an
/// enum-typed slot (`cfg.transport = 9` compiles), and a Rust enum read from a value no
/// variant names is undefined behaviour, so the ABI carries `uint32_t` and the library
/// converts here: an unknown value is `Err(value)`, never a guess.
trait FromC: TryFrom<u32, Error = u32> {
    const NAME: &'static str;
    /// The enumerators, space-separated, for error messages.
    const EXPECTED: &'static str;
}

macro_rules! from_c_u32 {
    ($t:ident { $($v:ident),+ $(,)? }) => {
        impl TryFrom<u32> for $t {
            type Error = u32;
            fn try_from(v: u32) -> std::result::Result<Self, u32> {
                $( if v == $t::$v as u32 { return Ok($t::$v); } )+
                Err(v)
            }
        }
        impl FromC for $t {
            const NAME: &'static str = stringify!($t);
            const EXPECTED: &'static str = concat!($(stringify!($v), " "),+);
        }
    };
}

from_c_u32!(PlTransport { PL_TRANSPORT_KERNEL, PL_TRANSPORT_XDP, PL_TRANSPORT_SYNTHETIC });
from_c_u32!(PlLayout { PL_LAYOUT_AUTO, PL_LAYOUT_PROCESSES, PL_LAYOUT_THREADS, PL_LAYOUT_INLINE });
from_c_u32!(PlWait { PL_WAIT_AUTO, PL_WAIT_SPIN, PL_WAIT_YIELD, PL_WAIT_BACKOFF });
from_c_u32!(PlDelivery { PL_DELIVERY_MESSAGES, PL_DELIVERY_FRAMES });
from_c_u32!(PlOverrun { PL_OVERRUN_BACKPRESSURE, PL_OVERRUN_OVERWRITE });

/// A `PlConfig` enum field read as an integer: PL_ERR_CONFIG naming the field and the
/// value when no enumerator has it.
fn config_enum<T: FromC>(v: u32, field: &str) -> Result<T> {
    T::try_from(v).map_err(|v| {
        Error::Config(format!(
            "PlConfig.{field} = {v} is not a {} value (expected one of: {})",
            T::NAME,
            T::EXPECTED.trim_end()
        ))
    })
}

/// Connection state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlState {
    PL_STATE_CONNECTING = 0,
    PL_STATE_CONNECTED = 1,
    PL_STATE_CLOSING = 2,
    PL_STATE_DISCONNECTED = 3,
    /// Output only: a connection was lost and reconnect is on (waiting for the backoff
    /// or connecting again); `pl_get_reconnect` has the attempt and the loss's kind.
    PL_STATE_RECONNECTING = 4,
}

/// Flags or-ed into the callback's `opcode` and `PlFrame.opcode`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlOpcodeFlags {
    /// More frames of this message follow (`PL_DELIVERY_FRAMES` only).
    PL_OPCODE_MORE = 0x100,
}

/// `PL_OPCODE_MORE` as a number (Rust only: C has the enum's constant).
/// cbindgen:ignore
pub const PL_OPCODE_MORE: u32 = PlOpcodeFlags::PL_OPCODE_MORE as u32;

/// Message callback: runs on the AppClient stage (its thread, its process in the
/// processes layout, or the inline loop). `payload` points into the shared MSG_INBOX
/// and is valid only during the call. `opcode`: 1 text, 2 binary, 0 continuation, with
/// `PL_OPCODE_MORE` set on non-final frames. Must not unwind (C++ exceptions).
#[allow(non_camel_case_types)]
pub type pl_on_message =
    Option<unsafe extern "C" fn(user: *mut c_void, payload: *const u8, len: usize, opcode: u32)>;

/// Called on each connection state change after `pl_start` returned (which is the
/// CONNECTED event): CLOSING, then DISCONNECTED with the reason's message ("closed by
/// server: code 1001 going away", "stopped by the application", ...; for its kind call
/// `pl_get_disconnect`, also from inside the callback). `reason` is NUL-terminated and
/// valid only during the call. Runs on a library watcher thread.
#[allow(non_camel_case_types)]
pub type pl_on_state = Option<unsafe extern "C" fn(user: *mut c_void, state: PlState, reason: *const c_char)>;

/// Start-up options. Fill with `pl_config_init`, then set what you need.
#[repr(C)]
pub struct PlConfig {
    /// `sizeof(PlConfig)` as the caller was compiled: set by `pl_config_init` (the
    /// header's macro passes the caller's size). The ABI policy (docs/c-api.md): fields
    /// are only ever appended, and a library reads only the first `struct_size` bytes,
    /// taking defaults for fields the caller's header did not have.
    pub struct_size: usize,
    /// "wss://host[:port]/path" or "ws://..." (required).
    pub url: *const c_char,
    /// Shared-memory name (/dev/shm/pipeline_<name>/); NULL: "<pid>-<n>".
    pub name: *const c_char,
    /// A `PlTransport` value (an integer at the ABI: an unknown value is PL_ERR_CONFIG).
    pub transport: u32,
    /// Interface for the XDP transport; NULL: from the route.
    pub iface: *const c_char,
    /// A `PlLayout` value (an integer at the ABI: an unknown value is PL_ERR_CONFIG).
    pub layout: u32,
    /// A `PlWait` value (an integer at the ABI: an unknown value is PL_ERR_CONFIG).
    pub wait: u32,
    /// One core per stage, in stage order; NULL/0: no pinning.
    pub cores: *const u32,
    pub cores_len: usize,
    /// CA bundle; NULL: the system's.
    pub ca_file: *const c_char,
    /// Skip certificate and host name checks (logged loudly).
    pub insecure: bool,
    /// Set-up deadline in milliseconds (default 10000).
    pub timeout_ms: u32,
    /// Largest message accepted (default 1 MiB).
    pub max_message: usize,
    /// MSG_INBOX bytes, power of two (default 4 MiB).
    pub inbox_size: usize,
    /// MSG_OUTBOX bytes, power of two (default 1 MiB).
    pub outbox_size: usize,
    /// A `PlDelivery` value (an integer at the ABI: an unknown value is PL_ERR_CONFIG).
    pub delivery: u32,
    /// A `PlOverrun` value (an integer at the ABI: an unknown value is PL_ERR_CONFIG).
    pub overrun: u32,
    /// Extra upgrade headers, each "Name: value".
    pub headers: *const *const c_char,
    pub headers_len: usize,
    /// Sec-WebSocket-Protocol values.
    pub subprotocols: *const *const c_char,
    pub subprotocols_len: usize,
    /// Callback delivery when set; polling (`pl_poll`) when NULL.
    pub on_message: pl_on_message,
    pub on_message_user: *mut c_void,
    /// Leave the frames to another process using pipeline_consumer.h (no callback,
    /// no pl_poll).
    pub external_consumer: bool,
    /// Do not print the chosen layout on stderr.
    pub quiet: bool,
    /// PL_TRANSPORT_SYNTHETIC: the server's bytes after the upgrade (copied at start).
    pub synthetic_data: *const u8,
    pub synthetic_len: usize,
    /// PL_TRANSPORT_SYNTHETIC: largest read (0: unlimited), to split frames.
    pub synthetic_chunk: usize,
    /// Reconnect after a lost connection (exponential backoff with jitter; close codes
    /// 1000/1001/1011/1012/1013 and the like reconnect, 1008 does not). Default off.
    pub reconnect: bool,
    /// First backoff delay and its cap, in milliseconds (0: 100 and 10000).
    pub reconnect_initial_ms: u32,
    pub reconnect_max_ms: u32,
    /// Give up after this many consecutive attempts (0: never).
    pub reconnect_max_attempts: u32,
    /// Text messages sent after every (re)connect, before CONNECTED (subscriptions).
    pub subscriptions: *const *const c_char,
    pub subscriptions_len: usize,
    /// Client PING every this many milliseconds, and the connection is dead after
    /// `liveness_timeout_ms` without data or a PONG (both 0: off).
    pub ping_interval_ms: u32,
    pub liveness_timeout_ms: u32,
    /// Callback delivery that can send and fail (see `pl_on_message_ex`); gets
    /// `on_message_user`. Set this or `on_message`, not both.
    pub on_message_ex: super::sender::pl_on_message_ex,
    /// permessage-deflate (RFC 7692): 0 off (the default), 1 offer it. Compressed
    /// messages are inflated into MSG_INBOX: frames are read exactly as without it.
    pub compression: u32,
    /// Offer `client_max_window_bits`: 0 without a value, 8..15 with that value.
    pub deflate_client_max_window_bits: u32,
    /// Offer `server_max_window_bits=N` (8..15); 0: do not.
    pub deflate_server_max_window_bits: u32,
    /// Offer `client_no_context_takeover`.
    pub deflate_client_no_context_takeover: bool,
    /// Offer `server_no_context_takeover`.
    pub deflate_server_no_context_takeover: bool,
    /// Our messages shorter than this go uncompressed (default 64).
    pub deflate_threshold: usize,
    /// One-way latency from the server's own stamp (the stats region's
    /// `server_to_delivered`): the name of a JSON member holding it (`"E"`: the first
    /// `"E": <integer>` of each message, the integer may be quoted). NULL: see
    /// `server_stamp_width`.
    pub server_stamp_field: *const c_char,
    /// Or a binary stamp: an unsigned integer of `server_stamp_width` bytes (4 or 8; 0:
    /// no server stamp) at `server_stamp_offset` in each message.
    pub server_stamp_offset: usize,
    pub server_stamp_width: u32,
    /// The binary stamp is big-endian (default: little-endian).
    pub server_stamp_big_endian: bool,
    /// The stamp's unit in ns since the Unix epoch: 1 (default) ns, 1000 us, 1000000 ms.
    pub server_stamp_unit_ns: u64,
}

/// A received frame, read in place. Give it back with `pl_release`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PlFrame {
    /// Points into the shared MSG_INBOX; valid until this frame (or a later one) is
    /// released.
    pub payload: *const u8,
    pub len: usize,
    /// 1 text, 2 binary, 0 continuation; `PL_OPCODE_MORE` on non-final frames.
    pub opcode: u32,
    /// MSG_INBOX was overrun before this frame (PL_OVERRUN_OVERWRITE): data was lost.
    pub after_overrun: bool,
    /// Library use: the frame's stream position.
    pub pos: u64,
    /// `PL_FRAME_*` bits: `PL_FRAME_AFTER_RECONNECT` on the first frame of a new
    /// connection (a message cut by the disconnect was not delivered).
    pub flags: u32,
}

/// `PlFrame.flags`: the first frame after a reconnect.
pub const PL_FRAME_AFTER_RECONNECT: u32 = 1;

/// Every counter of the stats region (see docs/pipeline.md for their meaning).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PlStats {
    pub state: u64,
    pub layout: u64,
    pub wait: u64,
    pub stages: u64,
    pub connected_at_ns: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_kicks: u64,
    pub rx_refilled: u64,
    pub tx_drops: u64,
    pub inbox_bytes: u64,
    pub sent_bytes: u64,
    pub sent_messages: u64,
    pub pongs_sent: u64,
    pub pings_sent: u64,
    pub inbox_full: u64,
    pub inbox_high_water: u64,
    pub retransmits: u64,
    pub dup_acks: u64,
    pub drops: u64,
    pub reconnects: u64,
    pub frames: u64,
    pub messages: u64,
    pub payload_bytes: u64,
    pub pings_received: u64,
    pub pongs_received: u64,
    pub reassembled: u64,
    pub overruns: u64,
    pub frame_ring_high_water: u64,
    pub frame_ring_full: u64,
    pub app_frames: u64,
    pub app_bytes: u64,
    pub polled_frames: u64,
    pub generation: u64,
    pub generation_start: u64,
    pub reconnect_attempt: u64,
    pub reconnect_cause: u64,
    pub liveness_timeouts: u64,
    pub user_close: u64,
    /// Feed leg counters (docs/feed.md): messages received, won, duplicates,
    /// keyless won / dropped, held, ups, downs, lag sum / max / unknown, and the lag
    /// histogram (bucket 0 < 1 us, bucket b in 1..=22 is [2^(b-1), 2^b) us, 23 above).
    pub feed_received: u64,
    pub feed_won: u64,
    pub feed_dups: u64,
    pub feed_keyless_won: u64,
    pub feed_keyless_dropped: u64,
    pub feed_held: u64,
    pub feed_ups: u64,
    pub feed_downs: u64,
    pub feed_lag_sum_ns: u64,
    pub feed_lag_max_ns: u64,
    pub feed_lag_unknown: u64,
    pub feed_lag_b00: u64,
    pub feed_lag_b01: u64,
    pub feed_lag_b02: u64,
    pub feed_lag_b03: u64,
    pub feed_lag_b04: u64,
    pub feed_lag_b05: u64,
    pub feed_lag_b06: u64,
    pub feed_lag_b07: u64,
    pub feed_lag_b08: u64,
    pub feed_lag_b09: u64,
    pub feed_lag_b10: u64,
    pub feed_lag_b11: u64,
    pub feed_lag_b12: u64,
    pub feed_lag_b13: u64,
    pub feed_lag_b14: u64,
    pub feed_lag_b15: u64,
    pub feed_lag_b16: u64,
    pub feed_lag_b17: u64,
    pub feed_lag_b18: u64,
    pub feed_lag_b19: u64,
    pub feed_lag_b20: u64,
    pub feed_lag_b21: u64,
    pub feed_lag_b22: u64,
    pub feed_lag_b23: u64,
    /// Feed-wide counters (in the feed's own region).
    pub feed_delivered: u64,
    pub feed_gaps: u64,
    pub feed_gap_seqs: u64,
    pub feed_rotations: u64,
    pub feed_rotation_aborts: u64,
    pub feed_legs_up: u64,
    pub feed_held_now: u64,
    pub deflate: u64,
    pub inflated_messages: u64,
    pub inflated_bytes: u64,
    pub compressed_sent: u64,
}
static_assertions::const_assert_eq!(std::mem::size_of::<PlStats>(), COUNTERS * 8);

/// A running pipeline (opaque).
///
/// Every call but `pl_free` reaches it through a shared reference only: the C caller
/// may call the thread-safe functions from several threads at once, and a `&mut` made
/// from the handle while another thread holds `&` would be undefined behaviour. What
/// a call must change sits behind a lock (the polling receiver here; the stages and
/// the state watcher inside `Pipeline`).
#[allow(non_camel_case_types)]
pub struct pl_pipeline {
    p: Pipeline,
    /// pl_poll / pl_release: the receiver and what it has handed out, one caller at a
    /// time. `Err`: why this pipeline cannot be polled.
    rx: std::sync::Mutex<std::result::Result<Polling, &'static str>>,
}

/// The polling receiver and the span of MSG_INBOX positions handed out by pl_poll,
/// so that pl_release can refuse a frame it never returned.
struct Polling {
    rx: Receiver,
    /// End (pos + len) of the furthest frame pl_poll returned.
    handed_out_end: u64,
}

struct CCallback {
    f: unsafe extern "C" fn(*mut c_void, *const u8, usize, u32),
    user: *mut c_void,
}
// SAFETY: the C caller promises the callback and its user pointer may be used from the
// AppClient stage's thread (documented on `pl_on_message`).
unsafe impl Send for CCallback {}

pub(super) unsafe fn opt_str(p: *const c_char, what: &str) -> Result<Option<String>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| Error::Config(format!("{what} is not valid UTF-8")))
}

unsafe fn str_list(p: *const *const c_char, n: usize, what: &str) -> Result<Vec<String>> {
    if p.is_null() || n == 0 {
        return Ok(Vec::new());
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: the caller passes `n` string pointers.
        let s = unsafe { opt_str(*p.add(i), what)? };
        v.push(s.ok_or_else(|| Error::Config(format!("{what}[{i}] is NULL")))?);
    }
    Ok(v)
}

/// Fill `cfg` with the defaults (all pointers NULL, AUTO layout and wait, kernel
/// transport, 10 s timeout, 1 MiB messages, 4 MiB MSG_INBOX) for this library's whole
/// `PlConfig`. In C and C++ the header's macro of the same name calls
/// `pl_config_init_size(cfg, sizeof *cfg)` instead, so a program built against an older
/// header never has more written than its struct holds; bindings (ctypes) call
/// `pl_config_init_size` with their own size.
///
/// # Safety
/// `cfg` must be NULL or point to writable memory for a `PlConfig`.
#[no_mangle]
pub unsafe extern "C" fn pl_config_init(cfg: *mut PlConfig) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(cfg);
        let d = Config::new("");
        let c = PlConfig {
            struct_size: std::mem::size_of::<PlConfig>(),
            url: std::ptr::null(),
            name: std::ptr::null(),
            transport: PlTransport::PL_TRANSPORT_KERNEL as u32,
            iface: std::ptr::null(),
            layout: PlLayout::PL_LAYOUT_AUTO as u32,
            wait: PlWait::PL_WAIT_AUTO as u32,
            cores: std::ptr::null(),
            cores_len: 0,
            ca_file: std::ptr::null(),
            insecure: false,
            timeout_ms: d.timeout.as_millis() as u32,
            max_message: d.max_message,
            inbox_size: d.inbox_size,
            outbox_size: d.outbox_size,
            delivery: PlDelivery::PL_DELIVERY_MESSAGES as u32,
            overrun: PlOverrun::PL_OVERRUN_BACKPRESSURE as u32,
            headers: std::ptr::null(),
            headers_len: 0,
            subprotocols: std::ptr::null(),
            subprotocols_len: 0,
            on_message: None,
            on_message_user: std::ptr::null_mut(),
            external_consumer: false,
            quiet: false,
            synthetic_data: std::ptr::null(),
            synthetic_len: 0,
            synthetic_chunk: 0,
            reconnect: false,
            reconnect_initial_ms: 0,
            reconnect_max_ms: 0,
            reconnect_max_attempts: 0,
            subscriptions: std::ptr::null(),
            subscriptions_len: 0,
            ping_interval_ms: 0,
            liveness_timeout_ms: 0,
            on_message_ex: None,
            compression: 0,
            deflate_client_max_window_bits: 0,
            deflate_server_max_window_bits: 0,
            deflate_client_no_context_takeover: false,
            deflate_server_no_context_takeover: false,
            deflate_threshold: crate::ws::DeflateConfig::default().threshold,
            server_stamp_field: std::ptr::null(),
            server_stamp_offset: 0,
            server_stamp_width: 0,
            server_stamp_big_endian: false,
            server_stamp_unit_ns: 1,
        };
        // SAFETY: cfg is non-null and writable per the contract.
        unsafe { cfg.write(c) };
        Ok(())
    })
}

pub(super) unsafe fn to_config(c: &PlConfig) -> Result<Config> {
    // SAFETY (whole function): pointers come from the caller's PlConfig, documented
    // as NUL-terminated strings or arrays of the stated lengths.
    let url = unsafe { opt_str(c.url, "url")? }.ok_or(Error::NullArg("cfg->url"))?;
    let mut cfg = Config::new(&url);
    cfg.name = unsafe { opt_str(c.name, "name")? };
    cfg.iface = unsafe { opt_str(c.iface, "iface")? };
    cfg.ca_file = unsafe { opt_str(c.ca_file, "ca_file")? }.map(PathBuf::from);
    cfg.transport = match config_enum::<PlTransport>(c.transport, "transport")? {
        PlTransport::PL_TRANSPORT_KERNEL => TransportKind::Kernel,
        PlTransport::PL_TRANSPORT_XDP => TransportKind::Xdp,
        PlTransport::PL_TRANSPORT_SYNTHETIC => {
            let data = if c.synthetic_data.is_null() || c.synthetic_len == 0 {
                Vec::new()
            } else {
                unsafe { std::slice::from_raw_parts(c.synthetic_data, c.synthetic_len) }.to_vec()
            };
            TransportKind::Synthetic(SyntheticScript {
                data: Arc::new(data),
                chunk: c.synthetic_chunk,
                ..Default::default()
            })
        }
    };
    cfg.layout = match config_enum::<PlLayout>(c.layout, "layout")? {
        PlLayout::PL_LAYOUT_AUTO => None,
        PlLayout::PL_LAYOUT_PROCESSES => Some(Layout::Processes),
        PlLayout::PL_LAYOUT_THREADS => Some(Layout::Threads),
        PlLayout::PL_LAYOUT_INLINE => Some(Layout::Inline),
    };
    cfg.wait = match config_enum::<PlWait>(c.wait, "wait")? {
        PlWait::PL_WAIT_AUTO => None,
        PlWait::PL_WAIT_SPIN => Some(WaitKind::Spin),
        PlWait::PL_WAIT_YIELD => Some(WaitKind::Yield),
        PlWait::PL_WAIT_BACKOFF => Some(WaitKind::Backoff),
    };
    if !c.cores.is_null() && c.cores_len > 0 {
        cfg.cores = unsafe { std::slice::from_raw_parts(c.cores, c.cores_len) }
            .iter()
            .map(|&x| x as usize)
            .collect();
    }
    cfg.insecure = c.insecure;
    if c.timeout_ms > 0 {
        cfg.timeout = Duration::from_millis(c.timeout_ms as u64);
    }
    if c.max_message > 0 {
        cfg.max_message = c.max_message;
    }
    if c.inbox_size > 0 {
        cfg.inbox_size = c.inbox_size;
    }
    if c.outbox_size > 0 {
        cfg.outbox_size = c.outbox_size;
    }
    cfg.delivery = match config_enum::<PlDelivery>(c.delivery, "delivery")? {
        PlDelivery::PL_DELIVERY_MESSAGES => Delivery::Messages,
        PlDelivery::PL_DELIVERY_FRAMES => Delivery::Frames,
    };
    cfg.overrun = match config_enum::<PlOverrun>(c.overrun, "overrun")? {
        PlOverrun::PL_OVERRUN_BACKPRESSURE => OverrunPolicy::Backpressure,
        PlOverrun::PL_OVERRUN_OVERWRITE => OverrunPolicy::Overwrite,
    };
    for h in unsafe { str_list(c.headers, c.headers_len, "headers")? } {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| Error::Config(format!("header {h:?} is not \"Name: value\"")))?;
        cfg.headers
            .push((n.trim().to_string(), v.trim().to_string()));
    }
    cfg.subprotocols = unsafe { str_list(c.subprotocols, c.subprotocols_len, "subprotocols")? };
    cfg.quiet = c.quiet;
    cfg.external_consumer = c.external_consumer;
    if c.reconnect {
        let mut r = crate::feed::ReconnectPolicy::standard();
        if c.reconnect_initial_ms > 0 {
            r.initial_ns = c.reconnect_initial_ms as u64 * 1_000_000;
        }
        if c.reconnect_max_ms > 0 {
            r.max_ns = c.reconnect_max_ms as u64 * 1_000_000;
        }
        if c.reconnect_max_attempts > 0 {
            r.max_attempts = Some(c.reconnect_max_attempts);
        }
        r.validate().map_err(|e| Error::Config(e.to_string()))?;
        cfg.reconnect = r;
    }
    cfg.subscriptions = unsafe { str_list(c.subscriptions, c.subscriptions_len, "subscriptions")? }
        .into_iter()
        .map(crate::stage::Subscription::Text)
        .collect();
    if c.ping_interval_ms > 0 || c.liveness_timeout_ms > 0 {
        cfg.liveness = Some(
            crate::feed::LivenessConfig::new(
                c.ping_interval_ms as u64 * 1_000_000,
                c.liveness_timeout_ms as u64 * 1_000_000,
            )
            .map_err(|e| Error::Config(e.to_string()))?,
        );
    }
    cfg.deflate = match c.compression {
        0 => None,
        1 => {
            let bits = |v: u32, field: &str| -> Result<u8> {
                u8::try_from(v).ok().filter(|&b| b == 0 || (8..=15).contains(&b)).ok_or_else(|| {
                    Error::Config(format!("PlConfig.{field} = {v}: expected 0 or 8..15"))
                })
            };
            let d = crate::ws::DeflateConfig {
                client_max_window_bits: bits(c.deflate_client_max_window_bits, "deflate_client_max_window_bits")?,
                server_max_window_bits: bits(c.deflate_server_max_window_bits, "deflate_server_max_window_bits")?,
                client_no_context_takeover: c.deflate_client_no_context_takeover,
                server_no_context_takeover: c.deflate_server_no_context_takeover,
                threshold: c.deflate_threshold,
                ..Default::default()
            };
            Some(d)
        }
        v => {
            return Err(Error::Config(format!(
                "PlConfig.compression = {v}: expected 0 (off) or 1 (permessage-deflate)"
            )))
        }
    };
    // SAFETY: NULL or a NUL-terminated string per the contract.
    let field = unsafe { opt_str(c.server_stamp_field, "server_stamp_field")? };
    let unit_ns = c.server_stamp_unit_ns;
    cfg.server_stamp = match (field, c.server_stamp_width) {
        (Some(name), 0) => Some(crate::latency::ServerStamp::JsonField { name, unit_ns }),
        (Some(_), w) => {
            return Err(Error::Config(format!(
                "PlConfig.server_stamp_field and server_stamp_width = {w}: a JSON field or a binary stamp, not both"
            )))
        }
        (None, 0) => None,
        (None, w) => Some(crate::latency::ServerStamp::Binary {
            offset: c.server_stamp_offset,
            width: u8::try_from(w).unwrap_or(0),
            big_endian: c.server_stamp_big_endian,
            unit_ns,
        }),
    };
    if let Some(s) = &cfg.server_stamp {
        s.check().map_err(|e| Error::Config(format!("PlConfig.server_stamp_*: {e}")))?;
    }
    Ok(cfg)
}

/// Set up the connection (TCP, TLS and WebSocket handshakes), place the stages, and
/// return once the WebSocket is open. `*out` is written only on success; free it with
/// `pl_free`.
///
/// # Safety
/// `cfg` must point to an initialised `PlConfig` whose pointers are valid; `out` to a
/// writable `pl_pipeline*`.
#[no_mangle]
pub unsafe extern "C" fn pl_start(
    cfg: *const PlConfig,
    out: *mut *mut pl_pipeline,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(cfg, out);
        // SAFETY: non-null, initialised per the contract (its first `struct_size` bytes).
        let c = &unsafe { super::abi::read_config(cfg)? };
        let config = unsafe { to_config(c)? };
        let mut p = match (c.on_message, c.on_message_ex) {
            (Some(_), Some(_)) => {
                return Err(Error::Config("set on_message or on_message_ex, not both".into()));
            }
            (None, Some(f)) => super::sender::start_ex(config, f, c.on_message_user)?,
            (Some(f), None) => {
                let cb = CCallback {
                    f,
                    user: c.on_message_user,
                };
                Pipeline::start_with_callback(
                    config,
                    Box::new(move |payload: &[u8], opcode: u8, fin: bool| {
                        let op = opcode as u32 | if fin { 0 } else { PL_OPCODE_MORE };
                        let cb = &cb;
                        // SAFETY: the C callback's contract (see pl_on_message).
                        unsafe { (cb.f)(cb.user, payload.as_ptr(), payload.len(), op) }
                    }),
                )?
            }
            (None, None) => Pipeline::start(config)?,
        };
        let rx = match p.receiver() {
            Some(rx) => Ok(Polling { rx, handed_out_end: 0 }),
            None => Err(p.no_receiver_reason()),
        };
        let h = pl_pipeline {
            p,
            rx: std::sync::Mutex::new(rx),
        };
        // SAFETY: out is non-null and writable.
        unsafe { *out = Box::into_raw(Box::new(h)) };
        Ok(())
    })
}

/// The handle, shared. Every call but `pl_free` goes through here: nothing in this
/// module makes a `&mut pl_pipeline`, so calls on other threads may overlap freely.
fn pipe_ref<'a>(p: *mut pl_pipeline) -> &'a pl_pipeline {
    // SAFETY: callers null-check first; the handle came from pl_start and is not freed
    // while in use (C contract: pl_free is the one call that needs exclusive access).
    // `pl_pipeline` is Sync (asserted below): its methods take `&self`, with locks
    // around the MSG_OUTBOX producer, the polling receiver, the stages and the watcher.
    unsafe { &*p }
}

#[allow(dead_code)]
fn _handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Pipeline>();
    check::<pl_pipeline>();
}

impl pl_pipeline {
    fn polling(&self) -> Result<std::sync::MutexGuard<'_, std::result::Result<Polling, &'static str>>> {
        self.rx
            .lock()
            .map_err(|_| Error::Closed("the polling receiver was poisoned by a panic".into()))
    }
}

/// Take the next received frame without blocking: `PL_OK` and `*out` filled, or
/// `PL_ERR_WOULD_BLOCK` (nothing yet), or `PL_ERR_CLOSED` (disconnected and drained).
/// Polling delivery only (`on_message` NULL). Calls are serialised (safe from any
/// thread), but `pl_release` frees every earlier frame too, so one polling thread is
/// the pattern that keeps frames valid.
///
/// # Safety
/// `p` from `pl_start`, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn pl_poll(p: *mut pl_pipeline, out: *mut PlFrame) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p, out);
        let pp = pipe_ref(p);
        let mut guard = pp.polling()?;
        let poll = guard.as_mut().map_err(|why| Error::Config((*why).into()))?;
        match poll.rx.poll_raw() {
            Polled::Frame(f) => {
                // SAFETY: the frame is not yet released; the pointer stays valid until
                // pl_release per the documented contract.
                let payload = unsafe { poll.rx.reader().payload(&f) }.as_ptr();
                let op = f.opcode as u32 | if f.fin { 0 } else { PL_OPCODE_MORE };
                poll.handed_out_end = poll.handed_out_end.max(f.pos + f.len as u64);
                // SAFETY: out is non-null and writable.
                unsafe {
                    *out = PlFrame {
                        payload,
                        len: f.len as usize,
                        opcode: op,
                        after_overrun: f.after_overrun,
                        pos: f.pos,
                        flags: if f.after_reconnect { PL_FRAME_AFTER_RECONNECT } else { 0 },
                    }
                };
                Ok(())
            }
            Polled::Ended => Err(Error::Closed(match pp.p.state() {
                State::Disconnected { reason } => reason.message,
                _ => String::new(),
            })),
            Polled::Empty => Err(Error::WouldBlock),
        }
    })
}

/// When a message passed each stage, CLOCK_MONOTONIC nanoseconds (0: not known).
/// Filled by `pl_message_timestamps`. Set `struct_size` to `sizeof(PlTimestamps)`
/// first: the struct may grow at the end, and the library writes only the fields that
/// fit in the caller's size (and sets `struct_size` to what it wrote).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PlTimestamps {
    pub struct_size: usize,
    /// The packet completing the message arrived (XDP: our poll took it off the RX
    /// ring; kernel: the socket's receive timestamp, SO_TIMESTAMPNS).
    pub arrival_ns: u64,
    /// Its plaintext was in MSG_INBOX.
    pub decrypted_ns: u64,
    /// The WebSocket stage published it.
    pub parsed_ns: u64,
    /// The callback was about to run / `pl_poll` returned it.
    pub delivered_ns: u64,
}

/// The timestamps of the message most recently handed to the calling thread: inside a
/// message callback, that call's message; after `pl_poll`, the frame it returned.
/// `out->struct_size` must be at least `offsetof(PlTimestamps, arrival_ns) + 8`;
/// `PL_ERR_WOULD_BLOCK` before any message reached this thread. Convert to Unix time
/// with `pl_monotonic_to_unix_ns`.
///
/// # Safety
/// `out` NULL or writable for `out->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_message_timestamps(out: *mut PlTimestamps) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(out);
        // SAFETY: non-null; struct_size is the first field and the caller's struct
        // has at least that.
        let size = unsafe { std::ptr::addr_of!((*out).struct_size).read() };
        let min = std::mem::offset_of!(PlTimestamps, arrival_ns) + 8;
        if size < min {
            return Err(Error::Config(format!(
                "PlTimestamps.struct_size is {size}: set it to sizeof(PlTimestamps) (at least {min})"
            )));
        }
        let t = crate::latency::Timestamps::current().ok_or(Error::WouldBlock)?;
        let full = PlTimestamps {
            struct_size: size.min(std::mem::size_of::<PlTimestamps>()),
            arrival_ns: t.arrival_ns,
            decrypted_ns: t.decrypted_ns,
            parsed_ns: t.parsed_ns,
            delivered_ns: t.delivered_ns,
        };
        // SAFETY: out is writable for `size` bytes and we copy at most that many (and
        // at most our own struct's size) from a live local.
        unsafe {
            std::ptr::copy_nonoverlapping(
                &full as *const PlTimestamps as *const u8,
                out as *mut u8,
                full.struct_size,
            )
        };
        Ok(())
    })
}

/// A file descriptor to wait on instead of spinning on `pl_poll`: an eventfd (owned by
/// the pipeline; do not close or read it, it is valid until `pl_free`) that becomes
/// readable when frames are ready or the state changed (the end of the stream among
/// them). From this call on, a `pl_poll` that returns `PL_ERR_WOULD_BLOCK` has armed it:
/// the producing stage writes it once when it next publishes, and not at all while you
/// keep up. So: poll until `PL_ERR_WOULD_BLOCK`, then `poll(2)`/`epoll`/your event loop
/// on the fd, then poll again. Wakeups may be spurious; after `PL_ERR_CLOSED` it stays
/// readable. Every layout (a `processes` stage inherited it at the fork). Polling
/// delivery only: `PL_ERR_CONFIG` with a callback or an external consumer.
///
/// # Safety
/// `p` from `pl_start`, `fd` writable.
#[no_mangle]
pub unsafe extern "C" fn pl_event_fd(p: *mut pl_pipeline, fd: *mut c_int) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p, fd);
        let pp = pipe_ref(p);
        let mut guard = pp.polling()?;
        let poll = guard.as_mut().map_err(|why| Error::Config((*why).into()))?;
        let v = poll
            .rx
            .event_fd()
            .ok_or_else(|| Error::Config("this pipeline has no event fd".into()))?;
        // SAFETY: fd is non-null and writable.
        unsafe { *fd = v };
        Ok(())
    })
}

/// A CLOCK_MONOTONIC ns stamp (`PlTimestamps`) as ns since the Unix epoch (reads both
/// clocks now: exact unless the wall clock steps in between).
#[no_mangle]
pub extern "C" fn pl_monotonic_to_unix_ns(mono_ns: u64) -> u64 {
    crate::latency::Timestamps::to_unix_ns(mono_ns)
}

/// Done with `frame` (and every frame before it): its bytes go back to the transport.
/// Release frames in the order `pl_poll` returned them. A frame `pl_poll` did not
/// return (its end lies beyond every frame handed out) is `PL_ERR_CONFIG`.
///
/// # Safety
/// `p` from `pl_start`; `frame` readable (from `pl_poll` on the same pipeline).
#[no_mangle]
pub unsafe extern "C" fn pl_release(p: *mut pl_pipeline, frame: *const PlFrame) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p, frame);
        // SAFETY: non-null per the check, readable per the contract. Only the two
        // integers are read (not the whole struct: its `bool` could hold any byte if
        // the caller built or damaged the frame, and reading that as `bool` is UB).
        let (pos, len) = unsafe {
            (
                std::ptr::addr_of!((*frame).pos).read(),
                std::ptr::addr_of!((*frame).len).read(),
            )
        };
        let mut guard = pipe_ref(p).polling()?;
        let poll = guard.as_mut().map_err(|why| Error::Config((*why).into()))?;
        // Releasing past what was handed out would tell the transport that unread (or
        // unwritten) bytes are free.
        let end = u32::try_from(len).ok().and_then(|l| pos.checked_add(l as u64));
        let len = match end {
            Some(e) if e <= poll.handed_out_end => len as u32,
            _ => {
                return Err(Error::Config(format!(
                    "pl_release: frame (pos {pos}, len {len}) was not returned by pl_poll on this pipeline"
                )))
            }
        };
        let raw = crate::stage::RawFrame {
            pos,
            len,
            opcode: 0,
            fin: true,
            after_overrun: false,
            after_reconnect: false,
            ts: Default::default(),
        };
        poll.rx.reader().release(&raw);
        poll.rx.reader().publish();
        Ok(())
    })
}

unsafe fn bytes<'a>(data: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: the caller passes `len` readable bytes at `data` (non-null checked).
        unsafe { std::slice::from_raw_parts(data, len) }
    }
}

/// Queue a text message of `len` bytes (UTF-8, not NUL-terminated).
/// `PL_ERR_WOULD_BLOCK` when MSG_OUTBOX is full; `PL_ERR_CLOSED` after a disconnect.
/// Thread-safe.
///
/// # Safety
/// `p` from `pl_start`; `text` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_send_text(
    p: *mut pl_pipeline,
    text: *const c_char,
    len: usize,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p, text);
        let pp = pipe_ref(p);
        // The limit first: a huge `len` must not be scanned as UTF-8 (nor even made
        // into a slice: `from_raw_parts` with more than isize::MAX bytes is UB).
        pp.p.check_send_len(len)?;
        // SAFETY: per the contract, `len` readable bytes; len is within the limit.
        let b = unsafe { bytes(text as *const u8, len) };
        let s = std::str::from_utf8(b)
            .map_err(|_| Error::Config("text message is not valid UTF-8".into()))?;
        pp.p.send_text(s)
    })
}

/// Queue a binary message. As `pl_send_text`. Thread-safe.
///
/// # Safety
/// `p` from `pl_start`; `data` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_send_binary(
    p: *mut pl_pipeline,
    data: *const u8,
    len: usize,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p, data);
        let pp = pipe_ref(p);
        // As pl_send_text: no slice of an over-limit `len`.
        pp.p.check_send_len(len)?;
        // SAFETY: per the contract, `len` readable bytes; len is within the limit.
        pp.p.send_binary(unsafe { bytes(data, len) })
    })
}

/// Start the close handshake (`code` 1000 = normal; `reason` may be NULL). The state
/// goes CLOSING, then DISCONNECTED when the server answers. Thread-safe.
///
/// # Safety
/// `p` from `pl_start`; `reason` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn pl_close(
    p: *mut pl_pipeline,
    code: u16,
    reason: *const c_char,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p);
        // SAFETY: per the contract.
        let r = unsafe { opt_str(reason, "reason")? }.unwrap_or_default();
        pipe_ref(p).p.close(code, &r)
    })
}

struct CStateCallback {
    f: unsafe extern "C" fn(*mut c_void, PlState, *const c_char),
    user: *mut c_void,
}
// SAFETY: the C caller promises the callback and its user pointer may be used from the
// watcher thread (documented on `pl_on_state`).
unsafe impl Send for CStateCallback {}

fn pl_state_of(st: &State) -> (PlState, &str) {
    match st {
        State::Connecting => (PlState::PL_STATE_CONNECTING, ""),
        State::Reconnecting { .. } => (PlState::PL_STATE_RECONNECTING, ""),
        State::Connected => (PlState::PL_STATE_CONNECTED, ""),
        State::Closing => (PlState::PL_STATE_CLOSING, ""),
        State::Disconnected { reason } => (PlState::PL_STATE_DISCONNECTED, reason.message.as_str()),
    }
}

/// Register `cb` for state changes (see `pl_on_state`); NULL removes it. The last call
/// a callback gets is DISCONNECTED, at the latest during `pl_stop`. Thread-safe (also
/// from inside the callback); the last registration wins.
///
/// # Safety
/// `p` from `pl_start`; not concurrent with `pl_free` on `p`.
#[no_mangle]
pub unsafe extern "C" fn pl_set_on_state(p: *mut pl_pipeline, cb: pl_on_state, user: *mut c_void) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p);
        let Some(f) = cb else {
            pipe_ref(p).p.on_state_change(Box::new(|_| {}));
            return Ok(());
        };
        let c = CStateCallback { f, user };
        pipe_ref(p).p.on_state_change(Box::new(move |st| {
            // Capture the whole (Send) struct, not its raw-pointer field alone.
            let c = &c;
            let (code, text) = pl_state_of(st);
            // A reason never holds NUL in practice; if it did, cut it there.
            let text = text.split('\0').next().unwrap_or("");
            let cstr = std::ffi::CString::new(text).unwrap_or_default();
            // SAFETY: the C caller registered a callback valid for this pipeline's life.
            unsafe { (c.f)(c.user, code, cstr.as_ptr()) };
        }));
        Ok(())
    })
}

/// Wait up to `timeout_ms` for the state to become DISCONNECTED: `PL_OK`, or
/// `PL_ERR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `p` from `pl_start`.
#[no_mangle]
pub unsafe extern "C" fn pl_wait_disconnected(
    p: *mut pl_pipeline,
    timeout_ms: u32,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p);
        if pipe_ref(p)
            .p
            .wait_disconnected(Duration::from_millis(timeout_ms as u64))
        {
            Ok(())
        } else {
            Err(Error::Timeout(format!(
                "still connected after {timeout_ms} ms"
            )))
        }
    })
}

/// The state, and (if `reason` is not NULL) the disconnect reason, NUL-terminated and
/// truncated to `len - 1` bytes ("" while connected). Thread-safe.
///
/// # Safety
/// `p` from `pl_start`; `out` writable; `reason` NULL or `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_get_state(
    p: *mut pl_pipeline,
    out: *mut PlState,
    reason: *mut c_char,
    len: usize,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p, out);
        let st = pipe_ref(p).p.state();
        let (code, text) = pl_state_of(&st);
        if !reason.is_null() && len > 0 {
            let n = text.len().min(len - 1);
            // SAFETY: `len` writable bytes at `reason`; n + 1 <= len.
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), reason as *mut u8, n);
                *reason.add(n) = 0;
            }
        }
        // SAFETY: out is non-null and writable.
        unsafe { *out = code };
        Ok(())
    })
}

/// While `PL_STATE_RECONNECTING`: the attempt (1-based, consecutive; 0 when not
/// reconnecting) and the `PlDisconnectKind` of the loss; always: the connection
/// generation (0 for the first connection, +1 per reconnect) and how many reconnects
/// were scheduled in all. Any out pointer may be NULL. Thread-safe.
///
/// # Safety
/// `p` from `pl_start`; each non-NULL pointer writable.
#[no_mangle]
pub unsafe extern "C" fn pl_get_reconnect(
    p: *mut pl_pipeline,
    attempt: *mut u32,
    cause_kind: *mut u32,
    generation: *mut u64,
    reconnects: *mut u64,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p);
        let pp = pipe_ref(p);
        let s = pp.p.stats_region();
        let (a, k) = match pp.p.state() {
            State::Reconnecting { attempt, cause } => (attempt, cause.code()),
            _ => (0, 0),
        };
        // SAFETY: each pointer is NULL or writable per the contract.
        unsafe {
            if !attempt.is_null() {
                *attempt = a;
            }
            if !cause_kind.is_null() {
                *cause_kind = k;
            }
            if !generation.is_null() {
                *generation = s.get(Counter::Generation);
            }
            if !reconnects.is_null() {
                *reconnects = s.get(Counter::Reconnects);
            }
        }
        Ok(())
    })
}

/// Why a pipeline disconnected: `PlDisconnect.kind` (a `uint32_t` at the ABI: a newer
/// library may add kinds, so keep a default branch). The numbers are stable; the same
/// codes are in the stats region and `pipeline stat --json` ("reason_kind" names them
/// in lower case without the prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlDisconnectKind {
    /// Not disconnected (or no kind recorded).
    PL_DISCONNECT_NONE = 0,
    /// The server sent a close frame (answered): `close_code`, `close_reason`.
    PL_DISCONNECT_SERVER_CLOSED = 1,
    /// Our close (`pl_close`) was answered: `close_code` is the server's reply.
    PL_DISCONNECT_CLOSE_COMPLETED = 2,
    /// The server did not answer our close within the close timeout.
    PL_DISCONNECT_CLOSE_TIMEOUT = 3,
    /// After our close the server ended the TCP/TLS stream without a close frame.
    PL_DISCONNECT_CLOSED_AFTER_OUR_CLOSE = 4,
    /// The server broke the protocol; we closed with `close_code` (1002, 1007, 1009 ...).
    PL_DISCONNECT_PROTOCOL_ERROR = 5,
    /// The WebSocket upgrade failed.
    PL_DISCONNECT_UPGRADE_FAILED = 6,
    /// The peer reset the TCP connection.
    PL_DISCONNECT_TCP_RESET = 7,
    /// The stream ended (TCP FIN, TLS close_notify) without a WebSocket close.
    PL_DISCONNECT_TCP_CLOSED = 8,
    /// TLS failure.
    PL_DISCONNECT_TLS = 9,
    /// TCP/IP failure (refused, unreachable, retransmissions timed out).
    PL_DISCONNECT_NETWORK = 10,
    /// Set-up did not finish in time (or another stage timeout).
    PL_DISCONNECT_TIMEOUT = 11,
    /// A stage process died: `stage`, `pid`, `signal` / `exit_status`.
    PL_DISCONNECT_STAGE_DIED = 12,
    /// A stage panicked (a bug, or a panicking callback): `stage`.
    PL_DISCONNECT_STAGE_PANICKED = 13,
    /// `pl_stop` / `pl_free` (the application).
    PL_DISCONNECT_STOPPED = 14,
    /// A ring or buffer could not hold what had to go in it.
    PL_DISCONNECT_OVERRUN = 15,
    /// A system call failed.
    PL_DISCONNECT_IO = 16,
    /// Anything else (configuration, shared memory, capability).
    PL_DISCONNECT_INTERNAL = 17,
    /// The message callback returned non-zero (`pl_on_message_ex`; an exception caught by
    /// the C++ wrapper): the message has its reason (`pl_sender_set_error`).
    PL_DISCONNECT_CALLBACK_ERROR = 18,
}

impl PlDisconnectKind {
    const ALL: [PlDisconnectKind; 19] = [
        PlDisconnectKind::PL_DISCONNECT_NONE,
        PlDisconnectKind::PL_DISCONNECT_SERVER_CLOSED,
        PlDisconnectKind::PL_DISCONNECT_CLOSE_COMPLETED,
        PlDisconnectKind::PL_DISCONNECT_CLOSE_TIMEOUT,
        PlDisconnectKind::PL_DISCONNECT_CLOSED_AFTER_OUR_CLOSE,
        PlDisconnectKind::PL_DISCONNECT_PROTOCOL_ERROR,
        PlDisconnectKind::PL_DISCONNECT_UPGRADE_FAILED,
        PlDisconnectKind::PL_DISCONNECT_TCP_RESET,
        PlDisconnectKind::PL_DISCONNECT_TCP_CLOSED,
        PlDisconnectKind::PL_DISCONNECT_TLS,
        PlDisconnectKind::PL_DISCONNECT_NETWORK,
        PlDisconnectKind::PL_DISCONNECT_TIMEOUT,
        PlDisconnectKind::PL_DISCONNECT_STAGE_DIED,
        PlDisconnectKind::PL_DISCONNECT_STAGE_PANICKED,
        PlDisconnectKind::PL_DISCONNECT_STOPPED,
        PlDisconnectKind::PL_DISCONNECT_OVERRUN,
        PlDisconnectKind::PL_DISCONNECT_IO,
        PlDisconnectKind::PL_DISCONNECT_INTERNAL,
        PlDisconnectKind::PL_DISCONNECT_CALLBACK_ERROR,
    ];

    /// The name as a NUL-terminated static string.
    fn name(self) -> &'static str {
        match self {
            PlDisconnectKind::PL_DISCONNECT_NONE => "PL_DISCONNECT_NONE\0",
            PlDisconnectKind::PL_DISCONNECT_SERVER_CLOSED => "PL_DISCONNECT_SERVER_CLOSED\0",
            PlDisconnectKind::PL_DISCONNECT_CLOSE_COMPLETED => "PL_DISCONNECT_CLOSE_COMPLETED\0",
            PlDisconnectKind::PL_DISCONNECT_CLOSE_TIMEOUT => "PL_DISCONNECT_CLOSE_TIMEOUT\0",
            PlDisconnectKind::PL_DISCONNECT_CLOSED_AFTER_OUR_CLOSE => "PL_DISCONNECT_CLOSED_AFTER_OUR_CLOSE\0",
            PlDisconnectKind::PL_DISCONNECT_PROTOCOL_ERROR => "PL_DISCONNECT_PROTOCOL_ERROR\0",
            PlDisconnectKind::PL_DISCONNECT_UPGRADE_FAILED => "PL_DISCONNECT_UPGRADE_FAILED\0",
            PlDisconnectKind::PL_DISCONNECT_TCP_RESET => "PL_DISCONNECT_TCP_RESET\0",
            PlDisconnectKind::PL_DISCONNECT_TCP_CLOSED => "PL_DISCONNECT_TCP_CLOSED\0",
            PlDisconnectKind::PL_DISCONNECT_TLS => "PL_DISCONNECT_TLS\0",
            PlDisconnectKind::PL_DISCONNECT_NETWORK => "PL_DISCONNECT_NETWORK\0",
            PlDisconnectKind::PL_DISCONNECT_TIMEOUT => "PL_DISCONNECT_TIMEOUT\0",
            PlDisconnectKind::PL_DISCONNECT_STAGE_DIED => "PL_DISCONNECT_STAGE_DIED\0",
            PlDisconnectKind::PL_DISCONNECT_STAGE_PANICKED => "PL_DISCONNECT_STAGE_PANICKED\0",
            PlDisconnectKind::PL_DISCONNECT_STOPPED => "PL_DISCONNECT_STOPPED\0",
            PlDisconnectKind::PL_DISCONNECT_OVERRUN => "PL_DISCONNECT_OVERRUN\0",
            PlDisconnectKind::PL_DISCONNECT_IO => "PL_DISCONNECT_IO\0",
            PlDisconnectKind::PL_DISCONNECT_INTERNAL => "PL_DISCONNECT_INTERNAL\0",
            PlDisconnectKind::PL_DISCONNECT_CALLBACK_ERROR => "PL_DISCONNECT_CALLBACK_ERROR\0",
        }
    }
}

// The C constants are the Rust kinds' codes: one table, checked at compile time.
const _: () = {
    let mut i = 0;
    while i < PlDisconnectKind::ALL.len() {
        assert!(PlDisconnectKind::ALL[i] as usize == i);
        i += 1;
    }
    assert!(PlDisconnectKind::ALL.len() == DisconnectKind::NAMES.len());
};

/// The name of a disconnect kind (e.g. "PL_DISCONNECT_TCP_RESET"), a static
/// NUL-terminated string; "unknown" for a value that is not a `PlDisconnectKind`.
#[no_mangle]
pub extern "C" fn pl_disconnect_kind_name(kind: u32) -> *const c_char {
    // No panic boundary needed: a lookup in a constant array and static strings.
    let s = PlDisconnectKind::ALL
        .get(kind as usize)
        .map(|k| k.name())
        .unwrap_or("unknown\0");
    s.as_ptr() as *const c_char
}

// Sizes of PlDisconnect's strings, written as literals in the struct (the header has
// no constants section): a close reason is at most 123 bytes + NUL; stage names joined
// with '+' fit 31 + NUL.
const CLOSE_REASON_LEN: usize = 124;
const STAGE_NAME_LEN: usize = 32;

/// Why the pipeline disconnected, as `pl_get_disconnect` fills it. Fields a kind does
/// not use are 0 (`exit_status` -1, strings empty).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PlDisconnect {
    /// A `PlDisconnectKind` value; `PL_DISCONNECT_NONE` while not disconnected.
    pub kind: u32,
    /// SERVER_CLOSED, CLOSE_COMPLETED: the server's close code; PROTOCOL_ERROR: the code
    /// we closed with; else 0.
    pub close_code: u32,
    /// STAGE_DIED: the stage process's pid.
    pub pid: i32,
    /// STAGE_DIED: the signal that killed it, else 0.
    pub signal: i32,
    /// STAGE_DIED: its exit status if it exited, else -1.
    pub exit_status: i32,
    /// SERVER_CLOSED: the server's close reason text, NUL-terminated (may be empty).
    pub close_reason: [c_char; 124],
    /// STAGE_DIED, STAGE_PANICKED: the stage ("websocket"; "transport+websocket+app"
    /// for the inline loop), NUL-terminated.
    pub stage: [c_char; 32],
}

/// Copy `s` into `dst` NUL-terminated, truncated at a NUL or to fit.
pub(super) fn fill_cstr(dst: &mut [c_char], s: &str) {
    let b = s.split('\0').next().unwrap_or("").as_bytes();
    let n = b.len().min(dst.len().saturating_sub(1));
    for (d, &c) in dst.iter_mut().zip(&b[..n]) {
        *d = c as c_char;
    }
    if let Some(end) = dst.get_mut(n) {
        *end = 0;
    }
}

impl PlDisconnect {
    fn from_kind(k: &DisconnectKind, disconnected: bool) -> PlDisconnect {
        let mut d = PlDisconnect {
            kind: if disconnected { k.code() } else { 0 },
            close_code: k.close_code() as u32,
            pid: 0,
            signal: 0,
            exit_status: -1,
            close_reason: [0; CLOSE_REASON_LEN],
            stage: [0; STAGE_NAME_LEN],
        };
        match k {
            DisconnectKind::ServerClosed { reason, .. } => fill_cstr(&mut d.close_reason, reason),
            DisconnectKind::StageDied { stage, pid, exit } => {
                fill_cstr(&mut d.stage, stage);
                d.pid = *pid;
                match exit {
                    StageExit::Signal(s) => d.signal = *s,
                    StageExit::Exited(s) => d.exit_status = *s,
                    StageExit::CollectedElsewhere | StageExit::Other(_) => {}
                }
            }
            DisconnectKind::StagePanicked { stage } => fill_cstr(&mut d.stage, stage),
            _ => {}
        }
        d
    }
}

/// Why the pipeline disconnected: `*out` gets the kind and its details
/// (`PL_DISCONNECT_NONE` while not disconnected), and (if `message` is not NULL) the
/// one-line message, NUL-terminated and truncated to `len - 1` bytes (the text
/// `pl_get_state` gives; "" while connected). Decide on `out->kind`, show the message.
/// Thread-safe; may be called from the `on_state` callback.
///
/// # Safety
/// `p` from `pl_start`; `out` writable; `message` NULL or `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_get_disconnect(
    p: *mut pl_pipeline,
    out: *mut PlDisconnect,
    message: *mut c_char,
    len: usize,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p, out);
        let (d, text) = match pipe_ref(p).p.state() {
            State::Disconnected { reason } => (PlDisconnect::from_kind(&reason.kind, true), reason.message),
            _ => (PlDisconnect::from_kind(&DisconnectKind::Unknown, false), String::new()),
        };
        if !message.is_null() && len > 0 {
            // SAFETY: the caller promises `len` writable bytes at `message`.
            fill_cstr(unsafe { std::slice::from_raw_parts_mut(message, len) }, &text);
        }
        // SAFETY: out is non-null and writable.
        unsafe { *out = d };
        Ok(())
    })
}

/// A snapshot of every counter. Thread-safe. `size` is the caller's `sizeof(PlStats)`
/// (the header's `pl_get_stats(p, out)` macro passes it): only that many bytes are
/// written, so a program built against an older header gets the counters it knows.
///
/// # Safety
/// `p` from `pl_start`; `out` has `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_get_stats_size(p: *mut pl_pipeline, out: *mut PlStats, size: usize) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p, out);
        let s = pipe_ref(p).p.stats();
        // SAFETY: the caller promises `size` writable bytes at out (checked range).
        unsafe { super::abi::write_stats(&s.values, out, size) }
    })
}

/// The 0.1 layout's counters only (`PL_STATS_MIN_SIZE` bytes): the symbol programs
/// built before the sized call use. The header's `pl_get_stats` macro calls
/// `pl_get_stats_size` instead.
///
/// # Safety
/// `p` from `pl_start`; `out` writable for the 0.1 `PlStats`.
#[no_mangle]
pub unsafe extern "C" fn pl_get_stats(p: *mut pl_pipeline, out: *mut PlStats) -> super::PlResult {
    // SAFETY: as above, with the frozen size.
    unsafe { pl_get_stats_size(p, out, super::abi::PL_STATS_MIN_SIZE) }
}

/// Copy the pipeline's shared-memory name into `buf` (NUL-terminated, truncated);
/// returns the name's full length.
///
/// # Safety
/// `p` from `pl_start` (or NULL: returns 0); `buf` NULL or `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_get_name(p: *mut pl_pipeline, buf: *mut c_char, len: usize) -> usize {
    if p.is_null() {
        return 0;
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let name = pipe_ref(p).p.name();
        if !buf.is_null() && len > 0 {
            let n = name.len().min(len - 1);
            // SAFETY: `len` writable bytes at buf; n + 1 <= len.
            unsafe {
                std::ptr::copy_nonoverlapping(name.as_ptr(), buf as *mut u8, n);
                *buf.add(n) = 0;
            }
        }
        name.len()
    }))
    .unwrap_or(0)
}

/// Stop every stage (no close handshake: use `pl_close` + `pl_wait_disconnected`
/// first for a clean close), wait for them, and remove the shared memory. The handle
/// stays valid for `pl_get_state`/`pl_get_stats` until `pl_free`. Idempotent and
/// thread-safe (a second call waits for the first); not from inside `on_message` (it
/// joins the stage that runs the callback).
///
/// # Safety
/// `p` from `pl_start`.
#[no_mangle]
pub unsafe extern "C" fn pl_stop(p: *mut pl_pipeline) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(p);
        pipe_ref(p).p.stop();
        Ok(())
    })
}

/// Stop (if needed) and free the pipeline. NULL is a no-op. The one call that needs the
/// handle exclusively: no other call on `p` may be running, or come later.
///
/// # Safety
/// `p` from `pl_start`, not in use by any other thread, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn pl_free(p: *mut pl_pipeline) {
    if p.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: p came from Box::into_raw in pl_start and is freed once.
        drop(unsafe { Box::from_raw(p) });
    }));
}

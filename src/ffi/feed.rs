//! The feed's C API (K legs, one merged stream): `pl_feed_config_init`,
//! `pl_feed_start` + `pl_feed_poll` / `pl_feed_release` (polling) or
//! `pl_feed_start_callback` + `pl_feed_wait` (the library's thread calls you),
//! `pl_feed_rotate`, `pl_feed_get_stats`, `pl_feed_close`, `pl_feed_free`. Thin wrappers
//! over [`crate::pipeline::Feed`] and [`crate::pipeline::CallbackFeed`].
//!
//! The callback is an argument of `pl_feed_start_callback`, not a `PlFeedConfig`
//! field: `PlFeedConfig` has no `struct_size` (unlike `PlConfig`), so growing it would
//! change its layout under programs built against today's header (an ABI break,
//! docs/c-api.md "ABI policy"); a new function leaves every existing caller as it is.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;
use std::time::Duration;

use super::api::{fill_cstr, opt_str, to_config, PlConfig, PlStats};
use super::boundary;
use crate::error::{Error, Result};
use crate::feed::{ArbiterMode, BinaryField, Endian, JsonField, Key, KeyExtractor, RotationConfig};
use crate::ffi_nonnull;
use crate::pipeline::feed::{EventFields, Out};
use crate::pipeline::{CallbackFeed, Feed, FeedConfig, FeedEvent, FeedItem, PublishConfig};
use crate::stats::{Counter, StatsRegion, COUNTERS};

/// `PlFeedConfig.key`: how a message's key (stream, sequence) is read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlKeyKind {
    /// No key (one leg only).
    PL_KEY_NONE = 0,
    /// An integer field of a JSON object (`json_field`, a name or a dotted path; the
    /// stream from `json_stream_field` if set, else 0).
    PL_KEY_JSON = 1,
    /// A fixed-offset binary integer (`binary_offset`, `binary_width` 1/2/4/8,
    /// `binary_big_endian`).
    PL_KEY_BINARY = 2,
    /// `key_fn(key_user, payload, len, &stream, &seq)` returning 1 (a key) or 0 (none).
    PL_KEY_CALLBACK = 3,
}

/// `PlFeedConfig.mode`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlFeedMode {
    /// Deliver a key only if beyond the last delivered (duplicates dropped, never waits).
    PL_FEED_MONOTONIC = 0,
    /// Keys step by one: a message ahead of a gap is held until another leg fills it or
    /// `hold_us` passes, then a `PL_FEED_GAP` item names the missing range.
    PL_FEED_CONTIGUOUS = 1,
}

/// `PlFeedItem.kind`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlFeedItemKind {
    /// A frame of the merged stream (release it with `pl_feed_release`).
    PL_FEED_FRAME = 1,
    /// Sequences `seq..=to` of `stream` came from no leg within the hold window.
    PL_FEED_GAP = 2,
    /// Leg `leg` is connected (again); `generation` 0 is its first connection.
    PL_FEED_LEG_UP = 3,
    /// Leg `leg` lost its connection: `cause` is the `PL_DISCONNECT_*` kind;
    /// `generation` holds the reconnect attempt (0: it will not come back).
    PL_FEED_LEG_DOWN = 4,
    /// A rotation began: leg `leg` is being opened to replace `old_leg`.
    PL_FEED_ROTATION_STARTED = 5,
    /// Leg `leg` replaced `old_leg` (`PL_FEED_IN_STEP` in flags unless forced).
    PL_FEED_ROTATION_DONE = 6,
    /// The new leg `leg` failed or never got in step; `old_leg` carries on.
    PL_FEED_ROTATION_ABORTED = 7,
}

/// `PlFeedItem.flags` bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlFeedItemFlags {
    /// The first frame of its leg's new connection after a reconnect.
    PL_FEED_AFTER_RECONNECT = 1,
    /// The frame has a key (`stream`, `seq`).
    PL_FEED_HAS_KEY = 2,
    /// A rotation completed in step.
    PL_FEED_IN_STEP = 4,
}

const PL_KEY_NONE: u32 = PlKeyKind::PL_KEY_NONE as u32;
const PL_KEY_JSON: u32 = PlKeyKind::PL_KEY_JSON as u32;
const PL_KEY_BINARY: u32 = PlKeyKind::PL_KEY_BINARY as u32;
const PL_KEY_CALLBACK: u32 = PlKeyKind::PL_KEY_CALLBACK as u32;
const PL_FEED_MONOTONIC: u32 = PlFeedMode::PL_FEED_MONOTONIC as u32;
const PL_FEED_CONTIGUOUS: u32 = PlFeedMode::PL_FEED_CONTIGUOUS as u32;
const PL_FEED_FRAME: u32 = PlFeedItemKind::PL_FEED_FRAME as u32;
const PL_FEED_GAP: u32 = PlFeedItemKind::PL_FEED_GAP as u32;
const PL_FEED_LEG_UP: u32 = PlFeedItemKind::PL_FEED_LEG_UP as u32;
const PL_FEED_LEG_DOWN: u32 = PlFeedItemKind::PL_FEED_LEG_DOWN as u32;
const PL_FEED_ROTATION_STARTED: u32 = PlFeedItemKind::PL_FEED_ROTATION_STARTED as u32;
const PL_FEED_ROTATION_DONE: u32 = PlFeedItemKind::PL_FEED_ROTATION_DONE as u32;
const PL_FEED_ROTATION_ABORTED: u32 = PlFeedItemKind::PL_FEED_ROTATION_ABORTED as u32;
const PL_FEED_AFTER_RECONNECT: u32 = PlFeedItemFlags::PL_FEED_AFTER_RECONNECT as u32;
const PL_FEED_HAS_KEY: u32 = PlFeedItemFlags::PL_FEED_HAS_KEY as u32;
const PL_FEED_IN_STEP: u32 = PlFeedItemFlags::PL_FEED_IN_STEP as u32;

/// Reads one message's key: return 1 and set `*stream` and `*seq`, or 0 (no key).
/// Called from the thread calling `pl_feed_poll` (with `pl_feed_start_callback`: the
/// feed's own thread); `payload` is valid during the call.
#[allow(non_camel_case_types)]
pub type pl_key_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, payload: *const u8, len: usize, stream: *mut u32, seq: *mut u64) -> c_int>;

/// A feed: `legs_len` connections carrying the same feed, one merged stream.
#[repr(C)]
pub struct PlFeedConfig {
    /// One `PlConfig` per leg (polling delivery: `on_message` NULL; messages, not
    /// frames). Their `name` is ignored: leg i is `<name>-<i>`.
    pub legs: *const PlConfig,
    pub legs_len: usize,
    /// The feed's shared-memory name (its counters: `pipeline stat NAME`); NULL: chosen.
    pub name: *const c_char,
    /// A `PlKeyKind`.
    pub key: u32,
    pub json_field: *const c_char,
    pub json_stream_field: *const c_char,
    pub binary_offset: usize,
    pub binary_width: u32,
    pub binary_big_endian: bool,
    pub key_fn: pl_key_fn,
    pub key_user: *mut c_void,
    /// `PL_FEED_MONOTONIC` or `PL_FEED_CONTIGUOUS`.
    pub mode: u32,
    /// Contiguous mode: the hold window in microseconds (default 1000; 0: never wait).
    pub hold_us: u32,
    /// Contiguous mode: most messages held at once (default 4096).
    pub hold_capacity: u32,
    /// The leg keyless messages come from while it is up (default 0).
    pub primary: u32,
    /// Rotate (make before break) every this many milliseconds (0: only on request).
    pub rotate_every_ms: u32,
    /// Do not print the feed's line on stderr.
    pub quiet: bool,
}

/// One item of the merged stream: a frame (read in place in its leg's MSG_INBOX) or an
/// event (`text` says it in one line).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PlFeedItem {
    /// A `PlFeedItemKind`.
    pub kind: u32,
    /// The frame's leg; the leg of a LEG_* event; the new leg of a ROTATION_* event.
    pub leg: u32,
    /// Frames: the payload, valid until `pl_feed_release` of this item.
    pub payload: *const u8,
    pub len: usize,
    /// Frames: 1 text, 2 binary.
    pub opcode: u32,
    /// `PlFeedItemFlags` bits: `PL_FEED_AFTER_RECONNECT`, `PL_FEED_HAS_KEY`, `PL_FEED_IN_STEP`.
    pub flags: u32,
    /// Library use: the frame's position in its leg's MSG_INBOX.
    pub pos: u64,
    /// Frames with a key and gaps: the stream.
    pub stream: u32,
    /// ROTATION_*: the old leg.
    pub old_leg: u32,
    /// Frames: the key's sequence; gaps: the first missing sequence.
    pub seq: u64,
    /// Gaps: the last missing sequence.
    pub to: u64,
    /// LEG_UP: the generation; LEG_DOWN: the reconnect attempt (0: not reconnecting).
    pub generation: u64,
    /// LEG_DOWN: the `PL_DISCONNECT_*` kind of the loss.
    pub cause: u32,
    /// Events: one line for people, NUL-terminated ("" for frames).
    pub text: [c_char; 160],
}

/// The item callback of `pl_feed_start_callback`: every frame and event of the merged
/// stream, in order, on the feed's own thread (one the library owns). `item` and the
/// payload it points to are valid during the call only (the frame is given back when
/// the callback returns; do not `pl_feed_release` it). Return `PL_CALLBACK_CONTINUE`
/// (0), or non-zero to close every leg (code 1011) and end delivery (`pl_feed_wait`
/// then reports it). Must not unwind (catch C++ exceptions). `pl_feed_*` calls on the
/// same feed from inside it are refused with `PL_ERR_CONFIG` (the thread holds the feed).
#[allow(non_camel_case_types)]
pub type pl_feed_on_item = Option<unsafe extern "C" fn(user: *mut c_void, item: *const PlFeedItem) -> c_int>;

/// A running feed (opaque). Calls are serialised on a lock inside.
#[allow(non_camel_case_types)]
pub struct pl_feed {
    f: Delivery,
}

enum Delivery {
    // Boxed: a Feed is large, the callback handle is a pointer and a thread.
    Polling(Box<Mutex<Feed>>),
    Callback(CallbackFeed),
}

struct CItem {
    f: unsafe extern "C" fn(*mut c_void, *const PlFeedItem) -> c_int,
    user: *mut c_void,
}
// SAFETY: the C caller promises the callback and its user data may be used from the
// feed's own thread (documented on `pl_feed_on_item`).
unsafe impl Send for CItem {}

struct CKey {
    f: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut u32, *mut u64) -> c_int,
    user: *mut c_void,
}
// SAFETY: the C caller promises the callback and its user data may be used from the
// thread calling pl_feed_poll (documented on `pl_key_fn`).
unsafe impl Send for CKey {}

/// Fill `cfg` with the defaults (no legs, JSON key unset, monotonic, 1 ms hold).
///
/// # Safety
/// `cfg` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_config_init(cfg: *mut PlFeedConfig) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(cfg);
        let c = PlFeedConfig {
            legs: std::ptr::null(),
            legs_len: 0,
            name: std::ptr::null(),
            key: PL_KEY_NONE,
            json_field: std::ptr::null(),
            json_stream_field: std::ptr::null(),
            binary_offset: 0,
            binary_width: 8,
            binary_big_endian: false,
            key_fn: None,
            key_user: std::ptr::null_mut(),
            mode: PL_FEED_MONOTONIC,
            hold_us: 1000,
            hold_capacity: 4096,
            primary: 0,
            rotate_every_ms: 0,
            quiet: false,
        };
        // SAFETY: non-null and writable per the contract.
        unsafe { cfg.write(c) };
        Ok(())
    })
}

unsafe fn key_of(c: &PlFeedConfig) -> Result<KeyExtractor> {
    let cfg_err = |e: crate::feed::ConfigError| Error::Config(e.to_string());
    Ok(match c.key {
        PL_KEY_NONE => KeyExtractor::None,
        PL_KEY_JSON => {
            // SAFETY: NUL-terminated strings per the contract.
            let seq = unsafe { opt_str(c.json_field, "json_field")? }
                .ok_or(Error::Config("PL_KEY_JSON needs json_field".into()))?;
            let stream = match unsafe { opt_str(c.json_stream_field, "json_stream_field")? } {
                Some(s) => Some(JsonField::new(&s).map_err(cfg_err)?),
                None => None,
            };
            KeyExtractor::Json { seq: JsonField::new(&seq).map_err(cfg_err)?, stream }
        }
        PL_KEY_BINARY => {
            let width = u8::try_from(c.binary_width).map_err(|_| Error::Config("binary_width: 1, 2, 4 or 8".into()))?;
            let endian = if c.binary_big_endian { Endian::Big } else { Endian::Little };
            KeyExtractor::Binary { seq: BinaryField::new(c.binary_offset, width, endian).map_err(cfg_err)?, stream: None }
        }
        PL_KEY_CALLBACK => {
            let f = c.key_fn.ok_or(Error::Config("PL_KEY_CALLBACK needs key_fn".into()))?;
            let k = CKey { f, user: c.key_user };
            KeyExtractor::Custom(Box::new(move |msg: &[u8]| {
                let (mut stream, mut seq) = (0u32, 0u64);
                let k = &k;
                // SAFETY: the callback's contract (pl_key_fn); the out pointers are ours.
                let got = unsafe { (k.f)(k.user, msg.as_ptr(), msg.len(), &mut stream, &mut seq) };
                (got == 1).then(|| Key::new(stream, seq))
            }))
        }
        v => {
            return Err(Error::Config(format!(
                "PlFeedConfig.key = {v} is not a PL_KEY_* value (expected PL_KEY_NONE, PL_KEY_JSON, PL_KEY_BINARY or PL_KEY_CALLBACK)"
            )))
        }
    })
}

/// Start every leg and the merge; `*out` is written only on success. Free it with
/// `pl_feed_free`.
///
/// # Safety
/// `cfg` initialised (`pl_feed_config_init`), `legs` pointing to `legs_len` PlConfigs;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_start(cfg: *const PlFeedConfig, out: *mut *mut pl_feed) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(cfg, out);
        // SAFETY: non-null, initialised per the contract.
        let f = Feed::start(unsafe { feed_config(&*cfg)? })?;
        // SAFETY: out is non-null and writable.
        unsafe { *out = Box::into_raw(Box::new(pl_feed { f: Delivery::Polling(Box::new(Mutex::new(f))) })) };
        Ok(())
    })
}

/// `pl_feed_start`, with callback delivery: the merge runs on a thread the library owns
/// and calls `on_item(user, item)` for every frame and event (see `pl_feed_on_item`);
/// `pl_feed_poll` and `pl_feed_release` are then refused. `pl_feed_wait` waits for the
/// end of delivery; `pl_feed_free` stops the thread, then every leg. `*out` is written
/// only on success.
///
/// # Safety
/// As `pl_feed_start`; `on_item` and `user` usable from another thread until
/// `pl_feed_free` returns.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_start_callback(
    cfg: *const PlFeedConfig,
    on_item: pl_feed_on_item,
    user: *mut c_void,
    out: *mut *mut pl_feed,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(cfg, out);
        let f = on_item.ok_or(Error::NullArg("on_item"))?;
        // SAFETY: non-null, initialised per the contract.
        let fc = unsafe { feed_config(&*cfg)? };
        let cb = CItem { f, user };
        let feed = Feed::start_with_callback(
            fc,
            Box::new(move |item: FeedItem<'_>| {
                let it = match &item {
                    FeedItem::Frame(fr) => frame_item(fr.leg(), fr.payload(), fr.opcode(), fr.after_reconnect(), fr.pos(), fr.key()),
                    FeedItem::Event(e) => event_item(e),
                };
                let cb = &cb;
                // SAFETY: the callback's contract (pl_feed_on_item); `it` and the payload
                // it points to (borrowed by `item`) live through the call.
                let r = unsafe { (cb.f)(cb.user, &it) };
                drop(item);
                match r {
                    0 => Ok(()),
                    r => Err(format!("the callback returned {r}")),
                }
            }),
        )?;
        // SAFETY: out is non-null and writable.
        unsafe { *out = Box::into_raw(Box::new(pl_feed { f: Delivery::Callback(feed) })) };
        Ok(())
    })
}

/// `pl_feed_start`, publishing the merged stream for header-only readers in other
/// processes instead of handing it to this one: frames and events go into a MSG_INBOX
/// of `inbox_size` bytes and a WS_FRAME_INFO of `frame_ring` entries (powers of two;
/// 0: 4 MiB and 16384) in `/dev/shm/pipeline_<name>/`, read with
/// `include/pipeline_consumer.h`'s `plc_open(c, name)` and `plc_next_feed`. The merge
/// runs on the feed's own thread; `pl_feed_poll` is refused, `pl_feed_wait`,
/// `pl_feed_get_stats`, `pl_feed_close` and `pl_feed_free` work as for
/// `pl_feed_start_callback`. With the rings full (a reader behind, or none yet) the
/// merge waits and the legs back up.
///
/// # Safety
/// As `pl_feed_start`.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_start_published(
    cfg: *const PlFeedConfig,
    inbox_size: usize,
    frame_ring: usize,
    out: *mut *mut pl_feed,
) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(cfg, out);
        let d = PublishConfig::default();
        let p = PublishConfig {
            inbox_size: if inbox_size == 0 { d.inbox_size } else { inbox_size },
            frame_ring: if frame_ring == 0 { d.frame_ring } else { frame_ring },
        };
        // SAFETY: non-null, initialised per the contract.
        let feed = Feed::start_published(unsafe { feed_config(&*cfg)? }, p)?;
        // SAFETY: out is non-null and writable.
        unsafe { *out = Box::into_raw(Box::new(pl_feed { f: Delivery::Callback(feed) })) };
        Ok(())
    })
}

/// Wait up to `timeout_ms` for a callback (or published) feed's delivery to end: `PL_OK` once every
/// leg is gone for good and everything was delivered; `PL_ERR_CLOSED` if the callback
/// ended it (non-zero return; `pl_last_error` says which); `PL_ERR_TIMEOUT` if it is
/// still running; `PL_ERR_CONFIG` for a polling feed (poll until `PL_ERR_CLOSED`).
///
/// # Safety
/// `f` from `pl_feed_start_callback`.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_wait(f: *mut pl_feed, timeout_ms: u32) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(f);
        let Delivery::Callback(cf) = &feed_ref(f).f else {
            return Err(Error::Config("pl_feed_wait: this feed polls (pl_feed_start): poll until PL_ERR_CLOSED".into()));
        };
        if !cf.wait_finished(Duration::from_millis(timeout_ms as u64)) {
            return Err(Error::Timeout(format!("the feed is still delivering after {timeout_ms} ms")));
        }
        match cf.error() {
            Some(e) => Err(Error::Closed(e)),
            None => Ok(()),
        }
    })
}

/// The feed a `PlFeedConfig` describes (legs converted, key, mode, hold, rotation).
///
/// # Safety
/// `c` initialised, `legs` pointing to `legs_len` PlConfigs, strings NUL-terminated.
unsafe fn feed_config(c: &PlFeedConfig) -> Result<FeedConfig> {
    {
        if c.legs.is_null() || c.legs_len == 0 {
            return Err(Error::Config("PlFeedConfig.legs: at least one leg".into()));
        }
        let mut legs = Vec::with_capacity(c.legs_len);
        for i in 0..c.legs_len {
            // SAFETY: `legs_len` configs at `legs` per the contract.
            let lc = unsafe { &*c.legs.add(i) };
            if lc.on_message.is_some() {
                return Err(Error::Config(format!("leg {i}: a feed leg polls (on_message must be NULL)")));
            }
            legs.push(unsafe { to_config(lc)? });
        }
        let mut fc = FeedConfig::new(legs, unsafe { key_of(c)? });
        fc.name = unsafe { opt_str(c.name, "name")? };
        fc.mode = match c.mode {
            PL_FEED_MONOTONIC => ArbiterMode::Monotonic,
            PL_FEED_CONTIGUOUS => ArbiterMode::Contiguous,
            v => return Err(Error::Config(format!("PlFeedConfig.mode = {v}: PL_FEED_MONOTONIC or PL_FEED_CONTIGUOUS"))),
        };
        fc.hold_window = Duration::from_micros(c.hold_us as u64);
        fc.hold_capacity = c.hold_capacity as usize;
        fc.primary = c.primary as usize;
        fc.rotation = RotationConfig {
            every_ns: (c.rotate_every_ms > 0).then(|| c.rotate_every_ms as u64 * 1_000_000),
            ..Default::default()
        };
        fc.quiet = c.quiet;
        Ok(fc)
    }
}

fn feed_ref<'a>(f: *mut pl_feed) -> &'a pl_feed {
    // SAFETY: callers null-check; the handle came from pl_feed_start and is not freed
    // while in use (pl_free's contract). Everything goes through the lock.
    unsafe { &*f }
}

impl pl_feed {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Feed>> {
        match &self.f {
            Delivery::Polling(m) => m.lock().map_err(|_| Error::Closed("the feed was poisoned by a panic".into())),
            Delivery::Callback(cf) => cf.lock(),
        }
    }

    /// The feed, for the polling calls only.
    fn polling(&self, call: &str) -> Result<std::sync::MutexGuard<'_, Feed>> {
        match &self.f {
            Delivery::Polling(_) => self.lock(),
            Delivery::Callback(_) => Err(Error::Config(format!(
                "{call}: this feed delivers by callback (pl_feed_start_callback) or publishes for other processes (pl_feed_start_published)"
            ))),
        }
    }
}

#[allow(dead_code)]
fn _feed_handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<pl_feed>();
}

fn empty_item(kind: u32) -> PlFeedItem {
    PlFeedItem {
        kind,
        leg: 0,
        payload: std::ptr::null(),
        len: 0,
        opcode: 0,
        flags: 0,
        pos: 0,
        stream: 0,
        old_leg: 0,
        seq: 0,
        to: 0,
        generation: 0,
        cause: 0,
        text: [0; 160],
    }
}

fn frame_item(leg: usize, payload: &[u8], opcode: u8, after_reconnect: bool, pos: u64, key: Option<Key>) -> PlFeedItem {
    PlFeedItem {
        leg: leg as u32,
        payload: payload.as_ptr(),
        len: payload.len(),
        opcode: opcode as u32,
        flags: if after_reconnect { PL_FEED_AFTER_RECONNECT } else { 0 } | if key.is_some() { PL_FEED_HAS_KEY } else { 0 },
        pos,
        stream: key.map_or(0, |k| k.stream),
        seq: key.map_or(0, |k| k.seq),
        ..empty_item(PL_FEED_FRAME)
    }
}

fn event_item(e: &FeedEvent) -> PlFeedItem {
    let f = EventFields::of(e);
    let mut it = PlFeedItem {
        leg: f.leg,
        old_leg: f.old_leg,
        stream: f.stream,
        seq: f.seq,
        to: f.to,
        generation: f.generation,
        cause: f.cause,
        flags: f.flags,
        ..empty_item(f.kind)
    };
    fill_cstr(&mut it.text, &e.to_string());
    it
}

// The event kinds and flags are numbered once, in `EventFields`: the C enums must agree.
const _: () = {
    assert!(PL_FEED_GAP == EventFields::GAP && PL_FEED_LEG_UP == EventFields::LEG_UP);
    assert!(PL_FEED_LEG_DOWN == EventFields::LEG_DOWN && PL_FEED_ROTATION_STARTED == EventFields::ROTATION_STARTED);
    assert!(PL_FEED_ROTATION_DONE == EventFields::ROTATION_DONE && PL_FEED_ROTATION_ABORTED == EventFields::ROTATION_ABORTED);
    assert!(PL_FEED_IN_STEP == EventFields::IN_STEP);
};

/// The next item without blocking: `PL_OK` and `*out` filled (a frame or an event), or
/// `PL_ERR_WOULD_BLOCK` (nothing yet), or `PL_ERR_CLOSED` (every leg gone and drained).
/// Frames may be released in any order; each one pins its leg's MSG_INBOX from its
/// position on until released.
///
/// # Safety
/// `f` from `pl_feed_start`, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_poll(f: *mut pl_feed, out: *mut PlFeedItem) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(f, out);
        let mut feed = feed_ref(f).polling("pl_feed_poll")?;
        let item = match feed.next_raw() {
            Some(Out::Frame { leg, raw, key }) => {
                // SAFETY: just handed out, released only by pl_feed_release.
                let payload = unsafe { feed.payload_raw(leg, &raw) }.unwrap_or(&[]);
                frame_item(leg, payload, raw.opcode, raw.after_reconnect, raw.pos, key)
            }
            Some(Out::Event(e)) => event_item(&e),
            None if feed.finished() => return Err(Error::Closed("every leg of the feed is gone".into())),
            None => return Err(Error::WouldBlock),
        };
        // SAFETY: out is non-null and writable.
        unsafe { *out = item };
        Ok(())
    })
}

/// Done with a frame item from `pl_feed_poll` (events need no release). An item that is
/// not a frame handed out and not yet released is `PL_ERR_CONFIG`.
///
/// # Safety
/// `f` from `pl_feed_start`; `item` readable.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_release(f: *mut pl_feed, item: *const PlFeedItem) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(f, item);
        // SAFETY: readable per the contract; only integers are read.
        let (kind, leg, pos) = unsafe {
            (
                std::ptr::addr_of!((*item).kind).read(),
                std::ptr::addr_of!((*item).leg).read(),
                std::ptr::addr_of!((*item).pos).read(),
            )
        };
        if kind != PL_FEED_FRAME {
            return Ok(());
        }
        let mut feed = feed_ref(f).polling("pl_feed_release")?;
        if !feed.release_raw(leg as usize, pos) {
            return Err(Error::Config(format!(
                "pl_feed_release: leg {leg} pos {pos} is not a frame pl_feed_poll handed out (or it was released already)"
            )));
        }
        Ok(())
    })
}

/// Rotate now (make before break): a new leg like the oldest one replaces it once in
/// step. `forced` (a server's shutdown notice): replace it even if never in step.
///
/// # Safety
/// `f` from `pl_feed_start`.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_rotate(f: *mut pl_feed, forced: bool) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(f);
        let mut feed = feed_ref(f).lock()?;
        if forced {
            feed.shutdown_notice();
        } else {
            feed.rotate();
        }
        Ok(())
    })
}

/// # Safety
/// `out` has `size` writable bytes.
unsafe fn copy_stats(s: &StatsRegion, out: *mut PlStats, size: usize) -> crate::error::Result<()> {
    let mut values = [0u64; COUNTERS];
    for c in Counter::ALL {
        values[*c as usize] = s.get(*c);
    }
    // SAFETY: forwarded from the caller.
    unsafe { super::abi::write_stats(&values, out, size) }
}

/// Counters: `leg` < 0 gives the feed's own (`feed_delivered`, `feed_gaps`, ..., and
/// the legs' feed counters summed); otherwise that leg's pipeline counters with its
/// `feed_*` counters (won, dups, lag histogram). `PL_ERR_CONFIG` for an empty slot.
/// `size` is the caller's `sizeof(PlStats)` (the header's `pl_feed_get_stats` macro).
///
/// # Safety
/// `f` from `pl_feed_start`; `out` has `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_get_stats_size(f: *mut pl_feed, leg: c_int, out: *mut PlStats, size: usize) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(f, out);
        let feed = feed_ref(f).lock()?;
        feed.publish_stats();
        let region = if leg < 0 {
            feed.stats_region()
        } else {
            feed.leg(leg as usize).ok_or_else(|| Error::Config(format!("feed slot {leg} holds no leg")))?.stats_region()
        };
        // SAFETY: the caller promises `size` writable bytes at out.
        unsafe { copy_stats(region, out, size) }
    })
}

/// The 0.1 layout's counters only: the symbol programs built before the sized call
/// use (the header's `pl_feed_get_stats` macro calls `pl_feed_get_stats_size`).
///
/// # Safety
/// `f` from `pl_feed_start`; `out` writable for the 0.1 `PlStats`.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_get_stats(f: *mut pl_feed, leg: c_int, out: *mut PlStats) -> super::PlResult {
    // SAFETY: as above, with the frozen size.
    unsafe { pl_feed_get_stats_size(f, leg, out, super::abi::PL_STATS_MIN_SIZE) }
}

/// Close every leg (the close handshake; they do not reconnect). Poll until
/// `PL_ERR_CLOSED` to drain.
///
/// # Safety
/// `f` from `pl_feed_start`; `reason` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_close(f: *mut pl_feed, code: u16, reason: *const c_char) -> super::PlResult {
    boundary(|| {
        ffi_nonnull!(f);
        // SAFETY: NUL-terminated or NULL per the contract.
        let r = unsafe { opt_str(reason, "reason")? }.unwrap_or_default();
        feed_ref(f).lock()?.close(code, &r)
    })
}

/// Stop every leg and free the feed. NULL is a no-op; no other call on `f` may be
/// running or come later.
///
/// # Safety
/// `f` from `pl_feed_start`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn pl_feed_free(f: *mut pl_feed) {
    if f.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: from Box::into_raw in pl_feed_start, freed once.
        drop(unsafe { Box::from_raw(f) });
    }));
}

//! The AppClient stage (design §5.4): WS_FRAME_INFO -> the user's callback with a
//! pointer INTO MSG_INBOX (never a copy) -> release of the bytes. [`FrameReader`] is
//! the same logic for polling delivery (`Pipeline::next_frame`, `pl_poll`).

use super::websocket::op;
use super::{Progress, Stage};
use crate::error::Result;
use crate::latency::{realtime_offset_ns, ServerStamp, StampReader, Timestamps};
use crate::ring::{Consumer, MsgInbox, WsFrameInfo};
use crate::stats::{Counter, StatsRegion};

/// The user's message callback: `(payload, opcode, fin)`. `payload` lives in
/// MSG_INBOX and is valid only during the call. In `Messages` delivery `fin` is
/// always true; in `Frames` delivery continuations have opcode 0.
pub type OnMessage = Box<dyn FnMut(&[u8], u8, bool) + Send>;

/// A message callback that can fail: `Err(reason)` ends the connection with
/// `DisconnectKind::CallbackError` and that reason (the C API's `pl_on_message_ex`; the
/// C++ wrapper turns an exception into this instead of letting it unwind into Rust).
pub type OnMessageFallible = Box<dyn FnMut(&[u8], u8, bool) -> std::result::Result<(), String> + Send>;

/// What the AppClient stage calls.
pub enum Handler {
    Plain(OnMessage),
    Fallible(OnMessageFallible),
}

/// One deliverable frame, as stream positions (no borrow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// Stream position of the payload in MSG_INBOX.
    pub pos: u64,
    pub len: u32,
    pub opcode: u8,
    pub fin: bool,
    /// MSG_INBOX was overrun before this frame (overwrite policy): data was lost.
    pub after_overrun: bool,
    /// The first frame of a new connection after a reconnect (a message the disconnect
    /// cut was not delivered).
    pub after_reconnect: bool,
    /// When it arrived, was decrypted, parsed and taken.
    pub ts: Timestamps,
}

/// Reads WS_FRAME_INFO and hands out deliverable frames in order; control-frame
/// entries only move the release point.
pub struct FrameReader {
    frames: Consumer<WsFrameInfo>,
    inbox: MsgInbox,
    /// Everything before this position may be released.
    done: u64,
    /// Position published to the transport with `release_to`.
    released: u64,
    overrun: bool,
    /// A reconnect happened before the next data frame.
    reconnect: bool,
    /// Entries consumed locally but not yet released on the ring.
    unreleased: u32,
    /// Overwrite policy: check every frame against the writer's position.
    overwrite: bool,
    /// Frames skipped because their bytes were overwritten.
    skipped: u64,
    /// Deferred release (a feed's merge step): frames are released by position with
    /// [`FrameReader::release_to`], out of the order they were taken in is not
    /// allowed, and control entries do not move the release point past frames still
    /// held; they only move `scanned`.
    deferred: bool,
    /// End of everything taken so far (data and control entries).
    scanned: u64,
    /// The delivery stamp of the frames being taken (0: read the clock at the next
    /// frame). Reset whenever the reader publishes (the ring ran dry, or 64 frames), so
    /// the clock is read once per run of waiting frames and at least every 64 frames.
    deliver_now: u64,
    /// Where the stage latencies are recorded (the pipeline's stats region).
    latency: Option<StatsRegion>,
    /// The server's stamp in each message, for `server_to_delivered`.
    server: Option<StampReader>,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, read with `deliver_now` (server stamps only).
    realtime_off: u64,
}

impl FrameReader {
    pub fn new(frames: Consumer<WsFrameInfo>, inbox: MsgInbox) -> Self {
        let r = inbox.read_pos();
        let overwrite = inbox.policy() == crate::ring::OverrunPolicy::Overwrite;
        FrameReader {
            frames,
            inbox,
            done: r,
            released: r,
            overrun: false,
            reconnect: false,
            unreleased: 0,
            overwrite,
            skipped: 0,
            deferred: false,
            scanned: r,
            deliver_now: 0,
            latency: None,
            server: None,
            realtime_off: 0,
        }
    }

    /// Record every data frame's stage latencies in `stats` (this reader is then the
    /// histograms' one writer).
    pub fn record_latency(&mut self, stats: StatsRegion) {
        self.latency = Some(stats);
    }

    /// Also record the one-way `server_to_delivered` latency from the server's stamp in
    /// each data message (needs [`FrameReader::record_latency`]).
    pub fn record_server_stamp(&mut self, s: &ServerStamp) {
        self.server = Some(s.reader());
    }

    /// Switch to deferred release: the caller decides, with
    /// [`FrameReader::release_to`], how far the bytes may go back to the transport (a
    /// feed holds frames for arbitration; see `pipeline::feed`). [`FrameReader::release`]
    /// must not be used then.
    pub fn set_deferred(&mut self) {
        self.deferred = true;
    }

    /// End (stream position) of everything taken so far, control entries included.
    /// With nothing held, releasing up to here is safe.
    #[inline]
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Deferred release: everything before `pos` is done with (published in batches,
    /// and whenever the ring is found empty).
    #[inline]
    pub fn release_to(&mut self, pos: u64) {
        self.done = self.done.max(pos);
        if self.unreleased >= 64 {
            self.publish();
        }
    }

    /// Bytes up to `end` need no delivery (a control frame, an overrun marker).
    #[inline]
    fn skip_to(&mut self, end: u64) {
        self.scanned = self.scanned.max(end);
        if !self.deferred {
            self.done = self.done.max(end);
        }
    }

    pub fn inbox(&self) -> &MsgInbox {
        &self.inbox
    }

    /// The next data frame, if any. The frame's bytes stay valid until
    /// [`FrameReader::release`] of it (or of a later frame).
    #[inline]
    pub fn take(&mut self) -> Option<RawFrame> {
        loop {
            if self.frames.available() == 0 {
                self.publish();
                return None;
            }
            let info = *self.frames.get(0)?;
            self.frames.advance(1);
            self.unreleased += 1;
            let pos = MsgInbox::expand_pos(info.msg_inbox_offset, self.done);
            if info.flags() & WsFrameInfo::FLAG_RECONNECT != 0 {
                self.reconnect = true;
            }
            if info.flags() & WsFrameInfo::FLAG_OVERRUN != 0 {
                self.overrun = true;
                self.skip_to(pos);
                continue;
            }
            match info.opcode() {
                op::TEXT | op::BINARY | op::CONT
                    if self.overwrite && self.inbox.overrun_since(pos) =>
                {
                    // Its bytes were overwritten before we got to it: lost.
                    self.skipped += 1;
                    self.overrun = true;
                    self.skip_to(pos + info.payload_len as u64);
                }
                op::TEXT | op::BINARY | op::CONT => {
                    let mut ts = Timestamps {
                        arrival_ns: info.arrival_ns,
                        decrypted_ns: info.decrypted_ns,
                        parsed_ns: info.parsed_ns(),
                        delivered_ns: self.deliver_now,
                    };
                    if ts.delivered_ns < ts.parsed_ns {
                        self.deliver_now = crate::stage::now_ns();
                        ts.delivered_ns = self.deliver_now;
                        if self.server.is_some() {
                            self.realtime_off = realtime_offset_ns();
                        }
                    }
                    if let Some(st) = &self.latency {
                        st.record_latency(&ts);
                        if let Some(sv) = &self.server {
                            // SAFETY: the frame is taken, not released: its bytes are
                            // intact until this reader releases them.
                            let payload = unsafe { self.inbox.slice(pos, info.payload_len as usize) };
                            let delivered = ts.delivered_ns.wrapping_add(self.realtime_off);
                            if let Some(sent) = sv.read(payload).filter(|&t| t <= delivered) {
                                st.record(crate::stats::Latency::ServerToDelivered, delivered - sent);
                            }
                        }
                    }
                    let f = RawFrame {
                        ts,
                        pos,
                        len: info.payload_len,
                        opcode: info.opcode(),
                        fin: info.is_final(),
                        after_overrun: self.overrun,
                        after_reconnect: self.reconnect,
                    };
                    self.overrun = false;
                    self.reconnect = false;
                    self.scanned = self.scanned.max(pos + info.payload_len as u64);
                    return Some(f);
                }
                _ => {
                    // Control frame (or a generation boundary, WsFrameInfo::OP_GENERATION:
                    // the old connection's unparsed tail ends there): nothing to
                    // deliver, its bytes are done with.
                    self.skip_to(pos + info.payload_len as u64);
                }
            }
        }
    }

    /// When the WebSocket stage parsed the oldest entry not yet taken (its clock,
    /// `now_ns()`, low 48 bits), if there is one: how far a reader merging several
    /// streams has seen this one.
    #[inline]
    pub fn next_stamp(&mut self) -> Option<u64> {
        if self.frames.available() == 0 {
            return None;
        }
        self.frames.get(0).map(|i| i.parse_stamp())
    }

    /// The payload of a frame from [`FrameReader::take`].
    ///
    /// # Safety
    /// The frame must not have been released yet.
    #[inline]
    pub unsafe fn payload(&self, f: &RawFrame) -> &[u8] {
        self.inbox.slice(f.pos, f.len as usize)
    }

    /// Done with `f` and every frame before it. The bytes go back to the transport at
    /// the next [`FrameReader::publish`] (batched: once per batch, not per frame).
    #[inline]
    pub fn release(&mut self, f: &RawFrame) {
        self.done = self.done.max(f.pos + f.len as u64);
        if self.unreleased >= 64 {
            self.publish();
        }
    }

    /// Publish the ring's consumer position and MSG_INBOX's release position.
    #[inline]
    pub fn publish(&mut self) {
        self.deliver_now = 0;
        if self.unreleased > 0 {
            self.frames.release();
            self.unreleased = 0;
        }
        if self.done != self.released {
            self.inbox.release_to(self.done);
            self.released = self.done;
        }
    }

    /// Frames skipped because the transport overwrote them (overwrite policy).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Overwrite policy, after reading a payload: was it intact the whole time?
    #[inline]
    pub fn intact(&self, f: &RawFrame) -> bool {
        !self.overwrite || !self.inbox.overrun_since(f.pos)
    }

    /// Entries waiting in WS_FRAME_INFO (a snapshot).
    pub fn backlog(&mut self) -> usize {
        self.frames.available()
    }
}

/// Frames per poll (bounded work).
const DELIVER_PER_POLL: usize = 256;

/// WS_FRAME_INFO -> `on_message`.
pub struct AppClientStage {
    reader: FrameReader,
    cb: Handler,
    stats: StatsRegion,
    /// The callback failed: nothing more is delivered (the loop is ending).
    failed: bool,
}

impl AppClientStage {
    pub fn new(reader: FrameReader, cb: Handler, stats: StatsRegion) -> Self {
        AppClientStage { reader, cb, stats, failed: false }
    }
}

impl Stage for AppClientStage {
    fn name(&self) -> &'static str {
        "app"
    }

    /// The callback runs where the user's state lives: in the `processes` layout this
    /// stage is a thread of the process that started the pipeline, never a forked
    /// child (whose copy of the user's memory nobody would ever see).
    fn stays_in_process(&self) -> bool {
        true
    }

    fn poll(&mut self, _now: u64) -> Result<Progress> {
        if self.failed {
            return Ok(Progress::Idle);
        }
        let mut n = 0u64;
        let mut bytes = 0u64;
        while (n as usize) < DELIVER_PER_POLL {
            let Some(f) = self.reader.take() else { break };
            // SAFETY: `f` was just handed out and is released only below.
            let payload = unsafe { self.reader.payload(&f) };
            Timestamps::set_current(f.ts);
            let r = match &mut self.cb {
                Handler::Plain(cb) => {
                    cb(payload, f.opcode, f.fin);
                    Ok(())
                }
                Handler::Fallible(cb) => cb(payload, f.opcode, f.fin),
            };
            self.reader.release(&f);
            n += 1;
            bytes += f.len as u64;
            if let Err(reason) = r {
                self.failed = true;
                self.stats
                    .disconnect_with(crate::stats::DisconnectKind::CallbackError, format!("message callback failed: {reason}"));
                break;
            }
        }
        self.reader.publish();
        if n > 0 {
            self.stats.add(Counter::AppFrames, n);
            self.stats.add(Counter::AppBytes, bytes);
        }
        Ok(Progress::from_bool(n > 0))
    }
}

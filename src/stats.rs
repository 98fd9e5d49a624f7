//! The stats region (`stats.shm`, [`RegionKind::Stats`]): named `u64` counters, the
//! pipeline's state word, its `running` flag and the text of the last error, readable
//! live by a separate process (`pipeline stat NAME`), Aeron-counters style.
//!
//! Payload layout (one 64-byte cache line per counter, so two stages never write the
//! same line):
//! ```text
//!   slot i (i < COUNTERS):  name[56] (NUL padded)   value: u64
//!   text area at TEXT_OFF:  reason_len: u32, pad, reason[REASON_BYTES]
//! ```
//! Control area (header page): `running` (u32: 1 run, 0 drain and stop, 2 stop now) at 0, `reason_claimed` (u32) at 4.
//!
//! Writers: every counter has exactly one owner stage, which updates it with a Relaxed
//! load + Relaxed store ([`StatsRegion::add`]): no read-modify-write instruction on the
//! hot path. Readers load Relaxed; a snapshot is not atomic across counters. The state
//! word only moves forward (`fetch_max`, off the hot path), and the first
//! disconnect reason wins (a claim flag), so the reason a user sees is the cause, not
//! an echo of the shutdown it triggered.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::shm::{names, Region, RegionKind, RegionSpec, ShmDir};

macro_rules! counters {
    ($( $(#[$m:meta])* $id:ident = $name:literal ),* $(,)?) => {
        /// Every counter of the stats region, in slot order.
        #[repr(usize)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $( $(#[$m])* $id ),* }

        impl Counter {
            /// Every counter, in slot order.
            pub const ALL: &'static [Counter] = &[ $( Counter::$id ),* ];
            /// The counter's stable name (shown by `pipeline stat`, stored in the region).
            pub fn name(self) -> &'static str {
                match self { $( Counter::$id => $name ),* }
            }
        }
    };
}

counters! {
    /// [`State`] as a number (0 connecting, 1 connected, 2 closing, 3 disconnected).
    State = "state",
    /// [`crate::runner::Layout`] in use (0 processes, 1 threads, 2 inline).
    Layout = "layout",
    /// [`crate::runner::WaitKind`] in use (0 spin, 1 yield, 2 backoff).
    Wait = "wait",
    /// Number of stages placed.
    Stages = "stages",
    /// CLOCK_MONOTONIC ns when the WebSocket opened.
    ConnectedAtNs = "connected_at_ns",
    /// XDP: packets received from the NIC.
    RxPackets = "rx_packets",
    /// XDP: bytes received from the NIC.
    RxBytes = "rx_bytes",
    /// XDP: packets sent.
    TxPackets = "tx_packets",
    /// XDP: bytes sent.
    TxBytes = "tx_bytes",
    /// XDP: sendto kicks.
    TxKicks = "tx_kicks",
    /// XDP: RX frames returned to the fill ring.
    RxRefilled = "rx_refilled",
    /// XDP: TX pool exhausted / descriptors rejected.
    TxDrops = "tx_drops",
    /// Transport: decrypted bytes written into MSG_INBOX.
    InboxBytes = "inbox_bytes",
    /// Transport: plaintext bytes handed to the transport (WS frames).
    SentBytes = "sent_bytes",
    /// Transport: data messages sent (text, binary).
    SentMessages = "sent_messages",
    /// Transport: PONG frames sent.
    PongsSent = "pongs_sent",
    /// Transport: PING frames sent.
    PingsSent = "pings_sent",
    /// Transport: times MSG_INBOX was full and reading stopped (backpressure).
    InboxFull = "inbox_full",
    /// Transport: MSG_INBOX high-water mark (bytes written but not released).
    InboxHighWater = "inbox_high_water",
    /// TCP: retransmitted segments.
    Retransmits = "retransmits",
    /// TCP: duplicate ACKs sent.
    DupAcks = "dup_acks",
    /// TCP: segments dropped (bad checksum, out of window, reorder buffer full).
    Drops = "drops",
    /// Reconnects (0 until reconnect is implemented).
    Reconnects = "reconnects",
    /// WebSocket: frames parsed.
    Frames = "frames",
    /// WebSocket: data messages completed (final frames).
    Messages = "messages",
    /// WebSocket: payload bytes of data frames.
    PayloadBytes = "payload_bytes",
    /// WebSocket: PINGs received.
    PingsReceived = "pings_received",
    /// WebSocket: PONGs received.
    PongsReceived = "pongs_received",
    /// WebSocket: fragmented messages reassembled in place.
    Reassembled = "reassembled",
    /// WebSocket: MSG_INBOX overruns noticed (overwrite policy).
    Overruns = "overruns",
    /// WebSocket: WS_FRAME_INFO ring high-water mark (entries).
    FrameRingHighWater = "frame_ring_high_water",
    /// WebSocket: times the WS_FRAME_INFO ring or PONGS ring was full.
    FrameRingFull = "frame_ring_full",
    /// AppClient: frames delivered to the user.
    AppFrames = "app_frames",
    /// AppClient: payload bytes delivered.
    AppBytes = "app_bytes",
    /// AppClient: polling-mode frames taken with next_frame/pl_poll.
    PolledFrames = "polled_frames",
    /// permessage-deflate: the negotiated parameters (`ws::deflate::Negotiated::to_word`;
    /// 0 not offered, 1 declined by the server).
    Deflate = "deflate",
    /// WebSocket: compressed messages inflated into MSG_INBOX.
    InflatedMessages = "inflated_messages",
    /// WebSocket: bytes those messages inflated to.
    InflatedBytes = "inflated_bytes",
    /// Transport: messages we sent compressed.
    CompressedSent = "compressed_sent",
}

/// Number of counter slots.
pub const COUNTERS: usize = Counter::ALL.len();
const SLOT: usize = 64;
const NAME_BYTES: usize = 56;
/// Bytes of the disconnect-reason text (longer reasons are truncated).
pub const REASON_BYTES: usize = 448;
const TEXT_OFF: usize = COUNTERS * SLOT;
const PAYLOAD: usize = {
    let n = TEXT_OFF + 64 + REASON_BYTES;
    (n + 4095) & !4095
};

const RUNNING_OFF: usize = 0;
const CLAIM_OFF: usize = 4;

/// The pipeline's connection state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Set-up: TCP, TLS or WebSocket handshake in progress.
    Connecting,
    /// The WebSocket is open.
    Connected,
    /// A close handshake is in progress.
    Closing,
    /// Over; the reason says why (peer close code, error, dead stage, stop).
    Disconnected { reason: String },
}

impl State {
    pub fn code(&self) -> u64 {
        match self {
            State::Connecting => 0,
            State::Connected => 1,
            State::Closing => 2,
            State::Disconnected { .. } => 3,
        }
    }
    pub fn name(code: u64) -> &'static str {
        match code {
            0 => "connecting",
            1 => "connected",
            2 => "closing",
            _ => "disconnected",
        }
    }
}

/// A mapped stats region (cloneable; every stage holds one).
#[derive(Clone)]
pub struct StatsRegion {
    region: Arc<Region>,
}

fn spec() -> RegionSpec {
    RegionSpec {
        kind: RegionKind::Stats,
        elem_size: SLOT as u32,
        capacity: COUNTERS as u64,
        payload_bytes: PAYLOAD,
        mirrored: false,
    }
}

impl StatsRegion {
    /// Create `stats.shm` in an owned directory, names filled in, `running` set.
    pub fn create(dir: &ShmDir) -> Result<StatsRegion> {
        let region = dir.create_region(names::STATS, spec())?;
        let s = StatsRegion {
            region: Arc::new(region),
        };
        for c in Counter::ALL {
            let name = c.name().as_bytes();
            // SAFETY: slot `c` lies inside the payload (PAYLOAD >= COUNTERS * SLOT); the
            // region is fresh and nobody reads the names before `create` returns.
            unsafe {
                let p = s.region.payload_ptr().add(*c as usize * SLOT);
                std::ptr::copy_nonoverlapping(name.as_ptr(), p, name.len().min(NAME_BYTES - 1));
            }
        }
        s.ctl32(RUNNING_OFF).store(1, Ordering::Release);
        Ok(s)
    }

    /// Attach to a running pipeline's stats (the `pipeline stat` tool).
    pub fn attach(dir: &ShmDir) -> Result<StatsRegion> {
        let mut sp = spec();
        sp.payload_bytes = 0;
        sp.capacity = 0;
        let region = dir.attach_region(names::STATS, sp)?;
        if region.payload_len() < TEXT_OFF + 64 + REASON_BYTES {
            return Err(Error::Shm(format!(
                "{}: stats region too small",
                region.path().display()
            )));
        }
        Ok(StatsRegion {
            region: Arc::new(region),
        })
    }

    /// Counter slots recorded in the file (an older writer may have fewer).
    pub fn slots(&self) -> usize {
        (self.region.header().capacity as usize).min(COUNTERS)
    }

    fn ctl32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: offsets 0 and 4 are inside the header page's control area, 4-aligned.
        unsafe { &*(self.region.ctl_ptr().add(off) as *const AtomicU32) }
    }

    #[inline]
    fn slot(&self, i: usize) -> &AtomicU64 {
        // SAFETY: i < COUNTERS (callers pass a Counter or check `slots()`); the value
        // sits at byte 56 of a 64-byte slot in a page-aligned payload: 8-aligned.
        unsafe { &*(self.region.payload_ptr().add(i * SLOT + NAME_BYTES) as *const AtomicU64) }
    }

    /// The counter's live value.
    #[inline]
    pub fn get(&self, c: Counter) -> u64 {
        self.slot(c as usize).load(Ordering::Relaxed)
    }

    /// Set a counter (its single owner only).
    #[inline]
    pub fn set(&self, c: Counter, v: u64) {
        self.slot(c as usize).store(v, Ordering::Relaxed);
    }

    /// Add to a counter: a Relaxed load and a Relaxed store, correct because each
    /// counter has one writer, and no locked instruction on the hot path.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let s = self.slot(c as usize);
        s.store(s.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Raise a high-water mark (its single owner only).
    #[inline]
    pub fn max(&self, c: Counter, v: u64) {
        let s = self.slot(c as usize);
        if v > s.load(Ordering::Relaxed) {
            s.store(v, Ordering::Relaxed);
        }
    }

    /// Name and value of every slot, as the file says (for the stat tool).
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        (0..self.slots())
            .map(|i| {
                // SAFETY: slot i is inside the payload; names are written once at create.
                let name = unsafe {
                    std::slice::from_raw_parts(self.region.payload_ptr().add(i * SLOT), NAME_BYTES)
                };
                let end = name.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
                (
                    String::from_utf8_lossy(&name[..end]).into_owned(),
                    self.slot(i).load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    // ----------------------------------------------------------- run flag, state

    /// Should the stages keep running?
    #[inline]
    pub fn running(&self) -> bool {
        self.ctl32(RUNNING_OFF).load(Ordering::Acquire) == 1
    }

    /// Ask every stage (threads, children, the inline loop) to stop, after delivering
    /// what is already in the rings (a disconnect: the last messages still arrive).
    pub fn stop_running(&self) {
        let _ = self
            .ctl32(RUNNING_OFF)
            .compare_exchange(1, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Ask every stage to stop at once, without draining (the application's stop).
    pub fn stop_now(&self) {
        self.ctl32(RUNNING_OFF).store(2, Ordering::Release);
    }

    /// Was [`StatsRegion::stop_now`] called?
    pub fn stopping_now(&self) -> bool {
        self.ctl32(RUNNING_OFF).load(Ordering::Acquire) == 2
    }

    pub fn state_code(&self) -> u64 {
        self.slot(Counter::State as usize).load(Ordering::Acquire)
    }

    /// The state with its reason.
    pub fn state(&self) -> State {
        match self.state_code() {
            0 => State::Connecting,
            1 => State::Connected,
            2 => State::Closing,
            _ => State::Disconnected {
                reason: self.reason(),
            },
        }
    }

    /// Move the state forward (never back). Off the hot path.
    pub fn advance_state(&self, s: &State) {
        if let State::Disconnected { reason } = s {
            self.note_reason(reason);
        }
        self.slot(Counter::State as usize)
            .fetch_max(s.code(), Ordering::AcqRel);
    }

    /// Disconnect with `reason` (the first reason wins) and stop every stage.
    pub fn disconnect(&self, reason: &str) {
        self.advance_state(&State::Disconnected {
            reason: reason.to_string(),
        });
        self.stop_running();
    }

    /// Record why the pipeline is ending, before the state says so (the first reason
    /// recorded wins: later echoes of the shutdown do not replace the cause).
    pub fn note_reason(&self, reason: &str) {
        if self.ctl32(CLAIM_OFF).swap(1, Ordering::AcqRel) != 0 {
            return;
        }
        let b = reason.as_bytes();
        let n = b.len().min(REASON_BYTES);
        // SAFETY: the text area lies inside the payload; the claim flag above makes
        // this the only writer ever; readers read `n` bytes only after the Release
        // store of the length.
        unsafe {
            let base = self.region.payload_ptr().add(TEXT_OFF);
            std::ptr::copy_nonoverlapping(b.as_ptr(), base.add(64), n);
            (*(base as *const AtomicU32)).store(n as u32, Ordering::Release);
        }
    }

    /// The disconnect reason ("" while none).
    pub fn reason(&self) -> String {
        // SAFETY: see `set_reason`: the length is published after the bytes.
        unsafe {
            let base = self.region.payload_ptr().add(TEXT_OFF);
            let n =
                ((*(base as *const AtomicU32)).load(Ordering::Acquire) as usize).min(REASON_BYTES);
            let s = std::slice::from_raw_parts(base.add(64), n);
            String::from_utf8_lossy(s).into_owned()
        }
    }

    /// The creator's pid (from the region header).
    pub fn creator_pid(&self) -> u32 {
        self.region.header().creator_pid
    }
}

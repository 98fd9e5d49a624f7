//! The stats region (`stats.shm`, [`RegionKind::Stats`]): named `u64` counters, the
//! pipeline's state word, its `running` flag and the text of the last error, readable
//! live by a separate process (`pipeline stat NAME`), Aeron-counters style.
//!
//! Payload layout (one 64-byte cache line per counter, so two stages never write the
//! same line):
//! ```text
//!   slot i (i < COUNTERS):  name[56] (NUL padded)   value: u64
//!   text area at TEXT_OFF:  reason_len: u32, kind: u32, code: u32, pid: i32,
//!                           exit: u32, aux_len: u32, pad to 64, reason[REASON_BYTES],
//!                           aux[AUX_BYTES]
//! ```
//! `kind` is the [`DisconnectKind`] code (0 = none recorded, as in a region written
//! before the kind existed: these fields sit in what was padding, so the layout version
//! did not change); `code` the close code (server close, our close's answer, protocol
//! error) or the stage's signal / exit status; `pid` and `exit` ([`StageExit`]) for a
//! dead stage; `aux` the server's close reason or the stage's name.
//! Control area (header page): `running` (u32: 1 run, 0 drain and stop, 2 stop now) at
//! 0, `reason_claimed` (u32: 0 free, 1 being written, 2 published) at 4, and on its own
//! line at 64 the polling consumer's `armed` word (u32: 1 = asleep on the event fd, see
//! `ring::wakeup`).
//!
//! Writers: every counter has exactly one owner stage, which updates it with a Relaxed
//! load + Relaxed store ([`StatsRegion::add`]): no read-modify-write instruction on the
//! hot path. Readers load Relaxed; a snapshot is not atomic across counters. The state
//! word only moves forward (`fetch_max`, off the hot path), and the first
//! disconnect reason wins (a claim flag), so the reason a user sees is the cause, not
//! an echo of the shutdown it triggered.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::latency::{bucket_of, HistogramSnapshot, Timestamps, BUCKETS};
use crate::ring::wakeup::{self, EventFd, Signal};
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
    /// Transport: the connection's generation (0 for the first, +1 per reconnect).
    /// Stored, with [`Counter::GenerationStart`] first, before the new connection's first
    /// byte is committed to MSG_INBOX (see `TransportStage`, "One stream across
    /// reconnects").
    Generation = "generation",
    /// Transport: the MSG_INBOX stream position where the current generation's bytes start
    /// (WIRE_INBOX's, the ring the transport writes, when permessage-deflate is offered).
    GenerationStart = "generation_start",
    /// Transport: the last reconnect attempt (1-based, consecutive; 0 before any).
    ReconnectAttempt = "reconnect_attempt",
    /// Transport: the [`DisconnectKind`] code of the last lost connection that
    /// reconnected (low 32 bits) and its close code, if any (bits 32..48).
    ReconnectCause = "reconnect_cause",
    /// Transport: connections declared dead by the liveness check (no data, no PONG).
    LivenessTimeouts = "liveness_timeouts",
    /// Application: 1 once `Pipeline::close` queued our close (a loss after it never
    /// reconnects).
    UserClose = "user_close",
    // ---- Feeds (`pipeline::Feed`, docs/feed.md): written by the feed's merge step (the
    // consumer), the leg counters in each leg's region, the feed-wide ones in the feed's
    // own region (`/dev/shm/pipeline_<feed>/stats.shm`).
    /// Feed leg: messages this leg brought to the arbiter.
    FeedReceived = "feed_received",
    /// Feed leg: keyed messages delivered from this leg (it brought them first).
    FeedWon = "feed_won",
    /// Feed leg: keyed messages dropped as duplicates (another leg was first).
    FeedDups = "feed_dups",
    /// Feed leg: keyless messages delivered (this leg was the primary).
    FeedKeylessWon = "feed_keyless_won",
    /// Feed leg: keyless messages dropped (not the primary).
    FeedKeylessDropped = "feed_keyless_dropped",
    /// Feed leg: messages held at some point (contiguous mode, waiting for a gap to fill).
    FeedHeld = "feed_held",
    /// Feed leg: times the leg came up (connected) / went down.
    FeedUps = "feed_ups",
    FeedDowns = "feed_downs",
    /// Feed leg: sum and maximum of the lag behind the winner (ns), and duplicates whose
    /// winner was no longer remembered.
    FeedLagSumNs = "feed_lag_sum_ns",
    FeedLagMaxNs = "feed_lag_max_ns",
    FeedLagUnknown = "feed_lag_unknown",
    /// Feed leg: duplicates that trailed the winner by < 1 us (lag histogram bucket 0).
    FeedLag00 = "feed_lag_b00",
    /// Feed leg: duplicates that trailed the winner by [1, 2) us (lag histogram bucket 1).
    FeedLag01 = "feed_lag_b01",
    /// Feed leg: duplicates that trailed the winner by [2, 4) us (lag histogram bucket 2).
    FeedLag02 = "feed_lag_b02",
    /// Feed leg: duplicates that trailed the winner by [4, 8) us (lag histogram bucket 3).
    FeedLag03 = "feed_lag_b03",
    /// Feed leg: duplicates that trailed the winner by [8, 16) us (lag histogram bucket 4).
    FeedLag04 = "feed_lag_b04",
    /// Feed leg: duplicates that trailed the winner by [16, 32) us (lag histogram bucket 5).
    FeedLag05 = "feed_lag_b05",
    /// Feed leg: duplicates that trailed the winner by [32, 64) us (lag histogram bucket 6).
    FeedLag06 = "feed_lag_b06",
    /// Feed leg: duplicates that trailed the winner by [64, 128) us (lag histogram bucket 7).
    FeedLag07 = "feed_lag_b07",
    /// Feed leg: duplicates that trailed the winner by [128, 256) us (lag histogram bucket 8).
    FeedLag08 = "feed_lag_b08",
    /// Feed leg: duplicates that trailed the winner by [256, 512) us (lag histogram bucket 9).
    FeedLag09 = "feed_lag_b09",
    /// Feed leg: duplicates that trailed the winner by [512, 1024) us (lag histogram bucket 10).
    FeedLag10 = "feed_lag_b10",
    /// Feed leg: duplicates that trailed the winner by [1024, 2048) us (lag histogram bucket 11).
    FeedLag11 = "feed_lag_b11",
    /// Feed leg: duplicates that trailed the winner by [2048, 4096) us (lag histogram bucket 12).
    FeedLag12 = "feed_lag_b12",
    /// Feed leg: duplicates that trailed the winner by [4096, 8192) us (lag histogram bucket 13).
    FeedLag13 = "feed_lag_b13",
    /// Feed leg: duplicates that trailed the winner by [8192, 16384) us (lag histogram bucket 14).
    FeedLag14 = "feed_lag_b14",
    /// Feed leg: duplicates that trailed the winner by [16384, 32768) us (lag histogram bucket 15).
    FeedLag15 = "feed_lag_b15",
    /// Feed leg: duplicates that trailed the winner by [32768, 65536) us (lag histogram bucket 16).
    FeedLag16 = "feed_lag_b16",
    /// Feed leg: duplicates that trailed the winner by [65536, 131072) us (lag histogram bucket 17).
    FeedLag17 = "feed_lag_b17",
    /// Feed leg: duplicates that trailed the winner by [131072, 262144) us (lag histogram bucket 18).
    FeedLag18 = "feed_lag_b18",
    /// Feed leg: duplicates that trailed the winner by [262144, 524288) us (lag histogram bucket 19).
    FeedLag19 = "feed_lag_b19",
    /// Feed leg: duplicates that trailed the winner by [524288, 1048576) us (lag histogram bucket 20).
    FeedLag20 = "feed_lag_b20",
    /// Feed leg: duplicates that trailed the winner by [1048576, 2097152) us (lag histogram bucket 21).
    FeedLag21 = "feed_lag_b21",
    /// Feed leg: duplicates that trailed the winner by [2097152, 4194304) us (lag histogram bucket 22).
    FeedLag22 = "feed_lag_b22",
    /// Feed leg: duplicates that trailed the winner by >= 4194304 us (lag histogram bucket 23).
    FeedLag23 = "feed_lag_b23",
    /// Feed: messages delivered on the merged stream.
    FeedDelivered = "feed_delivered",
    /// Feed: gap events, and sequence numbers they named.
    FeedGaps = "feed_gaps",
    FeedGapSeqs = "feed_gap_seqs",
    /// Feed: rotations completed / aborted (the new leg never got in step).
    FeedRotations = "feed_rotations",
    FeedRotationAborts = "feed_rotation_aborts",
    /// Feed: legs up now, and messages held now.
    FeedLegsUp = "feed_legs_up",
    FeedHeldNow = "feed_held_now",
    // ---- permessage-deflate (RFC 7692, docs/websocket.md).
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
/// Bytes of the reason's auxiliary text (the server's close reason, at most 123 bytes,
/// or a stage name).
pub const AUX_BYTES: usize = 128;
const TEXT_OFF: usize = COUNTERS * SLOT;
const AUX_OFF: usize = TEXT_OFF + 64 + REASON_BYTES;
const TEXT_END: usize = AUX_OFF + AUX_BYTES;
// The latency area (a region written before it existed ends at TEXT_END's page; readers
// check the length): a 64-byte header, then one histogram per [`Latency`], each a
// 64-byte line (count, sum_ns, max_ns) and BUCKETS u64 buckets.
const LAT_OFF: usize = (TEXT_END + 4095) & !4095;
const LAT_MAGIC: u32 = 0x3154_414c; // "LAT1"
const L_MAGIC: usize = 0;
const L_BUCKETS: usize = 4;
const L_HISTS: usize = 8;
const L_OWNER: usize = 12;
const L_HEARTBEAT: usize = 16;
const L_STARTED_UNIX: usize = 24;
const L_STARTED_MONO: usize = 32;
const HIST_BYTES: usize = 64 + BUCKETS * 8;
const LAT_END: usize = LAT_OFF + 64 + Latency::ALL.len() * HIST_BYTES;
const PAYLOAD: usize = (LAT_END + 4095) & !4095;
/// How often (at most) a stage loop refreshes the heartbeat.
pub const HEARTBEAT_NS: u64 = 100_000_000;

/// The latency histograms of the stats region (see [`crate::latency`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Packet arrival to plaintext in MSG_INBOX (TCP, TLS).
    ArrivalToDecrypted,
    /// Plaintext to a published frame (the WebSocket stage, and the ring hop to it).
    DecryptedToParsed,
    /// Published frame to the AppClient taking it (the ring hop, a busy consumer).
    ParsedToDelivered,
    /// Packet arrival to the AppClient taking it: the sum of the three.
    ArrivalToDelivered,
    /// The server's own stamp in the message (`Config::server_stamp`) to the AppClient
    /// taking it, both as Unix time: one-way, as good as the clocks' agreement. A stamp
    /// ahead of our clock records nothing.
    ServerToDelivered,
}

impl Latency {
    pub const ALL: [Latency; 5] = [
        Latency::ArrivalToDecrypted,
        Latency::DecryptedToParsed,
        Latency::ParsedToDelivered,
        Latency::ArrivalToDelivered,
        Latency::ServerToDelivered,
    ];
    /// The four stages every message goes through (not the optional server stamp).
    pub const STAGES: [Latency; 4] = [
        Latency::ArrivalToDecrypted,
        Latency::DecryptedToParsed,
        Latency::ParsedToDelivered,
        Latency::ArrivalToDelivered,
    ];
    /// Stable name (`pipeline stat`, JSON, Prometheus label).
    pub fn name(self) -> &'static str {
        match self {
            Latency::ArrivalToDecrypted => "arrival_to_decrypted",
            Latency::DecryptedToParsed => "decrypted_to_parsed",
            Latency::ParsedToDelivered => "parsed_to_delivered",
            Latency::ArrivalToDelivered => "arrival_to_delivered",
            Latency::ServerToDelivered => "server_to_delivered",
        }
    }
}
// Offsets inside the 64-byte text header at TEXT_OFF.
const R_LEN: usize = 0;
const R_KIND: usize = 4;
const R_CODE: usize = 8;
const R_PID: usize = 12;
const R_EXIT: usize = 16;
const R_AUX_LEN: usize = 20;

const RUNNING_OFF: usize = 0;
const CLAIM_OFF: usize = 4;
// Written by the consumer when it goes to sleep, read by the producer per publish: away
// from `running`, which every stage loads every loop.
#[cfg(not(pipeline_loom))]
const ARMED_OFF: usize = 64;

/// How a stage process ended (the `processes` layout's supervisor saw it go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageExit {
    /// Killed by this signal.
    Signal(i32),
    /// Exited with this status.
    Exited(i32),
    /// Someone else in this process collected its exit status (`waitpid(-1)`,
    /// `SIGCHLD` ignored): it is gone, how is unknown.
    CollectedElsewhere,
    /// Another wait status (raw value).
    Other(i32),
}

impl StageExit {
    /// From a `waitpid` status.
    pub fn from_wait_status(status: i32) -> StageExit {
        if libc::WIFSIGNALED(status) {
            StageExit::Signal(libc::WTERMSIG(status))
        } else if libc::WIFEXITED(status) {
            StageExit::Exited(libc::WEXITSTATUS(status))
        } else {
            StageExit::Other(status)
        }
    }
    fn encode(self) -> (u32, u32) {
        match self {
            StageExit::Signal(s) => (1, s as u32),
            StageExit::Exited(s) => (2, s as u32),
            StageExit::CollectedElsewhere => (3, 0),
            StageExit::Other(s) => (4, s as u32),
        }
    }
    fn decode(tag: u32, code: u32) -> StageExit {
        match tag {
            1 => StageExit::Signal(code as i32),
            2 => StageExit::Exited(code as i32),
            3 => StageExit::CollectedElsewhere,
            _ => StageExit::Other(code as i32),
        }
    }
}

/// Why the pipeline disconnected: what tests, the CLI and applications decide on
/// (never the message text). Each kind has a stable numeric [`DisconnectKind::code`],
/// stored in the stats region and handed to C (`PL_DISCONNECT_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectKind {
    /// No kind recorded (not disconnected, or a region written by an older library).
    Unknown,
    /// The server sent a close frame (we answered it): its code and reason text.
    ServerClosed { code: u16, reason: String },
    /// We closed (`Pipeline::close`) and the server answered with `code`.
    CloseCompleted { code: u16 },
    /// We closed and the server did not answer within `close_timeout`: the transport
    /// was shut down without the close handshake.
    CloseTimeout,
    /// We closed and the server ended the TCP/TLS stream without a close frame.
    ClosedAfterOurClose,
    /// The server broke the protocol and we closed with `close_code` (1002, 1007,
    /// 1009 ...).
    ProtocolError { close_code: u16 },
    /// The WebSocket upgrade failed (not a 101, a bad `Sec-WebSocket-Accept`, the
    /// connection closed during it).
    UpgradeFailed,
    /// The peer reset the TCP connection (RST).
    TcpReset,
    /// The stream ended (TCP FIN, or TLS close_notify) without a WebSocket close.
    TcpClosed,
    /// TLS failed (handshake, certificate, alert, decryption).
    Tls,
    /// TCP/IP failed (refused, unreachable, ARP, retransmissions timed out).
    Network,
    /// Set-up (TCP, TLS and WebSocket handshakes) did not finish within `Config::timeout`,
    /// or another timeout of a stage.
    Timeout,
    /// A stage process died while the pipeline ran (`processes` layout).
    StageDied { stage: String, pid: i32, exit: StageExit },
    /// A stage panicked (a bug, or a panicking callback in the AppClient stage);
    /// `stage` names the stage(s) of the loop that caught it.
    StagePanicked { stage: String },
    /// The application stopped the pipeline (`Pipeline::stop`, drop, `pl_stop`).
    Stopped,
    /// A ring or buffer could not hold what had to go in it.
    Overrun,
    /// A system call failed.
    Io,
    /// Anything else a stage reported (configuration, shared memory, capability).
    Internal,
    /// The application's message callback reported an error (returned non-zero from a
    /// `pl_on_message_ex`; the C++ wrapper's exceptions land here): the connection
    /// ended, the message is the callback's reason (an exception's `what()`).
    CallbackError,
}

impl DisconnectKind {
    /// Every kind's code and name, in code order (`pl_disconnect_kind_name`, the CLI).
    pub const NAMES: [&'static str; 19] = [
        "unknown",
        "server_closed",
        "close_completed",
        "close_timeout",
        "closed_after_our_close",
        "protocol_error",
        "upgrade_failed",
        "tcp_reset",
        "tcp_closed",
        "tls",
        "network",
        "timeout",
        "stage_died",
        "stage_panicked",
        "stopped",
        "overrun",
        "io",
        "internal",
        "callback_error",
    ];

    /// The stable numeric code (stats region, C's `PL_DISCONNECT_*`, Python).
    pub fn code(&self) -> u32 {
        match self {
            DisconnectKind::Unknown => 0,
            DisconnectKind::ServerClosed { .. } => 1,
            DisconnectKind::CloseCompleted { .. } => 2,
            DisconnectKind::CloseTimeout => 3,
            DisconnectKind::ClosedAfterOurClose => 4,
            DisconnectKind::ProtocolError { .. } => 5,
            DisconnectKind::UpgradeFailed => 6,
            DisconnectKind::TcpReset => 7,
            DisconnectKind::TcpClosed => 8,
            DisconnectKind::Tls => 9,
            DisconnectKind::Network => 10,
            DisconnectKind::Timeout => 11,
            DisconnectKind::StageDied { .. } => 12,
            DisconnectKind::StagePanicked { .. } => 13,
            DisconnectKind::Stopped => 14,
            DisconnectKind::Overrun => 15,
            DisconnectKind::Io => 16,
            DisconnectKind::Internal => 17,
            DisconnectKind::CallbackError => 18,
        }
    }

    /// The stable snake_case name of a code ("unknown" for a code no kind has).
    pub fn name_of(code: u32) -> &'static str {
        Self::NAMES.get(code as usize).copied().unwrap_or("unknown")
    }

    /// The stable snake_case name ("server_closed", "tcp_reset" ...).
    pub fn name(&self) -> &'static str {
        Self::name_of(self.code())
    }

    /// The close code the kind carries: the server's (ServerClosed, CloseCompleted) or
    /// ours (ProtocolError); 0 otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            DisconnectKind::ServerClosed { code, .. } | DisconnectKind::CloseCompleted { code } => *code,
            DisconnectKind::ProtocolError { close_code } => *close_code,
            _ => 0,
        }
    }

    /// The kind of a failure a stage returned (the runner records it).
    pub fn from_error(e: &Error) -> DisconnectKind {
        match e {
            Error::Tls(_) => DisconnectKind::Tls,
            Error::Net(_) => DisconnectKind::Network,
            Error::Reset(_) => DisconnectKind::TcpReset,
            Error::Closed(_) => DisconnectKind::TcpClosed,
            Error::Timeout(_) => DisconnectKind::Timeout,
            Error::WebSocket { close_code: 0, .. } => DisconnectKind::UpgradeFailed,
            Error::WebSocket { close_code, .. } => DisconnectKind::ProtocolError {
                close_code: *close_code,
            },
            Error::Overrun(_) => DisconnectKind::Overrun,
            Error::Io { .. } => DisconnectKind::Io,
            Error::Config(_)
            | Error::Shm(_)
            | Error::Capability { .. }
            | Error::WouldBlock
            | Error::NullArg(_) => DisconnectKind::Internal,
        }
    }

    /// (code, pid, exit tag, aux text) as stored in the region.
    fn encode(&self) -> (u32, i32, u32, &str) {
        match self {
            DisconnectKind::ServerClosed { code, reason } => (*code as u32, 0, 0, reason),
            DisconnectKind::CloseCompleted { code } => (*code as u32, 0, 0, ""),
            DisconnectKind::ProtocolError { close_code } => (*close_code as u32, 0, 0, ""),
            DisconnectKind::StageDied { stage, pid, exit } => {
                let (tag, code) = exit.encode();
                (code, *pid, tag, stage)
            }
            DisconnectKind::StagePanicked { stage } => (0, 0, 0, stage),
            _ => (0, 0, 0, ""),
        }
    }

    fn decode(kind: u32, code: u32, pid: i32, exit: u32, aux: String) -> DisconnectKind {
        let code16 = code as u16;
        match kind {
            1 => DisconnectKind::ServerClosed { code: code16, reason: aux },
            2 => DisconnectKind::CloseCompleted { code: code16 },
            3 => DisconnectKind::CloseTimeout,
            4 => DisconnectKind::ClosedAfterOurClose,
            5 => DisconnectKind::ProtocolError { close_code: code16 },
            6 => DisconnectKind::UpgradeFailed,
            7 => DisconnectKind::TcpReset,
            8 => DisconnectKind::TcpClosed,
            9 => DisconnectKind::Tls,
            10 => DisconnectKind::Network,
            11 => DisconnectKind::Timeout,
            12 => DisconnectKind::StageDied {
                stage: aux,
                pid,
                exit: StageExit::decode(exit, code),
            },
            13 => DisconnectKind::StagePanicked { stage: aux },
            14 => DisconnectKind::Stopped,
            15 => DisconnectKind::Overrun,
            16 => DisconnectKind::Io,
            17 => DisconnectKind::Internal,
            18 => DisconnectKind::CallbackError,
            _ => DisconnectKind::Unknown,
        }
    }
}

/// A disconnect: its [`DisconnectKind`] (what to decide on) and a one-line message for
/// people (`closed by server: code 1001 going away`); `Display` prints the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisconnectReason {
    pub kind: DisconnectKind,
    pub message: String,
}

impl DisconnectReason {
    pub fn new(kind: DisconnectKind, message: impl Into<String>) -> DisconnectReason {
        DisconnectReason {
            kind,
            message: message.into(),
        }
    }

    /// A stage's failure: the kind from the error, the message `"<stage> stage: <e>"`.
    pub fn stage_error(stage: &str, e: &Error) -> DisconnectReason {
        DisconnectReason::new(DisconnectKind::from_error(e), format!("{stage} stage: {e}"))
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The pipeline's connection state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Set-up: TCP, TLS or WebSocket handshake in progress.
    Connecting,
    /// The WebSocket is open.
    Connected,
    /// A connection was lost and reconnect is on: waiting for the backoff, or connecting
    /// again (state code 0, like `Connecting`; `attempt` is 1-based and consecutive,
    /// `cause` the kind of the loss).
    Reconnecting { attempt: u32, cause: DisconnectKind },
    /// A close handshake is in progress.
    Closing,
    /// Over; the reason says why (peer close code, error, dead stage, stop): match on
    /// `reason.kind`, show `reason.message`.
    Disconnected { reason: DisconnectReason },
}

impl State {
    pub fn code(&self) -> u64 {
        match self {
            State::Connecting | State::Reconnecting { .. } => 0,
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
    /// The payload is long enough for the latency area (a region this version made; an
    /// attached older one is shorter): every latency accessor checks this first.
    lat: bool,
    /// The polling consumer's eventfd, set once before the stages are placed (so
    /// threads share it and forked stage processes inherit it); unset without one.
    wake: Arc<OnceLock<EventFd>>,
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
            lat: region.payload_len() >= LAT_END,
            region: Arc::new(region),
            wake: Arc::new(OnceLock::new()),
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
        s.lat32(L_BUCKETS).store(BUCKETS as u32, Ordering::Relaxed);
        s.lat32(L_HISTS).store(Latency::ALL.len() as u32, Ordering::Relaxed);
        // SAFETY: getpid has no preconditions.
        s.lat32(L_OWNER).store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
        let mono = crate::stage::now_ns();
        s.lat64(L_STARTED_UNIX).store(crate::latency::realtime_ns(), Ordering::Relaxed);
        s.lat64(L_STARTED_MONO).store(mono, Ordering::Relaxed);
        s.lat64(L_HEARTBEAT).store(mono, Ordering::Relaxed);
        s.lat32(L_MAGIC).store(LAT_MAGIC, Ordering::Release);
        s.ctl32(RUNNING_OFF).store(1, Ordering::Release);
        Ok(s)
    }

    /// Attach to a running pipeline's stats (the `pipeline stat` tool).
    pub fn attach(dir: &ShmDir) -> Result<StatsRegion> {
        let mut sp = spec();
        sp.payload_bytes = 0;
        sp.capacity = 0;
        let region = dir.attach_region(names::STATS, sp)?;
        if region.payload_len() < TEXT_END {
            return Err(Error::Shm(format!(
                "{}: stats region too small",
                region.path().display()
            )));
        }
        Ok(StatsRegion {
            lat: region.payload_len() >= LAT_END,
            region: Arc::new(region),
            wake: Arc::new(OnceLock::new()),
        })
    }

    /// Counter slots recorded in the file (an older writer may have fewer).
    pub fn slots(&self) -> usize {
        (self.region.header().capacity as usize).min(COUNTERS)
    }

    fn ctl32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: offsets 0, 4 and 64 are inside the header page's control area, 4-aligned.
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

    /// Set a counter with Release ordering: stores before it (other counters, ring
    /// bytes) are visible to whoever loads it with [`StatsRegion::get_acquire`].
    #[inline]
    pub fn set_release(&self, c: Counter, v: u64) {
        self.slot(c as usize).store(v, Ordering::Release);
    }

    /// Load a counter with Acquire ordering (pairs with [`StatsRegion::set_release`]).
    #[inline]
    pub fn get_acquire(&self, c: Counter) -> u64 {
        self.slot(c as usize).load(Ordering::Acquire)
    }

    /// The reason recorded for the current connection, if one was (claim published).
    pub fn noted_reason(&self) -> Option<DisconnectReason> {
        (self.ctl32(CLAIM_OFF).load(Ordering::Acquire) == 2).then(|| self.reason())
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
            0 => match self.get(Counter::Reconnects) {
                0 => State::Connecting,
                _ => State::Reconnecting {
                    attempt: self.get(Counter::ReconnectAttempt) as u32,
                    cause: self.state_from_cause(),
                },
            },
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
        self.wake_consumer();
    }

    /// The kind of the last loss that reconnected.
    pub fn state_from_cause(&self) -> DisconnectKind {
        let v = self.get(Counter::ReconnectCause);
        DisconnectKind::decode(v as u32, (v >> 32) as u32, 0, 0, String::new())
    }

    /// The connection was lost and will be made again: record the attempt and the kind of
    /// the loss, forget the loss's reason (the next end is judged afresh), and move the
    /// state back to Connecting (the one transition against `fetch_max`). Never from
    /// Disconnected: returns false then (the pipeline is over). Transport stage only.
    pub fn reconnecting(&self, attempt: u32, cause: &DisconnectKind) -> bool {
        self.set(Counter::ReconnectAttempt, attempt as u64);
        self.set(Counter::ReconnectCause, cause.code() as u64 | (cause.close_code() as u64) << 32);
        let st = self.slot(Counter::State as usize);
        let mut cur = st.load(Ordering::Acquire);
        loop {
            if cur >= 3 {
                return false;
            }
            match st.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        // The claim only: the text stays until the next reason overwrites it.
        let _ = self
            .ctl32(CLAIM_OFF)
            .compare_exchange(2, 0, Ordering::AcqRel, Ordering::Acquire);
        self.wake_consumer();
        true
    }

    // ------------------------------------------------- the polling consumer's wakeup

    /// Give the pipeline its consumer eventfd (once, before the stages are placed).
    pub(crate) fn set_wakeup(&self, fd: EventFd) {
        let _ = self.wake.set(fd);
    }

    /// The consumer eventfd, if the pipeline has one.
    pub(crate) fn wakeup_fd(&self) -> Option<std::os::fd::RawFd> {
        self.wake.get().map(|f| f.raw())
    }

    /// Producer side: frames were published or the state moved; wake the consumer if it
    /// is asleep (see `ring::wakeup` for the protocol).
    #[inline]
    pub(crate) fn wake_consumer(&self) {
        if let Some(fd) = self.wake.get() {
            wakeup::notify(self.armed(), fd);
        }
    }

    /// The armed word, in the model checker's atomics when it runs (only the ring and
    /// wakeup models run under loom; this keeps the rest compiling).
    #[cfg(not(pipeline_loom))]
    fn armed(&self) -> &AtomicU32 {
        self.ctl32(ARMED_OFF)
    }
    #[cfg(pipeline_loom)]
    fn armed(&self) -> &'static loom::sync::atomic::AtomicU32 {
        unreachable!("the stats region has no wakeup under loom")
    }

    /// Consumer side: arm before the second look (false without an eventfd).
    pub(crate) fn arm_consumer(&self) -> bool {
        match self.wake.get() {
            Some(fd) => {
                wakeup::arm(self.armed(), fd);
                true
            }
            None => false,
        }
    }

    /// Consumer side: the second look found something.
    pub(crate) fn disarm_consumer(&self) {
        wakeup::disarm(self.armed());
    }

    /// Consumer side: the stream is over; keep the eventfd readable from now on, so a
    /// waiter that looks again returns at once instead of sleeping forever.
    pub(crate) fn wakeup_forever(&self) {
        if let Some(fd) = self.wake.get() {
            fd.signal();
        }
    }

    /// Disconnect with `reason` (the first reason wins) and stop every stage.
    pub fn disconnect(&self, reason: DisconnectReason) {
        self.advance_state(&State::Disconnected { reason });
        self.stop_running();
    }

    /// [`StatsRegion::disconnect`] with a kind and a message.
    pub fn disconnect_with(&self, kind: DisconnectKind, message: impl Into<String>) {
        self.disconnect(DisconnectReason::new(kind, message));
    }

    fn text32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: TEXT_OFF + off (< 64, 4-aligned) lies in the payload's text header;
        // TEXT_OFF is a multiple of 64 in a page-aligned payload.
        unsafe { &*(self.region.payload_ptr().add(TEXT_OFF + off) as *const AtomicU32) }
    }

    /// Record why the pipeline is ending, before the state says so (the first reason
    /// recorded wins: later echoes of the shutdown do not replace the cause). A caller
    /// that loses the race waits (briefly) until the winner's reason is published, so
    /// whoever then moves the state to Disconnected never shows it without its reason.
    pub fn note_reason(&self, reason: &DisconnectReason) {
        let claim = self.ctl32(CLAIM_OFF);
        if claim
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Bounded: a writer killed mid-write (a SIGKILLed child) never publishes.
            for i in 0..10_000 {
                if claim.load(Ordering::Acquire) == 2 {
                    break;
                }
                if i > 100 {
                    std::thread::yield_now();
                }
            }
            return;
        }
        let b = reason.message.as_bytes();
        let n = b.len().min(REASON_BYTES);
        let (code, pid, exit, aux) = reason.kind.encode();
        let aux = aux.as_bytes();
        let na = aux.len().min(AUX_BYTES);
        // SAFETY: the text and aux areas lie inside the payload (PAYLOAD >= TEXT_END);
        // the claim above makes this the only writer ever; readers read them only after
        // the Release store of the length.
        unsafe {
            let base = self.region.payload_ptr();
            std::ptr::copy_nonoverlapping(b.as_ptr(), base.add(TEXT_OFF + 64), n);
            std::ptr::copy_nonoverlapping(aux.as_ptr(), base.add(AUX_OFF), na);
        }
        self.text32(R_KIND).store(reason.kind.code(), Ordering::Relaxed);
        self.text32(R_CODE).store(code, Ordering::Relaxed);
        self.text32(R_PID).store(pid as u32, Ordering::Relaxed);
        self.text32(R_EXIT).store(exit, Ordering::Relaxed);
        self.text32(R_AUX_LEN).store(na as u32, Ordering::Relaxed);
        self.text32(R_LEN).store(n as u32, Ordering::Release);
        claim.store(2, Ordering::Release);
    }

    fn text_at(&self, off: usize, n: usize) -> String {
        // SAFETY: callers pass an area inside the payload and a length bounded by it;
        // its bytes were written before the Release store of the length they loaded.
        let s = unsafe { std::slice::from_raw_parts(self.region.payload_ptr().add(off), n) };
        String::from_utf8_lossy(s).into_owned()
    }

    /// The disconnect reason recorded so far (kind `Unknown` and "" while none).
    pub fn reason(&self) -> DisconnectReason {
        // The claim word says "published" (2) after every field; the length alone
        // (Release-stored last among the fields) covers a writer older than the claim
        // values, whose kind fields are zero (Unknown).
        let _ = self.ctl32(CLAIM_OFF).load(Ordering::Acquire);
        let n = (self.text32(R_LEN).load(Ordering::Acquire) as usize).min(REASON_BYTES);
        let kind = self.text32(R_KIND).load(Ordering::Relaxed);
        let code = self.text32(R_CODE).load(Ordering::Relaxed);
        let pid = self.text32(R_PID).load(Ordering::Relaxed) as i32;
        let exit = self.text32(R_EXIT).load(Ordering::Relaxed);
        let na = (self.text32(R_AUX_LEN).load(Ordering::Relaxed) as usize).min(AUX_BYTES);
        let aux = self.text_at(AUX_OFF, na);
        DisconnectReason {
            kind: DisconnectKind::decode(kind, code, pid, exit, aux),
            message: self.text_at(TEXT_OFF + 64, n),
        }
    }

    /// The creator's pid (from the region header).
    pub fn creator_pid(&self) -> u32 {
        self.region.header().creator_pid
    }

    // ------------------------------------------------- latency area, liveness

    /// Does the region have the latency area (a writer older than it does not)?
    pub fn has_latency(&self) -> bool {
        self.lat && self.lat32(L_MAGIC).load(Ordering::Acquire) == LAT_MAGIC
    }

    /// Callers check `self.lat` first.
    fn lat32(&self, off: usize) -> &AtomicU32 {
        assert!(self.lat, "stats region without a latency area");
        // SAFETY: LAT_OFF + off (< 64, 4-aligned) lies in the latency header, inside the
        // payload (`lat`: it reaches LAT_END).
        unsafe { &*(self.region.payload_ptr().add(LAT_OFF + off) as *const AtomicU32) }
    }

    /// Callers check `self.lat` first.
    fn lat64(&self, off: usize) -> &AtomicU64 {
        assert!(self.lat, "stats region without a latency area");
        // SAFETY: as lat32, 8-aligned (LAT_OFF is page-aligned, off a multiple of 8).
        unsafe { &*(self.region.payload_ptr().add(LAT_OFF + off) as *const AtomicU64) }
    }

    /// Callers check `self.lat` first.
    #[inline]
    fn hist_word(&self, h: Latency, i: usize) -> &AtomicU64 {
        debug_assert!(self.lat && i < 8 + BUCKETS);
        // SAFETY: word i (< 8 + BUCKETS) of histogram h lies before LAT_END, 8-aligned,
        // and the payload reaches LAT_END (`lat`, checked by every caller).
        unsafe {
            &*(self.region.payload_ptr().add(LAT_OFF + 64 + h as usize * HIST_BYTES + i * 8) as *const AtomicU64)
        }
    }

    /// The process that owns the pipeline (0 if the region has no latency area).
    pub fn owner_pid(&self) -> u32 {
        if self.has_latency() {
            self.lat32(L_OWNER).load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Refresh the heartbeat (CLOCK_MONOTONIC ns). Every stage loop calls it, at most
    /// every [`HEARTBEAT_NS`]: one shared load per loop otherwise.
    #[inline]
    pub fn heartbeat(&self, now: u64) {
        if !self.lat {
            return;
        }
        let h = self.lat64(L_HEARTBEAT);
        if now.wrapping_sub(h.load(Ordering::Relaxed)) >= HEARTBEAT_NS {
            h.store(now, Ordering::Relaxed);
        }
    }

    /// The last heartbeat (CLOCK_MONOTONIC ns; 0 without a latency area).
    pub fn last_heartbeat(&self) -> u64 {
        if self.has_latency() {
            self.lat64(L_HEARTBEAT).load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// When the pipeline was created, ns since the Unix epoch (0 without a latency area).
    pub fn started_unix_ns(&self) -> u64 {
        if self.has_latency() {
            self.lat64(L_STARTED_UNIX).load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Record one message's stage latencies (the WS_FRAME_INFO reader only: one writer).
    /// Stamps that are unknown (0) or out of order (a clock read in another process a
    /// few ns apart) record nothing for that stage, never a wrapped huge value.
    #[inline]
    pub fn record_latency(&self, t: &Timestamps) {
        if !self.lat {
            return;
        }
        let pairs = [
            (Latency::ArrivalToDecrypted, t.arrival_ns, t.decrypted_ns),
            (Latency::DecryptedToParsed, t.decrypted_ns, t.parsed_ns),
            (Latency::ParsedToDelivered, t.parsed_ns, t.delivered_ns),
            (Latency::ArrivalToDelivered, t.arrival_ns, t.delivered_ns),
        ];
        for (h, from, to) in pairs {
            if from != 0 && to >= from {
                self.record(h, to - from);
            }
        }
    }

    /// Record one value (ns) in histogram `h` (its one writer only).
    #[inline]
    pub fn record(&self, h: Latency, v: u64) {
        if !self.lat {
            return;
        }
        let bump = |w: &AtomicU64, n: u64| w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        bump(self.hist_word(h, 8 + bucket_of(v)), 1);
        bump(self.hist_word(h, 0), 1);
        bump(self.hist_word(h, 1), v);
        let m = self.hist_word(h, 2);
        if v > m.load(Ordering::Relaxed) {
            m.store(v, Ordering::Relaxed);
        }
    }

    /// A histogram as it is now (None without a latency area). Not atomic: `count` may
    /// be a message ahead of or behind the buckets' sum while the writer runs.
    pub fn histogram(&self, h: Latency) -> Option<HistogramSnapshot> {
        if !self.has_latency() || self.lat32(L_BUCKETS).load(Ordering::Relaxed) as usize != BUCKETS {
            return None;
        }
        Some(HistogramSnapshot {
            count: self.hist_word(h, 0).load(Ordering::Relaxed),
            sum_ns: self.hist_word(h, 1).load(Ordering::Relaxed),
            max_ns: self.hist_word(h, 2).load(Ordering::Relaxed),
            buckets: (0..BUCKETS).map(|b| self.hist_word(h, 8 + b).load(Ordering::Relaxed)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_from_before_the_latency_area_reads_without_it() {
        let name = format!("t{}_stats_old", std::process::id());
        let dir = ShmDir::create(&name).unwrap();
        // The layout an older writer made: counters and text, no latency area.
        let mut sp = spec();
        sp.payload_bytes = LAT_OFF;
        drop(dir.create_region(names::STATS, sp).unwrap());
        let old = StatsRegion::attach(&ShmDir::open(&name).unwrap()).unwrap();
        assert!(!old.has_latency());
        assert_eq!((old.owner_pid(), old.last_heartbeat(), old.started_unix_ns()), (0, 0, 0));
        assert!(old.histogram(Latency::ArrivalToDelivered).is_none());
        // Writers are no-ops, never a write past the file.
        old.heartbeat(u64::MAX);
        old.record_latency(&Timestamps { arrival_ns: 1, decrypted_ns: 2, parsed_ns: 3, delivered_ns: 4 });
        old.record(Latency::ServerToDelivered, 5);
        drop(old);
        drop(dir);
        let _ = std::fs::remove_dir_all(ShmDir::path_for(&name));

        // A current region: the owner is this process, the heartbeat moves, records count.
        let name = format!("t{}_stats_new", std::process::id());
        let dir = ShmDir::create(&name).unwrap();
        let s = StatsRegion::create(&dir).unwrap();
        assert!(s.has_latency());
        assert_eq!(s.owner_pid(), std::process::id());
        let hb = s.last_heartbeat();
        s.heartbeat(hb + HEARTBEAT_NS / 2);
        assert_eq!(s.last_heartbeat(), hb, "at most every HEARTBEAT_NS");
        s.heartbeat(hb + HEARTBEAT_NS);
        assert_eq!(s.last_heartbeat(), hb + HEARTBEAT_NS);
        s.record_latency(&Timestamps { arrival_ns: 100, decrypted_ns: 150, parsed_ns: 140, delivered_ns: 400 });
        let get = |h| s.histogram(h).unwrap();
        assert_eq!(get(Latency::ArrivalToDecrypted).sum_ns, 50);
        assert_eq!(get(Latency::DecryptedToParsed).count, 0, "out of order: not recorded");
        assert_eq!(get(Latency::ParsedToDelivered).sum_ns, 260);
        assert_eq!((get(Latency::ArrivalToDelivered).count, get(Latency::ArrivalToDelivered).max_ns), (1, 300));
        drop(s);
        drop(dir);
        let _ = std::fs::remove_dir_all(ShmDir::path_for(&name));
    }
}

//! The connection state machine.

use super::reorder::ReorderBuffer;
use super::seq::{dist, ge, gt, in_window, le, lt};
use crate::config;
use crate::error::Error;
use crate::wire::{
    emit_tcp_frame_in_place, flags, frame, parse_tcp_frame, MacAddr, TcpFrameRepr, TcpOptionsRepr,
    TcpRepr, TcpSegment, WireError,
};
use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Connection knobs. Times are in microseconds.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub local_mac: MacAddr,
    /// Next hop's MAC (the peer or the gateway).
    pub remote_mac: MacAddr,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// MSS we announce (default: `config::TCP_MSS`, from the path MTU).
    pub mss: u16,
    /// Largest receive window we will ever advertise; picks our window scale.
    /// Default 4 MiB (scale 7).
    pub rcv_buf_max: u32,
    /// Offer window scaling (default true).
    pub window_scale: bool,
    /// Offer RFC 7323 timestamps (default false: 12 bytes per segment, no PAWS here).
    pub timestamps: bool,
    /// Offer SACK (RFC 2018, default true): our pure ACKs then carry SACK blocks
    /// describing the out-of-order store. SACK blocks the peer sends are ignored.
    pub sack: bool,
    /// ACK after this many in-order segments (design §5.2: 8).
    pub ack_every_segments: u32,
    /// ... or this long after the first unacknowledged one (design §5.2: 100 µs).
    pub ack_delay_us: u64,
    /// RTO floor (RFC 6298 says 1 s; datacenters want less). Default 200 ms.
    pub rto_min_us: u64,
    /// RTO ceiling. Default 60 s.
    pub rto_max_us: u64,
    /// RTO before any RTT sample, also the first SYN timeout. Default 1 s.
    pub rto_initial_us: u64,
    /// SYN retransmissions before giving up (total tries = this + 1). Default 6.
    pub syn_retries: u32,
    /// Consecutive RTO retransmissions of the same data before giving up. Default 10.
    pub max_retransmits: u32,
    /// Duplicate ACKs that trigger a fast retransmit. Default 3.
    pub dupack_threshold: u32,
    /// Out-of-order store: bytes (arena allocated once). Default 1 MiB; data beyond it
    /// is dropped (and still duplicate-ACKed).
    pub reorder_bytes: usize,
    /// Out-of-order store: disjoint holes tracked. Default 64.
    pub reorder_segments: usize,
    /// Unacknowledged data segments (frames) we may hold. Default `config::MSG_FRAMES`.
    pub max_in_flight_segments: usize,
    /// TIME_WAIT length. Default 0: a client on a random, reserved port skips it.
    pub time_wait_us: u64,
    /// Answer a peer FIN with our own FIN at once (default true).
    pub close_on_peer_fin: bool,
    /// Verify IPv4 and TCP checksums in `on_frame` (default true).
    pub verify_checksums: bool,
    /// Challenge ACKs (RFC 5961: a SYN, a RST off RCV.NXT, an ACK outside
    /// SND.UNA - MaxSndWnd ..= SND.NXT) sent at most this many times per
    /// `challenge_ack_interval_us`; the rest are dropped and counted in
    /// `TcpStats::challenge_acks_suppressed`. Default 10. `u32::MAX` = no limit.
    pub challenge_ack_limit: u32,
    /// The window of `challenge_ack_limit`. Default 1 s (RFC 5961 §7 speaks of a
    /// per-second limit). 0 = no limit.
    pub challenge_ack_interval_us: u64,
    pub ttl: u8,
}

impl TcpConfig {
    pub fn new(
        local_mac: MacAddr,
        remote_mac: MacAddr,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Self {
        TcpConfig {
            local_mac,
            remote_mac,
            local,
            remote,
            mss: config::TCP_MSS.min(u16::MAX as usize) as u16,
            rcv_buf_max: 4 << 20,
            window_scale: true,
            timestamps: false,
            sack: true,
            ack_every_segments: 8,
            ack_delay_us: 100,
            rto_min_us: 200_000,
            rto_max_us: 60_000_000,
            rto_initial_us: 1_000_000,
            syn_retries: 6,
            max_retransmits: 10,
            dupack_threshold: 3,
            reorder_bytes: 1 << 20,
            reorder_segments: 64,
            max_in_flight_segments: config::MSG_FRAMES,
            time_wait_us: 0,
            close_on_peer_fin: true,
            verify_checksums: true,
            challenge_ack_limit: 10,
            challenge_ack_interval_us: 1_000_000,
            ttl: 64,
        }
    }
}

/// RFC 9293 states (no LISTEN / SYN-RECEIVED: client only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    SynSent,
    Established,
    FinWait1,
    FinWait2,
    Closing,
    TimeWait,
    CloseWait,
    LastAck,
}

/// Why the connection ended. `Display` gives the one-line message for users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both FINs exchanged; `by_peer` when the peer closed first.
    Normal {
        by_peer: bool,
        remote: SocketAddrV4,
    },
    ResetByPeer {
        remote: SocketAddrV4,
    },
    Refused {
        remote: SocketAddrV4,
    },
    SynTimeout {
        remote: SocketAddrV4,
        tries: u32,
    },
    RetransmitTimeout {
        remote: SocketAddrV4,
        tries: u32,
    },
    /// `abort()` was called.
    Aborted,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Normal { by_peer: true, remote } => write!(f, "connection closed by peer {remote}"),
            CloseReason::Normal { by_peer: false, remote } => write!(f, "connection to {remote} closed"),
            CloseReason::ResetByPeer { remote } => write!(f, "connection reset by {remote}"),
            CloseReason::Refused { remote } => write!(f, "connection refused by {remote}"),
            CloseReason::SynTimeout { remote, tries } => {
                write!(f, "connection timed out (no SYN-ACK from {remote} after {tries} tries)")
            }
            CloseReason::RetransmitTimeout { remote, tries } => write!(
                f,
                "connection timed out (data to {remote} unacknowledged after {tries} retransmissions)"
            ),
            CloseReason::Aborted => write!(f, "connection aborted locally"),
        }
    }
}

impl CloseReason {
    /// True for endings that are not an orderly close.
    pub fn is_error(&self) -> bool {
        !matches!(self, CloseReason::Normal { .. })
    }
    pub fn to_error(&self) -> Error {
        match self {
            CloseReason::Normal { .. } => Error::Closed(self.to_string()),
            CloseReason::ResetByPeer { .. } => Error::Reset(self.to_string()),
            _ => Error::Net(self.to_string()),
        }
    }
}

/// Things the caller should know about, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Established,
    /// The peer sent FIN: no more data will arrive.
    PeerFin,
    Closed(CloseReason),
}

/// A segment to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// No payload (SYN, ACK, FIN, RST, window probe): build it into an ACK-pool frame with
    /// [`Connection::emit_control`].
    Control(TcpRepr),
    /// Send again the data frame the caller registered as `handle` (bytes
    /// `seq..seq+len`). Call [`Connection::refresh_data_frame`] on it first, and only
    /// once the frame's previous transmission has completed (completion ring).
    Retransmit { handle: u32, seq: u32, len: u32 },
}

/// The kinds of pure ACK `poll_transmit` hands out (a deferred one is owed again as
/// the same kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PureAck {
    Plain,
    Duplicate,
    Probe,
}

/// What `on_frame` made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxVerdict {
    /// Ours; processed.
    Accepted,
    /// A well-formed frame for someone else (ARP, other flow, other protocol).
    NotOurs,
    /// Dropped: malformed or bad checksum.
    Malformed(WireError),
}

/// Counters; plain `Copy` data the stats region can copy as is.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    pub segs_in: u64,
    pub segs_out: u64,
    /// In-order payload bytes delivered to the caller.
    pub bytes_in: u64,
    /// New payload bytes sent (retransmissions excluded).
    pub bytes_out: u64,
    pub bytes_acked: u64,
    /// All retransmitted segments (data, FIN).
    pub retransmits: u64,
    pub bytes_retransmitted: u64,
    pub rto_expirations: u64,
    pub fast_retransmits: u64,
    /// NewReno-style: retransmits triggered by a partial ACK during recovery.
    pub partial_ack_retransmits: u64,
    pub syn_retransmits: u64,
    pub dup_acks_sent: u64,
    pub dup_acks_received: u64,
    /// Segments that carried only already-received data.
    pub dup_segments_received: u64,
    /// Segments partially overlapping received data (trimmed).
    pub partial_overlaps_trimmed: u64,
    pub ooo_segments_buffered: u64,
    pub ooo_segments_dropped: u64,
    pub ooo_bytes_stitched: u64,
    pub acks_sent: u64,
    /// Pure ACKs the caller had no frame for and handed back ([`Connection::defer_ack`]).
    pub acks_deferred: u64,
    pub window_updates_sent: u64,
    pub zero_windows_advertised: u64,
    pub zero_window_probes: u64,
    /// Challenge ACKs sent (RFC 5961 §3, §4, §5), within the rate limit.
    pub challenge_acks: u64,
    pub rst_ignored: u64,
    /// ACKs for data we never sent, or far too old (RFC 5961 §5).
    pub bad_acks: u64,
    pub malformed: u64,
    pub not_ours: u64,
    /// Largest window (bytes, scaled) the peer offered.
    pub peer_window_max: u64,
    pub srtt_us: u64,
    pub rto_us: u64,
    /// Challenge ACKs not sent because of `challenge_ack_limit` (RFC 5961 §7). A steady
    /// count means someone is sending forged or broken segments at us.
    pub challenge_acks_suppressed: u64,
}

#[derive(Debug, Clone, Copy)]
struct TxEntry {
    seq: u32,
    len: u32,
    handle: u32,
}

/// A TCP client connection. See the module docs for the calling loop.
pub struct Connection {
    cfg: TcpConfig,
    state: State,
    now: u64,

    // Send side.
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// Peer's window in bytes (already scaled).
    snd_wnd: u32,
    snd_wl1: u32,
    snd_wl2: u32,
    max_snd_wnd: u32,
    snd_scale: u8,
    peer_mss: u16,
    /// Largest payload per segment: min(peer MSS, our MSS) minus option bytes.
    eff_mss: u32,
    rtx: VecDeque<TxEntry>,
    acked_handles: VecDeque<u32>,
    fin_queued: bool,
    fin_sent: bool,
    fin_seq: u32,

    // Receive side.
    irs: u32,
    rcv_nxt: u32,
    /// Right edge of the window we last advertised; never moves left.
    adv_right: u32,
    rcv_scale: u8,
    rx_space: u32,
    peer_fin: Option<u32>,
    reorder: ReorderBuffer,

    // Options.
    ts_enabled: bool,
    sack_enabled: bool,
    ts_recent: u32,
    ts_offset: u32,

    // ACK policy.
    unacked_segs: u32,
    ack_deadline: Option<u64>,
    ack_now: bool,
    dup_acks_owed: u32,
    /// What the last pure ACK from `poll_transmit` was, for [`Connection::defer_ack`].
    last_pure_ack: PureAck,
    /// Challenge-ACK rate limit: start of the current window and ACKs sent in it.
    challenge_window_start: u64,
    challenge_window_sent: u32,

    // Timers and recovery.
    srtt: Option<u64>,
    rttvar: u64,
    rto: u64,
    rto_deadline: Option<u64>,
    retries: u32,
    rtt_probe: Option<(u32, u64)>,
    dup_acks: u32,
    in_recovery: bool,
    recover: u32,
    rtx_pending: bool,
    rtx_is_fast: bool,
    persist_deadline: Option<u64>,
    persist_backoff: u32,
    probe_pending: bool,
    syn_tries: u32,
    syn_deadline: Option<u64>,
    syn_pending: bool,
    syn_sent_at: u64,
    rst_pending: Option<TcpRepr>,
    time_wait_deadline: Option<u64>,

    ip_ident: u16,
    events: VecDeque<Event>,
    close_reason: Option<CloseReason>,
    stats: TcpStats,
}

const EVENT_CAP: usize = 16;
const TS_OPT_LEN: u32 = 12;

impl Connection {
    /// Allocate everything the connection will ever need (reorder arena, queues).
    pub fn new(cfg: TcpConfig) -> crate::Result<Self> {
        if cfg.mss < 64 {
            return Err(Error::Config(format!("TCP MSS {} is too small", cfg.mss)));
        }
        if cfg.max_in_flight_segments == 0
            || cfg.ack_every_segments == 0
            || cfg.dupack_threshold == 0
        {
            return Err(Error::Config(
                "TCP: in-flight segments, ACK batch and dup-ACK threshold must be > 0".into(),
            ));
        }
        let rcv_buf_max = cfg.rcv_buf_max.clamp(1024, 1 << 30);
        let mut rcv_scale = 0u8;
        if cfg.window_scale {
            while rcv_scale < 14 && (rcv_buf_max >> rcv_scale) > u16::MAX as u32 {
                rcv_scale += 1;
            }
        }
        let reorder = ReorderBuffer::new(cfg.reorder_bytes.max(1), cfg.reorder_segments);
        let inflight = cfg.max_in_flight_segments;
        let rto = cfg.rto_initial_us.clamp(cfg.rto_min_us, cfg.rto_max_us);
        Ok(Connection {
            state: State::Closed,
            now: 0,
            iss: 0,
            snd_una: 0,
            snd_nxt: 0,
            snd_wnd: 0,
            snd_wl1: 0,
            snd_wl2: 0,
            max_snd_wnd: 0,
            snd_scale: 0,
            peer_mss: 536,
            eff_mss: 536,
            rtx: VecDeque::with_capacity(inflight),
            acked_handles: VecDeque::with_capacity(inflight),
            fin_queued: false,
            fin_sent: false,
            fin_seq: 0,
            irs: 0,
            rcv_nxt: 0,
            adv_right: 0,
            rcv_scale,
            rx_space: rcv_buf_max,
            peer_fin: None,
            reorder,
            ts_enabled: false,
            sack_enabled: false,
            ts_recent: 0,
            ts_offset: 0,
            unacked_segs: 0,
            ack_deadline: None,
            ack_now: false,
            dup_acks_owed: 0,
            last_pure_ack: PureAck::Plain,
            challenge_window_start: 0,
            challenge_window_sent: 0,
            srtt: None,
            rttvar: 0,
            rto,
            rto_deadline: None,
            retries: 0,
            rtt_probe: None,
            dup_acks: 0,
            in_recovery: false,
            recover: 0,
            rtx_pending: false,
            rtx_is_fast: false,
            persist_deadline: None,
            persist_backoff: 0,
            probe_pending: false,
            syn_tries: 0,
            syn_deadline: None,
            syn_pending: false,
            syn_sent_at: 0,
            rst_pending: None,
            time_wait_deadline: None,
            ip_ident: 0,
            events: VecDeque::with_capacity(EVENT_CAP),
            close_reason: None,
            stats: TcpStats {
                rto_us: rto,
                ..TcpStats::default()
            },
            cfg: TcpConfig { rcv_buf_max, ..cfg },
        })
    }

    /// Active open with a random ISN from the kernel. The SYN comes out of
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn connect(&mut self, now: u64) -> crate::Result<()> {
        let isn = super::random_u32()?;
        let ts = super::random_u32()?;
        self.connect_with_isn(now, isn, ts)
    }

    /// Active open with a chosen ISN and timestamp offset (deterministic tests).
    pub fn connect_with_isn(&mut self, now: u64, isn: u32, ts_offset: u32) -> crate::Result<()> {
        if self.state != State::Closed || self.close_reason.is_some() {
            return Err(Error::Net(
                "connect() on a connection that was already used".into(),
            ));
        }
        self.now = now;
        self.iss = isn;
        self.snd_una = isn;
        self.snd_nxt = isn.wrapping_add(1);
        self.ts_offset = ts_offset;
        self.state = State::SynSent;
        self.syn_pending = true;
        self.syn_tries = 0;
        Ok(())
    }

    // ----------------------------------------------------------------- accessors

    pub fn state(&self) -> State {
        self.state
    }
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }
    /// True once nothing more will happen (closed, or TIME_WAIT over).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && self.close_reason.is_some()
    }
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }
    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }
    pub fn config(&self) -> &TcpConfig {
        &self.cfg
    }
    /// Largest payload per data segment (min of both MSS, minus option bytes). Size
    /// TLS records with this, not with `config::TCP_MSS`.
    pub fn max_segment_payload(&self) -> usize {
        self.eff_mss as usize
    }
    /// Peer MSS from the SYN-ACK (536 if absent).
    pub fn peer_mss(&self) -> u16 {
        self.peer_mss
    }
    /// Peer's current window in bytes (scaled).
    pub fn peer_window(&self) -> u32 {
        self.snd_wnd
    }
    /// Shift applied to the peer's window field (0 if scaling not negotiated).
    pub fn peer_window_scale(&self) -> u8 {
        self.snd_scale
    }
    /// Shift we apply to the windows we advertise.
    pub fn our_window_scale(&self) -> u8 {
        self.rcv_scale
    }
    pub fn timestamps_enabled(&self) -> bool {
        self.ts_enabled
    }
    /// SACK negotiated (we then send SACK blocks on pure ACKs).
    pub fn sack_enabled(&self) -> bool {
        self.sack_enabled
    }
    pub fn iss(&self) -> u32 {
        self.iss
    }
    pub fn snd_una(&self) -> u32 {
        self.snd_una
    }
    pub fn snd_nxt(&self) -> u32 {
        self.snd_nxt
    }
    pub fn rcv_nxt(&self) -> u32 {
        self.rcv_nxt
    }
    /// Bytes sent and not yet acknowledged.
    pub fn bytes_in_flight(&self) -> u32 {
        self.snd_nxt.wrapping_sub(self.snd_una)
    }
    /// Data frames held for retransmission.
    pub fn frames_in_flight(&self) -> usize {
        self.rtx.len()
    }
    /// Current retransmission timeout (µs).
    pub fn rto_us(&self) -> u64 {
        self.rto
    }
    /// Bytes held in the out-of-order store.
    pub fn ooo_bytes(&self) -> usize {
        self.reorder.buffered_bytes()
    }
    /// Where a data segment's payload starts in its frame (Ethernet + IPv4 + TCP headers).
    pub fn payload_offset(&self) -> usize {
        frame::tcp_frame_header_len(&TcpRepr {
            options: self.data_options(0),
            ..TcpRepr::default()
        })
    }

    // ----------------------------------------------------------------- receive

    /// Parse a whole Ethernet frame, check it belongs to this flow, verify checksums
    /// (if configured) and process it. In-order payload is passed to `deliver` (slices
    /// of `frame`, or of the reorder store when a gap fills), in stream order.
    pub fn on_frame<F: FnMut(&[u8])>(&mut self, now: u64, frame: &[u8], deliver: F) -> RxVerdict {
        let f = match parse_tcp_frame(frame, self.cfg.verify_checksums) {
            Ok(f) => f,
            Err(WireError::WrongEtherType | WireError::WrongProtocol) => {
                self.stats.not_ours += 1;
                return RxVerdict::NotOurs;
            }
            Err(e) => {
                self.stats.malformed += 1;
                return RxVerdict::Malformed(e);
            }
        };
        if f.ip.src() != *self.cfg.remote.ip()
            || f.ip.dst() != *self.cfg.local.ip()
            || f.tcp.src_port() != self.cfg.remote.port()
            || f.tcp.dst_port() != self.cfg.local.port()
        {
            self.stats.not_ours += 1;
            return RxVerdict::NotOurs;
        }
        match self.on_segment(now, &f.tcp, deliver) {
            Ok(()) => RxVerdict::Accepted,
            Err(e) => RxVerdict::Malformed(e),
        }
    }

    /// Process one segment of this flow (addresses, ports and checksum already checked
    /// by the caller). See [`on_frame`](Self::on_frame).
    pub fn on_segment<F: FnMut(&[u8])>(
        &mut self,
        now: u64,
        seg: &TcpSegment<&[u8]>,
        mut deliver: F,
    ) -> Result<(), WireError> {
        self.now = now;
        let opts = match TcpOptionsRepr::parse(seg.options()) {
            Ok(o) => o,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        self.stats.segs_in += 1;
        match self.state {
            State::Closed => Ok(()),
            State::SynSent => {
                self.on_syn_sent(now, seg, &opts);
                Ok(())
            }
            _ => {
                self.on_synchronized(now, seg, &opts, &mut deliver);
                Ok(())
            }
        }
    }

    fn on_syn_sent(&mut self, now: u64, seg: &TcpSegment<&[u8]>, opts: &TcpOptionsRepr) {
        let ack_ok = seg.has_ack() && seg.ack() == self.snd_nxt;
        if seg.has_ack() && !ack_ok {
            if !seg.rst() {
                // RFC 9293 3.10.7.3: <SEQ=SEG.ACK><CTL=RST>.
                self.rst_pending = Some(TcpRepr {
                    src_port: self.cfg.local.port(),
                    dst_port: self.cfg.remote.port(),
                    seq: seg.ack(),
                    ack: 0,
                    flags: flags::RST,
                    window: 0,
                    options: TcpOptionsRepr::default(),
                });
            }
            return;
        }
        if seg.rst() {
            if ack_ok {
                self.enter_closed(CloseReason::Refused {
                    remote: self.cfg.remote,
                });
            } else {
                self.stats.rst_ignored += 1;
            }
            return;
        }
        if !seg.syn() || !ack_ok {
            return; // simultaneous open is not supported
        }
        // SYN-ACK.
        self.irs = seg.seq();
        self.rcv_nxt = self.irs.wrapping_add(1);
        self.snd_una = seg.ack();
        self.peer_mss = opts.mss.unwrap_or(536).max(64);
        match opts.window_scale {
            Some(s) if self.cfg.window_scale => self.snd_scale = s.min(14),
            _ => {
                self.snd_scale = 0;
                self.rcv_scale = 0;
            }
        }
        self.ts_enabled = self.cfg.timestamps && opts.timestamps.is_some();
        self.sack_enabled = self.cfg.sack && opts.sack_permitted;
        if let Some((v, _)) = opts.timestamps {
            self.ts_recent = v;
        }
        let mss = self.peer_mss.min(self.cfg.mss) as u32;
        self.eff_mss = mss - if self.ts_enabled { TS_OPT_LEN } else { 0 };
        // The window in a SYN is never scaled.
        self.snd_wnd = seg.window() as u32;
        self.max_snd_wnd = self.snd_wnd;
        self.stats.peer_window_max = self.snd_wnd as u64;
        self.snd_wl1 = seg.seq();
        self.snd_wl2 = seg.ack();
        // Window we offered in the SYN.
        self.adv_right = self.rcv_nxt.wrapping_add(self.syn_window() as u32);
        if self.syn_tries == 1 {
            self.rtt_sample(now.saturating_sub(self.syn_sent_at));
        }
        self.syn_deadline = None;
        self.syn_pending = false;
        self.retries = 0;
        self.state = State::Established;
        self.push_event(Event::Established);
        self.ack_now = true;
        self.update_persist(now);
    }

    fn on_synchronized<F: FnMut(&[u8])>(
        &mut self,
        now: u64,
        seg: &TcpSegment<&[u8]>,
        opts: &TcpOptionsRepr,
        deliver: &mut F,
    ) {
        let seq = seg.seq();
        let payload = seg.payload_ref();
        let seg_len = seg.seq_len();
        let rcv_wnd = self.rcv_wnd();

        // RFC 5961 §3: RST must match rcv_nxt exactly; in-window -> challenge ACK.
        if seg.rst() {
            if seq == self.rcv_nxt {
                if self.state == State::TimeWait {
                    self.state = State::Closed;
                    self.time_wait_deadline = None;
                } else {
                    self.enter_closed(CloseReason::ResetByPeer {
                        remote: self.cfg.remote,
                    });
                }
            } else if in_window(seq, self.rcv_nxt, rcv_wnd.max(1)) {
                self.challenge_ack();
            } else {
                self.stats.rst_ignored += 1;
            }
            return;
        }
        // RFC 5961 §4: any SYN in a synchronized state -> challenge ACK. (This is also
        // the ACK a peer that lost our handshake ACK needs.)
        if seg.syn() {
            self.challenge_ack();
            return;
        }

        let acceptable = if seg_len == 0 {
            if rcv_wnd == 0 {
                seq == self.rcv_nxt
            } else {
                in_window(seq, self.rcv_nxt, rcv_wnd)
            }
        } else if rcv_wnd == 0 {
            false
        } else {
            in_window(seq, self.rcv_nxt, rcv_wnd)
                || in_window(seq.wrapping_add(seg_len - 1), self.rcv_nxt, rcv_wnd)
        };
        if !acceptable {
            // Duplicate (retransmitted old data), beyond the window, or a zero-window
            // probe: always answer with an ACK (a duplicate ACK for the sender).
            if seg_len > 0 && lt(seq.wrapping_add(seg_len), self.rcv_nxt.wrapping_add(1)) {
                self.stats.dup_segments_received += 1;
            }
            // Zero-window probes and data at rcv_nxt with a closed window still carry
            // a valid ACK and window: use them.
            if seq == self.rcv_nxt && seg.has_ack() {
                let _ = self.process_ack(now, seg);
            }
            self.dup_acks_owed += 1;
            return;
        }
        if !seg.has_ack() {
            return;
        }
        if !self.process_ack(now, seg) {
            return;
        }
        if self.state == State::Closed {
            return;
        }
        if self.ts_enabled {
            if let Some((v, _)) = opts.timestamps {
                if le(seq, self.rcv_nxt) {
                    self.ts_recent = v;
                }
            }
        }

        // Text.
        let owed_before = self.dup_acks_owed;
        let accepts_data = matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        );
        if accepts_data && !payload.is_empty() {
            self.process_data(now, seq, payload, deliver);
        }

        // FIN.
        if seg.fin() {
            let fin_seq = seq.wrapping_add(payload.len() as u32);
            if fin_seq == self.rcv_nxt {
                self.accept_fin(now);
            } else if gt(fin_seq, self.rcv_nxt) {
                self.peer_fin = Some(fin_seq);
                if self.dup_acks_owed == owed_before {
                    self.dup_acks_owed += 1;
                }
            }
        }
    }

    /// Returns false when the segment must be dropped.
    fn process_ack(&mut self, now: u64, seg: &TcpSegment<&[u8]>) -> bool {
        let ack = seg.ack();
        let seq = seg.seq();
        if gt(ack, self.snd_nxt) {
            // Acknowledges something never sent: ACK and drop (RFC 9293 3.10.7.4). RFC
            // 5961 §5.2 folds this into its acceptable range, so the ACK is a challenge
            // ACK and shares its rate limit: otherwise a flood of such segments would
            // get one ACK each.
            self.stats.bad_acks += 1;
            self.challenge_ack();
            return false;
        }
        if lt(ack, self.snd_una.wrapping_sub(self.max_snd_wnd)) {
            // RFC 5961 §5.2: far too old.
            self.stats.bad_acks += 1;
            self.challenge_ack();
            return false;
        }
        let wnd = (seg.window() as u32) << self.snd_scale;
        // RFC 9293 §3.10.7.4: only an acceptable ACK (SND.UNA =< SEG.ACK =< SND.NXT; the
        // upper bound was checked above) may move the send window. An old duplicate ACK,
        // or a blind injection with an in-window SEQ and a stale ACK, passes the WL1/WL2
        // test below whenever its SEQ is newer than WL1, and would then shrink (stall
        // us) or grow (make us overrun the peer) the window. Its text is still processed.
        let acceptable_ack = ge(ack, self.snd_una);
        if gt(ack, self.snd_una) {
            self.on_new_ack(now, ack);
            if self.state == State::Closed {
                return false;
            }
        } else if ack == self.snd_una
            && seg.payload().is_empty()
            && !seg.fin()
            && self.snd_nxt != self.snd_una
            && wnd == self.snd_wnd
        {
            // RFC 5681 duplicate ACK. The count is not capped.
            self.dup_acks = self.dup_acks.saturating_add(1);
            self.stats.dup_acks_received += 1;
            if self.dup_acks == self.cfg.dupack_threshold && !self.in_recovery {
                self.in_recovery = true;
                self.recover = self.snd_nxt;
                self.rtx_pending = true;
                self.rtx_is_fast = true;
                self.rtt_probe = None;
            }
        }
        // Window update (RFC 9293 SND.WL1/WL2 rule).
        if acceptable_ack
            && (lt(self.snd_wl1, seq) || (self.snd_wl1 == seq && le(self.snd_wl2, ack)))
        {
            if wnd == 0 {
                // The peer is alive and answering with a closed window: retransmissions
                // of data beyond it must not count toward giving up.
                self.retries = 0;
            }
            self.snd_wnd = wnd;
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
            if wnd > self.max_snd_wnd {
                self.max_snd_wnd = wnd;
                self.stats.peer_window_max = wnd as u64;
            }
        }
        self.update_persist(now);
        true
    }

    fn on_new_ack(&mut self, now: u64, ack: u32) {
        let acked = ack.wrapping_sub(self.snd_una);
        self.snd_una = ack;
        self.stats.bytes_acked += acked as u64;
        while let Some(e) = self.rtx.front() {
            if le(e.seq.wrapping_add(e.len), ack) {
                self.acked_handles.push_back(e.handle);
                self.rtx.pop_front();
            } else {
                break;
            }
        }
        if let Some((end, t)) = self.rtt_probe {
            if ge(ack, end) {
                self.rtt_probe = None;
                self.rtt_sample(now.saturating_sub(t));
            }
        }
        // New data acknowledged: forget the backoff (RFC 6298 5.7 / Karn).
        self.retries = 0;
        self.rto = self.computed_rto();
        self.dup_acks = 0;
        if self.in_recovery {
            if lt(ack, self.recover) {
                // Partial ACK: the next hole is lost too; resend it now.
                self.rtx_pending = true;
                self.rtx_is_fast = false;
                self.stats.partial_ack_retransmits += 1;
            } else {
                self.in_recovery = false;
                self.rtx_pending = false;
            }
        } else {
            self.rtx_pending = false;
        }
        self.rto_deadline = if self.snd_una == self.snd_nxt {
            None
        } else {
            Some(now.saturating_add(self.rto))
        };

        if self.fin_sent && gt(ack, self.fin_seq) {
            match self.state {
                State::FinWait1 => self.state = State::FinWait2,
                State::Closing => self.enter_time_wait(now, false),
                State::LastAck => self.enter_closed(CloseReason::Normal {
                    by_peer: true,
                    remote: self.cfg.remote,
                }),
                _ => {}
            }
        }
    }

    fn process_data<F: FnMut(&[u8])>(
        &mut self,
        now: u64,
        seq: u32,
        payload: &[u8],
        deliver: &mut F,
    ) {
        let mut seq = seq;
        let mut data = payload;
        if lt(seq, self.rcv_nxt) {
            let skip = self.rcv_nxt.wrapping_sub(seq) as usize;
            if skip >= data.len() {
                return;
            }
            data = &data[skip..];
            seq = self.rcv_nxt;
            self.stats.partial_overlaps_trimmed += 1;
        }
        let room = dist(seq, self.adv_right) as usize;
        if data.len() > room {
            data = &data[..room];
        }
        if data.is_empty() {
            return;
        }
        if seq == self.rcv_nxt {
            let n = data.len();
            deliver(data);
            self.advance_rcv(n);
            self.reorder.advance(n);
            let mut stitched = 0usize;
            loop {
                let n = self.reorder.pop_front(|s| deliver(s));
                if n == 0 {
                    break;
                }
                stitched += n;
            }
            if stitched > 0 {
                self.advance_rcv(stitched);
                self.stats.ooo_bytes_stitched += stitched as u64;
            }
            if stitched > 0 || !self.reorder.is_empty() {
                // Filled (part of) a gap, or holes remain: ACK at once (RFC 5681 4.2).
                self.ack_now = true;
            } else {
                self.unacked_segs += 1;
                if self.unacked_segs == 1 {
                    self.ack_deadline = Some(now.saturating_add(self.cfg.ack_delay_us));
                }
                if self.unacked_segs >= self.cfg.ack_every_segments {
                    self.ack_now = true;
                }
            }
            if self.peer_fin == Some(self.rcv_nxt) {
                self.accept_fin(now);
            }
        } else {
            let off = seq.wrapping_sub(self.rcv_nxt) as usize;
            match self.reorder.insert(off, data) {
                Ok(_) => self.stats.ooo_segments_buffered += 1,
                Err(_) => self.stats.ooo_segments_dropped += 1,
            }
            // A duplicate ACK for every out-of-order segment.
            self.dup_acks_owed += 1;
        }
    }

    fn advance_rcv(&mut self, n: usize) {
        self.rcv_nxt = self.rcv_nxt.wrapping_add(n as u32);
        self.rx_space = self.rx_space.saturating_sub(n as u32);
        self.stats.bytes_in += n as u64;
    }

    fn accept_fin(&mut self, now: u64) {
        self.peer_fin = None;
        self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        self.ack_now = true;
        self.push_event(Event::PeerFin);
        match self.state {
            State::Established => {
                self.state = State::CloseWait;
                if self.cfg.close_on_peer_fin {
                    self.fin_queued = true;
                }
            }
            State::FinWait1 => {
                if self.fin_sent && gt(self.snd_una, self.fin_seq) {
                    self.enter_time_wait(now, false);
                } else {
                    self.state = State::Closing;
                }
            }
            State::FinWait2 => self.enter_time_wait(now, false),
            _ => {}
        }
    }

    /// Queue a challenge ACK, unless this connection already sent `challenge_ack_limit`
    /// of them in the current `challenge_ack_interval_us` (RFC 5961 §7). Anyone who can
    /// put our 4-tuple on the wire can trigger one (any SYN does, whatever its SEQ), so
    /// without a limit a flood, or a middlebox replaying segments, makes us send one ACK
    /// per segment. The limit is per connection, not per host as RFC 5961 §7 suggests: a
    /// shared counter is a side channel (CVE-2016-5696: an off-path attacker watching
    /// its own connection's challenge ACKs learns when a forged segment hit another
    /// connection's window), and one flooded flow could silence the others. Linux also
    /// moved to a per-socket limit. Two plain integers: nothing allocated.
    fn challenge_ack(&mut self) {
        let now = self.now;
        let start = self.challenge_window_start;
        // A clock that went backwards starts a new window instead of freezing this one.
        if now < start || now - start >= self.cfg.challenge_ack_interval_us {
            self.challenge_window_start = now;
            self.challenge_window_sent = 0;
        }
        if self.challenge_window_sent >= self.cfg.challenge_ack_limit {
            self.stats.challenge_acks_suppressed += 1;
            return;
        }
        self.challenge_window_sent += 1;
        self.stats.challenge_acks += 1;
        self.dup_acks_owed += 1;
    }

    // ----------------------------------------------------------------- window

    /// Tell the connection how many bytes the consumer downstream can take now (e.g.
    /// free space in the TLS input / MSG_INBOX). Delivered bytes are subtracted
    /// automatically until the next call. A window update is sent when space opens
    /// after the window was (nearly) closed.
    pub fn set_rx_space(&mut self, free_bytes: usize) {
        self.rx_space = free_bytes.min(u32::MAX as usize) as u32;
        if !self.is_synchronized() {
            return;
        }
        let cur = self.rcv_wnd();
        let want = self.rx_space.min(self.cfg.rcv_buf_max);
        let mss = self.eff_mss.max(1);
        if cur < mss && want >= cur.saturating_add(self.sws_min()) {
            if !self.ack_now {
                self.stats.window_updates_sent += 1;
            }
            self.ack_now = true;
        }
    }

    /// Window remaining to the right edge we advertised.
    fn rcv_wnd(&self) -> u32 {
        dist(self.rcv_nxt, self.adv_right)
    }

    fn sws_min(&self) -> u32 {
        (self.cfg.rcv_buf_max / 2).min(self.eff_mss.max(1))
    }

    fn syn_window(&self) -> u16 {
        self.rx_space.min(self.cfg.rcv_buf_max).min(u16::MAX as u32) as u16
    }

    /// The raw window field for an outgoing segment; moves the advertised right edge
    /// (never left; in steps of at least min(MSS, buffer/2) to avoid silly windows).
    fn window_field(&mut self) -> u16 {
        let cur = self.rcv_wnd();
        let want = self.rx_space.min(self.cfg.rcv_buf_max);
        let mut win = cur;
        if want > cur && want - cur >= self.sws_min() {
            win = want;
        }
        let s = self.rcv_scale as u32;
        // Round down; the acceptance edge (adv_right) still never moves left.
        let raw = (win >> s).min(u16::MAX as u32);
        let right = self.rcv_nxt.wrapping_add(raw << s);
        if gt(right, self.adv_right) {
            self.adv_right = right;
        }
        if raw == 0 {
            self.stats.zero_windows_advertised += 1;
        }
        raw as u16
    }

    // ----------------------------------------------------------------- send

    fn is_synchronized(&self) -> bool {
        !matches!(self.state, State::Closed | State::SynSent)
    }

    /// Bytes the peer's window (and our frame budget) lets us send right now. Send
    /// segments of at most [`max_segment_payload`](Self::max_segment_payload).
    pub fn send_capacity(&self) -> usize {
        if !matches!(self.state, State::Established | State::CloseWait) || self.fin_queued {
            return 0;
        }
        // Frames acknowledged but not yet collected with `pop_acked` still count: the
        // budget is the caller's frames, and this keeps both queues allocation-free.
        if self.rtx.len() + self.acked_handles.len() >= self.cfg.max_in_flight_segments {
            return 0;
        }
        self.snd_wnd.saturating_sub(self.bytes_in_flight()) as usize
    }

    /// Send one data segment whose payload the caller already wrote at
    /// `frame[payload_offset()..][..payload_len]`. Writes all headers and checksums,
    /// records `(seq, len, handle)` for retransmission, and returns the frame length.
    /// `handle` comes back from [`pop_acked`](Self::pop_acked) once the data is
    /// acknowledged (in any order relative to other pools' frames).
    pub fn send_data(
        &mut self,
        now: u64,
        frame: &mut [u8],
        payload_len: usize,
        handle: u32,
    ) -> crate::Result<usize> {
        self.now = now;
        if payload_len == 0 || payload_len > self.eff_mss as usize {
            return Err(Error::Config(format!(
                "TCP payload of {payload_len} bytes (must be 1..={})",
                self.eff_mss
            )));
        }
        if payload_len > self.send_capacity() {
            return Err(Error::WouldBlock);
        }
        let seq = self.snd_nxt;
        let n = self.write_data_frame(frame, seq, payload_len)?;
        self.snd_nxt = seq.wrapping_add(payload_len as u32);
        self.rtx.push_back(TxEntry {
            seq,
            len: payload_len as u32,
            handle,
        });
        self.stats.bytes_out += payload_len as u64;
        if self.rtt_probe.is_none() && !self.in_recovery {
            self.rtt_probe = Some((self.snd_nxt, now));
        }
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now.saturating_add(self.rto));
        }
        self.persist_deadline = None;
        Ok(n)
    }

    /// Rewrite the headers of a data frame being retransmitted (current ACK, window and
    /// timestamps; checksums). The payload must still be in place. Returns the frame
    /// length.
    pub fn refresh_data_frame(
        &mut self,
        frame: &mut [u8],
        seq: u32,
        len: u32,
    ) -> crate::Result<usize> {
        Ok(self.write_data_frame(frame, seq, len as usize)?)
    }

    fn write_data_frame(
        &mut self,
        frame: &mut [u8],
        seq: u32,
        len: usize,
    ) -> Result<usize, WireError> {
        let repr = self.make_repr(seq, flags::ACK | flags::PSH, self.data_options(self.now));
        let fr = self.frame_repr(repr);
        let n = emit_tcp_frame_in_place(frame, &fr, len)?;
        self.stats.segs_out += 1;
        self.note_ack_sent();
        Ok(n)
    }

    /// Build a control segment from [`Transmit::Control`] into `frame`; returns its length.
    pub fn emit_control(&mut self, seg: &TcpRepr, frame: &mut [u8]) -> crate::Result<usize> {
        let fr = self.frame_repr(*seg);
        Ok(emit_tcp_frame_in_place(frame, &fr, 0)?)
    }

    /// Handles of data frames that are now acknowledged (free them once their TX
    /// completion has also been seen). All remaining handles come out here when the
    /// connection closes.
    pub fn pop_acked(&mut self) -> Option<u32> {
        self.acked_handles.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Orderly close: a FIN goes out after the data already sent. No more `send_data`.
    pub fn close(&mut self, now: u64) {
        self.now = now;
        match self.state {
            State::SynSent => self.enter_closed(CloseReason::Aborted),
            State::Established | State::CloseWait => self.fin_queued = true,
            _ => {}
        }
    }

    /// Abort: send RST (if synchronized) and close at once.
    pub fn abort(&mut self, now: u64) {
        self.now = now;
        if self.is_synchronized() && self.state != State::TimeWait {
            self.rst_pending = Some(self.make_repr(
                self.snd_nxt,
                flags::RST | flags::ACK,
                TcpOptionsRepr::default(),
            ));
        }
        if self.close_reason.is_none() {
            self.enter_closed(CloseReason::Aborted);
        } else {
            self.state = State::Closed;
        }
    }

    // ----------------------------------------------------------------- timers / output

    /// The earliest time (µs) at which `poll_transmit` has timer work to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let ack = if self.unacked_segs > 0 {
            self.ack_deadline
        } else {
            None
        };
        [
            self.syn_deadline,
            self.rto_deadline,
            self.persist_deadline,
            ack,
            self.time_wait_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run expired timers (also done by `poll_transmit`).
    pub fn poll_timers(&mut self, now: u64) {
        self.now = now;
        if let Some(d) = self.syn_deadline {
            if now >= d && self.state == State::SynSent {
                if self.syn_tries > self.cfg.syn_retries {
                    self.enter_closed(CloseReason::SynTimeout {
                        remote: self.cfg.remote,
                        tries: self.syn_tries,
                    });
                    return;
                }
                self.syn_pending = true;
                self.syn_deadline = None;
            }
        }
        if let Some(d) = self.rto_deadline {
            if now >= d {
                if self.snd_una == self.snd_nxt {
                    self.rto_deadline = None;
                } else if self.retries >= self.cfg.max_retransmits {
                    let tries = self.retries;
                    self.rst_pending = Some(self.make_repr(
                        self.snd_nxt,
                        flags::RST | flags::ACK,
                        TcpOptionsRepr::default(),
                    ));
                    self.enter_closed(CloseReason::RetransmitTimeout {
                        remote: self.cfg.remote,
                        tries,
                    });
                    return;
                } else {
                    self.retries += 1;
                    self.stats.rto_expirations += 1;
                    self.rto = (self.rto.saturating_mul(2)).min(self.cfg.rto_max_us);
                    self.stats.rto_us = self.rto;
                    self.rto_deadline = Some(now.saturating_add(self.rto));
                    self.in_recovery = true;
                    self.recover = self.snd_nxt;
                    self.rtx_pending = true;
                    self.rtx_is_fast = false;
                    self.rtt_probe = None; // Karn
                    self.dup_acks = 0;
                }
            }
        }
        if let Some(d) = self.persist_deadline {
            if now >= d {
                self.probe_pending = true;
                self.persist_backoff = (self.persist_backoff + 1).min(30);
                self.persist_deadline = Some(now.saturating_add(self.persist_interval()));
            }
        }
        if self.unacked_segs > 0 {
            if let Some(d) = self.ack_deadline {
                if now >= d {
                    self.ack_now = true;
                }
            }
        }
    }

    /// The next segment to send, if any. Call until `None` each loop.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Transmit> {
        self.poll_timers(now);
        if let Some(r) = self.rst_pending.take() {
            self.stats.segs_out += 1;
            return Some(Transmit::Control(r));
        }
        match self.state {
            State::Closed => return None,
            State::SynSent => {
                if self.syn_pending {
                    self.syn_pending = false;
                    self.syn_tries += 1;
                    if self.syn_tries > 1 {
                        self.stats.syn_retransmits += 1;
                    }
                    self.syn_sent_at = now;
                    let base = self
                        .cfg
                        .rto_initial_us
                        .clamp(self.cfg.rto_min_us, self.cfg.rto_max_us);
                    let t = base
                        .saturating_mul(1u64 << self.syn_tries.saturating_sub(1).min(20))
                        .min(self.cfg.rto_max_us);
                    self.syn_deadline = Some(now.saturating_add(t));
                    self.stats.segs_out += 1;
                    return Some(Transmit::Control(self.syn_repr()));
                }
                return None;
            }
            _ => {}
        }
        if self.rtx_pending {
            self.rtx_pending = false;
            if let Some(e) = self.rtx.front().copied() {
                self.stats.retransmits += 1;
                self.stats.bytes_retransmitted += e.len as u64;
                if self.rtx_is_fast {
                    self.stats.fast_retransmits += 1;
                    self.rtx_is_fast = false;
                }
                if self.rto_deadline.is_none() {
                    self.rto_deadline = Some(now.saturating_add(self.rto));
                }
                return Some(Transmit::Retransmit {
                    handle: e.handle,
                    seq: e.seq,
                    len: e.len,
                });
            }
            if self.fin_sent && self.snd_una == self.fin_seq {
                self.stats.retransmits += 1;
                return Some(self.control(self.fin_seq, flags::FIN | flags::ACK));
            }
        }
        if self.fin_queued
            && !self.fin_sent
            && matches!(self.state, State::Established | State::CloseWait)
        {
            self.fin_sent = true;
            self.fin_seq = self.snd_nxt;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.state = if self.state == State::Established {
                State::FinWait1
            } else {
                State::LastAck
            };
            if self.rto_deadline.is_none() {
                self.rto_deadline = Some(now.saturating_add(self.rto));
            }
            self.persist_deadline = None;
            return Some(self.control(self.fin_seq, flags::FIN | flags::ACK));
        }
        if self.probe_pending {
            self.probe_pending = false;
            self.stats.zero_window_probes += 1;
            self.last_pure_ack = PureAck::Probe;
            // An already-acknowledged sequence number: the peer must answer with an ACK
            // carrying its current window.
            return Some(self.control(self.snd_una.wrapping_sub(1), flags::ACK));
        }
        if self.dup_acks_owed > 0 {
            self.dup_acks_owed -= 1;
            self.stats.dup_acks_sent += 1;
            self.last_pure_ack = PureAck::Duplicate;
            let t = self.control(self.snd_nxt, flags::ACK);
            return Some(t);
        }
        if self.ack_now {
            self.last_pure_ack = PureAck::Plain;
            return Some(self.control(self.snd_nxt, flags::ACK));
        }
        if self.state == State::TimeWait {
            if let Some(d) = self.time_wait_deadline {
                if now >= d {
                    self.time_wait_deadline = None;
                    self.state = State::Closed;
                }
            }
        }
        None
    }

    fn control(&mut self, seq: u32, fl: u8) -> Transmit {
        let mut opts = self.data_options(self.now);
        if self.sack_enabled && fl == flags::ACK && !self.reorder.is_empty() {
            let nxt = self.rcv_nxt;
            let sack = &mut opts.sack;
            self.reorder
                .sack_order(|s, e| sack.push(nxt.wrapping_add(s), nxt.wrapping_add(e)));
        }
        let r = self.make_repr(seq, fl, opts);
        self.stats.segs_out += 1;
        if fl & flags::ACK != 0 {
            self.note_ack_sent();
        }
        Transmit::Control(r)
    }

    /// The caller had no frame for the pure ACK `poll_transmit` just returned (`seg`):
    /// owe it again instead of losing it, and uncount it. A duplicate ACK stays owed as
    /// one (without SACK the sender counts them to fast-retransmit), a zero-window probe
    /// as a probe (the peer answers only an old sequence number); either way it goes
    /// with the newest ack number, window and SACK blocks once frames are back. A lost
    /// ACK would leave the sender to find the hole by its RTO.
    pub fn defer_ack(&mut self, seg: &TcpRepr) {
        debug_assert_eq!(seg.flags, flags::ACK, "only pure ACKs are deferred");
        self.stats.acks_sent = self.stats.acks_sent.saturating_sub(1);
        self.stats.segs_out = self.stats.segs_out.saturating_sub(1);
        self.stats.acks_deferred += 1;
        match self.last_pure_ack {
            PureAck::Probe if seg.seq == self.snd_una.wrapping_sub(1) => {
                self.stats.zero_window_probes = self.stats.zero_window_probes.saturating_sub(1);
                self.probe_pending = true;
            }
            PureAck::Duplicate => {
                self.stats.dup_acks_sent = self.stats.dup_acks_sent.saturating_sub(1);
                self.dup_acks_owed += 1;
            }
            _ => {}
        }
        // note_ack_sent cleared it; whichever ACK goes next satisfies it again.
        self.ack_now = true;
    }

    /// Any segment carrying our ACK satisfies the delayed-ACK policy. Owed duplicate
    /// ACKs are still sent as pure ACKs (a data segment is not a duplicate ACK).
    fn note_ack_sent(&mut self) {
        self.stats.acks_sent += 1;
        self.unacked_segs = 0;
        self.ack_deadline = None;
        self.ack_now = false;
    }

    fn syn_repr(&mut self) -> TcpRepr {
        let options = TcpOptionsRepr {
            mss: Some(self.cfg.mss),
            window_scale: if self.cfg.window_scale {
                Some(self.rcv_scale)
            } else {
                None
            },
            sack_permitted: self.cfg.sack,
            timestamps: if self.cfg.timestamps {
                Some((self.tsval(self.now), 0))
            } else {
                None
            },
            ..TcpOptionsRepr::default()
        };
        TcpRepr {
            src_port: self.cfg.local.port(),
            dst_port: self.cfg.remote.port(),
            seq: self.iss,
            ack: 0,
            flags: flags::SYN,
            window: self.syn_window(),
            options,
        }
    }

    fn data_options(&self, now: u64) -> TcpOptionsRepr {
        TcpOptionsRepr {
            timestamps: if self.ts_enabled {
                Some((self.tsval(now), self.ts_recent))
            } else {
                None
            },
            ..TcpOptionsRepr::default()
        }
    }

    fn tsval(&self, now: u64) -> u32 {
        self.ts_offset.wrapping_add((now / 1000) as u32)
    }

    fn make_repr(&mut self, seq: u32, fl: u8, options: TcpOptionsRepr) -> TcpRepr {
        let window = if fl & flags::RST != 0 {
            0
        } else {
            self.window_field()
        };
        TcpRepr {
            src_port: self.cfg.local.port(),
            dst_port: self.cfg.remote.port(),
            seq,
            ack: if fl & flags::ACK != 0 {
                self.rcv_nxt
            } else {
                0
            },
            flags: fl,
            window,
            options,
        }
    }

    fn frame_repr(&mut self, tcp: TcpRepr) -> TcpFrameRepr {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        TcpFrameRepr {
            src_mac: self.cfg.local_mac,
            dst_mac: self.cfg.remote_mac,
            src_ip: *self.cfg.local.ip(),
            dst_ip: *self.cfg.remote.ip(),
            ip_ident: self.ip_ident,
            ttl: self.cfg.ttl,
            tcp,
        }
    }

    fn persist_interval(&self) -> u64 {
        self.rto
            .saturating_mul(1u64 << self.persist_backoff.min(30))
            .min(self.cfg.rto_max_us)
    }

    fn update_persist(&mut self, now: u64) {
        let can_send =
            matches!(self.state, State::Established | State::CloseWait) && !self.fin_sent;
        // Window closed or too small for a full segment, nothing in flight to elicit an
        // ACK: probe so a lost window update cannot deadlock us.
        if can_send && self.snd_wnd < self.eff_mss && self.snd_una == self.snd_nxt {
            if self.persist_deadline.is_none() {
                self.persist_backoff = 0;
                self.persist_deadline = Some(now.saturating_add(self.persist_interval()));
            }
        } else {
            self.persist_deadline = None;
            self.persist_backoff = 0;
        }
    }

    fn rtt_sample(&mut self, r: u64) {
        // Clamp: a caller's clock jump must not overflow the estimator.
        let r = r.clamp(1, self.cfg.rto_max_us.max(1));
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (3 * self.rttvar + diff) / 4;
                self.srtt = Some((7 * s + r) / 8);
            }
        }
        self.rto = self.computed_rto();
        self.stats.srtt_us = self.srtt.unwrap_or(0);
        self.stats.rto_us = self.rto;
    }

    fn computed_rto(&self) -> u64 {
        match self.srtt {
            None => self.cfg.rto_initial_us,
            Some(s) => s + (4 * self.rttvar).max(1),
        }
        .clamp(self.cfg.rto_min_us, self.cfg.rto_max_us)
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= EVENT_CAP {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn release_all_frames(&mut self) {
        while let Some(e) = self.rtx.pop_front() {
            self.acked_handles.push_back(e.handle);
        }
    }

    fn clear_timers(&mut self) {
        self.syn_deadline = None;
        self.rto_deadline = None;
        self.persist_deadline = None;
        self.ack_deadline = None;
        self.unacked_segs = 0;
        self.rtx_pending = false;
        self.probe_pending = false;
        self.syn_pending = false;
        self.dup_acks_owed = 0;
        self.ack_now = false;
    }

    fn enter_closed(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.clear_timers();
        self.release_all_frames();
        if self.close_reason.is_none() {
            self.close_reason = Some(reason);
            self.push_event(Event::Closed(reason));
        }
    }

    fn enter_time_wait(&mut self, now: u64, by_peer: bool) {
        // Keep the pending ACK (for the peer's FIN); drop everything else.
        let ack_now = self.ack_now;
        self.clear_timers();
        self.ack_now = ack_now;
        self.release_all_frames();
        self.state = State::TimeWait;
        self.time_wait_deadline = Some(now.saturating_add(self.cfg.time_wait_us));
        if self.close_reason.is_none() {
            let r = CloseReason::Normal {
                by_peer,
                remote: self.cfg.remote,
            };
            self.close_reason = Some(r);
            self.push_event(Event::Closed(r));
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state)
            .field("local", &self.cfg.local)
            .field("remote", &self.cfg.remote)
            .field("snd_una", &self.snd_una)
            .field("snd_nxt", &self.snd_nxt)
            .field("snd_wnd", &self.snd_wnd)
            .field("rcv_nxt", &self.rcv_nxt)
            .field("rto", &self.rto)
            .finish()
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Connection>();
    let _ = Ipv4Addr::LOCALHOST;
}

//! The transport stage (design §5.2) and the seam every transport plugs into.
//!
//! The stage is generic over a [`Transport`]: a byte pipe that delivers decrypted
//! application bytes and encrypts what it is given. Two implementations are planned
//! (kernel TCP socket + OpenSSL; our TCP over AF_XDP rings + OpenSSL) plus the
//! [`super::SyntheticTransport`] test source. Everything WebSocket-shaped lives here,
//! not in the transports: the upgrade request/response, framing and masking of
//! MSG_OUTBOX records, PONG and CLOSE replies from the PONGS ring, the close
//! handshake's end.

use std::sync::{Arc, Mutex};

use super::websocket::op;
use super::{Progress, Stage};
use crate::error::{Error, Result};
use crate::ring::{Consumer, InboxWriter, OutboxKind, OutboxReader, PongFrame, FLAG_MORE};
use crate::stats::{Counter, DisconnectKind, DisconnectReason, State, StatsRegion};
use crate::ws::deflate::Deflater;
use crate::ws::{ClientHandshake, FrameBuilder, HandshakeStatus, OpCode, Upgrade};

/// Counters a transport keeps (copied into the stats region by the stage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub retransmits: u64,
    pub dup_acks: u64,
    pub drops: u64,
}

/// What a transport must implement to carry a pipeline: a non-blocking, ordered,
/// reliable, encrypted byte pipe. All methods are called from one stage (one thread or
/// process at a time) and must never block.
///
/// The stage calls, each loop: `drive` once; while `!is_established()` nothing else;
/// then `write` (WebSocket frames, already masked), `read` (into MSG_INBOX free space,
/// i.e. decrypt in place), and `shutdown` once at the end of a close handshake.
pub trait Transport: Send {
    /// "kernel", "xdp", "synthetic" (logs and errors).
    fn name(&self) -> &'static str;
    /// Advance set-up (TCP connect, TLS handshake) and background work (retransmit
    /// timers, delayed ACKs, flushing buffered ciphertext). Returns whether anything
    /// moved. An unrecoverable failure (refused, reset, certificate rejected, timeout of
    /// the transport's own) is an `Err` with a one-line reason.
    fn drive(&mut self, now_ns: u64) -> Result<bool>;
    /// TCP and TLS are up: application bytes can flow.
    fn is_established(&self) -> bool;
    /// Decrypt available application bytes into `buf`. `Ok(0)`: nothing now.
    /// `Err(Error::Closed(why))`: the peer ended the stream (TLS close_notify, FIN, RST).
    fn read(&mut self, buf: &mut [u8], now_ns: u64) -> Result<usize>;
    /// Encrypt and queue `data`; returns how many bytes were taken (0 when the send
    /// window or buffers are full: the stage retries the rest later).
    fn write(&mut self, data: &[u8], now_ns: u64) -> Result<usize>;
    /// Orderly end after the WebSocket close handshake (close_notify, FIN). Idempotent.
    fn shutdown(&mut self, now_ns: u64) -> Result<()>;
    /// Free bytes in MSG_INBOX (called every poll): a transport that owns its TCP
    /// advertises this as its receive window. Default: ignored (kernel sockets).
    fn rx_space(&mut self, _free: usize) {}
    /// Counters for the stats region.
    fn counters(&self) -> TransportCounters {
        TransportCounters::default()
    }
    /// Replace the connection with a fresh one to the same server (a reconnect): resolve
    /// the host again, a new socket or flow, a new TLS session that resumes the previous
    /// one when the server allows. The old connection is closed first. Afterwards the
    /// stage drives the new one as it did the first (`drive` until established, then the
    /// upgrade). The kernel transports block here up to their connect/handshake timeout.
    fn reconnect(&mut self, _now_ns: u64) -> Result<()> {
        Err(Error::Config(format!("the {} transport cannot reconnect", self.name())))
    }
    /// Did the current connection resume a TLS session (abbreviated handshake)?
    fn resumed(&self) -> bool {
        false
    }
    /// CLOCK_MONOTONIC ns when the newest bytes the last `read` returned arrived (the
    /// receive timestamp of the packet or `recv` that completed them). `None`: the
    /// transport does not know; the stage then uses the time of the read.
    fn arrival_ns(&self) -> Option<u64> {
        None
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn drive(&mut self, now_ns: u64) -> Result<bool> {
        (**self).drive(now_ns)
    }
    fn is_established(&self) -> bool {
        (**self).is_established()
    }
    fn read(&mut self, buf: &mut [u8], now_ns: u64) -> Result<usize> {
        (**self).read(buf, now_ns)
    }
    fn write(&mut self, data: &[u8], now_ns: u64) -> Result<usize> {
        (**self).write(data, now_ns)
    }
    fn shutdown(&mut self, now_ns: u64) -> Result<()> {
        (**self).shutdown(now_ns)
    }
    fn rx_space(&mut self, free: usize) {
        (**self).rx_space(free)
    }
    fn counters(&self) -> TransportCounters {
        (**self).counters()
    }
    fn reconnect(&mut self, now_ns: u64) -> Result<()> {
        (**self).reconnect(now_ns)
    }
    fn resumed(&self) -> bool {
        (**self).resumed()
    }
    fn arrival_ns(&self) -> Option<u64> {
        (**self).arrival_ns()
    }
}

/// A message sent after every (re)connect, before the connection is reported Connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    Text(String),
    Binary(Vec<u8>),
}

/// Reconnect, resubscribe and liveness of one connection (see [`TransportStage::with_feed`]).
#[derive(Clone)]
pub struct FeedOptions {
    pub reconnect: crate::feed::ReconnectPolicy,
    pub subscriptions: Vec<Subscription>,
    pub liveness: Option<crate::feed::LivenessConfig>,
    /// Jitter seed (production: random).
    pub seed: u64,
    /// To build a fresh upgrade request (a new key) for every connection.
    pub url: crate::ws::WsUrl,
    pub handshake: crate::ws::HandshakeConfig,
}

/// The feed state the stage keeps across connections.
struct Feed {
    opts: FeedOptions,
    backoff: crate::feed::Backoff,
    liveness: Option<crate::feed::Liveness>,
    /// The WebSocket stage's `frames` and `pongs_received` counters when last looked at:
    /// only their increments count as proof of life (never our sends, never a clock).
    seen_frames: u64,
    seen_pongs: u64,
    ping_due: bool,
    /// Connection generation (0 for the first).
    generation: u64,
}

enum Phase {
    /// Waiting for the transport; then sending the request and reading the response.
    Upgrading {
        hs: Box<ClientHandshake>,
        sent: usize,
    },
    /// Sending the subscriptions (index of the next one), then Connected.
    Subscribing { next: usize },
    Open,
    /// The connection was lost: the next attempt starts at `at_ns` (backoff).
    Waiting { at_ns: u64 },
    Done,
}

/// Bytes asked of the transport per read (one TLS record's plaintext at most 16 KiB).
const READ_CHUNK: usize = 16 * 1024 + 256;
/// Reads per poll (bounded work).
const READS_PER_POLL: usize = 8;
/// How long after the end of the stream the stage waits for a CLOSE to be parsed.
const EOF_GRACE_NS: u64 = 100_000_000;
/// Records framed per poll.
const WRITES_PER_POLL: usize = 32;

/// MSG_OUTBOX + PONGS -> frames -> transport; transport -> MSG_INBOX.
pub struct TransportStage<T: Transport> {
    t: T,
    stats: StatsRegion,
    inbox: InboxWriter,
    outbox: OutboxReader,
    pongs: Consumer<PongFrame>,
    phase: Phase,
    /// The frame being written (pre-allocated; never grows after start).
    tx: Vec<u8>,
    tx_off: usize,
    tx_len: usize,
    /// After `tx` is fully written: the close handshake is complete, shut down.
    finish_after_tx: Option<DisconnectReason>,
    close_sent: bool,
    sending_fragments: bool,
    /// A message sent in fragments was cut by a reconnect: its remaining pieces are
    /// dropped (the new connection never saw its start) up to its last one.
    dropping_fragments: bool,
    builder: FrameBuilder,
    /// The stream ended at this time, by a reset (true) or not, for this reason; finish
    /// after a grace period.
    eof: Option<(u64, bool, String)>,
    polls: u64,
    /// How long the close handshake may take once the state is Closing.
    close_timeout: std::time::Duration,
    /// When this stage first saw the state Closing (whoever set it: our close, the
    /// WebSocket stage after a protocol error or a server close, `Pipeline::close`).
    closing_since: Option<u64>,
    /// Reconnect / resubscribe / liveness (None: the pipeline ends with its connection).
    feed: Option<Feed>,
    /// Our own close (a MSG_OUTBOX close record) went out: a loss after it never
    /// reconnects.
    user_close_sent: bool,
    /// permessage-deflate negotiated: our compressor.
    deflater: Option<Deflater>,
    /// The message being sent in fragments is compressed.
    compressing: bool,
    /// Where a completed upgrade is recorded for `Pipeline::upgrade` (set-up runs in
    /// the caller's process, so the first one always lands there).
    upgrade_record: Option<Arc<Mutex<Option<Upgrade>>>>,
}

impl<T: Transport> TransportStage<T> {
    /// `max_frame` is the largest payload the stage will frame (MSG_OUTBOX's record
    /// limit); `handshake` holds the upgrade request to send and validates the answer;
    /// `close_timeout` bounds the close handshake (then the transport is shut anyway).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        t: T,
        handshake: ClientHandshake,
        inbox: InboxWriter,
        outbox: OutboxReader,
        pongs: Consumer<PongFrame>,
        stats: StatsRegion,
        max_frame: usize,
        close_timeout: std::time::Duration,
    ) -> Result<Self> {
        let offered = handshake.deflate_offer().is_some();
        Ok(TransportStage {
            t,
            stats,
            inbox,
            outbox,
            pongs,
            phase: Phase::Upgrading {
                hs: Box::new(handshake),
                sent: 0,
            },
            // Room for a compressed frame when permessage-deflate is offered.
            tx: vec![
                0;
                if offered { Deflater::bound(max_frame) } else { max_frame }
                    + crate::ws::frame::MAX_HEADER_LEN
            ],
            tx_off: 0,
            tx_len: 0,
            finish_after_tx: None,
            close_sent: false,
            sending_fragments: false,
            dropping_fragments: false,
            builder: FrameBuilder::new()?,
            eof: None,
            polls: 0,
            close_timeout,
            closing_since: None,
            feed: None,
            user_close_sent: false,
            deflater: None,
            compressing: false,
            upgrade_record: None,
        })
    }

    /// Record every completed upgrade (request, response, subprotocol) in `record`.
    pub fn with_upgrade_record(mut self, record: Arc<Mutex<Option<Upgrade>>>) -> Self {
        self.upgrade_record = Some(record);
        self
    }

    /// Reconnect on the losses `opts.reconnect` allows, send `opts.subscriptions` after
    /// every (re)connect before reporting Connected, and ping / watch liveness.
    pub fn with_feed(mut self, opts: FeedOptions) -> Result<Self> {
        let backoff = crate::feed::Backoff::new(opts.reconnect, opts.seed)
            .map_err(|e| Error::Config(e.to_string()))?;
        self.feed = Some(Feed {
            backoff,
            liveness: None,
            seen_frames: 0,
            seen_pongs: 0,
            ping_due: false,
            generation: self.stats.get(Counter::Generation),
            opts,
        });
        Ok(self)
    }

    pub fn transport(&self) -> &T {
        &self.t
    }

    fn frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) -> Result<()> {
        self.tx_len = self.builder.encode(opcode, fin, payload, &mut self.tx)?;
        self.tx_off = 0;
        Ok(())
    }

    /// Write what is left of the current frame. Returns whether it is all out.
    fn flush_tx(&mut self, now: u64) -> Result<bool> {
        while self.tx_off < self.tx_len {
            let n = self.t.write(&self.tx[self.tx_off..self.tx_len], now)?;
            if n == 0 {
                return Ok(false);
            }
            self.tx_off += n;
            self.stats.add(Counter::SentBytes, n as u64);
        }
        Ok(true)
    }

    fn finish(&mut self, now: u64, reason: DisconnectReason) -> Result<Progress> {
        let _ = self.t.shutdown(now);
        self.phase = Phase::Done;
        self.stats.disconnect(reason);
        Ok(Progress::Busy)
    }

    /// Every end of a connection comes here: reconnect after the backoff if the policy
    /// says so (and it was not our close, nor a stop), else finish with the reason.
    /// `cause` overrides the cause derived from the reason's kind (liveness, set-up).
    fn lost(
        &mut self,
        now: u64,
        reason: DisconnectReason,
        cause: Option<crate::feed::DisconnectCause>,
    ) -> Result<Progress> {
        use crate::feed::{DisconnectCause as C, GiveUpReason, ReconnectDecision, SetupStep};
        let setup = matches!(self.phase, Phase::Upgrading { .. } | Phase::Subscribing { .. });
        let Some(feed) = self.feed.as_mut() else {
            return self.finish(now, reason);
        };
        // The first reason recorded on this connection is its cause (a server close or
        // a protocol error the WebSocket stage noted before the transport saw the end).
        let reason = self.stats.noted_reason().unwrap_or(reason);
        if self.user_close_sent
            || self.stats.get(Counter::UserClose) != 0
            || !self.stats.running()
            || self.stats.state_code() >= 3
        {
            return self.finish(now, reason);
        }
        let cause = cause.or(match &reason.kind {
            _ if setup => Some(C::SetupFailed(match reason.kind {
                DisconnectKind::Tls => SetupStep::Tls,
                DisconnectKind::Network | DisconnectKind::TcpReset | DisconnectKind::Timeout => {
                    SetupStep::Connect
                }
                _ => SetupStep::Upgrade,
            })),
            DisconnectKind::TcpReset | DisconnectKind::Network => Some(C::Reset),
            DisconnectKind::TcpClosed | DisconnectKind::ClosedAfterOurClose => Some(C::Fin),
            DisconnectKind::Tls => Some(C::Tls),
            DisconnectKind::ServerClosed { code, .. } | DisconnectKind::CloseCompleted { code } => {
                Some(C::Close(*code))
            }
            DisconnectKind::ProtocolError { close_code } => Some(C::Close(*close_code)),
            DisconnectKind::CloseTimeout => Some(C::Close(1006)),
            DisconnectKind::Timeout => Some(C::SetupFailed(SetupStep::Connect)),
            _ => None,
        });
        let Some(cause) = cause else {
            return self.finish(now, reason);
        };
        match feed.backoff.on_disconnect(cause, now) {
            ReconnectDecision::GiveUp(GiveUpReason::Disabled) => self.finish(now, reason),
            ReconnectDecision::GiveUp(why) => {
                let msg = format!("{} ({why})", reason.message);
                self.finish(now, DisconnectReason::new(reason.kind, msg))
            }
            ReconnectDecision::Reconnect { attempt, at_ns, .. } => {
                let _ = self.t.shutdown(now);
                // Recorded (if nothing was) so `stats.reason()` says what was lost while
                // reconnecting; `reconnecting` then frees the claim for the next end.
                self.stats.note_reason(&reason);
                // Before the state moves: a reader seeing code 0 with reconnects > 0
                // knows it is a reconnect, not the first connect.
                self.stats.add(Counter::Reconnects, 1);
                if !self.stats.reconnecting(attempt, &reason.kind) {
                    self.phase = Phase::Done;
                    return Ok(Progress::Busy);
                }
                self.reset_connection();
                self.phase = Phase::Waiting { at_ns };
                Ok(Progress::Busy)
            }
        }
    }

    /// Forget the lost connection's in-flight state (a frame half written, the close
    /// handshake, answers owed to the old server).
    fn reset_connection(&mut self) {
        self.tx_off = 0;
        self.tx_len = 0;
        self.finish_after_tx = None;
        self.close_sent = false;
        self.dropping_fragments = self.sending_fragments;
        self.sending_fragments = false;
        self.compressing = false;
        self.eof = None;
        self.closing_since = None;
        while self.pongs.pop().is_some() {}
        if let Some(f) = self.feed.as_mut() {
            f.ping_due = false;
        }
    }

    /// Waiting for the backoff; then a new connection (its failure is another loss).
    fn wait_and_reconnect(&mut self, now: u64, at_ns: u64) -> Result<Progress> {
        if now < at_ns || !self.stats.running() {
            return Ok(Progress::Idle);
        }
        let feed = self.feed.as_mut().expect("Waiting only with a feed");
        feed.backoff.poll(now);
        let hs = crate::ws::ClientHandshake::new(&feed.opts.url, &feed.opts.handshake);
        match hs.and_then(|hs| self.t.reconnect(now).map(|_| hs)) {
            Ok(hs) => {
                self.phase = Phase::Upgrading {
                    hs: Box::new(hs),
                    sent: 0,
                };
                Ok(Progress::Busy)
            }
            Err(e) => {
                let kind = DisconnectKind::from_error(&e);
                let step = match kind {
                    DisconnectKind::Tls => crate::feed::SetupStep::Tls,
                    _ => crate::feed::SetupStep::Connect,
                };
                let r = DisconnectReason::new(kind, format!("reconnect failed: {e}"));
                self.lost(now, r, Some(crate::feed::DisconnectCause::SetupFailed(step)))
            }
        }
    }

    /// A new connection's upgrade is done: before its first byte goes into MSG_INBOX,
    /// publish where it starts and its generation (Release: the WebSocket stage loads
    /// the generation with Acquire after its Acquire load of the write position, so it
    /// sees both whenever it sees a byte of the new connection).
    ///
    /// `extension` is the connection's permessage-deflate word (0 not offered, 1
    /// declined, else `Negotiated::to_word`): stored in the inbox's slot for this
    /// generation first, so the WebSocket stage reads the parameters of the connection
    /// whose bytes it parses (they may differ after a reconnect).
    fn new_generation(&mut self, extension: u32) {
        let next = match self.feed.as_ref() {
            Some(f) if f.backoff.attempts_total() > 0 => Some(f.generation + 1),
            _ => None, // the first connection is generation 0
        };
        let gen = next.unwrap_or_else(|| self.feed.as_ref().map_or(0, |f| f.generation));
        self.inbox.set_extension(gen, extension);
        self.stats.set(Counter::Deflate, extension as u64);
        let (Some(g), Some(feed)) = (next, self.feed.as_mut()) else { return };
        feed.generation = g;
        self.stats.set(Counter::GenerationStart, self.inbox.position());
        self.stats.set_release(Counter::Generation, feed.generation);
    }

    /// Send the subscriptions (framed by this stage), then report Connected.
    fn subscribe(&mut self, now: u64, mut next: usize) -> Result<bool> {
        let mut moved = false;
        loop {
            if !self.flush_tx(now)? {
                self.phase = Phase::Subscribing { next };
                return Ok(moved);
            }
            let sub = self.feed.as_ref().and_then(|f| f.opts.subscriptions.get(next).cloned());
            match sub {
                Some(Subscription::Text(t)) => self.frame(OpCode::Text, true, t.as_bytes())?,
                Some(Subscription::Binary(b)) => self.frame(OpCode::Binary, true, &b)?,
                None => break,
            }
            self.stats.add(Counter::SentMessages, 1);
            next += 1;
            moved = true;
        }
        self.connected(now);
        Ok(true)
    }

    fn connected(&mut self, now: u64) {
        self.phase = Phase::Open;
        self.stats.set(Counter::ConnectedAtNs, now);
        if let Some(f) = self.feed.as_mut() {
            f.backoff.connected(now);
            if let Some(cfg) = f.opts.liveness {
                match f.liveness.as_mut() {
                    Some(l) => l.restart(now),
                    None => f.liveness = Some(crate::feed::Liveness::new(cfg, now)),
                }
            }
            f.seen_frames = self.stats.get(Counter::Frames);
            f.seen_pongs = self.stats.get(Counter::PongsReceived);
        }
        self.stats.advance_state(&State::Connected);
    }

    /// Liveness: increments of the WebSocket stage's counters are arrivals; a PING is
    /// due every interval; `Some(reason)` when the connection is dead.
    fn check_liveness(&mut self, now: u64) -> Option<DisconnectReason> {
        if self.eof.is_some() {
            return None; // the end is known already; no PING into a dead socket
        }
        let f = self.feed.as_mut()?;
        let l = f.liveness.as_mut()?;
        let frames = self.stats.get(Counter::Frames);
        if frames != f.seen_frames {
            f.seen_frames = frames;
            l.on_data(now);
        }
        let pongs = self.stats.get(Counter::PongsReceived);
        if pongs != f.seen_pongs {
            f.seen_pongs = pongs;
            l.on_pong(now);
        }
        match l.poll(now) {
            crate::feed::LivenessAction::Nothing => None,
            crate::feed::LivenessAction::SendPing => {
                f.ping_due = true;
                None
            }
            crate::feed::LivenessAction::Dead { silent_ns } => {
                self.stats.add(Counter::LivenessTimeouts, 1);
                Some(DisconnectReason::new(
                    DisconnectKind::Timeout,
                    format!(
                        "liveness: no data and no pong from the server for {:.2} s",
                        silent_ns as f64 / 1e9
                    ),
                ))
            }
        }
    }

    fn upgrade(&mut self, now: u64) -> Result<bool> {
        let Phase::Upgrading { hs, sent } = &mut self.phase else {
            return Ok(false);
        };
        let mut moved = false;
        while *sent < hs.request().len() {
            let n = self.t.write(&hs.request()[*sent..], now)?;
            if n == 0 {
                return Ok(moved);
            }
            *sent += n;
            moved = true;
        }
        let mut buf = [0u8; 4096];
        let n = match self.t.read(&mut buf, now) {
            Ok(n) => n,
            Err(Error::Closed(why) | Error::Reset(why)) => {
                return Err(Error::WebSocket {
                    close_code: 0,
                    reason: format!("connection closed during the upgrade: {why}{}", hs.closed_hint()),
                })
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(moved);
        }
        if let HandshakeStatus::Done { consumed, .. } = hs.feed(&buf[..n])? {
            if let Some(r) = &self.upgrade_record {
                *r.lock().unwrap_or_else(|e| e.into_inner()) = hs.upgrade();
            }
            // The agreed permessage-deflate parameters, for the WebSocket stage (stored
            // with the generation, before the first byte after the upgrade is
            // committed) and a fresh compressor: every connection negotiates anew and
            // starts with an empty window.
            let word = match (hs.deflate_offer(), hs.deflate()) {
                (None, _) => 0,
                (Some(_), None) => 1,
                (Some(cfg), Some(neg)) => {
                    self.deflater = Some(Deflater::new(&neg, &cfg));
                    neg.to_word()
                }
            };
            if word <= 1 {
                self.deflater = None;
            }
            self.new_generation(word);
            let rest = &buf[consumed..n];
            let decrypted = super::now_ns();
            let arrival = self.t.arrival_ns().filter(|&a| a <= decrypted).unwrap_or(decrypted);
            if !rest.is_empty() && self.inbox.write_stamped(rest, arrival, decrypted) < rest.len() {
                return Err(Error::Overrun(
                    "MSG_INBOX too small for the bytes that followed the upgrade".into(),
                ));
            }
            self.stats.add(Counter::InboxBytes, rest.len() as u64);
            if self.feed.is_some() {
                self.phase = Phase::Subscribing { next: 0 };
            } else {
                self.connected(now);
            }
        }
        Ok(true)
    }

    fn tx_step(&mut self, now: u64) -> Result<bool> {
        let mut moved = false;
        for _ in 0..WRITES_PER_POLL {
            if !self.flush_tx(now)? {
                return Ok(moved);
            }
            if let Some(reason) = self.finish_after_tx.take() {
                self.lost(now, reason, None)?;
                return Ok(true);
            }
            if let Some(f) = self.feed.as_mut() {
                // Entries the WebSocket stage made for an older connection: not ours to answer.
                let gen = f.generation as u8;
                while self.pongs.get(0).is_some_and(|p| p.generation != gen) {
                    self.pongs.pop();
                }
                if f.ping_due && !self.close_sent && self.eof.is_none() {
                    f.ping_due = false;
                    self.frame(OpCode::Ping, true, b"pl-live")?;
                    self.stats.add(Counter::PingsSent, 1);
                    moved = true;
                    continue;
                }
            }
            // Control replies first (PONG, CLOSE reply), then the user's records. Our
            // CLOSE (a reply, or a protocol error's) waits for the records already in
            // MSG_OUTBOX: the AppClient's answers to the messages before it (an echo)
            // go out first, as on a synchronous client. Once the state is Closing the
            // application can queue no more data, so this wait is bounded.
            let close_waits = self.pongs.available() > 0
                && self.pongs.get(0).is_some_and(|p| p.opcode == op::CLOSE)
                && !self.close_sent
                && self.outbox.peek()?.is_some();
            if let Some(p) = if close_waits { None } else { self.pongs.pop() } {
                moved = true;
                if p.opcode == op::CLOSE {
                    let code = if p.payload_len >= 2 {
                        u16::from_be_bytes([p.payload[0], p.payload[1]])
                    } else {
                        1005
                    };
                    let why =
                        String::from_utf8_lossy(p.bytes().get(2..).unwrap_or(&[])).into_owned();
                    let reason = if self.close_sent {
                        DisconnectReason::new(
                            DisconnectKind::CloseCompleted { code },
                            format!("closed: close handshake completed (server replied {code})"),
                        )
                    } else {
                        let message = format!(
                            "closed by server: code {code}{}{}",
                            if why.is_empty() { "" } else { " " },
                            why
                        );
                        DisconnectReason::new(DisconnectKind::ServerClosed { code, reason: why }, message)
                    };
                    if !self.close_sent {
                        self.close_sent = true;
                        self.frame(
                            OpCode::Close,
                            true,
                            &p.payload[..(p.payload_len as usize).min(2)],
                        )?;
                    }
                    self.finish_after_tx = Some(reason);
                } else {
                    self.frame(OpCode::Pong, true, p.bytes())?;
                    self.stats.add(Counter::PongsSent, 1);
                }
                continue;
            }
            if self.close_sent {
                return Ok(moved);
            }
            let cont = self.sending_fragments;
            let (opcode, fin, counter) = match self.outbox.peek()? {
                None => return Ok(moved),
                Some(rec)
                    if self.dropping_fragments
                        && matches!(rec.kind, Some(OutboxKind::Text | OutboxKind::Binary)) =>
                {
                    // A piece of the message the reconnect cut: never sent.
                    self.dropping_fragments = rec.flags & FLAG_MORE != 0;
                    self.outbox.consume();
                    self.stats.add(Counter::Drops, 1);
                    moved = true;
                    continue;
                }
                Some(rec) => {
                    let fin = rec.flags & FLAG_MORE == 0;
                    let (mut opc, c) = match rec.kind {
                        Some(OutboxKind::Text) => (OpCode::Text, Counter::SentMessages),
                        Some(OutboxKind::Binary) => (OpCode::Binary, Counter::SentMessages),
                        Some(OutboxKind::Close) => (OpCode::Close, Counter::SentMessages),
                        Some(OutboxKind::Ping) => (OpCode::Ping, Counter::PingsSent),
                        None => {
                            return Err(Error::Shm(format!(
                                "MSG_OUTBOX record of unknown kind {}",
                                rec.raw_kind
                            )))
                        }
                    };
                    let data = !opc.is_control();
                    // Later fragments of a message sent in parts go out as continuations.
                    if data && cont {
                        opc = OpCode::Continuation;
                    }
                    let fin = fin || !data;
                    // permessage-deflate: a message is compressed or not as a whole,
                    // decided on its first fragment (size threshold); RSV1 marks only
                    // the first frame; masking comes after compression.
                    let compress = match self.deflater.as_ref() {
                        Some(d) if data => {
                            if !cont {
                                self.compressing = d.wants(rec.payload.len());
                            }
                            self.compressing
                        }
                        _ => false,
                    };
                    if compress {
                        let h = crate::ws::frame::MAX_HEADER_LEN;
                        let d = self.deflater.as_mut().expect("deflater");
                        let n = d.compress(rec.payload, &mut self.tx[h..], fin)?;
                        let start = self.builder.encode_in_place(opc, fin, &mut self.tx[..h + n], h)?;
                        if !cont {
                            self.tx[start] |= 0x40;
                            self.stats.add(Counter::CompressedSent, 1);
                        }
                        self.tx_off = start;
                        self.tx_len = h + n;
                    } else {
                        self.tx_len = self.builder.encode(opc, fin, rec.payload, &mut self.tx)?;
                        self.tx_off = 0;
                    }
                    (opc, fin, c)
                }
            };
            if !opcode.is_control() {
                self.sending_fragments = !fin;
            }
            self.outbox.consume();
            moved = true;
            if opcode == OpCode::Close {
                self.close_sent = true;
                self.user_close_sent = true;
                self.stats.advance_state(&State::Closing);
            } else {
                self.stats.add(counter, 1);
            }
        }
        Ok(moved)
    }

    fn rx_step(&mut self, now: u64) -> Result<bool> {
        let mut moved = false;
        let inbox = self.inbox.inbox();
        let overwrite = inbox.policy() == crate::ring::OverrunPolicy::Overwrite;
        for _ in 0..READS_PER_POLL {
            let mut want = READ_CHUNK;
            if overwrite {
                // Overwrite may clobber bytes the AppClient has not released, never bytes
                // the WebSocket stage has not parsed (that would lose the framing).
                let unparsed = self.inbox.position() - inbox.parsed_pos();
                want = want.min((inbox.capacity() as u64).saturating_sub(unparsed) as usize);
                if want == 0 {
                    break;
                }
            }
            let buf = self.inbox.buf(want);
            if buf.is_empty() {
                self.stats.add(Counter::InboxFull, 1);
                break;
            }
            match self.t.read(buf, now) {
                Ok(0) => break,
                Ok(n) => {
                    // One clock read per read (a recv, a burst of segments: a batch of
                    // messages), none per message.
                    let decrypted = super::now_ns();
                    let arrival = self.t.arrival_ns().filter(|&a| a <= decrypted).unwrap_or(decrypted);
                    self.inbox.commit_stamped(n, arrival, decrypted);
                    self.stats.add(Counter::InboxBytes, n as u64);
                    moved = true;
                }
                // Give the WebSocket stage a moment to parse what came before the end
                // of the stream (a server CLOSE, our close's reply).
                Err(Error::Closed(why)) => {
                    self.eof = Some((now, false, why));
                    return Ok(true);
                }
                Err(Error::Reset(why)) => {
                    self.eof = Some((now, true, why));
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
        if moved {
            self.stats.max(
                Counter::InboxHighWater,
                self.inbox.position() - inbox.read_pos(),
            );
        }
        Ok(moved)
    }
}

impl<T: Transport> Stage for TransportStage<T> {
    fn name(&self) -> &'static str {
        "transport"
    }

    fn poll(&mut self, now: u64) -> Result<Progress> {
        match self.poll_connection(now) {
            Err(e) if self.feed.is_some() && !matches!(self.phase, Phase::Done) => {
                let reason = DisconnectReason::stage_error("transport", &e);
                self.lost(now, reason, None)
            }
            r => r,
        }
    }
}

impl<T: Transport> TransportStage<T> {
    fn poll_connection(&mut self, now: u64) -> Result<Progress> {
        match self.phase {
            Phase::Done => return Ok(Progress::Idle),
            Phase::Waiting { at_ns } => return self.wait_and_reconnect(now, at_ns),
            _ => {}
        }
        self.t.rx_space(self.inbox.free(READ_CHUNK));
        let mut moved = self.t.drive(now)?;
        if !self.t.is_established() {
            return Ok(Progress::from_bool(moved));
        }
        if matches!(self.phase, Phase::Upgrading { .. }) {
            moved |= self.upgrade(now)?;
            return Ok(Progress::from_bool(moved));
        }
        if let Phase::Subscribing { next } = self.phase {
            moved |= self.subscribe(now, next)?;
            return Ok(Progress::from_bool(moved));
        }
        if let Some(dead) = self.check_liveness(now) {
            return self.lost(now, dead, Some(crate::feed::DisconnectCause::LivenessTimeout));
        }
        // Every path to Closing ends: a server that never answers our close, or never
        // reads it (the write stays stuck), gets `close_timeout`, then the shutdown.
        // (One shared load per poll until Closing is seen; nothing after.)
        match self.closing_since {
            None if self.stats.state_code() >= State::Closing.code() => {
                self.closing_since = Some(now);
            }
            Some(t0) if now.saturating_sub(t0) >= self.close_timeout.as_nanos() as u64 => {
                // The first reason wins: after a protocol error or a server close that
                // reason stays; after our own close this is the reason.
                let reason = DisconnectReason::new(
                    DisconnectKind::CloseTimeout,
                    format!(
                        "closed: the server did not answer our close within {:?} (connection closed without the close handshake)",
                        self.close_timeout
                    ),
                );
                return self.lost(now, reason, None);
            }
            _ => {}
        }
        moved |= self.tx_step(now)?;
        // Done, or lost and waiting to reconnect: nothing more of this connection.
        if !matches!(self.phase, Phase::Open) {
            return Ok(Progress::Busy);
        }
        if let Some((at, reset, why)) = &self.eof {
            // The grace is for a CLOSE still to be parsed. It can end at once when the
            // WebSocket stage has parsed every byte we wrote, nothing waits on PONGS, and
            // nobody is closing (a CLOSE in flight moves the state to Closing before it
            // is queued): a reconnect after a RST or FIN then starts without 100 ms idle.
            let drained = self.stats.state_code() == State::Connected.code()
                && self.inbox.inbox().parsed_pos() >= self.inbox.position()
                && self.pongs.available() == 0;
            if drained || now.saturating_sub(*at) > EOF_GRACE_NS {
                let reason = if self.close_sent {
                    DisconnectReason::new(
                        DisconnectKind::ClosedAfterOurClose,
                        format!("closed: {why} (after our close)"),
                    )
                } else {
                    let kind = if *reset {
                        DisconnectKind::TcpReset
                    } else {
                        DisconnectKind::TcpClosed
                    };
                    DisconnectReason::new(kind, format!("connection lost: {why} (no WebSocket close)"))
                };
                return self.lost(now, reason, None);
            }
            return Ok(Progress::from_bool(moved));
        }
        moved |= self.rx_step(now)?;
        self.polls += 1;
        if self.polls & 1023 == 0 || !moved {
            let c = self.t.counters();
            if c != TransportCounters::default() {
                // The XDP stage counts the link itself (it owns those counters there);
                // a kernel socket's transport is the only one that knows its recvs.
                if self.t.name() != "xdp" {
                    self.stats.set(Counter::RxPackets, c.rx_packets);
                    self.stats.set(Counter::RxBytes, c.rx_bytes);
                    self.stats.set(Counter::TxPackets, c.tx_packets);
                    self.stats.set(Counter::TxBytes, c.tx_bytes);
                }
                self.stats.set(Counter::Retransmits, c.retransmits);
                self.stats.set(Counter::DupAcks, c.dup_acks);
                self.stats.set(Counter::Drops, c.drops);
            }
        }
        Ok(Progress::from_bool(moved))
    }
}

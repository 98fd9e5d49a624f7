//! The transport stage (design §5.2) and the seam every transport plugs into.
//!
//! The stage is generic over a [`Transport`]: a byte pipe that delivers decrypted
//! application bytes and encrypts what it is given. Two implementations are planned
//! (kernel TCP socket + OpenSSL; our TCP over AF_XDP rings + OpenSSL) plus the
//! [`super::SyntheticTransport`] test source. Everything WebSocket-shaped lives here,
//! not in the transports: the upgrade request/response, framing and masking of
//! MSG_OUTBOX records, PONG and CLOSE replies from the PONGS ring, the close
//! handshake's end.

use super::websocket::op;
use super::{Progress, Stage};
use crate::error::{Error, Result};
use crate::ring::{Consumer, InboxWriter, OutboxKind, OutboxReader, PongFrame, FLAG_MORE};
use crate::stats::{Counter, State, StatsRegion};
use crate::ws::deflate::Deflater;
use crate::ws::{ClientHandshake, FrameBuilder, HandshakeStatus, OpCode};

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
}

enum Phase {
    /// Waiting for the transport; then sending the request and reading the response.
    Upgrading {
        hs: Box<ClientHandshake>,
        sent: usize,
    },
    Open,
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
    finish_after_tx: Option<String>,
    close_sent: bool,
    sending_fragments: bool,
    builder: FrameBuilder,
    /// The stream ended at this time, for this reason; finish after a grace period.
    eof: Option<(u64, String)>,
    polls: u64,
    /// How long the close handshake may take once the state is Closing.
    close_timeout: std::time::Duration,
    /// When this stage first saw the state Closing (whoever set it: our close, the
    /// WebSocket stage after a protocol error or a server close, `Pipeline::close`).
    closing_since: Option<u64>,
    /// permessage-deflate negotiated: our compressor.
    deflater: Option<Deflater>,
    /// The message being sent in fragments is compressed.
    compressing: bool,
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
            builder: FrameBuilder::new()?,
            eof: None,
            polls: 0,
            close_timeout,
            closing_since: None,
            deflater: None,
            compressing: false,
        })
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

    fn finish(&mut self, now: u64, reason: String) -> Result<Progress> {
        let _ = self.t.shutdown(now);
        self.phase = Phase::Done;
        self.stats.disconnect(&reason);
        Ok(Progress::Busy)
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
            Err(Error::Closed(why)) => {
                return Err(Error::WebSocket {
                    close_code: 0,
                    reason: format!("connection closed during the upgrade: {why}"),
                })
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(moved);
        }
        if let HandshakeStatus::Done { consumed, .. } = hs.feed(&buf[..n])? {
            // The agreed permessage-deflate parameters, for the WebSocket stage (stored
            // before the first byte after the upgrade is committed) and our compressor.
            let word = match (hs.deflate_offer(), hs.deflate()) {
                (None, _) => 0,
                (Some(_), None) => 1,
                (Some(cfg), Some(neg)) => {
                    self.deflater = Some(Deflater::new(&neg, &cfg));
                    neg.to_word()
                }
            };
            self.inbox.set_extension(word);
            self.stats.set(Counter::Deflate, word as u64);
            let rest = &buf[consumed..n];
            if !rest.is_empty() && self.inbox.write(rest) < rest.len() {
                return Err(Error::Overrun(
                    "MSG_INBOX too small for the bytes that followed the upgrade".into(),
                ));
            }
            self.stats.add(Counter::InboxBytes, rest.len() as u64);
            self.phase = Phase::Open;
            self.stats.set(Counter::ConnectedAtNs, now);
            self.stats.advance_state(&State::Connected);
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
                self.finish(now, reason)?;
                return Ok(true);
            }
            // Control replies first (PONG, CLOSE reply), then the user's records.
            if let Some(p) = self.pongs.pop() {
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
                        format!("closed: close handshake completed (server replied {code})")
                    } else {
                        format!(
                            "closed by server: code {code}{}{}",
                            if why.is_empty() { "" } else { " " },
                            why
                        )
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
                    self.inbox.commit(n);
                    self.stats.add(Counter::InboxBytes, n as u64);
                    moved = true;
                }
                Err(Error::Closed(why)) => {
                    // Give the WebSocket stage a moment to parse what came before the
                    // end of the stream (a server CLOSE, our close's reply).
                    self.eof = Some((now, why));
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
        if matches!(self.phase, Phase::Done) {
            return Ok(Progress::Idle);
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
                let reason = format!(
                    "closed: the server did not answer our close within {:?} (connection closed without the close handshake)",
                    self.close_timeout
                );
                return self.finish(now, reason);
            }
            _ => {}
        }
        moved |= self.tx_step(now)?;
        if matches!(self.phase, Phase::Done) {
            return Ok(Progress::Busy);
        }
        if let Some((at, why)) = &self.eof {
            if now.saturating_sub(*at) > EOF_GRACE_NS {
                let reason = if self.close_sent {
                    format!("closed: {why} (after our close)")
                } else {
                    format!("connection lost: {why} (no WebSocket close)")
                };
                return self.finish(now, reason);
            }
            return Ok(Progress::from_bool(moved));
        }
        moved |= self.rx_step(now)?;
        self.polls += 1;
        if self.polls & 1023 == 0 || !moved {
            let c = self.t.counters();
            if c != TransportCounters::default() {
                self.stats.set(Counter::Retransmits, c.retransmits);
                self.stats.set(Counter::DupAcks, c.dup_acks);
                self.stats.set(Counter::Drops, c.drops);
            }
        }
        Ok(Progress::from_bool(moved))
    }
}

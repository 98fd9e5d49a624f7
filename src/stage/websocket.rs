//! The WebSocket stage (design §5.3): parses server frames in MSG_INBOX in place and
//! publishes one [`WsFrameInfo`] per frame (or per reassembled message) for the
//! AppClient; PINGs become PONG requests and a CLOSE becomes the close reply (a
//! [`PongFrame`] with opcode 0x08, §12.1) on the PONGS ring to the transport.
//!
//! Control frames also get a `WsFrameInfo` (opcode 0x8/0x9/0xA) that the AppClient
//! does not deliver but uses to release their bytes, so a stream of PINGs alone never
//! fills MSG_INBOX. Fragmented messages in `Messages` delivery are compacted in place:
//! each continuation's payload is moved back over the headers between it and the
//! message's start, so the message is one contiguous slice of MSG_INBOX.
//!
//! A hostile server cannot wedge the stage:
//! - a frame or message the parser cannot finish within MSG_INBOX (headers of endless
//!   empty continuations, PINGs between fragments: only payload counts toward
//!   `max_message`, but every byte has to fit) closes with 1009 once the unreleased
//!   bytes fill the whole ring;
//! - PONGs coalesce: once [`PONGS_IN_FLIGHT`] answers wait on the PONGS ring, a newer
//!   PING replaces the unsent answer to an older one (RFC 6455 §5.5.3), so a PING flood
//!   faster than the server reads our PONGs never fills PONGS or stops the parsing.

use super::{Progress, Stage};
use crate::error::{Error, Result};
use crate::ring::{InboxWriter, MsgInbox, PongFrame, Producer, StampCursor, WsFrameInfo};
use crate::stats::{Counter, DisconnectKind, DisconnectReason, State, StatsRegion};
use crate::ws::deflate::{Inflater, Negotiated, TAIL};
use crate::ws::utf8::Utf8Validator;
use crate::ws::{self, Data, Event, MessageKind, Parser, ParserConfig};

/// Opcodes as carried in `WsFrameInfo`.
pub(crate) mod op {
    pub const CONT: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// What the AppClient receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Whole messages: fragments reassembled in place (default).
    #[default]
    Messages,
    /// Every data frame as it arrives (continuations have opcode 0, `fin` marks the last).
    Frames,
}

/// Events per poll (bounded work).
const EVENTS_PER_POLL: usize = 256;

/// How long a protocol error waits for the AppClient to take the messages parsed
/// before it (see [`WebSocketStage`]'s `failing`), at most.
pub(crate) const FAIL_WAIT_NS: u64 = 1_000_000_000;

/// PONGs that may wait on the PONGS ring before newer ones coalesce into one slot. Not
/// 1: in the threads and processes layouts the transport is often a few microseconds
/// behind, and PINGs a normal server sends should each get their answer; a flood is
/// bounded all the same (this many + one). Far below the ring's 256, so our CLOSE
/// always finds room.
pub(crate) const PONGS_IN_FLIGHT: u64 = 16;

/// MSG_INBOX -> WS_FRAME_INFO (+ PONGS), over the `crate::ws` parser.
pub struct WebSocketStage {
    inbox: MsgInbox,
    frames: Producer<WsFrameInfo>,
    pongs: Producer<PongFrame>,
    stats: StatsRegion,
    delivery: Delivery,
    parser: Parser,
    /// Stream position of the parser's slice start (its first unreleased byte).
    pos: u64,
    closed: bool,
    /// Overwrite policy: never stall on a full WS_FRAME_INFO ring (drop and flag).
    overwrite: bool,
    /// The next published entry carries FLAG_OVERRUN (entries were dropped before it).
    lost: bool,
    /// The latest PING's answer, waiting for the previous PONG to leave the ring.
    pong: Option<PongFrame>,
    /// Our CLOSE (reply or protocol error), waiting for room on the ring.
    close: Option<PongFrame>,
    /// A protocol error (code, reason, when) found behind messages the AppClient has
    /// not taken yet. The stage stops parsing at once, but fails the connection (state
    /// Closing, our CLOSE) only once the AppClient has taken everything published
    /// before the bad frame, or after [`FAIL_WAIT_NS`]: an application answering each
    /// message (an echo) still gets its answers out, the way a synchronous client
    /// would. (Autobahn 3.2-3.4, 4.1.3-5, 4.2.3-5, 5.15: a valid message, then a bad
    /// frame, in one write.)
    failing: Option<(u16, String, u64)>,
    /// The configured limit, for the 1009 reason.
    max_message: usize,
    /// The connection generation being parsed (see [`WebSocketStage::next_generation`]).
    generation: u64,
    /// The next data entry carries FLAG_RECONNECT.
    reconnected: bool,
    /// A newer generation is published and what is left of the old one is an
    /// incomplete frame or message: switch at the next poll.
    old_tail_done: bool,
    parser_cfg: ParserConfig,
    /// permessage-deflate offered: the transport writes WIRE_INBOX, this stage writes
    /// MSG_INBOX (see [`Inflow`]).
    inflow: Option<Box<Inflow>>,
    /// The transport's arrival/decrypt stamps of the ring this stage parses.
    stamps: StampCursor,
    /// The parse stamp of this poll's entries (0: the clock not read yet this poll; it
    /// is read once, at the first entry, after the bytes were seen committed).
    parse_now: u64,
}

/// The permessage-deflate path. The transport's decrypted bytes go to WIRE_INBOX (this
/// stage is its only reader); the parser runs over it in `FramePieces` delivery, and
/// every data payload piece is inflated (RSV1 messages) or copied (the others) straight
/// into MSG_INBOX, where this stage is the writer. Each message's bytes are contiguous
/// there (mirror mapping) and its one `WsFrameInfo` points at them: consumers see what
/// they always see. `max_message` bounds the *inflated* size, checked while inflating:
/// inflate is never given more than `max_message + 1 - written` bytes of output space,
/// so a bomb costs at most `max_message` bytes of work and MSG_INBOX memory.
struct Inflow {
    wire: MsgInbox,
    out: InboxWriter,
    /// The negotiation word has been read (at the first byte after the upgrade).
    known: bool,
    inflater: Option<Inflater>,
    utf8: Utf8Validator,
    /// The message being written into MSG_INBOX.
    msg: Option<OutMsg>,
    /// The piece being written (MSG_INBOX was full): its wire position and what is left.
    pending: Option<Piece>,
}

#[derive(Clone, Copy)]
struct OutMsg {
    /// MSG_INBOX position of the message's first byte.
    start: u64,
    /// Bytes written so far (the message's inflated size so far).
    written: usize,
    /// Frames delivery: where the current frame's bytes start.
    frame_start: u64,
    frame_first: bool,
    kind: MessageKind,
    compressed: bool,
    /// A frame of it ended before its last one (joined: `reassembled` in Messages).
    fragmented: bool,
}

#[derive(Clone, Copy)]
struct Piece {
    /// Wire position of the input still to write, and how much.
    pos: u64,
    len: usize,
    d: Data,
    /// The payload is in; the message's `00 00 ff ff` tail is being inflated (this many
    /// of its bytes taken).
    tail: Option<usize>,
}

enum PieceOutcome {
    /// Written, and the message (or frame) may be published.
    Done,
    /// MSG_INBOX is full: try again later.
    Stalled,
    /// A protocol error: close with this code.
    Fail(u16, String),
}

impl Inflow {
    /// Forget the connection whose bytes were being parsed (a reconnect): its message
    /// in progress (its bytes in MSG_INBOX are released with the generation entry), a
    /// piece waiting for room, its inflater and parameters.
    fn reset(&mut self) {
        self.known = false;
        self.inflater = None;
        self.utf8.reset();
        self.msg = None;
        self.pending = None;
    }

    /// Write what is left of `p` into MSG_INBOX. Inflate output space is bounded by
    /// `max_message + 1` for the whole message, so a bomb stops there.
    fn write(&mut self, p: &mut Piece, max_message: usize, stats: &StatsRegion) -> PieceOutcome {
        let Some(m) = self.msg.as_mut() else {
            return PieceOutcome::Fail(ws::close_code::INTERNAL_ERROR, "websocket stage: piece without a message".into());
        };
        if !p.d.compressed {
            // The parser's limit has slack for compressed wire bytes when deflate is
            // offered; an uncompressed message gets the exact one here.
            if m.written + p.len > max_message {
                return PieceOutcome::Fail(
                    ws::close_code::MESSAGE_TOO_BIG,
                    format!("message too big: more than the configured limit of {max_message} bytes"),
                );
            }
            while p.len > 0 {
                let b = self.out.buf(p.len);
                if b.is_empty() {
                    return PieceOutcome::Stalled;
                }
                let n = b.len();
                // SAFETY: [p.pos, p.pos + p.len) of WIRE_INBOX is written and not released
                // (this stage releases it only past finished pieces).
                let src = unsafe { self.wire.slice(p.pos, n) };
                b.copy_from_slice(src);
                self.out.commit(n);
                m.written += n;
                p.pos += n as u64;
                p.len -= n;
            }
            return PieceOutcome::Done;
        }
        let Some(inf) = self.inflater.as_mut() else {
            return PieceOutcome::Fail(
                ws::close_code::PROTOCOL_ERROR,
                "compressed message without a negotiated permessage-deflate".into(),
            );
        };
        loop {
            let room = (max_message + 1).saturating_sub(m.written);
            if room == 0 {
                return PieceOutcome::Fail(
                    ws::close_code::MESSAGE_TOO_BIG,
                    format!("compressed message inflates to more than the configured limit of {max_message} bytes"),
                );
            }
            let input: &[u8] = match p.tail {
                // SAFETY: as above.
                None => unsafe { self.wire.slice(p.pos, p.len) },
                Some(t) => &TAIL[t..],
            };
            let b = self.out.buf(room.min(1 << 20));
            if b.is_empty() {
                return PieceOutcome::Stalled;
            }
            let space = b.len();
            let r = match inf.inflate(input, b) {
                Ok(r) => r,
                Err(Error::WebSocket { close_code, reason }) => return PieceOutcome::Fail(close_code, reason),
                Err(e) => return PieceOutcome::Fail(ws::close_code::INTERNAL_ERROR, e.to_string()),
            };
            if r.produced > 0 {
                if m.kind == MessageKind::Text && self.utf8.feed(&b[..r.produced]).is_err() {
                    return PieceOutcome::Fail(ws::close_code::INVALID_PAYLOAD, "invalid UTF-8 in a text message".into());
                }
                self.out.commit(r.produced);
                m.written += r.produced;
                stats.add(Counter::InflatedBytes, r.produced as u64);
            }
            match p.tail.as_mut() {
                None => {
                    p.pos += r.consumed as u64;
                    p.len -= r.consumed;
                }
                Some(t) => *t += r.consumed,
            }
            let input_left = match p.tail {
                None => p.len,
                Some(t) => TAIL.len() - t,
            };
            // Output filled the space: there may be more even without input.
            if r.produced == space {
                continue;
            }
            if input_left > 0 && (r.consumed > 0 || r.produced > 0) {
                continue;
            }
            if input_left > 0 && !r.stream_end {
                // No progress with input and space left: zlib wants nothing more.
                return PieceOutcome::Fail(ws::close_code::INVALID_PAYLOAD, "corrupt permessage-deflate data: no progress".into());
            }
            // This input is done. At the message's end, the tail comes next.
            if p.d.last && p.tail.is_none() {
                p.tail = Some(0);
                continue;
            }
            if p.d.last && m.kind == MessageKind::Text && !self.utf8.is_complete() {
                return PieceOutcome::Fail(
                    ws::close_code::INVALID_PAYLOAD,
                    "text message ends inside a UTF-8 sequence".into(),
                );
            }
            return PieceOutcome::Done;
        }
    }
}

impl WebSocketStage {
    pub fn new(
        inbox: MsgInbox,
        frames: Producer<WsFrameInfo>,
        pongs: Producer<PongFrame>,
        stats: StatsRegion,
        delivery: Delivery,
        max_message: usize,
    ) -> Self {
        Self::with_wire(inbox, None, frames, pongs, stats, delivery, max_message)
    }

    /// With `wire` (permessage-deflate offered): parse WIRE_INBOX, which the transport
    /// writes, and write the (inflated) payloads into `inbox` (MSG_INBOX).
    pub fn with_wire(
        inbox: MsgInbox,
        wire: Option<MsgInbox>,
        frames: Producer<WsFrameInfo>,
        pongs: Producer<PongFrame>,
        stats: StatsRegion,
        delivery: Delivery,
        max_message: usize,
    ) -> Self {
        let max_message = max_message.min(inbox.capacity());
        let overwrite = inbox.policy() == crate::ring::OverrunPolicy::Overwrite;
        let (pos, d, inflow) = match wire {
            None => (
                inbox.parsed_pos().max(inbox.read_pos()),
                match delivery {
                    Delivery::Messages => ws::Delivery::Messages,
                    Delivery::Frames => ws::Delivery::Frames,
                },
                None,
            ),
            Some(w) => (
                w.parsed_pos().max(w.read_pos()),
                ws::Delivery::FramePieces,
                Some(Box::new(Inflow {
                    out: inbox.writer(),
                    wire: w,
                    known: false,
                    inflater: None,
                    utf8: Utf8Validator::new(),
                    msg: None,
                    pending: None,
                })),
            ),
        };
        // Wire bytes of a compressed message may be a little more than its inflated size
        // (stored blocks): allow some slack there; the inflated size is checked exactly.
        let wire_max = if inflow.is_some() { max_message + max_message / 64 + 1024 } else { max_message };
        let parser_cfg = ParserConfig {
            delivery: d,
            max_message: wire_max,
        };
        let generation = stats.get_acquire(Counter::Generation);
        let stamps = StampCursor::new(inflow.as_ref().map_or(&inbox, |f| &f.wire));
        WebSocketStage {
            stamps,
            parse_now: 0,
            inbox,
            frames,
            pongs,
            stats,
            delivery,
            parser: Parser::new(parser_cfg),
            generation,
            reconnected: false,
            old_tail_done: false,
            parser_cfg,
            pos,
            closed: false,
            overwrite,
            lost: false,
            pong: None,
            close: None,
            failing: None,
            inflow,
            max_message,
        }
    }

    /// One stream across reconnects. The transport publishes a new generation and the
    /// MSG_INBOX position where its bytes start before committing any of them. The old
    /// connection's bytes before that position are parsed first (complete messages are
    /// still delivered); what is left of them (a message the disconnect cut) is dropped:
    /// a fresh parser starts at the new position, a release-only
    /// [`WsFrameInfo::OP_GENERATION`] entry lets the readers release the old tail, the
    /// closed / failing state of the old connection is forgotten, and the next data
    /// entry carries [`WsFrameInfo::FLAG_RECONNECT`]. Returns `Some` when it switched
    /// (or must retry), `None` to parse as usual (up to `limit` bytes when a switch is
    /// pending).
    ///
    /// With permessage-deflate offered the positions are WIRE_INBOX's (the ring the
    /// transport writes; `pos` is this stage's parse position there) and the switch
    /// also drops the old connection's half-written message in MSG_INBOX (the
    /// generation entry points past it, so readers release it), a piece waiting for
    /// room, the inflater (its window belongs to the old connection) and the
    /// negotiated parameters: the new connection's are read from its own slot
    /// (`MsgInbox::extension`) before its first byte is parsed.
    fn next_generation(&mut self, now: u64, limit: &mut Option<u64>) -> Option<Progress> {
        // Acquire: pairs with the transport's Release store (after GenerationStart).
        let gen = self.stats.get_acquire(Counter::Generation);
        if gen == self.generation {
            return None;
        }
        let start = self.stats.get(Counter::GenerationStart);
        let waiting = self.inflow.as_ref().is_some_and(|f| f.pending.is_some());
        if !self.closed && self.failing.is_none() && (self.pos < start || waiting) && !self.old_tail_done {
            // (A piece of the old connection still waiting for room in MSG_INBOX is
            // written first: its message may be complete.)
            *limit = Some(start.saturating_sub(self.pos));
            return None;
        }
        if self.frames.free() == 0 && !self.overwrite {
            self.stats.add(Counter::FrameRingFull, 1);
            return Some(Progress::Idle);
        }
        self.parser = Parser::new(self.parser_cfg);
        self.generation = gen;
        self.pos = start.max(self.pos);
        self.closed = false;
        self.failing = None;
        self.pong = None;
        self.close = None;
        self.old_tail_done = false;
        self.reconnected = true;
        let release_to = match self.inflow.as_mut() {
            None => self.pos,
            Some(f) => {
                f.wire.release_to(self.pos);
                f.wire.set_parsed_pos(self.pos);
                f.reset();
                f.out.position()
            }
        };
        let g = WsFrameInfo::new(release_to, 0, now, WsFrameInfo::OP_GENERATION, true, 0);
        if self.frames.stage(g).is_err() {
            self.stats.add(Counter::FrameRingFull, 1);
        }
        self.publish_frames();
        if self.inflow.is_none() {
            self.inbox.set_parsed_pos(self.pos);
        }
        Some(Progress::Busy)
    }

    fn control(&self, opcode: u8, payload: &[u8]) -> Option<PongFrame> {
        let mut p = PongFrame::new(opcode, payload)?;
        p.generation = self.generation as u8;
        Some(p)
    }

    /// Fail the connection for the deferred protocol error once the AppClient has
    /// taken every entry published before it (or the wait is over).
    fn fail_when_taken(&mut self, now: u64) -> bool {
        let Some((_, _, since)) = &self.failing else {
            return false;
        };
        let taken = self.frames.consumer_pos() >= self.frames.position();
        if !taken && now.saturating_sub(*since) < FAIL_WAIT_NS {
            return false;
        }
        if let Some((code, reason, _)) = self.failing.take() {
            self.fail(code, &reason);
        }
        true
    }

    /// Move the waiting PONG and CLOSE to the PONGS ring. The PONG goes while fewer than
    /// [`PONGS_IN_FLIGHT`] entries wait there (else it stays, to be replaced by a newer
    /// one), or right before our CLOSE so the answers keep their order; the CLOSE goes
    /// after it.
    fn flush_control(&mut self) -> bool {
        let mut moved = false;
        if let Some(p) = self.pong {
            let waiting = self.pongs.position() - self.pongs.consumer_pos();
            if (waiting < PONGS_IN_FLIGHT || self.close.is_some()) && self.pongs.push(p).is_ok() {
                self.pong = None;
                moved = true;
            }
        }
        if self.pong.is_none() {
            if let Some(c) = self.close {
                if self.pongs.push(c).is_ok() {
                    self.close = None;
                    moved = true;
                }
            }
        }
        moved
    }

    fn fail(&mut self, code: u16, reason: &str) {
        self.stats.note_reason(&DisconnectReason::new(
            DisconnectKind::ProtocolError { close_code: code },
            format!("websocket protocol error: {reason} (we closed with {code})"),
        ));
        self.closed = true;
        self.close = self.control(op::CLOSE, &code.to_be_bytes());
        // Closing before the CLOSE is on the ring: the transport that takes it (and may
        // reconnect right after) never sees Closing arrive late.
        self.stats.advance_state(&State::Closing);
        self.flush_control();
    }

    fn info(&mut self, pos: u64, len: u64, opcode: u8, fin: bool, mut flags: u8) {
        if self.lost {
            flags |= WsFrameInfo::FLAG_OVERRUN;
        }
        if self.reconnected && opcode < op::CLOSE {
            flags |= WsFrameInfo::FLAG_RECONNECT;
            self.reconnected = false;
        }
        if self.parse_now == 0 {
            self.parse_now = super::now_ns();
        }
        // The stamps of the bytes that completed the frame: its end in MSG_INBOX, or
        // with permessage-deflate the wire position parsed so far (the stamps of the
        // read that held the frame's start: an earlier arrival, never a later one).
        let end = if self.inflow.is_some() { self.pos } else { pos + len };
        let (arrival, decrypted) = self.stamps.stamps_for(end);
        if decrypted > self.parse_now {
            // Bytes committed after this poll's clock read (the parse ran on into them).
            self.parse_now = super::now_ns();
        }
        let i = WsFrameInfo::new(pos, len as u32, self.parse_now, opcode, fin, flags).with_stamps(arrival, decrypted);
        // Space was checked before the event was taken (or, overwriting, we drop).
        if self.frames.stage(i).is_err() {
            self.lost = true;
            self.stats.add(Counter::FrameRingFull, 1);
        } else {
            self.lost = false;
        }
    }

    /// A release-only entry after a control frame: everything the parser no longer
    /// needs may go back to the transport once the AppClient gets here (in order, so
    /// after every data frame before it). While a message is being reassembled the
    /// parser keeps its start, so this never releases a message's first fragments.
    fn marker(&mut self, opcode: u8) {
        if self.inflow.is_some() {
            // Control frames have no bytes in MSG_INBOX on the inflow path (this stage
            // releases WIRE_INBOX itself): nothing to release.
            return;
        }
        let p = self.pos + self.parser.releasable() as u64;
        self.info(p, 0, opcode, true, 0);
    }

    fn event(&mut self, ev: Event, slice: &[u8]) {
        match ev {
            Event::Data(d) => {
                let p = self.pos + d.offset as u64;
                let kind = d.kind as u8;
                self.stats.add(Counter::PayloadBytes, d.len as u64);
                match self.delivery {
                    Delivery::Frames => {
                        let opcode = if d.first { kind } else { op::CONT };
                        self.info(p, d.len as u64, opcode, d.last, 0);
                    }
                    Delivery::Messages => {
                        self.info(p, d.len as u64, kind, true, WsFrameInfo::FLAG_MESSAGE);
                        if !single_frame(slice, d.offset, d.len) {
                            self.stats.add(Counter::Reassembled, 1);
                        }
                    }
                }
                if d.last {
                    self.stats.add(Counter::Messages, 1);
                }
            }
            Event::Ping(pl) => {
                self.stats.add(Counter::PingsReceived, 1);
                // Replaces an older unsent answer: only the latest PING needs one.
                self.pong = self.control(op::PONG, pl.as_bytes());
                self.flush_control();
                self.marker(op::PING);
            }
            Event::Pong(_) => {
                self.stats.add(Counter::PongsReceived, 1);
                self.marker(op::PONG);
            }
            Event::Close(c) => {
                let why = c.reason_str().to_string();
                let we_closed = self.stats.state_code() >= State::Closing.code();
                if !we_closed {
                    let message = format!(
                        "closed by server: code {}{}{}",
                        c.code,
                        if why.is_empty() { "" } else { " " },
                        why
                    );
                    self.stats.note_reason(&DisconnectReason::new(
                        DisconnectKind::ServerClosed {
                            code: c.code,
                            reason: why,
                        },
                        message,
                    ));
                }
                let code = c.code.to_be_bytes();
                let reply: &[u8] = if c.code == ws::close_code::NO_STATUS {
                    &[]
                } else {
                    &code
                };
                self.close = self.control(op::CLOSE, reply);
                self.stats.advance_state(&State::Closing);
                self.flush_control();
                self.marker(op::CLOSE);
                self.closed = true;
            }
        }
    }
}

/// Is the message at `slice[off..off + len]` a single unfragmented frame? (Its header
/// sits right before it, and its length form follows from `len`.)
fn single_frame(slice: &[u8], off: usize, len: usize) -> bool {
    let hl = if len < 126 {
        2
    } else if len < 65536 {
        4
    } else {
        10
    };
    let Some(h) = off.checked_sub(hl).and_then(|s| slice.get(s..off)) else {
        return false;
    };
    let l7 = (h[1] & 0x7f) as usize;
    h[0] & 0x80 != 0
        && match hl {
            2 => l7 == len,
            4 => l7 == 126 && u16::from_be_bytes([h[2], h[3]]) as usize == len,
            _ => l7 == 127,
        }
}

impl WebSocketStage {
    /// Publish the staged WS_FRAME_INFO entries and wake a polling consumer asleep on
    /// its event fd (a fence and a load unless it is asleep: `ring::wakeup`).
    #[inline]
    fn publish_frames(&mut self) {
        self.frames.publish();
        self.stats.wake_consumer();
    }

    /// The end of a poll that produced entries: publish them and note how full the
    /// frame ring got.
    fn publish_batch(&mut self) {
        self.publish_frames();
        let ring = self.frames.ring();
        self.stats.max(Counter::FrameRingHighWater, self.frames.position() - ring.tail());
    }

    /// A protocol error from the parser: stop parsing now, with the configured limit in
    /// a 1009's reason.
    fn parse_error(&mut self, close_code: u16, reason: String, now: u64) {
        let reason = with_limit(close_code, reason, self.max_message);
        self.defer_fail(close_code, reason, now);
    }

    /// Finish what `write` left: publish a frame (Frames delivery) or the message.
    fn piece_done(&mut self, p: &Piece) {
        let Some(f) = self.inflow.as_mut() else { return };
        let Some(m) = f.msg.as_mut() else { return };
        let end = f.out.position();
        let kind = m.kind as u8;
        if p.d.last {
            if let Some(inf) = f.inflater.as_mut() {
                if m.compressed {
                    inf.end_message();
                }
            }
        }
        let publish: Option<(u64, u64, u8, bool, u8)> = match self.delivery {
            Delivery::Frames if p.d.frame_end => {
                let opcode = if m.frame_first { kind } else { op::CONT };
                let r = (m.frame_start, end - m.frame_start, opcode, p.d.last, 0);
                m.frame_start = end;
                m.frame_first = false;
                Some(r)
            }
            Delivery::Messages if p.d.last => {
                Some((m.start, end - m.start, kind, true, WsFrameInfo::FLAG_MESSAGE))
            }
            _ => None,
        };
        let compressed = m.compressed;
        if p.d.frame_end && !p.d.last {
            m.fragmented = true;
        }
        if p.d.last {
            if m.fragmented && self.delivery == Delivery::Messages {
                self.stats.add(Counter::Reassembled, 1);
            }
            f.msg = None;
            self.stats.add(Counter::Messages, 1);
            if compressed {
                self.stats.add(Counter::InflatedMessages, 1);
            }
        }
        if let Some((pos, len, opcode, fin, flags)) = publish {
            self.stats.add(Counter::PayloadBytes, len);
            if self.overwrite && self.inbox.check_and_clear_dirty() {
                self.stats.add(Counter::Overruns, 1);
                self.lost = true;
            }
            self.info(pos, len, opcode, fin, flags);
        }
    }

    /// The permessage-deflate path: WIRE_INBOX -> parser (pieces) -> MSG_INBOX.
    /// `readable`: WIRE_INBOX bytes from `pos` (loaded before the generation); `limit`:
    /// a newer connection's bytes start this far ahead (parse only up to there).
    fn poll_inflow(&mut self, now: u64, sent: bool, readable: usize, limit: Option<u64>) -> Result<Progress> {
        let mut n = 0;
        let mut moved = sent;
        let max_message = self.max_message;
        // A piece that found MSG_INBOX full last time goes first.
        if let Some(mut p) = self.inflow.as_mut().and_then(|f| f.pending.take()) {
            let f = self.inflow.as_mut().expect("inflow");
            let before = f.out.position();
            match f.write(&mut p, max_message, &self.stats) {
                PieceOutcome::Done => {
                    self.piece_done(&p);
                    n += 1;
                }
                PieceOutcome::Stalled => {
                    let f = self.inflow.as_mut().expect("inflow");
                    let progressed = f.out.position() != before;
                    f.pending = Some(p);
                    f.wire.release_to(p.pos.min(self.pos));
                    return Ok(Progress::from_bool(moved || progressed));
                }
                PieceOutcome::Fail(code, why) => {
                    self.publish_frames();
                    self.defer_fail(code, why, now);
                    self.fail_when_taken(now);
                    return Ok(Progress::Busy);
                }
            }
        }
        let f = self.inflow.as_mut().expect("inflow");
        let avail = match limit {
            Some(l) => readable.min(l as usize),
            None => readable,
        };
        if avail > 0 && !f.known {
            // The transport stored the negotiated parameters before the first byte after
            // the upgrade (release before the bytes' write position; acquire above).
            f.known = true;
            // Each connection's word has its own slot (by generation parity).
            let word = f.wire.extension(self.generation);
            let neg = Negotiated::from_word(word);
            f.inflater = neg.as_ref().map(Inflater::new);
            self.parser.set_compression(neg.is_some());
        }
        if avail == 0 {
            if limit.is_some() {
                self.old_tail_done = true;
            }
            if n > 0 {
                self.publish_frames();
            }
            return Ok(Progress::from_bool(moved || n > 0));
        }
        // SAFETY: [pos, pos + avail) of WIRE_INBOX is written and not released; only this
        // stage reads it, and nothing writes inside it (the parser does not compact in
        // FramePieces delivery).
        let slice = unsafe { std::slice::from_raw_parts(f.wire.ring().ptr_at(self.pos), avail) };
        let base = self.pos;
        let mut need_more = false;
        while n < EVENTS_PER_POLL {
            if self.frames.free() == 0 && !self.overwrite {
                self.stats.add(Counter::FrameRingFull, 1);
                break;
            }
            match self.parser.next(slice) {
                Ok(Some(Event::Data(d))) => {
                    n += 1;
                    let f = self.inflow.as_mut().expect("inflow");
                    if d.first {
                        let start = f.out.position();
                        f.utf8.reset();
                        f.msg = Some(OutMsg {
                            start,
                            written: 0,
                            frame_start: start,
                            frame_first: true,
                            kind: d.kind,
                            compressed: d.compressed,
                            fragmented: false,
                        });
                    }
                    if d.frame_end {
                        self.stats.add(Counter::Frames, 1);
                    }
                    let mut p = Piece { pos: base + d.offset as u64, len: d.len, d, tail: None };
                    match f.write(&mut p, max_message, &self.stats) {
                        PieceOutcome::Done => self.piece_done(&p),
                        PieceOutcome::Stalled => {
                            f.pending = Some(p);
                            break;
                        }
                        PieceOutcome::Fail(code, why) => {
                            self.defer_fail(code, why, now);
                            break;
                        }
                    }
                }
                Ok(Some(ev)) => {
                    n += 1;
                    self.event(ev, &[]);
                    self.stats.add(Counter::Frames, 1);
                    if self.closed {
                        break;
                    }
                }
                Ok(None) => {
                    need_more = true;
                    break;
                }
                Err(Error::WebSocket { close_code, reason }) => {
                    self.parse_error(close_code, reason, now);
                    n += 1;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let waiting = self.inflow.as_ref().is_some_and(|f| f.pending.is_some());
        if limit.is_some() && need_more && !waiting {
            // The old connection's last frame or message will never be completed.
            self.old_tail_done = true;
        }
        let released = self.parser.release();
        self.pos += released as u64;
        let f = self.inflow.as_mut().expect("inflow");
        let keep = f.pending.map_or(self.pos, |p| p.pos.min(self.pos));
        f.wire.release_to(keep);
        f.wire.set_parsed_pos(self.pos);
        moved |= released > 0;
        if n > 0 {
            self.publish_batch();
        }
        // Nothing before the bad frame waits for the AppClient: fail at once.
        self.fail_when_taken(now);
        Ok(Progress::from_bool(moved || n > 0))
    }

    /// A protocol error on the inflow path: stop parsing now, fail once the messages
    /// before it are taken (as on the plain path).
    fn defer_fail(&mut self, code: u16, reason: String, now: u64) {
        self.closed = true;
        self.failing = Some((code, reason, now));
    }
}

impl Stage for WebSocketStage {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn poll(&mut self, now: u64) -> Result<Progress> {
        self.parse_now = 0;
        // (Acquire of the write position first: a byte of a new connection seen there
        // implies its generation is visible below. With permessage-deflate offered the
        // transport writes WIRE_INBOX.)
        let readable = match &self.inflow {
            None => self.inbox.readable_from(self.pos),
            Some(f) => f.wire.readable_from(self.pos),
        };
        let mut limit = None;
        if let Some(p) = self.next_generation(now, &mut limit) {
            return Ok(p);
        }
        let sent = (self.pong.is_some() || self.close.is_some()) && self.flush_control();
        if self.failing.is_some() {
            return Ok(Progress::from_bool(self.fail_when_taken(now) || sent));
        }
        if self.closed {
            return Ok(Progress::from_bool(sent));
        }
        if self.inflow.is_some() {
            return self.poll_inflow(now, sent, readable, limit);
        }
        if self.overwrite && self.inbox.check_and_clear_dirty() {
            // Overwrite policy: the transport wrote over bytes the AppClient had not
            // released. Frames already published may be damaged (the reader checks each
            // against the writer's position); if the overrun reached bytes this stage had
            // not parsed yet, the frame boundaries are gone: close (1008) rather than
            // parse garbage.
            self.stats.add(Counter::Overruns, 1);
            if self.inbox.overrun_since(self.pos) {
                self.fail(1008, "MSG_INBOX overrun reached unparsed data (the WebSocket stage fell a whole inbox behind)");
                return Ok(Progress::Busy);
            }
        }
        let mut avail = readable;
        if let Some(l) = limit {
            avail = avail.min(l as usize);
        }
        if avail == 0 {
            if limit.is_some() {
                self.old_tail_done = true;
            }
            return Ok(Progress::from_bool(sent));
        }
        // SAFETY: [pos, pos + avail) is written (below write_pos) and not released: the
        // AppClient releases only up to positions this stage published, which are below
        // `pos` or inside ranges the parser has already handed out (never moved again).
        // This stage is the only one that writes inside it (in-place reassembly).
        // (A raw slice, not tied to `self`: the mapping outlives this call, and no other
        // reference into this range exists while the parser works on it.)
        let slice =
            unsafe { std::slice::from_raw_parts_mut(self.inbox.ring().ptr_at(self.pos), avail) };
        let mut n = 0;
        let mut need_more = false;
        while n < EVENTS_PER_POLL {
            // (PONGS needs no room check: PONGs and the CLOSE wait in `pong`/`close`.)
            if self.frames.free() == 0 && !self.overwrite {
                self.stats.add(Counter::FrameRingFull, 1);
                break;
            }
            match self.parser.next_in_place(slice) {
                Ok(Some(ev)) => {
                    self.event(ev, slice);
                    self.stats.add(Counter::Frames, 1);
                    n += 1;
                    if self.closed {
                        break;
                    }
                }
                Ok(None) => {
                    need_more = true;
                    break;
                }
                Err(Error::WebSocket { close_code, reason }) => {
                    // Fail once the messages before it are taken.
                    self.parse_error(close_code, reason, now);
                    n += 1;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if limit.is_some() && need_more {
            // The old connection's last frame or message will never be completed.
            self.old_tail_done = true;
        }
        let released = self.parser.release();
        self.pos += released as u64;
        if need_more && released == 0 && avail >= self.inbox.capacity() {
            // Everything from the parser's first unreleased byte fills MSG_INBOX and the
            // frame or message there is still incomplete: the transport can never write
            // the rest (only payload counts toward max_message; headers of fragments and
            // control frames between them fill the ring too). Waiting would wedge the
            // connection: close with 1009 instead.
            let why = format!(
                "message too big: with its frame headers and the control frames inside it, it needs more than the whole MSG_INBOX ({} bytes)",
                self.inbox.capacity()
            );
            self.fail(ws::close_code::MESSAGE_TOO_BIG, &why);
            n += 1;
        }
        if n > 0 {
            self.publish_batch();
            self.inbox.set_parsed_pos(self.pos);
        }
        // Nothing before the bad frame waits for the AppClient: fail at once.
        self.fail_when_taken(now);
        Ok(Progress::from_bool(n > 0 || sent))
    }
}

/// A parser's 1009 reason with the configured limit, which the parser (seeing the
/// wire limit) does not know.
fn with_limit(close_code: u16, reason: String, max_message: usize) -> String {
    if close_code == ws::close_code::MESSAGE_TOO_BIG {
        format!("{reason} (max_message {max_message} bytes)")
    } else {
        reason
    }
}


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
use crate::ring::{MsgInbox, PongFrame, Producer, WsFrameInfo};
use crate::stats::{Counter, DisconnectKind, DisconnectReason, State, StatsRegion};
use crate::ws::{self, Event, Parser, ParserConfig};

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
        let pos = inbox.parsed_pos().max(inbox.read_pos());
        let max_message = max_message.min(inbox.capacity());
        let overwrite = inbox.policy() == crate::ring::OverrunPolicy::Overwrite;
        let d = match delivery {
            Delivery::Messages => ws::Delivery::Messages,
            Delivery::Frames => ws::Delivery::Frames,
        };
        let parser_cfg = ParserConfig {
            delivery: d,
            max_message,
        };
        let generation = stats.get_acquire(Counter::Generation);
        WebSocketStage {
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
    fn next_generation(&mut self, now: u64, limit: &mut Option<u64>) -> Option<Progress> {
        // Acquire: pairs with the transport's Release store (after GenerationStart).
        let gen = self.stats.get_acquire(Counter::Generation);
        if gen == self.generation {
            return None;
        }
        let start = self.stats.get(Counter::GenerationStart);
        if !self.closed && self.failing.is_none() && self.pos < start && !self.old_tail_done {
            *limit = Some(start - self.pos);
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
        let g = WsFrameInfo::new(self.pos, 0, now, WsFrameInfo::OP_GENERATION, true, 0);
        if self.frames.stage(g).is_err() {
            self.stats.add(Counter::FrameRingFull, 1);
        }
        self.frames.publish();
        self.inbox.set_parsed_pos(self.pos);
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

    fn info(&mut self, pos: u64, len: u64, opcode: u8, fin: bool, mut flags: u8, now: u64) {
        if self.lost {
            flags |= WsFrameInfo::FLAG_OVERRUN;
        }
        if self.reconnected && opcode < op::CLOSE {
            flags |= WsFrameInfo::FLAG_RECONNECT;
            self.reconnected = false;
        }
        let i = WsFrameInfo::new(pos, len as u32, now, opcode, fin, flags);
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
    fn marker(&mut self, opcode: u8, now: u64) {
        let p = self.pos + self.parser.releasable() as u64;
        self.info(p, 0, opcode, true, 0, now);
    }

    fn event(&mut self, ev: Event, slice: &[u8], now: u64) {
        match ev {
            Event::Data(d) => {
                let p = self.pos + d.offset as u64;
                let kind = d.kind as u8;
                self.stats.add(Counter::PayloadBytes, d.len as u64);
                match self.delivery {
                    Delivery::Frames => {
                        let opcode = if d.first { kind } else { op::CONT };
                        self.info(p, d.len as u64, opcode, d.last, 0, now);
                    }
                    Delivery::Messages => {
                        self.info(p, d.len as u64, kind, true, WsFrameInfo::FLAG_MESSAGE, now);
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
                self.marker(op::PING, now);
            }
            Event::Pong(_) => {
                self.stats.add(Counter::PongsReceived, 1);
                self.marker(op::PONG, now);
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
                self.marker(op::CLOSE, now);
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

impl Stage for WebSocketStage {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn poll(&mut self, now: u64) -> Result<Progress> {
        // (Acquire of the write position first: a byte of a new connection seen there
        // implies its generation is visible below.)
        let readable = self.inbox.readable_from(self.pos);
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
                    self.event(ev, slice, now);
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
                Err(Error::WebSocket { close_code, mut reason }) => {
                    if close_code == ws::close_code::MESSAGE_TOO_BIG {
                        reason = format!("{reason} (max_message {} bytes)", self.max_message);
                    }
                    // Stop parsing now; fail once the messages before it are taken.
                    self.closed = true;
                    self.failing = Some((close_code, reason, now));
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
            self.frames.publish();
            self.inbox.set_parsed_pos(self.pos);
            let ring = self.frames.ring();
            self.stats.max(
                Counter::FrameRingHighWater,
                self.frames.position() - ring.tail(),
            );
        }
        // Nothing before the bad frame waits for the AppClient: fail at once.
        self.fail_when_taken(now);
        Ok(Progress::from_bool(n > 0 || sent))
    }
}

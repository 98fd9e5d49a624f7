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

use super::tmp_ws::{self as ws, Header};
use super::{Progress, Stage};
use crate::error::{Error, Result};
use crate::ring::{MsgInbox, PongFrame, Producer, WsFrameInfo};
use crate::stats::{Counter, State, StatsRegion};

/// What the AppClient receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Whole messages: fragments reassembled in place (default).
    #[default]
    Messages,
    /// Every data frame as it arrives (continuations have opcode 0, `fin` marks the last).
    Frames,
}

struct Partial {
    /// Stream position of the first fragment's payload (the message starts here).
    start: u64,
    len: u64,
    opcode: u8,
}

/// Frames per poll (bounded work).
const FRAMES_PER_POLL: usize = 256;

/// MSG_INBOX -> WS_FRAME_INFO (+ PONGS).
pub struct WebSocketStage {
    inbox: MsgInbox,
    frames: Producer<WsFrameInfo>,
    pongs: Producer<PongFrame>,
    stats: StatsRegion,
    delivery: Delivery,
    max_message: u64,
    pos: u64,
    partial: Option<Partial>,
    /// Frames mode: a fragmented message is being delivered.
    in_fragments: bool,
    closed: bool,
    /// Overwrite policy: never stall on a full WS_FRAME_INFO ring (drop and flag).
    overwrite: bool,
    /// The next published entry carries FLAG_OVERRUN (entries were dropped before it).
    lost: bool,
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
        let max_message = (max_message as u64).min(inbox.capacity() as u64);
        let overwrite = inbox.policy() == crate::ring::OverrunPolicy::Overwrite;
        WebSocketStage {
            inbox,
            frames,
            pongs,
            stats,
            delivery,
            max_message,
            pos,
            partial: None,
            in_fragments: false,
            closed: false,
            overwrite,
            lost: false,
        }
    }

    fn fail(&mut self, code: u16, reason: &str) {
        self.stats.note_reason(&format!(
            "websocket protocol error: {reason} (we closed with {code})"
        ));
        self.closed = true;
        if let Some(p) = PongFrame::new(ws::OP_CLOSE, &code.to_be_bytes()) {
            let _ = self.pongs.push(p);
        }
        self.stats.advance_state(&State::Closing);
    }

    fn info(&mut self, pos: u64, len: u64, opcode: u8, fin: bool, mut flags: u8, now: u64) {
        if self.lost {
            flags |= WsFrameInfo::FLAG_OVERRUN;
        }
        let i = WsFrameInfo::new(pos, len as u32, now, opcode, fin, flags);
        // Space was checked before the frame was taken (or, overwriting, we drop).
        if self.frames.stage(i).is_err() {
            self.lost = true;
            self.stats.add(Counter::FrameRingFull, 1);
        } else {
            self.lost = false;
        }
    }

    fn step(&mut self, h: Header, now: u64) -> Result<()> {
        let p = self.pos + h.hdr_len as u64;
        let len = h.len;
        match h.opcode {
            ws::OP_TEXT | ws::OP_BINARY => {
                if self.partial.is_some() || self.in_fragments {
                    return Err(proto(
                        1002,
                        "new data frame while a fragmented message is unfinished",
                    ));
                }
                self.stats.add(Counter::PayloadBytes, len);
                if self.delivery == Delivery::Frames {
                    if h.opcode == ws::OP_TEXT && h.fin {
                        self.check_utf8(p, len)?;
                    }
                    self.in_fragments = !h.fin;
                    self.info(p, len, h.opcode, h.fin, 0, now);
                    if h.fin {
                        self.stats.add(Counter::Messages, 1);
                    }
                } else if h.fin {
                    if h.opcode == ws::OP_TEXT {
                        self.check_utf8(p, len)?;
                    }
                    self.info(p, len, h.opcode, true, WsFrameInfo::FLAG_MESSAGE, now);
                    self.stats.add(Counter::Messages, 1);
                } else {
                    self.partial = Some(Partial {
                        start: p,
                        len,
                        opcode: h.opcode,
                    });
                }
            }
            ws::OP_CONT => {
                self.stats.add(Counter::PayloadBytes, len);
                if self.delivery == Delivery::Frames {
                    if !self.in_fragments {
                        return Err(proto(
                            1002,
                            "continuation frame without a message to continue",
                        ));
                    }
                    self.in_fragments = !h.fin;
                    self.info(p, len, ws::OP_CONT, h.fin, 0, now);
                    if h.fin {
                        self.stats.add(Counter::Messages, 1);
                    }
                    return Ok(());
                }
                let Some(m) = self.partial.as_mut() else {
                    return Err(proto(
                        1002,
                        "continuation frame without a message to continue",
                    ));
                };
                let dst = m.start + m.len;
                if m.len + len > self.max_message {
                    return Err(proto(1009, "message larger than max_message"));
                }
                if len > 0 && dst != p {
                    let span = (p + len - dst) as usize;
                    // SAFETY: [dst, p + len) is parsed-but-unpublished stream this stage
                    // owns (the AppClient only reads ranges published in WsFrameInfo),
                    // written by the transport (p + len <= write_pos) and at most the
                    // capacity long (checked against max_message <= capacity).
                    let s = unsafe { self.inbox.slice_mut(dst, span) };
                    s.copy_within(span - len as usize.., 0);
                }
                m.len += len;
                if h.fin {
                    let Partial { start, len, opcode } = self.partial.take().unwrap_or(Partial {
                        start: 0,
                        len: 0,
                        opcode: 0,
                    });
                    if opcode == ws::OP_TEXT {
                        self.check_utf8(start, len)?;
                    }
                    self.info(start, len, opcode, true, WsFrameInfo::FLAG_MESSAGE, now);
                    self.stats.add(Counter::Messages, 1);
                    self.stats.add(Counter::Reassembled, 1);
                }
            }
            ws::OP_PING => {
                self.stats.add(Counter::PingsReceived, 1);
                // SAFETY: [p, p + len) is written and not released (we have not published it).
                let payload = unsafe { self.inbox.slice(p, len as usize) };
                if let Some(pf) = PongFrame::new(ws::OP_PONG, payload) {
                    let _ = self.pongs.push(pf);
                }
                self.marker(p, len, ws::OP_PING, now);
            }
            ws::OP_PONG => {
                self.stats.add(Counter::PongsReceived, 1);
                self.marker(p, len, ws::OP_PONG, now);
            }
            ws::OP_CLOSE => {
                // SAFETY: as for PING.
                let payload = unsafe { self.inbox.slice(p, len as usize) };
                if payload.len() == 1 {
                    return Err(proto(1002, "close frame with a 1-byte payload"));
                }
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                let why = String::from_utf8_lossy(&payload[payload.len().min(2)..]).into_owned();
                let we_closed = self.stats.state_code() >= State::Closing.code();
                if !we_closed {
                    self.stats.note_reason(&format!(
                        "closed by server: code {code}{}{}",
                        if why.is_empty() { "" } else { " " },
                        why
                    ));
                }
                let reply = if payload.len() >= 2 {
                    &payload[..2]
                } else {
                    &[][..]
                };
                if let Some(pf) = PongFrame::new(ws::OP_CLOSE, reply) {
                    let _ = self.pongs.push(pf);
                }
                self.stats.advance_state(&State::Closing);
                self.marker(p, len, ws::OP_CLOSE, now);
                self.closed = true;
            }
            _ => return Err(proto(1002, "unknown opcode")),
        }
        Ok(())
    }

    /// A release-only entry for a control frame (not while a message is being
    /// compacted: its bytes are about to be overwritten, and releasing them would
    /// release the message's first fragments too).
    fn marker(&mut self, p: u64, len: u64, opcode: u8, now: u64) {
        if self.partial.is_none() {
            self.info(p, len, opcode, true, 0, now);
        }
    }

    fn check_utf8(&self, p: u64, len: u64) -> Result<()> {
        // SAFETY: the range is written and unpublished.
        let s = unsafe { self.inbox.slice(p, len as usize) };
        if std::str::from_utf8(s).is_err() {
            return Err(proto(1007, "text message is not valid UTF-8"));
        }
        Ok(())
    }
}

fn proto(code: u16, reason: &str) -> Error {
    Error::WebSocket {
        close_code: code,
        reason: reason.into(),
    }
}

impl Stage for WebSocketStage {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn poll(&mut self, now: u64) -> Result<Progress> {
        if self.closed {
            return Ok(Progress::Idle);
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
        let cap = self.inbox.capacity() as u64;
        let mut n = 0;
        while n < FRAMES_PER_POLL {
            let avail = self.inbox.readable_from(self.pos) as u64;
            if avail < 2 {
                break;
            }
            // SAFETY: [pos, pos + min(avail, 14)) is written and not released.
            let head = unsafe { self.inbox.slice(self.pos, avail.min(14) as usize) };
            let h = match ws::parse_header(head) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(Error::WebSocket { close_code, reason }) => {
                    self.fail(close_code, &reason);
                    break;
                }
                Err(e) => return Err(e),
            };
            let total = h.hdr_len as u64 + h.len;
            if h.len > self.max_message || total > cap {
                self.fail(
                    1009,
                    &format!(
                        "frame of {} bytes exceeds max_message {}",
                        h.len, self.max_message
                    ),
                );
                break;
            }
            if avail < total {
                break;
            }
            if (self.frames.free() == 0 && !self.overwrite) || self.pongs.free() == 0 {
                self.stats.add(Counter::FrameRingFull, 1);
                break;
            }
            match self.step(h, now) {
                Ok(()) => {}
                Err(Error::WebSocket { close_code, reason }) => {
                    self.fail(close_code, &reason);
                    break;
                }
                Err(e) => return Err(e),
            }
            self.pos += total;
            self.stats.add(Counter::Frames, 1);
            n += 1;
            if self.closed {
                break;
            }
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
        Ok(Progress::from_bool(n > 0))
    }
}

//! Incremental, zero-copy frame parser for frames sent by a server (RFC 6455 §5).
//!
//! # How the caller drives it
//!
//! The caller owns the bytes (the readable part of a byte ring). It hands the parser
//! a contiguous slice that starts at the first byte it has not yet released, calls
//! [`Parser::next`] until it returns `Ok(None)` ("need more bytes"), then calls
//! [`Parser::release`] to learn how many bytes at the front it may drop. The next
//! slice must start right after those, with the rest unchanged and possibly more
//! appended. Offsets in events are relative to the slice passed to that call.
//!
//! ```text
//! loop { while let Some(ev) = p.next(ring.readable())? { handle(ev) }
//!        ring.advance(p.release()); }
//! ```
//!
//! Releasing means "the parser no longer needs these bytes", not "the application is
//! done with them": a payload handed out by offset stays the application's until it
//! says otherwise — that bookkeeping is the ring's, not the parser's.
//!
//! A pull API rather than a callback so the caller can stop mid-batch (say, when the
//! ring to the application is full) and resume without losing anything.
//!
//! # Delivery modes (see `docs/websocket.md`)
//!
//! - [`Delivery::Frames`]: one [`Data`] event per complete data frame. A frame is
//!   reported only once all of it is in the slice, so its payload is contiguous; the
//!   bytes of an incomplete frame are not released. The ring must be able to hold the
//!   largest frame (bounded by `max_message`).
//! - [`Delivery::FramePieces`]: data payloads are reported as soon as any bytes of
//!   them arrive, and released at once. For frames bigger than the ring.
//! - [`Delivery::Messages`]: one event per whole message. Fragments are made
//!   contiguous *in the caller's buffer*: each later fragment's payload is moved back
//!   over the headers (and any control frames) in between, so no reassembly buffer
//!   and no copy for the common unfragmented message. Needs `&mut` access
//!   ([`Parser::next_in_place`]) and keeps the whole message unreleased until it ends.
//!
//! Control frames (≤125 bytes) are always reported whole, with a copy of their
//! payload, in every mode.
//!
//! # Checks, with the close code to send (RFC 6455 §7.4.1)
//!
//! RSV bits (no extension is ever negotiated), reserved opcodes, masked frames,
//! fragmented or >125-byte control frames, a 64-bit length with its top bit set,
//! continuation without a message / new message inside a fragmented one, a 1-byte
//! close payload or invalid close code: 1002. Invalid UTF-8 in text (checked as bytes
//! arrive, across fragments, failing at the first bad byte) or in a close reason:
//! 1007. Message over `max_message`: 1009. Non-minimal length encodings are accepted:
//! the RFC obliges the sender, and dropping a market-data feed over a harmless
//! encoding choice helps nobody.
//!
//! After an error the parser is failed: every later call returns the same error. After
//! a close frame it reports nothing more (RFC 6455 §5.5.1: no data after close).

use crate::error::{Error, Result};

use super::close::parse_close_payload;
use super::frame::{
    close_code, ControlPayload, Data, Event, MessageKind, OpCode, MAX_CONTROL_PAYLOAD,
};
use super::utf8::Utf8Validator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Frames,
    FramePieces,
    Messages,
}

#[derive(Debug, Clone, Copy)]
pub struct ParserConfig {
    pub delivery: Delivery,
    /// Largest message (sum of its fragments' payloads) accepted; more fails with 1009.
    pub max_message: usize,
}

impl Default for ParserConfig {
    fn default() -> Self {
        ParserConfig {
            delivery: Delivery::Frames,
            max_message: 16 << 20,
        }
    }
}

/// A decoded frame header (before validation).
#[derive(Debug, Clone, Copy)]
struct Header {
    b0: u8,
    masked: bool,
    len: u64,
    len_bytes: usize,
}

/// Decode the fixed part and the length; `None` if `b` does not hold the whole header.
/// One branch on the length form; the extended length is one big-endian load.
#[inline(always)]
fn decode_header(b: &[u8]) -> Option<Header> {
    let (&b0, rest) = b.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    let (len, ext) = match len7 {
        126 => {
            let e = rest.get(..2)?;
            (u64::from(u16::from_be_bytes([e[0], e[1]])), 2)
        }
        127 => {
            let e = rest.get(..8)?;
            let mut w = [0u8; 8];
            w.copy_from_slice(e);
            (u64::from_be_bytes(w), 8)
        }
        n => (u64::from(n), 0),
    };
    let len_bytes = 2 + ext + if masked { 4 } else { 0 };
    if b.len() < len_bytes {
        return None;
    }
    Some(Header {
        b0,
        masked,
        len,
        len_bytes,
    })
}

/// The frame whose header has been decoded; its payload starts at `Parser::pos`.
#[derive(Debug, Clone, Copy)]
struct Cur {
    opcode: OpCode,
    fin: bool,
    /// Payload bytes not yet delivered (all of it, in the whole-frame modes).
    left: usize,
    /// Of those, how many have already been UTF-8 checked (they may be presented
    /// again on the next call; never check a byte twice).
    checked: usize,
}

/// The data message in progress.
#[derive(Debug, Clone, Copy)]
struct Msg {
    kind: MessageKind,
    total: usize,
    first_pending: bool,
    /// RSV1 on the first frame (permessage-deflate): UTF-8 is checked after inflating.
    compressed: bool,
}

/// Message delivery: the contiguous payload gathered so far, `buf[dst..dst+len]`.
#[derive(Debug, Clone, Copy)]
struct Asm {
    dst: usize,
    len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closed,
    Failed { code: u16, reason: &'static str },
}

enum Step {
    Event(Event),
    /// Move `from..from+len` to `to` (to < from), then report `then` if any.
    Compact {
        from: usize,
        to: usize,
        len: usize,
        then: Option<Event>,
    },
}

#[derive(Debug, Clone)]
pub struct Parser {
    cfg: ParserConfig,
    /// Next byte to look at, in the current slice.
    pos: usize,
    /// Bytes before this may be released.
    keep: usize,
    cur: Option<Cur>,
    msg: Option<Msg>,
    asm: Option<Asm>,
    utf8: Utf8Validator,
    state: State,
    /// permessage-deflate was negotiated: RSV1 is allowed on a message's first frame.
    rsv1: bool,
}

impl Parser {
    pub fn new(cfg: ParserConfig) -> Self {
        Parser {
            cfg,
            pos: 0,
            keep: 0,
            cur: None,
            msg: None,
            asm: None,
            utf8: Utf8Validator::new(),
            state: State::Open,
            rsv1: false,
        }
    }

    /// permessage-deflate (RFC 7692) was negotiated: accept RSV1 on the first frame of
    /// a data message and report such messages with [`Data::compressed`] (their payload
    /// is deflate data: the caller inflates it and checks UTF-8 on the result; message
    /// limits apply to the compressed bytes here). RSV1 on a continuation or control
    /// frame is still a protocol error (1002).
    pub fn set_compression(&mut self, on: bool) {
        self.rsv1 = on;
    }

    pub fn config(&self) -> &ParserConfig {
        &self.cfg
    }

    /// A close frame has been reported; nothing more will be.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The close code of the protocol error that failed the parser, if any.
    pub fn failure(&self) -> Option<u16> {
        match self.state {
            State::Failed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// How many bytes at the front of the slice [`release`](Self::release) would let go.
    pub fn releasable(&self) -> usize {
        self.keep
    }

    /// Bytes at the front of the current slice the parser no longer needs. Call it
    /// between batches; the next slice must start that many bytes later (offsets in
    /// the parser's state are rebased).
    pub fn release(&mut self) -> usize {
        let n = self.keep;
        self.pos -= n;
        self.keep = 0;
        if let Some(a) = self.asm.as_mut() {
            a.dst -= n;
        }
        n
    }

    /// Next event from `buf` in [`Delivery::Frames`] or [`Delivery::FramePieces`]
    /// mode; `Ok(None)` means all complete input has been reported.
    #[inline]
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<Event>> {
        if self.cfg.delivery == Delivery::Messages {
            return Err(Error::Config(
                "message delivery reassembles in place: use Parser::next_in_place".into(),
            ));
        }
        if let Some(ev) = self.whole_message_at_start(buf) {
            return Ok(Some(ev));
        }
        match self.step(buf)? {
            None => Ok(None),
            Some(Step::Event(e)) => Ok(Some(e)),
            Some(Step::Compact { .. }) => {
                self.fail(close_code::INTERNAL_ERROR, "parser compacted in frame mode")
            }
        }
    }

    /// Like [`next`](Self::next), in any mode; [`Delivery::Messages`] needs it
    /// because it moves fragment payloads within `buf`.
    #[inline]
    pub fn next_in_place(&mut self, buf: &mut [u8]) -> Result<Option<Event>> {
        if let Some(ev) = self.whole_message_at_start(buf) {
            return Ok(Some(ev));
        }
        loop {
            match self.step(buf)? {
                None => return Ok(None),
                Some(Step::Event(e)) => return Ok(Some(e)),
                Some(Step::Compact {
                    from,
                    to,
                    len,
                    then,
                }) => {
                    buf.copy_within(from..from + len, to);
                    if let Some(e) = then {
                        return Ok(Some(e));
                    }
                }
            }
        }
    }

    fn fail<T>(&mut self, code: u16, reason: &'static str) -> Result<T> {
        self.state = State::Failed { code, reason };
        Err(Error::WebSocket {
            close_code: code,
            reason: reason.into(),
        })
    }

    /// Validate a new frame's header against the protocol and the message state.
    #[inline]
    fn check_header(&mut self, h: &Header) -> Result<(OpCode, bool, usize)> {
        use close_code::{MESSAGE_TOO_BIG, PROTOCOL_ERROR};
        let fin = h.b0 & 0x80 != 0;
        let rsv = h.b0 & 0x70;
        if rsv != 0 && !(self.rsv1 && rsv == 0x40) {
            return self.fail(
                PROTOCOL_ERROR,
                if self.rsv1 {
                    "RSV2 or RSV3 set (only RSV1 is negotiated, by permessage-deflate)"
                } else {
                    "reserved bits set without a negotiated extension"
                },
            );
        }
        let Some(opcode) = OpCode::from_u8(h.b0 & 0x0f) else {
            return self.fail(PROTOCOL_ERROR, "reserved opcode");
        };
        if rsv != 0 && (matches!(opcode, OpCode::Continuation) || opcode.is_control()) {
            return self.fail(
                PROTOCOL_ERROR,
                "RSV1 set on a control or continuation frame (permessage-deflate marks a message's first frame only)",
            );
        }
        if h.masked {
            return self.fail(PROTOCOL_ERROR, "masked frame from the server");
        }
        if h.len >> 63 != 0 {
            return self.fail(PROTOCOL_ERROR, "64-bit payload length with the top bit set");
        }
        if opcode.is_control() {
            if !fin {
                return self.fail(PROTOCOL_ERROR, "fragmented control frame");
            }
            if h.len > MAX_CONTROL_PAYLOAD as u64 {
                return self.fail(PROTOCOL_ERROR, "control frame payload over 125 bytes");
            }
            return Ok((opcode, fin, h.len as usize));
        }
        let so_far = match (opcode, self.msg) {
            (OpCode::Continuation, Some(m)) => m.total,
            (OpCode::Continuation, None) => {
                return self.fail(
                    PROTOCOL_ERROR,
                    "continuation frame without a message in progress",
                )
            }
            (_, Some(_)) => {
                return self.fail(PROTOCOL_ERROR, "new data frame inside a fragmented message")
            }
            (_, None) => 0,
        };
        if h.len > (self.cfg.max_message - so_far) as u64 {
            return self.fail(MESSAGE_TOO_BIG, "message larger than the configured limit");
        }
        Ok((opcode, fin, h.len as usize))
    }

    /// [`Self::whole_message`] before `step`'s state checks and its `Step` wrapping, for
    /// the entry points: only when nothing is in progress and the parser is open.
    #[inline(always)]
    fn whole_message_at_start(&mut self, buf: &[u8]) -> Option<Event> {
        if self.cur.is_some() || self.state != State::Open {
            return None;
        }
        let h = decode_header(buf.get(self.pos..)?)?;
        self.whole_message(&h, buf)
    }

    /// The common case, without the message bookkeeping: no message in progress and a
    /// whole, final, unmasked data frame with no RSV bits, within `max_message`, all in
    /// `buf` (and valid UTF-8 if text). Every mode reports such a frame as the same
    /// single event, and leaves the parser as the general path does (nothing in
    /// progress, everything up to the frame's end releasable). Anything else (or a
    /// failure to report) goes the general way, which checks and reports it.
    ///
    /// Why: the general path's per-frame state (`Cur`, `Msg`, `Asm`) cost about a fifth
    /// of the WebSocket stage's instructions per message for feeds of small messages.
    #[inline(always)]
    fn whole_message(&mut self, h: &Header, buf: &[u8]) -> Option<Event> {
        let kind = match h.b0 {
            0x82 => MessageKind::Binary,
            0x81 => MessageKind::Text,
            _ => return None,
        };
        if self.msg.is_some() || h.masked || h.len > self.cfg.max_message as u64 {
            return None;
        }
        let len = h.len as usize;
        let start = self.pos + h.len_bytes;
        let payload = buf.get(start..start.checked_add(len)?)?;
        if kind == MessageKind::Text && !super::utf8::validate(payload) {
            return None;
        }
        self.pos = start + len;
        self.keep = self.pos;
        Some(Event::Data(Data {
            kind,
            offset: start,
            len,
            first: true,
            last: true,
            frame_end: true,
            compressed: false,
        }))
    }

    // Inlined into both entry points so events are built in the caller's return slot.
    #[inline(always)]
    fn step(&mut self, buf: &[u8]) -> Result<Option<Step>> {
        match self.state {
            State::Open => {}
            State::Closed => return Ok(None),
            State::Failed { code, reason } => {
                return Err(Error::WebSocket {
                    close_code: code,
                    reason: reason.into(),
                })
            }
        }
        if buf.len() < self.pos {
            return Err(Error::Config(format!(
                "parser given {} bytes but had already read {}: present unreleased bytes again",
                buf.len(),
                self.pos
            )));
        }
        let messages = self.cfg.delivery == Delivery::Messages;
        loop {
            let mut c = match self.cur {
                Some(c) => c,
                None => {
                    let Some(h) = decode_header(&buf[self.pos..]) else {
                        return Ok(None);
                    };
                    if let Some(ev) = self.whole_message(&h, buf) {
                        return Ok(Some(Step::Event(ev)));
                    }
                    let (opcode, fin, len) = self.check_header(&h)?;
                    self.pos += h.len_bytes;
                    if !opcode.is_control() {
                        let total = match (opcode, self.msg) {
                            (OpCode::Continuation, Some(m)) => m.total,
                            _ => {
                                self.utf8.reset();
                                if messages {
                                    self.asm = Some(Asm {
                                        dst: self.pos,
                                        len: 0,
                                    });
                                }
                                0
                            }
                        };
                        let kind = match (opcode, self.msg) {
                            (OpCode::Text, _) => MessageKind::Text,
                            (OpCode::Binary, _) => MessageKind::Binary,
                            (_, Some(m)) => m.kind,
                            (_, None) => {
                                return self.fail(close_code::INTERNAL_ERROR, "parser state")
                            }
                        };
                        let first_pending = self.msg.map_or(true, |m| m.first_pending);
                        let compressed = match self.msg {
                            Some(m) => m.compressed,
                            None => h.b0 & 0x40 != 0,
                        };
                        self.msg = Some(Msg {
                            kind,
                            total: total + len,
                            first_pending,
                            compressed,
                        });
                        if self.cfg.delivery == Delivery::FramePieces {
                            self.keep = self.pos;
                        }
                    }
                    Cur {
                        opcode,
                        fin,
                        left: len,
                        checked: 0,
                    }
                }
            };
            let pos = self.pos;
            let avail = (buf.len() - pos).min(c.left);

            if c.opcode.is_control() {
                if avail < c.left {
                    self.cur = Some(c);
                    return Ok(None);
                }
                let payload = &buf[pos..pos + c.left];
                self.pos += c.left;
                self.cur = None;
                let ev = match c.opcode {
                    OpCode::Ping | OpCode::Pong => {
                        let Some(p) = ControlPayload::new(payload) else {
                            return self.fail(close_code::INTERNAL_ERROR, "parser state");
                        };
                        if c.opcode == OpCode::Ping {
                            Event::Ping(p)
                        } else {
                            Event::Pong(p)
                        }
                    }
                    _ => match parse_close_payload(payload) {
                        Ok(f) => {
                            // An unfinished message never completes now.
                            self.state = State::Closed;
                            self.msg = None;
                            self.asm = None;
                            Event::Close(f)
                        }
                        Err((code, reason)) => return self.fail(code, reason),
                    },
                };
                // Inside a message being reassembled, its bytes stay; otherwise (or
                // once closed, when nothing more will be read) everything up to here goes.
                if !(messages && self.asm.is_some()) || self.state == State::Closed {
                    self.keep = self.pos;
                }
                return Ok(Some(Step::Event(ev)));
            }

            let Some(mut m) = self.msg else {
                return self.fail(close_code::INTERNAL_ERROR, "parser state");
            };
            let text = m.kind == MessageKind::Text && !m.compressed;
            if text && avail > c.checked {
                if self.utf8.feed(&buf[pos + c.checked..pos + avail]).is_err() {
                    return self.fail(
                        close_code::INVALID_PAYLOAD,
                        "invalid UTF-8 in a text message",
                    );
                }
                c.checked = avail;
            }

            if self.cfg.delivery == Delivery::FramePieces {
                if avail == 0 && c.left > 0 {
                    self.cur = Some(c);
                    return Ok(None);
                }
                let frame_done = avail == c.left;
                let last = c.fin && frame_done;
                if last && text && !self.utf8.is_complete() {
                    return self.fail(
                        close_code::INVALID_PAYLOAD,
                        "text message ends inside a UTF-8 sequence",
                    );
                }
                let ev = Data {
                    kind: m.kind,
                    offset: pos,
                    len: avail,
                    first: m.first_pending,
                    last,
                    frame_end: frame_done,
                    compressed: m.compressed,
                };
                m.first_pending = false;
                self.pos += avail;
                self.keep = self.pos;
                self.msg = if last { None } else { Some(m) };
                self.cur = if frame_done {
                    None
                } else {
                    Some(Cur {
                        left: c.left - avail,
                        checked: 0,
                        ..c
                    })
                };
                return Ok(Some(Step::Event(Event::Data(ev))));
            }

            if avail < c.left {
                self.cur = Some(c);
                return Ok(None);
            }
            let len = c.left;
            self.pos += len;
            self.cur = None;
            if c.fin && text && !self.utf8.is_complete() {
                return self.fail(
                    close_code::INVALID_PAYLOAD,
                    "text message ends inside a UTF-8 sequence",
                );
            }
            if !messages {
                let ev = Data {
                    kind: m.kind,
                    offset: pos,
                    len,
                    first: m.first_pending,
                    last: c.fin,
                    frame_end: true,
                    compressed: m.compressed,
                };
                m.first_pending = false;
                self.msg = if c.fin { None } else { Some(m) };
                self.keep = self.pos;
                return Ok(Some(Step::Event(Event::Data(ev))));
            }
            let Some(mut a) = self.asm else {
                return self.fail(close_code::INTERNAL_ERROR, "parser state");
            };
            let to = a.dst + a.len;
            a.len += len;
            let then = if c.fin {
                self.asm = None;
                self.msg = None;
                self.keep = self.pos;
                Some(Event::Data(Data {
                    kind: m.kind,
                    offset: a.dst,
                    len: a.len,
                    first: true,
                    last: true,
                    frame_end: true,
                    compressed: m.compressed,
                }))
            } else {
                self.asm = Some(a);
                self.msg = Some(m);
                None
            };
            if to != pos && len > 0 {
                return Ok(Some(Step::Compact {
                    from: pos,
                    to,
                    len,
                    then,
                }));
            }
            if let Some(e) = then {
                return Ok(Some(Step::Event(e)));
            }
        }
    }
}

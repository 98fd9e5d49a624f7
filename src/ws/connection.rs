//! A sans-IO WebSocket client connection: the parser, the builder and the closing
//! handshake in one state machine. Bytes in → events out, plus bytes to send.
//!
//! It answers PINGs (coalescing: while output is still unsent, a newer PING's answer
//! replaces the waiting one, RFC 6455 §5.5.3, so a server that floods PINGs and does
//! not read cannot grow the output buffer), echoes a server's close, and on a protocol error queues the close
//! frame with the right code before returning the error — the three things every
//! caller would otherwise have to remember. It owns a growable output buffer, so it
//! suits set-up, tests and tools; the pipeline's hot path can use [`Parser`] and
//! [`FrameBuilder`] directly on its rings with the same semantics.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

use super::builder::{frame_len, FrameBuilder, MaskMode};
use super::close::{CloseAction, CloseHandshake, CloseState};
use super::frame::{ControlPayload, Event, OpCode};
use super::parser::{Parser, ParserConfig};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    pub parser: ParserConfig,
    pub mask: MaskMode,
    /// How long to wait for the server's close after sending ours.
    pub close_timeout: Duration,
    /// Answer PINGs (the event is still reported). Only the latest PING's PONG waits
    /// while earlier output is unsent.
    pub auto_pong: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            parser: ParserConfig::default(),
            mask: MaskMode::Random,
            close_timeout: Duration::from_secs(5),
            auto_pong: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Connection {
    parser: Parser,
    builder: FrameBuilder,
    close: CloseHandshake,
    out: Vec<u8>,
    /// `out[..out_off]` has been sent (see [`Connection::consume_output`]).
    out_off: usize,
    auto_pong: bool,
    /// The answer to the latest PING, waiting for `out` to be sent: it is encoded only
    /// once `out` is empty (or before our close), so at most one PONG is ever queued.
    pong: Option<ControlPayload>,
}

/// Cut `s` to at most `max` bytes on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Connection {
    pub fn new(cfg: ConnectionConfig) -> Result<Self> {
        Ok(Self::with_builder(
            cfg,
            FrameBuilder::new()?.mask_mode(cfg.mask),
        ))
    }

    /// With a given builder (e.g. a seeded one, for reproducible output in tests).
    pub fn with_builder(cfg: ConnectionConfig, builder: FrameBuilder) -> Self {
        Connection {
            parser: Parser::new(cfg.parser),
            builder,
            close: CloseHandshake::new(cfg.close_timeout),
            out: Vec::new(),
            out_off: 0,
            auto_pong: cfg.auto_pong,
            pong: None,
        }
    }

    pub fn parser(&self) -> &Parser {
        &self.parser
    }

    /// Next event from received bytes (same contract as [`Parser::next_in_place`]).
    pub fn next_event(&mut self, buf: &mut [u8]) -> Result<Option<Event>> {
        match self.parser.next_in_place(buf) {
            Ok(Some(Event::Ping(p))) => {
                if self.auto_pong && self.close.can_send_data() {
                    if self.pending_output().is_empty() {
                        self.queue(OpCode::Pong, true, p.as_bytes())?;
                    } else {
                        // Supersedes any older unanswered PING (§5.5.3).
                        self.pong = Some(p);
                    }
                }
                Ok(Some(Event::Ping(p)))
            }
            Ok(Some(Event::Close(f))) => {
                if let CloseAction::SendClose { code, .. } = self.close.remote_close(&f) {
                    self.queue_close(code, "")?;
                }
                Ok(Some(Event::Close(f)))
            }
            Ok(other) => Ok(other),
            Err(e) => {
                if let Error::WebSocket { close_code, reason } = &e {
                    if *close_code != 0 {
                        if let CloseAction::SendClose { code, .. } =
                            self.close.protocol_error(*close_code)
                        {
                            let reason = reason.clone();
                            self.queue_close(code, &reason)?;
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// See [`Parser::release`].
    pub fn release(&mut self) -> usize {
        self.parser.release()
    }

    fn queue(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) -> Result<()> {
        let start = self.out.len();
        self.out.resize(start + frame_len(payload.len()), 0);
        let n = self
            .builder
            .encode(opcode, fin, payload, &mut self.out[start..]);
        self.out.truncate(start + *n.as_ref().unwrap_or(&0));
        n.map(|_| ())
    }

    fn queue_close(&mut self, code: Option<u16>, reason: &str) -> Result<()> {
        // The waiting PONG goes first: answers keep their order, nothing after a close.
        if let Some(p) = self.pong.take() {
            self.queue(OpCode::Pong, true, p.as_bytes())?;
        }
        let start = self.out.len();
        self.out.resize(start + frame_len(125), 0);
        let reason = if code.is_some() {
            truncate_utf8(reason, 123)
        } else {
            ""
        };
        let n = self.builder.close(code, reason, &mut self.out[start..]);
        self.out.truncate(start + *n.as_ref().unwrap_or(&0));
        n.map(|_| ())
    }

    /// Queue a data or control frame. Data is refused once a close has been sent.
    pub fn send(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) -> Result<()> {
        if !self.close.can_send_data() {
            return Err(Error::Closed(
                "the WebSocket closing handshake has started".into(),
            ));
        }
        if opcode == OpCode::Close {
            return Err(Error::Config(
                "use Connection::close to send a close frame".into(),
            ));
        }
        self.queue(opcode, fin, payload)
    }

    pub fn send_text(&mut self, s: &str) -> Result<()> {
        self.send(OpCode::Text, true, s.as_bytes())
    }

    pub fn send_binary(&mut self, b: &[u8]) -> Result<()> {
        self.send(OpCode::Binary, true, b)
    }

    /// Start the closing handshake; the server's close (or the timeout, see
    /// [`poll_timeout`](Self::poll_timeout)) ends it.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) -> Result<()> {
        if let CloseAction::SendClose { code, .. } = self.close.local_close(code, now) {
            self.queue_close(code, reason)?;
        }
        Ok(())
    }

    /// Drive the close timer; true once the transport should be closed.
    pub fn poll_timeout(&mut self, now: Instant) -> bool {
        self.close.poll_timeout(now);
        self.should_close_transport()
    }

    /// When to call [`poll_timeout`](Self::poll_timeout) next, if a timer runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.close.deadline()
    }

    pub fn close_state(&self) -> CloseState {
        self.close.state()
    }

    /// The closing handshake is over (or the connection failed): once the output is
    /// flushed, close the transport.
    pub fn should_close_transport(&self) -> bool {
        self.close.state() == CloseState::Done
    }

    /// Bytes waiting to be sent.
    pub fn pending_output(&self) -> &[u8] {
        &self.out[self.out_off..]
    }

    /// `n` bytes of [`pending_output`](Self::pending_output) were sent.
    ///
    /// Advances an offset instead of shifting the rest to the front on every call: a
    /// 16 MiB frame going out in 200 KiB partial sends would otherwise be memmoved ~80
    /// times. The buffer is emptied when all is sent, and compacted once the sent part
    /// is both large and the bigger half.
    pub fn consume_output(&mut self, n: usize) {
        self.out_off = (self.out_off + n).min(self.out.len());
        if self.out_off == self.out.len() {
            self.out.clear();
            self.out_off = 0;
            if let Some(p) = self.pong.take() {
                // Cannot fail (a checked control payload of at most 125 bytes); if it
                // did, that PING would merely go unanswered.
                let _ = self.queue(OpCode::Pong, true, p.as_bytes());
            }
        } else if self.out_off >= 64 * 1024 && self.out_off * 2 >= self.out.len() {
            self.out.drain(..self.out_off);
            self.out_off = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::builder::FrameBuilder;

    /// PINGs while output is unsent: one PONG is queued; once it is sent, the answer to
    /// the latest PING follows and the ones in between are dropped (RFC 6455 §5.5.3).
    #[test]
    fn unsent_pongs_coalesce_to_the_latest_ping() {
        let mut c = Connection::new(ConnectionConfig::default()).unwrap();
        let mut stream = Vec::new();
        for i in 0..1000u32 {
            let p = i.to_be_bytes();
            stream.extend_from_slice(&[0x89, 4]);
            stream.extend_from_slice(&p);
        }
        let mut pings = 0;
        while let Some(ev) = c.next_event(&mut stream).unwrap() {
            assert!(matches!(ev, Event::Ping(_)));
            pings += 1;
        }
        assert_eq!(pings, 1000);
        // One masked PONG (2 + 4 + 4 bytes) for the first PING, nothing more.
        let unmask = |f: &[u8]| -> Vec<u8> { (0..4).map(|i| f[6 + i] ^ f[2 + i]).collect() };
        assert_eq!(c.pending_output().len(), 10);
        assert_eq!(
            (c.pending_output()[0], unmask(c.pending_output())),
            (0x8a, 0u32.to_be_bytes().to_vec())
        );
        c.consume_output(10);
        assert_eq!(c.pending_output().len(), 10);
        assert_eq!(unmask(c.pending_output()), 999u32.to_be_bytes().to_vec());
        c.consume_output(10);
        assert!(c.pending_output().is_empty());
    }

    /// Partial sends in odd sizes, frames queued in between: the bytes that go out are
    /// exactly the frames in order (the offset bookkeeping loses or repeats nothing).
    #[test]
    fn consume_output_in_pieces_keeps_the_byte_stream() {
        let cfg = ConnectionConfig::default();
        let mut a = Connection::with_builder(cfg, FrameBuilder::with_seed(7));
        let mut b = Connection::with_builder(cfg, FrameBuilder::with_seed(7));
        let big = vec![0x5au8; 300_000];
        let mut want = Vec::new();
        for i in 0..6 {
            b.send_binary(&big[..50_000 * i + 1]).unwrap();
            want.extend_from_slice(b.pending_output());
            b.consume_output(usize::MAX);
            assert!(b.pending_output().is_empty());
        }
        let mut got = Vec::new();
        let mut step = 1usize;
        for i in 0..6 {
            a.send_binary(&big[..50_000 * i + 1]).unwrap();
            // Send only part of what is pending, in growing odd pieces.
            let n = a.pending_output().len().min(step);
            got.extend_from_slice(&a.pending_output()[..n]);
            a.consume_output(n);
            step = step * 3 + 1;
        }
        while !a.pending_output().is_empty() {
            let n = a.pending_output().len().min(70_001);
            got.extend_from_slice(&a.pending_output()[..n]);
            a.consume_output(n);
        }
        assert!(got == want, "byte streams differ ({} vs {} bytes)", got.len(), want.len());
    }
}

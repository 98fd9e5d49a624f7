//! A complete `ws://` / `wss://` client over any [`ByteTransport`]: the kernel socket
//! ([`WsClient::connect`]) or a transport the caller brings ([`WsClient::over`]), e.g.
//! our TCP over AF_XDP.
//!
//! It glues the sans-IO cores together: [`crate::tls`] (verification on by default),
//! the upgrade ([`ClientHandshake`], strict), and [`Connection`] (parser, builder,
//! closing handshake, automatic PONG). Received bytes are decrypted straight into one
//! fixed receive buffer (`max_message` + [`RECV_SLACK`]) and parsed in place; messages
//! are handed out as borrows of that buffer — no allocation and no copy per message
//! (fragments are compacted in place by the parser).
//!
//! ```no_run
//! use pipeline::client::{ClientConfig, Message, WsClient};
//! use std::time::Duration;
//! # fn main() -> pipeline::Result<()> {
//! let mut ws = WsClient::connect("wss://stream.example.com/ws", &ClientConfig::default())?;
//! ws.send_text(r#"{"op":"subscribe","args":["trades"]}"#)?;
//! while let Some(msg) = ws.recv_timeout(Duration::from_secs(30))? {
//!     match msg {
//!         Message::Text(t) => println!("{t}"),
//!         Message::Closed { code, reason } => { println!("closed {code} {reason}"); break }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! See `docs/client.md`.

mod config;
mod io;

pub use config::{ClientConfig, RECV_SLACK, SEND_HIGH_WATER};

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::tls::{TlsContext, TlsSession};
use crate::transport::kernel::KernelSocket;
use crate::transport::kernel_tls::TlsStream;
use crate::transport::ByteTransport;
use crate::ws::frame::{is_valid_close_code, MAX_CONTROL_PAYLOAD};
use crate::ws::{
    close_code, ClientHandshake, CloseFrame, Connection, ConnectionConfig, ControlPayload,
    Delivery, Event, HandshakeStatus, MessageKind, OpCode, ParserConfig, WsUrl,
};
use io::Io;

// A client can be moved to the thread that polls it.
static_assertions::assert_impl_all!(WsClient<KernelSocket>: Send);

/// Largest accepted `max_message` (the receive buffer is that big).
pub const MAX_MESSAGE_LIMIT: usize = 1 << 30;

/// Compact the receive buffer (move unreleased bytes to its front) when less than this
/// is free at its end.
const COMPACT_BELOW: usize = 16 * 1024;

/// One thing received. Payloads borrow the client's receive buffer: they are valid until
/// the next call on the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A whole text message ([`Delivery::Messages`]); UTF-8 validated.
    Text(&'a str),
    /// A whole binary message ([`Delivery::Messages`]).
    Binary(&'a [u8]),
    /// A data frame ([`Delivery::Frames`]) or a piece of one ([`Delivery::FramePieces`]).
    Frame(Frame<'a>),
    /// The server pinged; with `auto_pong` (default) the PONG is already on its way.
    Ping(&'a [u8]),
    /// A PONG (an answer to [`WsClient::send_ping`], or unsolicited): liveness.
    Pong(&'a [u8]),
    /// The server closed the WebSocket. We echoed its code (an empty close if it sent
    /// none: `code` is then 1005) and closed the transport. Nothing more will come.
    Closed { code: u16, reason: &'a str },
}

/// A data frame (or piece) in frame delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message's type (continuation frames carry their message's type).
    pub kind: MessageKind,
    pub payload: &'a [u8],
    /// These are the first bytes of a message.
    pub first: bool,
    /// These are the last bytes of a message (FIN frame, end of its payload). With
    /// `Frames`, a text frame's payload may end inside a UTF-8 character when
    /// `is_final` is false (the message as a whole is validated).
    pub is_final: bool,
}

/// What [`WsClient::poll_event`] found, by position: the borrow of the receive buffer
/// is taken only once the loop that found it is over.
#[derive(Debug, Clone, Copy)]
enum Ev {
    Data {
        kind: MessageKind,
        off: usize,
        len: usize,
        first: bool,
        last: bool,
    },
    Ping,
    Pong,
    Closed,
}

/// Result of one non-blocking read into the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pull {
    Got,
    Nothing,
    /// No room: the unreleased bytes fill the whole buffer.
    Full,
}

enum State {
    Open,
    /// The connection is over; later calls fail with `Error::Closed(why)`.
    Done(String),
}

/// A WebSocket client over a byte transport `T` (the kernel TCP socket by default).
pub struct WsClient<T: ByteTransport = KernelSocket> {
    io: Io<T>,
    url: WsUrl,
    protocol: Option<String>,
    conn: Connection,
    delivery: Delivery,
    max_message: usize,
    /// Received (decrypted) bytes; `rbuf[start..end]` not yet released by the parser.
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The transport reported end of stream (reason); bytes before it are still parsed.
    eof: Option<String>,
    /// Payload of the last PING or PONG reported.
    ctrl: ControlPayload,
    /// The server's close frame, once received.
    remote_close: Option<CloseFrame>,
    /// Type of the fragmented message being sent, if one is open.
    sending: Option<MessageKind>,
    state: State,
    close_timeout: Duration,
    close_linger: Duration,
    send_timeout: Duration,
}

fn ws_err(reason: String) -> Error {
    Error::WebSocket {
        close_code: 0,
        reason,
    }
}

impl WsClient<KernelSocket> {
    /// Connect to a `ws://` or `wss://` URL over a kernel TCP socket: resolve, connect
    /// (within `cfg.socket.connect_timeout`), TLS handshake with verification for `wss`
    /// (within `cfg.handshake_timeout`), then the WebSocket upgrade (same bound).
    ///
    /// Errors: `Error::Config` (bad URL or option), `Error::Net` (resolve, refused,
    /// unreachable), `Error::Timeout`, `Error::Tls` (certificate refused, alert, not
    /// TLS), `Error::WebSocket { close_code: 0, .. }` (upgrade refused: the message
    /// quotes the server's status line, e.g. `"HTTP/1.1 403 Forbidden"`).
    pub fn connect(url: &str, cfg: &ClientConfig) -> Result<Self> {
        let u = WsUrl::parse(url)?;
        check_config(cfg)?;
        let sock = KernelSocket::connect(&u.host, u.port, &cfg.socket)?;
        Self::over_parsed(sock, u, cfg)
    }
}

fn check_config(cfg: &ClientConfig) -> Result<()> {
    if cfg.max_message == 0 || cfg.max_message > MAX_MESSAGE_LIMIT {
        return Err(Error::Config(format!(
            "max_message {} is outside 1..={MAX_MESSAGE_LIMIT}",
            cfg.max_message
        )));
    }
    Ok(())
}

impl<T: ByteTransport> WsClient<T> {
    /// Run the TLS handshake (for `wss://`) and the WebSocket upgrade over an already
    /// connected `transport`. The URL's host is used for SNI, certificate verification
    /// and the `Host` header; its port only for `Host`. The transport is closed if
    /// anything fails.
    pub fn over(mut transport: T, url: &str, cfg: &ClientConfig) -> Result<Self> {
        let u = match WsUrl::parse(url).and_then(|u| check_config(cfg).map(|_| u)) {
            Ok(u) => u,
            Err(e) => {
                transport.close();
                return Err(e);
            }
        };
        Self::over_parsed(transport, u, cfg)
    }

    fn over_parsed(mut transport: T, url: WsUrl, cfg: &ClientConfig) -> Result<Self> {
        let prep = (|| {
            let hs = ClientHandshake::new(&url, &cfg.handshake)?;
            let conn = Connection::new(ConnectionConfig {
                parser: ParserConfig {
                    delivery: cfg.delivery,
                    max_message: cfg.max_message,
                },
                mask: cfg.mask,
                close_timeout: cfg.close_timeout,
                auto_pong: cfg.auto_pong,
            })?;
            let ctx = match (&cfg.tls_context, url.secure) {
                (_, false) => None,
                (Some(c), true) => Some(c.clone()),
                (None, true) => Some(TlsContext::new(&cfg.tls)?),
            };
            let tls = match ctx {
                Some(c) => Some(c.client_session(&url.host)?),
                None => None,
            };
            Ok((hs, conn, tls))
        })();
        let (hs, conn, tls) = match prep {
            Ok(p) => p,
            Err(e) => {
                transport.close();
                return Err(e);
            }
        };
        let io = match tls {
            None => Io::Plain(transport),
            Some(session) => {
                let mut s = TlsStream::new(transport, session);
                if let Err(e) = s.handshake(cfg.handshake_timeout) {
                    let (mut t, _) = s.into_parts();
                    t.close();
                    return Err(e);
                }
                Io::Tls(s)
            }
        };
        let mut c = WsClient {
            io,
            url,
            protocol: None,
            conn,
            delivery: cfg.delivery,
            max_message: cfg.max_message,
            rbuf: vec![0u8; cfg.max_message + RECV_SLACK].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: None,
            ctrl: ControlPayload::EMPTY,
            remote_close: None,
            sending: None,
            state: State::Open,
            close_timeout: cfg.close_timeout,
            close_linger: cfg.close_linger,
            send_timeout: cfg.send_timeout,
        };
        match c.upgrade(hs, cfg.handshake_timeout) {
            Ok(p) => c.protocol = p,
            Err(e) => {
                c.io.close();
                c.state = State::Done(format!("the WebSocket upgrade failed: {e}"));
                return Err(e);
            }
        }
        Ok(c)
    }

    fn upgrade(&mut self, mut hs: ClientHandshake, timeout: Duration) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        let what = format!("WebSocket upgrade with {}:{}", self.url.host, self.url.port);
        // The request.
        let req = hs.request();
        let mut off = 0;
        loop {
            if off < req.len() {
                off += self.io.write(&req[off..])?;
            }
            if self.io.flush()? && off == req.len() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!(
                    "{what}: could not send the request"
                )));
            }
            self.io.wait(true, left.min(Duration::from_millis(50)))?;
        }
        // The response; bytes after its header are the first frames.
        loop {
            let n = match self.io.read(&mut self.rbuf) {
                Ok(n) => n,
                Err(Error::Closed(r) | Error::Reset(r)) => {
                    return Err(ws_err(format!(
                        "WebSocket upgrade failed: the server closed the connection before a complete response ({r})"
                    )))
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout(format!(
                        "{what}: no complete response within {timeout:?}"
                    )));
                }
                self.io.wait(false, left)?;
                continue;
            }
            match hs.feed(&self.rbuf[..n]) {
                Ok(HandshakeStatus::NeedMore) => {}
                Ok(HandshakeStatus::Done { consumed, protocol }) => {
                    self.start = consumed;
                    self.end = n;
                    return Ok(protocol);
                }
                Err(Error::WebSocket { close_code, reason }) => {
                    return Err(Error::WebSocket {
                        close_code,
                        reason: format!("WebSocket upgrade failed: {reason}"),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    // ---------------------------------------------------------------- receiving

    /// The next message (or frame, ping, pong, close), without blocking: `Ok(None)` when
    /// nothing complete is available now. Pending output (PONGs, queued frames) is sent
    /// on the way.
    ///
    /// Errors: `Error::WebSocket { close_code, .. }` when the server broke the protocol
    /// (we sent a close with `close_code` and closed the transport), `Error::Closed` when
    /// the transport ended without a close frame or the connection is already over,
    /// `Error::Tls` / `Error::Io` from below. After any error the client is closed.
    #[inline]
    pub fn recv(&mut self) -> Result<Option<Message<'_>>> {
        match self.poll_event()? {
            None => Ok(None),
            Some(ev) => Ok(Some(self.message(ev))),
        }
    }

    /// Like [`recv`](Self::recv), waiting up to `timeout` (in the transport's `wait`, no
    /// spinning on the kernel socket). `Ok(None)`: nothing arrived in time.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message<'_>>> {
        let deadline = Instant::now() + timeout;
        let ev = loop {
            if let Some(ev) = self.poll_event()? {
                break ev;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let writable = self.backlog() > 0;
            if let Err(e) = self.io.wait(writable, left) {
                return Err(self.fail(e));
            }
        };
        Ok(Some(self.message(ev)))
    }

    fn message(&self, ev: Ev) -> Message<'_> {
        match ev {
            Ev::Data {
                kind,
                off,
                len,
                first,
                last,
            } => {
                let p = &self.rbuf[off..off + len];
                match (self.delivery, kind) {
                    (Delivery::Messages, MessageKind::Text) => {
                        debug_assert!(std::str::from_utf8(p).is_ok());
                        // SAFETY: in message delivery the parser validated the whole
                        // message as UTF-8 (incrementally, as it arrived) before
                        // reporting it, and nothing has written to these bytes since.
                        Message::Text(unsafe { std::str::from_utf8_unchecked(p) })
                    }
                    (Delivery::Messages, MessageKind::Binary) => Message::Binary(p),
                    _ => Message::Frame(Frame {
                        kind,
                        payload: p,
                        first,
                        is_final: last,
                    }),
                }
            }
            Ev::Ping => Message::Ping(self.ctrl.as_bytes()),
            Ev::Pong => Message::Pong(self.ctrl.as_bytes()),
            Ev::Closed => match &self.remote_close {
                Some(f) => Message::Closed {
                    code: f.code,
                    reason: f.reason_str(),
                },
                None => Message::Closed {
                    code: close_code::NO_STATUS,
                    reason: "",
                },
            },
        }
    }

    fn poll_event(&mut self) -> Result<Option<Ev>> {
        if let State::Done(why) = &self.state {
            return Err(Error::Closed(why.clone()));
        }
        if self.backlog() > 0 {
            if let Err(e) = self.flush_nb() {
                return Err(self.fail(e));
            }
        }
        loop {
            match self.parse() {
                Ok(Some(Ev::Closed)) => {
                    self.finish();
                    let why = match &self.remote_close {
                        Some(f) if f.reason.is_empty() => {
                            format!("the server closed the WebSocket (code {})", f.code)
                        }
                        Some(f) => format!(
                            "the server closed the WebSocket (code {}, {:?})",
                            f.code,
                            f.reason_str()
                        ),
                        None => "the server closed the WebSocket".into(),
                    };
                    self.state = State::Done(why);
                    return Ok(Some(Ev::Closed));
                }
                Ok(Some(ev)) => return Ok(Some(ev)),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
            match self.pull() {
                Ok(Pull::Got) => continue,
                Ok(Pull::Nothing) => {}
                Ok(Pull::Full) => {
                    let e = self.buffer_full();
                    return Err(self.fail(e));
                }
                Err(e) => return Err(self.fail(e)),
            }
            if let Some(r) = self.eof.take() {
                return Err(self.fail(Error::Closed(format!(
                    "{r}; no WebSocket close frame was received (abnormal closure, 1006)"
                ))));
            }
            return Ok(None);
        }
    }

    /// The unreleased bytes fill the buffer and the parser needs more: only possible
    /// when control frames between fragments add up past the slack. Fail with 1009.
    fn buffer_full(&mut self) -> Error {
        let reason = format!(
            "receive buffer full ({} bytes): message plus interleaved frames exceed max_message {} + {RECV_SLACK}",
            self.rbuf.len(),
            self.max_message
        );
        let _ = self.conn.close(
            close_code::MESSAGE_TOO_BIG,
            "message too big",
            Instant::now(),
        );
        Error::WebSocket {
            close_code: close_code::MESSAGE_TOO_BIG,
            reason,
        }
    }

    /// Parse one event from the buffered bytes.
    #[inline]
    fn parse(&mut self) -> Result<Option<Ev>> {
        let base = self.start;
        if base == self.end {
            return Ok(None);
        }
        let r = self.conn.next_event(&mut self.rbuf[base..self.end]);
        self.start += self.conn.release();
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        match r? {
            None => Ok(None),
            Some(Event::Data(d)) => Ok(Some(Ev::Data {
                kind: d.kind,
                off: base + d.offset,
                len: d.len,
                first: d.first,
                last: d.last,
            })),
            Some(Event::Ping(p)) => {
                self.ctrl = p;
                // The PONG goes out now, not at the next call.
                self.flush_nb()?;
                Ok(Some(Ev::Ping))
            }
            Some(Event::Pong(p)) => {
                self.ctrl = p;
                Ok(Some(Ev::Pong))
            }
            Some(Event::Close(f)) => {
                self.remote_close = Some(f);
                Ok(Some(Ev::Closed))
            }
        }
    }

    /// One non-blocking read into the free end of the receive buffer, compacting first
    /// when the free end is small.
    fn pull(&mut self) -> Result<Pull> {
        if self.eof.is_some() || !self.io.is_open() {
            return Ok(Pull::Nothing);
        }
        if self.start > 0 && self.rbuf.len() - self.end < COMPACT_BELOW {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.rbuf.len() {
            return Ok(Pull::Full);
        }
        match self.io.read(&mut self.rbuf[self.end..]) {
            Ok(0) => Ok(Pull::Nothing),
            Ok(n) => {
                self.end += n;
                Ok(Pull::Got)
            }
            Err(Error::Closed(r) | Error::Reset(r)) => {
                self.eof = Some(r);
                Ok(Pull::Nothing)
            }
            Err(e) => Err(e),
        }
    }

    /// The connection failed with `e`: after a protocol error send our close (queued by
    /// the connection), give the server a moment to close TCP; close the transport.
    fn fail(&mut self, e: Error) -> Error {
        let e = match e {
            Error::WebSocket { close_code, reason }
                if close_code == close_code::MESSAGE_TOO_BIG && !reason.contains("max_message") =>
            {
                Error::WebSocket {
                    close_code,
                    reason: format!("{reason} (max_message {} bytes)", self.max_message),
                }
            }
            e => e,
        };
        if matches!(e, Error::WebSocket { .. }) {
            self.finish();
        } else {
            self.io.close();
        }
        self.state = State::Done(format!("the connection failed: {e}"));
        e
    }

    /// End of the connection: send what is queued (our close), then wait up to
    /// `close_linger` for the server to close TCP first (RFC 6455 §7.1.1), discarding
    /// anything it still sends — closing a socket with unread bytes would send a RST
    /// that can destroy our close frame in flight. Then close the transport.
    fn finish(&mut self) {
        let deadline = Instant::now() + self.close_linger;
        while self.io.is_open() {
            let flushed = match self.flush_nb() {
                Ok(f) => f,
                Err(_) => break,
            };
            match self.io.read(&mut self.rbuf) {
                Ok(0) => {}
                Ok(_) => continue,
                Err(_) => break, // FIN, close_notify or reset: the server is done
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.io.wait(!flushed, left).is_err() {
                break;
            }
        }
        self.start = 0;
        self.end = 0;
        self.io.close();
    }

    // ---------------------------------------------------------------- sending

    /// Send a text message (one frame).
    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.send_message(MessageKind::Text, text.as_bytes())
    }

    /// Send a binary message (one frame).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<()> {
        self.send_message(MessageKind::Binary, data)
    }

    /// Send a message of either type (one frame). For `Text` the bytes must be UTF-8;
    /// they are not re-checked (the server will fail the connection if they are not).
    pub fn send_message(&mut self, kind: MessageKind, payload: &[u8]) -> Result<()> {
        if self.sending.is_some() {
            return Err(Error::Config(
                "a fragmented message is being sent: finish it with send_fragment(.., true) first"
                    .into(),
            ));
        }
        self.send_frame(kind.opcode(), true, payload)
    }

    /// Send one fragment of a message: the first call opens a `kind` message, later ones
    /// continue it (same `kind`), `is_final` ends it. Control frames (ping, pong) may be
    /// sent between fragments; other messages may not. Text fragments may split a
    /// UTF-8 character; the message as a whole must be UTF-8.
    pub fn send_fragment(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        is_final: bool,
    ) -> Result<()> {
        let op = match self.sending {
            None => kind.opcode(),
            Some(k) if k == kind => OpCode::Continuation,
            Some(k) => {
                return Err(Error::Config(format!(
                    "send_fragment({kind:?}) while a {k:?} message is open"
                )))
            }
        };
        self.send_frame(op, is_final, payload)?;
        self.sending = if is_final { None } else { Some(kind) };
        Ok(())
    }

    /// Send a PING (payload ≤ 125 bytes); the answer arrives as [`Message::Pong`].
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<()> {
        self.send_frame(OpCode::Ping, true, payload)
    }

    /// Send an unsolicited PONG (a one-way heartbeat; payload ≤ 125 bytes).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<()> {
        self.send_frame(OpCode::Pong, true, payload)
    }

    fn check_open(&self) -> Result<()> {
        match &self.state {
            State::Open => Ok(()),
            State::Done(why) => Err(Error::Closed(why.clone())),
        }
    }

    /// Encode (masking with a fresh key) and hand to the transport; waits only when more
    /// than [`SEND_HIGH_WATER`] bytes are queued.
    fn send_frame(&mut self, op: OpCode, fin: bool, payload: &[u8]) -> Result<()> {
        self.check_open()?;
        if op.is_control() && payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::Config(format!(
                "{op:?} payload is {} bytes; control frames carry at most 125",
                payload.len()
            )));
        }
        self.conn.send(op, fin, payload)?;
        if let Err(e) = self.flush_nb() {
            return Err(self.fail(e));
        }
        if self.backlog() > SEND_HIGH_WATER {
            self.flush_wait(SEND_HIGH_WATER, self.send_timeout)?;
        }
        Ok(())
    }

    /// Bytes queued and not yet taken by the transport (frames, TLS records).
    pub fn backlog(&self) -> usize {
        self.conn.pending_output().len() + self.io.unsent()
    }

    /// Push queued output without blocking; `Ok(true)` when all of it went out.
    pub fn flush(&mut self) -> Result<bool> {
        self.check_open()?;
        match self.flush_nb() {
            Ok(done) => Ok(done),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Push queued output, waiting up to `timeout` for all of it to go out.
    pub fn flush_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.check_open()?;
        self.flush_wait(0, timeout)
    }

    fn flush_nb(&mut self) -> Result<bool> {
        loop {
            let p = self.conn.pending_output();
            if p.is_empty() {
                break;
            }
            let n = self.io.write(p)?;
            if n == 0 {
                break;
            }
            self.conn.consume_output(n);
        }
        let io_done = self.io.flush()?;
        Ok(io_done && self.conn.pending_output().is_empty())
    }

    /// Flush until at most `limit` bytes are queued. While the socket is full, keep
    /// reading into the receive buffer: a server blocked sending to us may not read.
    fn flush_wait(&mut self, limit: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Err(e) = self.flush_nb() {
                return Err(self.fail(e));
            }
            let queued = self.backlog();
            if queued <= limit {
                return Ok(());
            }
            let pulled = match self.pull() {
                Ok(p) => p,
                Err(e) => return Err(self.fail(e)),
            };
            if pulled == Pull::Got {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!(
                    "sending to {}:{}: {queued} bytes still queued after {timeout:?} (the server is not reading)",
                    self.url.host, self.url.port
                )));
            }
            if pulled == Pull::Full || self.eof.is_some() {
                // Readable but no room (or already at EOF): `wait` would return at once.
                std::thread::sleep(left.min(Duration::from_millis(1)));
            } else if let Err(e) = self.io.wait(true, left) {
                return Err(self.fail(e));
            }
        }
    }

    // ---------------------------------------------------------------- closing

    /// The closing handshake from our side: send a close with `code` (1000 normal, 1001
    /// going away, 3000-4999 application) and `reason` (≤ 123 bytes UTF-8), then read
    /// (and discard data) until the server's close arrives, at most `close_timeout`;
    /// then wait up to `close_linger` for the server to close TCP, and close it.
    ///
    /// Returns the server's close frame; `Error::Timeout` if none came in time,
    /// `Error::Closed` if the transport ended first. The client is closed either way.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<CloseFrame> {
        self.check_open()?;
        if !is_valid_close_code(code) {
            return Err(Error::Config(format!(
                "close code {code} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)"
            )));
        }
        if reason.len() > MAX_CONTROL_PAYLOAD - 2 {
            return Err(Error::Config(format!(
                "close reason is {} bytes, at most 123 allowed",
                reason.len()
            )));
        }
        let now = Instant::now();
        let r = self
            .conn
            .close(code, reason, now)
            .and_then(|_| self.await_close(now));
        self.finish();
        self.state = State::Done(match &r {
            Ok(_) => format!("the WebSocket was closed by us (code {code})"),
            Err(e) => format!("the WebSocket was closed by us (code {code}): {e}"),
        });
        r
    }

    fn await_close(&mut self, now: Instant) -> Result<CloseFrame> {
        let deadline = self.conn.deadline().unwrap_or(now + self.close_timeout);
        loop {
            self.flush_nb()?;
            match self.parse()? {
                Some(Ev::Closed) => {
                    if let Some(f) = self.remote_close {
                        return Ok(f);
                    }
                }
                Some(_) => continue, // data after our close is dropped
                None => {}
            }
            match self.pull()? {
                Pull::Got => continue,
                Pull::Nothing => {}
                Pull::Full => return Err(self.buffer_full()),
            }
            if let Some(r) = self.eof.take() {
                return Err(Error::Closed(format!(
                    "{r} before the server's close frame arrived"
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!(
                    "no close frame from {}:{} within {:?} of ours",
                    self.url.host, self.url.port, self.close_timeout
                )));
            }
            self.io.wait(self.backlog() > 0, left)?;
        }
    }

    // ---------------------------------------------------------------- introspection

    pub fn url(&self) -> &WsUrl {
        &self.url
    }

    /// The subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Open: neither side has closed and no error happened.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// The server's close frame, once received.
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.remote_close.as_ref()
    }

    /// The TLS session (`wss://` only): version, cipher, ALPN, resumption.
    pub fn tls_session(&self) -> Option<&TlsSession> {
        self.io.tls()
    }

    pub fn transport(&self) -> &T {
        self.io.transport()
    }

    /// Size of the receive buffer (`max_message` + [`RECV_SLACK`]).
    pub fn recv_buffer_len(&self) -> usize {
        self.rbuf.len()
    }
}

impl<T: ByteTransport> Drop for WsClient<T> {
    /// Dropped while open: a best-effort close frame (1001 going away) without blocking,
    /// then the transport is closed.
    fn drop(&mut self) {
        if let State::Open = self.state {
            if self.io.is_open() {
                let _ = self.conn.close(close_code::GOING_AWAY, "", Instant::now());
                let _ = self.flush_nb();
                self.io.close();
            }
        }
    }
}

impl<T: ByteTransport> std::fmt::Debug for WsClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("url", &self.url)
            .field("tls", &self.io.tls().is_some())
            .field("open", &self.is_open())
            .field("delivery", &self.delivery)
            .field("max_message", &self.max_message)
            .finish()
    }
}

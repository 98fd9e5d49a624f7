//! The kernel transports as [`Transport`]s: a kernel TCP socket ([`KernelSocket`])
//! alone (`ws://`, [`StreamTransport`]) or under TLS (`wss://`, [`TlsTransport`]: the
//! pipeline's TLS glue on the kernel path). Connecting and the TLS handshake are
//! blocking with a deadline (they run during set-up, before the stages are placed);
//! after that everything is non-blocking.
//!
//! TLS receive path: one `recv` of up to [`RECV_CHUNK`] bytes of ciphertext, then as
//! many `SSL_read`s as there are complete records and room in the caller's buffer
//! (MSG_INBOX), OpenSSL pulling the ciphertext straight from the recv buffer (custom
//! BIO, no memory-BIO copy). At most one `recv` per read, and none while
//! already-received records can still be decrypted.

use std::time::{Duration, Instant};

use super::transport::{Transport, TransportCounters};
use crate::error::{Error, Result};
use crate::tls::{HandshakeStatus, TlsConfig, TlsContext, TlsSession};
use crate::transport::kernel::{KernelSocket, KernelSocketOptions};

/// A plain kernel TCP socket (`ws://`).
pub struct StreamTransport {
    io: KernelSocket,
    counters: TransportCounters,
    /// Where to connect again (`connect` sets it; `new` over a given socket cannot reconnect).
    dial: Option<Dial>,
}

/// What a kernel transport needs to make its connection again.
#[derive(Clone)]
struct Dial {
    host: String,
    port: u16,
    sock: KernelSocketOptions,
    handshake_timeout: Duration,
}

impl StreamTransport {
    /// Connect a kernel TCP socket (non-blocking afterwards, TCP_NODELAY).
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        let opts = KernelSocketOptions {
            connect_timeout: timeout,
            ..Default::default()
        };
        let mut t = StreamTransport::new(KernelSocket::connect(host, port, &opts)?);
        t.dial = Some(Dial {
            host: host.to_string(),
            port,
            sock: opts,
            handshake_timeout: timeout,
        });
        Ok(t)
    }

    pub fn new(io: KernelSocket) -> Self {
        StreamTransport {
            io,
            counters: TransportCounters::default(),
            dial: None,
        }
    }
}

impl Transport for StreamTransport {
    fn name(&self) -> &'static str {
        "kernel"
    }
    fn drive(&mut self, _now_ns: u64) -> Result<bool> {
        Ok(false)
    }
    fn is_established(&self) -> bool {
        self.io.is_open()
    }
    fn read(&mut self, buf: &mut [u8], _now_ns: u64) -> Result<usize> {
        match self.io.recv_into(buf) {
            Ok(n) => {
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += n as u64;
                Ok(n)
            }
            Err(Error::WouldBlock) => Ok(0),
            Err(e) => Err(e),
        }
    }
    fn write(&mut self, data: &[u8], _now_ns: u64) -> Result<usize> {
        match self.io.send(data) {
            Ok(n) => {
                self.counters.tx_bytes += n as u64;
                Ok(n)
            }
            Err(Error::WouldBlock) => Ok(0),
            Err(e) => Err(e),
        }
    }
    fn shutdown(&mut self, _now_ns: u64) -> Result<()> {
        self.io.close();
        Ok(())
    }
    fn counters(&self) -> TransportCounters {
        self.counters
    }
    fn arrival_ns(&self) -> Option<u64> {
        Some(self.io.rx_stamp_ns()).filter(|&t| t != 0)
    }
    /// Resolve again and connect a new socket (blocks up to the connect timeout).
    fn reconnect(&mut self, _now_ns: u64) -> Result<()> {
        let d = self
            .dial
            .as_ref()
            .ok_or_else(|| Error::Config("this kernel transport was built over a socket: it cannot reconnect".into()))?;
        self.io.close();
        self.io = KernelSocket::connect(&d.host, d.port, &d.sock)?;
        Ok(())
    }
}

/// Ciphertext bytes asked of the socket per `recv`.
pub(crate) const RECV_CHUNK: usize = 64 * 1024;
/// Above this much unsent ciphertext, [`TlsTransport::write`] refuses more (WouldBlock).
pub(crate) const TX_HIGH_WATER: usize = 1 << 20;

/// Syscall and byte counters of a [`TlsTransport`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamStats {
    pub recv_calls: u64,
    pub recv_bytes: u64,
    pub send_calls: u64,
    pub send_bytes: u64,
}

/// A [`TlsSession`] over a kernel TCP socket (`wss://`).
///
/// Besides the [`Transport`] methods the stage calls, it has the blocking helpers the
/// set-up and tests use ([`TlsTransport::handshake`], [`TlsTransport::write_all`],
/// [`TlsTransport::read_timeout`], [`TlsTransport::close_graceful`]). The session may be
/// a server's too (test and benchmark servers adopt an accepted socket with
/// [`KernelSocket::from_std`]).
pub struct TlsTransport {
    io: KernelSocket,
    tls: TlsSession,
    rx: Box<[u8]>,
    tx: Vec<u8>,
    tx_off: usize,
    stats: StreamStats,
    /// The context (with its resumption slot) and where to connect again.
    dial: Option<(TlsContext, Dial)>,
}

impl TlsTransport {
    /// Connect and complete the TLS handshake (certificate and host name verified unless
    /// `insecure`), each step within `timeout`.
    pub fn connect(
        host: &str,
        port: u16,
        ca_file: Option<std::path::PathBuf>,
        insecure: bool,
        timeout: Duration,
    ) -> Result<Self> {
        let ctx = TlsContext::new(&TlsConfig {
            ca_file,
            insecure_skip_verify: insecure,
            ..Default::default()
        })?;
        let opts = KernelSocketOptions {
            connect_timeout: timeout,
            ..Default::default()
        };
        Self::connect_with(host, port, &ctx, &opts, timeout)
    }

    /// Resolve, connect a kernel TCP socket, and complete the TLS handshake for `host`
    /// (verified against `ctx`'s policy; a session `ctx` saved for `host` is resumed).
    pub fn connect_with(
        host: &str,
        port: u16,
        ctx: &TlsContext,
        sock: &KernelSocketOptions,
        handshake_timeout: Duration,
    ) -> Result<Self> {
        let io = KernelSocket::connect(host, port, sock)?;
        let tls = ctx.client_session(host)?;
        let mut s = TlsTransport::new(io, tls);
        s.handshake(handshake_timeout)?;
        s.dial = Some((
            ctx.clone(),
            Dial {
                host: host.to_string(),
                port,
                sock: sock.clone(),
                handshake_timeout,
            },
        ));
        Ok(s)
    }

    /// A session over a connected socket; [`TlsTransport::handshake`] next.
    pub fn new(io: KernelSocket, tls: TlsSession) -> Self {
        TlsTransport {
            io,
            tls,
            rx: vec![0u8; RECV_CHUNK].into_boxed_slice(),
            tx: Vec::with_capacity(64 * 1024),
            tx_off: 0,
            stats: StreamStats::default(),
            dial: None,
        }
    }

    /// Drive the handshake to completion, blocking (poll) up to `timeout`.
    pub fn handshake(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.tls.handshake();
            // Send whatever we have, even on failure: it may carry our alert.
            let flushed = self.flush_until(deadline);
            let st = st?;
            flushed?;
            if st == HandshakeStatus::Done {
                return Ok(());
            }
            match self.io.recv_into(&mut self.rx) {
                Ok(n) => {
                    self.stats.recv_calls += 1;
                    self.stats.recv_bytes += n as u64;
                    self.tls.feed_ciphertext(&self.rx[..n])?;
                }
                Err(Error::WouldBlock) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(format!(
                            "TLS handshake with {}: no answer within {timeout:?}",
                            self.tls.host()
                        )));
                    }
                    self.io.wait(false, left)?;
                }
                Err(Error::Closed(r)) => {
                    return Err(Error::Tls(format!(
                        "handshake failed: the peer closed the connection before the handshake completed ({r}) (host {})",
                        self.tls.host()
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes of ciphertext produced but not yet accepted by the socket.
    pub fn unsent(&self) -> usize {
        self.tx.len() - self.tx_off + self.tls.pending_ciphertext()
    }

    /// Send pending ciphertext without blocking. `Ok(true)` when everything went out.
    pub fn flush(&mut self) -> Result<bool> {
        loop {
            if self.tx_off == self.tx.len() {
                self.tx.clear();
                self.tx_off = 0;
                if self.tls.drain_ciphertext_into(&mut self.tx) == 0 {
                    return Ok(true);
                }
            }
            match self.io.send(&self.tx[self.tx_off..]) {
                Ok(n) => {
                    self.stats.send_calls += 1;
                    self.stats.send_bytes += n as u64;
                    self.tx_off += n;
                }
                Err(Error::WouldBlock) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    fn flush_until(&mut self, deadline: Instant) -> Result<()> {
        while !self.flush()? {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!("sending to {}: socket stayed full", self.tls.host())));
            }
            self.io.wait(true, left)?;
        }
        Ok(())
    }

    /// Decrypt whatever is available into `out` without blocking. `Ok(0)`: nothing now.
    /// `Err(Closed)`: the peer closed (TLS close_notify, or TCP without one).
    ///
    /// At most one `recv` per call, and only when nothing already received can be
    /// decrypted. Ciphertext is decrypted straight from the recv buffer
    /// ([`TlsSession::read_plaintext_from`]); only bytes left over when `out` fills up
    /// are copied into the session's backlog.
    pub fn poll_read(&mut self, out: &mut [u8]) -> Result<usize> {
        if self.tx_off != self.tx.len() {
            self.flush()?;
        }
        // 1. What is already inside (backlog, or a record OpenSSL holds).
        let mut filled = self.tls.read_plaintext(out)?;
        if self.tls.pending_ciphertext() > 0 {
            self.flush()?; // post-handshake replies (key update)
        }
        if filled > 0 || out.is_empty() {
            return Ok(filled);
        }
        // 2. One recv, decrypted in place.
        let n = match self.io.recv_into(&mut self.rx) {
            Ok(n) => n,
            Err(Error::WouldBlock) => return Ok(0),
            Err(Error::Closed(r)) => return Err(Error::Closed(format!("{r} without a TLS close_notify"))),
            Err(e) => return Err(e),
        };
        self.stats.recv_calls += 1;
        self.stats.recv_bytes += n as u64;
        let (pos, p) = self.tls.read_plaintext_from(&self.rx[..n], &mut out[filled..])?;
        filled += p;
        if pos < n {
            self.tls.feed_ciphertext(&self.rx[pos..n])?;
        }
        if self.tls.pending_ciphertext() > 0 {
            self.flush()?;
        }
        Ok(filled)
    }

    /// Encrypt and send what the socket takes; returns the plaintext bytes consumed
    /// (all of `data` unless more than `TX_HIGH_WATER` (1 MiB) ciphertext is waiting, in which
    /// case `Err(WouldBlock)`). Unsent ciphertext is kept and retried on the next
    /// `write`/`flush`/`poll_read`.
    pub fn write(&mut self, data: &[u8]) -> Result<usize> {
        if self.unsent() > TX_HIGH_WATER && !self.flush()? && self.unsent() > TX_HIGH_WATER {
            return Err(Error::WouldBlock);
        }
        let n = self.tls.write_plaintext(data)?;
        self.flush()?;
        Ok(n)
    }

    /// Blocking helper for set-up and tests: write all of `data` within `timeout`.
    pub fn write_all(&mut self, mut data: &[u8], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !data.is_empty() {
            match self.write(data) {
                Ok(n) => data = &data[n..],
                Err(Error::WouldBlock) => {}
                Err(e) => return Err(e),
            }
            if (!data.is_empty() || self.unsent() > 0) && !self.flush()? {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout(format!("writing to {}", self.tls.host())));
                }
                self.io.wait(true, left.min(Duration::from_millis(50)))?;
            }
        }
        self.flush_until(deadline)
    }

    /// Blocking helper for set-up and tests: read at least one byte within `timeout`.
    pub fn read_timeout(&mut self, out: &mut [u8], timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.poll_read(out)?;
            if n > 0 {
                return Ok(n);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!("reading from {}", self.tls.host())));
            }
            self.io.wait(self.unsent() > 0, left)?;
        }
    }

    /// Send close_notify, wait up to `timeout` for it (and anything unsent) to go out,
    /// then close the socket. Returns an error if the flush failed or timed out (the
    /// socket is closed either way).
    pub fn close_graceful(&mut self, timeout: Duration) -> Result<()> {
        if !self.io.is_open() {
            return Ok(());
        }
        let r = self.tls.close_notify().and_then(|_| self.flush_until(Instant::now() + timeout));
        self.io.close();
        r
    }

    /// Send close_notify (best effort, non-blocking: a full socket drops it) and close
    /// the socket.
    pub fn close(&mut self) {
        if self.io.is_open() {
            let _ = self.tls.close_notify();
            let _ = self.flush();
            self.io.close();
        }
    }

    pub fn session(&self) -> &TlsSession {
        &self.tls
    }
    pub fn session_mut(&mut self) -> &mut TlsSession {
        &mut self.tls
    }
    pub fn socket(&self) -> &KernelSocket {
        &self.io
    }
    pub fn stats(&self) -> StreamStats {
        self.stats
    }
}

impl Transport for TlsTransport {
    fn name(&self) -> &'static str {
        "kernel+tls"
    }
    fn drive(&mut self, _now_ns: u64) -> Result<bool> {
        if self.unsent() > 0 {
            let before = self.unsent();
            self.flush()?;
            return Ok(self.unsent() != before);
        }
        Ok(false)
    }
    fn is_established(&self) -> bool {
        true
    }
    fn read(&mut self, buf: &mut [u8], _now_ns: u64) -> Result<usize> {
        self.poll_read(buf)
    }
    fn write(&mut self, data: &[u8], _now_ns: u64) -> Result<usize> {
        match TlsTransport::write(self, data) {
            Ok(n) => Ok(n),
            Err(Error::WouldBlock) => Ok(0),
            Err(e) => Err(e),
        }
    }
    fn shutdown(&mut self, _now_ns: u64) -> Result<()> {
        self.close();
        Ok(())
    }
    /// Resolve again, connect a new socket and run a new TLS handshake that offers the
    /// session the context saved from the last one (resumed when the server allows;
    /// the certificate is verified either way). Blocks up to the connect timeout plus
    /// the handshake timeout.
    fn reconnect(&mut self, _now_ns: u64) -> Result<()> {
        let (ctx, d) = self
            .dial
            .clone()
            .ok_or_else(|| Error::Config("this TLS transport was built over a socket: it cannot reconnect".into()))?;
        self.close();
        let io = KernelSocket::connect(&d.host, d.port, &d.sock)?;
        let tls = ctx.client_session(&d.host)?;
        self.io = io;
        self.tls = tls;
        self.tx.clear();
        self.tx_off = 0;
        self.handshake(d.handshake_timeout)
    }
    fn resumed(&self) -> bool {
        self.tls.session_reused()
    }
    /// The receive timestamp of the last `recv` (the plaintext just decrypted came from
    /// it or from ciphertext received before it).
    fn arrival_ns(&self) -> Option<u64> {
        Some(self.io.rx_stamp_ns()).filter(|&t| t != 0)
    }
    fn counters(&self) -> TransportCounters {
        let st = self.stats;
        TransportCounters {
            rx_packets: st.recv_calls,
            rx_bytes: st.recv_bytes,
            tx_packets: st.send_calls,
            tx_bytes: st.send_bytes,
            ..Default::default()
        }
    }
}

//! A [`TlsSession`] glued to a [`ByteTransport`] (the kernel socket by default): blocking
//! handshake for set-up, non-blocking [`TlsStream::poll_read`] / [`TlsStream::write`] for
//! the steady state.
//!
//! Receive path: one `recv` of up to [`RECV_CHUNK`] bytes of ciphertext, then as many
//! `SSL_read`s as there are complete records and room in the caller's buffer, OpenSSL
//! pulling the ciphertext straight from the recv buffer (custom BIO, no memory-BIO
//! copy). At most one `recv` per `poll_read`, and none while already-received records
//! can still be decrypted.

use super::kernel::{KernelSocket, KernelSocketOptions};
use super::ByteTransport;
use crate::error::{Error, Result};
use crate::tls::{TlsContext, TlsSession};
use std::time::{Duration, Instant};

/// Ciphertext bytes asked of the transport per `recv`.
pub const RECV_CHUNK: usize = 64 * 1024;
/// Above this much unsent ciphertext, [`TlsStream::write`] refuses more (WouldBlock).
pub const TX_HIGH_WATER: usize = 1 << 20;

/// Syscall and byte counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamStats {
    pub recv_calls: u64,
    pub recv_bytes: u64,
    pub send_calls: u64,
    pub send_bytes: u64,
}

/// TLS over a byte transport.
pub struct TlsStream<T: ByteTransport = KernelSocket> {
    io: T,
    tls: TlsSession,
    rx: Box<[u8]>,
    tx: Vec<u8>,
    tx_off: usize,
    stats: StreamStats,
}

impl TlsStream<KernelSocket> {
    /// Resolve, connect a kernel TCP socket, and complete the TLS handshake for `host`
    /// (verified against `ctx`'s policy), all within `timeout` each.
    pub fn connect(
        host: &str,
        port: u16,
        ctx: &TlsContext,
        sock: &KernelSocketOptions,
        handshake_timeout: Duration,
    ) -> Result<Self> {
        let io = KernelSocket::connect(host, port, sock)?;
        let tls = ctx.client_session(host)?;
        let mut s = TlsStream::new(io, tls);
        s.handshake(handshake_timeout)?;
        Ok(s)
    }
}

impl<T: ByteTransport> TlsStream<T> {
    pub fn new(io: T, tls: TlsSession) -> Self {
        TlsStream {
            io,
            tls,
            rx: vec![0u8; RECV_CHUNK].into_boxed_slice(),
            tx: Vec::with_capacity(64 * 1024),
            tx_off: 0,
            stats: StreamStats::default(),
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
            if st == crate::tls::HandshakeStatus::Done {
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
                Err(Error::Closed(r) | Error::Reset(r)) => {
                    return Err(Error::Tls(format!(
                        "handshake failed: the peer closed the connection before the handshake completed ({r}) (host {})",
                        self.tls.host()
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes of ciphertext produced but not yet accepted by the transport.
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
            Err(Error::Reset(r)) => return Err(Error::Reset(format!("{r} without a TLS close_notify"))),
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

    /// Encrypt and send what the transport takes; returns the plaintext bytes consumed
    /// (all of `data` unless more than [`TX_HIGH_WATER`] ciphertext is waiting, in which
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
    /// then close the transport. Returns an error if the flush failed or timed out (the
    /// transport is closed either way).
    pub fn close_graceful(&mut self, timeout: Duration) -> Result<()> {
        if !self.io.is_open() {
            return Ok(());
        }
        let r = self.tls.close_notify().and_then(|_| self.flush_until(Instant::now() + timeout));
        self.io.close();
        r
    }

    /// Send close_notify (best effort, non-blocking: a full socket drops it) and close the
    /// transport.
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
    pub fn transport(&self) -> &T {
        &self.io
    }
    /// The transport, mutably: e.g. to [`ByteTransport::wait`] on it from a caller's
    /// own blocking loop (the WebSocket client's `recv_timeout`).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.io
    }
    pub fn stats(&self) -> StreamStats {
        self.stats
    }
    /// Split into the transport and the session (e.g. to hand them to separate stages).
    pub fn into_parts(self) -> (T, TlsSession) {
        (self.io, self.tls)
    }
}

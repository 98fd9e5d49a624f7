//! The byte stream under the WebSocket: the transport itself (`ws://`) or TLS over it
//! (`wss://`), with one non-blocking interface.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::tls::TlsSession;
use crate::transport::kernel_tls::TlsStream;
use crate::transport::ByteTransport;

pub(crate) enum Io<T: ByteTransport> {
    Plain(T),
    Tls(TlsStream<T>),
}

impl<T: ByteTransport> Io<T> {
    /// Read what is available into `out` without blocking. `Ok(0)`: nothing now.
    /// `Err(Closed)`: the stream ended.
    #[inline]
    pub(crate) fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        match self {
            Io::Plain(t) => match t.recv_into(out) {
                Ok(n) => Ok(n),
                Err(Error::WouldBlock) => Ok(0),
                Err(e) => Err(e),
            },
            Io::Tls(s) => s.poll_read(out),
        }
    }

    /// Hand bytes to the stream without blocking; `Ok(0)`: it takes nothing now. TLS
    /// takes everything (encrypting it) until its own backlog is over its high water.
    #[inline]
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<usize> {
        let r = match self {
            Io::Plain(t) => t.send(data),
            Io::Tls(s) => s.write(data),
        };
        match r {
            Ok(n) => Ok(n),
            Err(Error::WouldBlock) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Push out what the stream itself holds (TLS ciphertext). `Ok(true)`: nothing left.
    #[inline]
    pub(crate) fn flush(&mut self) -> Result<bool> {
        match self {
            Io::Plain(_) => Ok(true),
            Io::Tls(s) => s.flush(),
        }
    }

    /// Bytes held by the stream, not yet taken by the transport.
    #[inline]
    pub(crate) fn unsent(&self) -> usize {
        match self {
            Io::Plain(_) => 0,
            Io::Tls(s) => s.unsent(),
        }
    }

    pub(crate) fn wait(&mut self, writable: bool, timeout: Duration) -> Result<()> {
        match self {
            Io::Plain(t) => t.wait(writable, timeout),
            Io::Tls(s) => s.transport_mut().wait(writable, timeout),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        match self {
            Io::Plain(t) => t.is_open(),
            Io::Tls(s) => s.transport().is_open(),
        }
    }

    /// Close the transport; for TLS, send close_notify first (best effort, no blocking).
    pub(crate) fn close(&mut self) {
        match self {
            Io::Plain(t) => t.close(),
            Io::Tls(s) => s.close(),
        }
    }

    pub(crate) fn tls(&self) -> Option<&TlsSession> {
        match self {
            Io::Plain(_) => None,
            Io::Tls(s) => Some(s.session()),
        }
    }

    pub(crate) fn transport(&self) -> &T {
        match self {
            Io::Plain(t) => t,
            Io::Tls(s) => s.transport(),
        }
    }
}

//! Byte transports under TLS for the kernel path: the kernel TCP socket ([`kernel`]);
//! [`kernel_tls`] glues a [`crate::tls::TlsSession`] onto it. (Our TCP over AF_XDP is the
//! pipeline's `stage::XdpTransport` behind the per-interface engine: one data path.)

pub mod kernel;
pub mod kernel_tls;

use crate::error::Result;
use std::time::Duration;

/// A non-blocking, reliable, ordered byte stream (a connected TCP socket or equivalent).
///
/// Results: `Ok(n)` with `n > 0` bytes moved; `Err(Error::WouldBlock)` nothing can move
/// now; `Err(Error::Closed(reason))` the stream is over (`Err(Error::Reset(reason))`: by a
/// TCP RST); any other error is fatal.
pub trait ByteTransport {
    /// Read up to `buf.len()` bytes.
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize>;
    /// Write up to `data.len()` bytes; may be partial.
    fn send(&mut self, data: &[u8]) -> Result<usize>;
    /// Close the stream (idempotent).
    fn close(&mut self);
    fn is_open(&self) -> bool;
    /// Block until readable (or writable, if `writable`) or `timeout` passes. Only used
    /// during set-up (blocking handshakes); the default just yields once, for
    /// transports driven by a poll loop.
    fn wait(&mut self, _writable: bool, _timeout: Duration) -> Result<()> {
        std::thread::yield_now();
        Ok(())
    }
}

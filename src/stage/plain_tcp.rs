//! TEMPORARY: a plain (`ws://`, no TLS) kernel TCP transport, so the pipeline can talk
//! to a real server before `src/transport` (kernel socket + OpenSSL) lands. Replace
//! with the real kernel transport when it does.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::transport::{Transport, TransportCounters};
use crate::error::{Error, Result};

/// A non-blocking kernel TCP socket.
pub struct PlainTcpTransport {
    s: TcpStream,
    counters: TransportCounters,
    shut: bool,
}

impl PlainTcpTransport {
    /// Connect (blocking, up to `timeout`: this runs during set-up), then go non-blocking.
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| Error::Net(format!("resolve {host}: {e}")))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    s.set_nodelay(true).map_err(|e| Error::io("TCP_NODELAY", e))?;
                    s.set_nonblocking(true).map_err(|e| Error::io("O_NONBLOCK", e))?;
                    return Ok(PlainTcpTransport { s, counters: TransportCounters::default(), shut: false });
                }
                Err(e) => last = Some(format!("connect {a}: {e}")),
            }
        }
        Err(Error::Net(last.unwrap_or_else(|| format!("{host}: no address"))))
    }
}

impl Transport for PlainTcpTransport {
    fn name(&self) -> &'static str {
        "kernel-plain"
    }
    fn drive(&mut self, _now_ns: u64) -> Result<bool> {
        Ok(false)
    }
    fn is_established(&self) -> bool {
        true
    }
    fn read(&mut self, buf: &mut [u8], _now_ns: u64) -> Result<usize> {
        match self.s.read(buf) {
            Ok(0) => Err(Error::Closed("the server closed the TCP connection".into())),
            Ok(n) => {
                self.counters.rx_bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(Error::Closed(format!("TCP read: {e}"))),
        }
    }
    fn write(&mut self, data: &[u8], _now_ns: u64) -> Result<usize> {
        match self.s.write(data) {
            Ok(n) => {
                self.counters.tx_bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(Error::Closed(format!("TCP write: {e}"))),
        }
    }
    fn shutdown(&mut self, _now_ns: u64) -> Result<()> {
        if !self.shut {
            self.shut = true;
            let _ = self.s.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
    fn counters(&self) -> TransportCounters {
        self.counters
    }
}

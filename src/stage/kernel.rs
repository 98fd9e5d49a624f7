//! The kernel transports as [`Transport`]s: `crate::transport`'s kernel socket alone
//! (`ws://`) or under TLS (`wss://`, [`TlsStream`]). Connecting and the TLS handshake
//! are blocking with a deadline (they run during set-up, before the stages are placed);
//! after that everything is non-blocking.

use std::time::Duration;

use super::transport::{Transport, TransportCounters};
use crate::error::{Error, Result};
use crate::tls::{TlsConfig, TlsContext};
use crate::transport::kernel::{KernelSocket, KernelSocketOptions};
use crate::transport::kernel_tls::TlsStream;
use crate::transport::ByteTransport;

/// A plain byte transport (`ws://`).
pub struct StreamTransport<T: ByteTransport + Send = KernelSocket> {
    io: T,
    counters: TransportCounters,
}

impl StreamTransport<KernelSocket> {
    /// Connect a kernel TCP socket (non-blocking afterwards, TCP_NODELAY).
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        let opts = KernelSocketOptions {
            connect_timeout: timeout,
            ..Default::default()
        };
        Ok(StreamTransport {
            io: KernelSocket::connect(host, port, &opts)?,
            counters: TransportCounters::default(),
        })
    }
}

impl<T: ByteTransport + Send> StreamTransport<T> {
    pub fn new(io: T) -> Self {
        StreamTransport {
            io,
            counters: TransportCounters::default(),
        }
    }
}

impl<T: ByteTransport + Send> Transport for StreamTransport<T> {
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
}

/// TLS over a byte transport (`wss://`).
pub struct TlsTransport<T: ByteTransport + Send = KernelSocket> {
    s: TlsStream<T>,
}

impl TlsTransport<KernelSocket> {
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
        Ok(TlsTransport {
            s: TlsStream::connect(host, port, &ctx, &opts, timeout)?,
        })
    }
}

impl<T: ByteTransport + Send> TlsTransport<T> {
    pub fn new(s: TlsStream<T>) -> Self {
        TlsTransport { s }
    }
    pub fn stream(&self) -> &TlsStream<T> {
        &self.s
    }
}

impl<T: ByteTransport + Send> Transport for TlsTransport<T> {
    fn name(&self) -> &'static str {
        "kernel+tls"
    }
    fn drive(&mut self, _now_ns: u64) -> Result<bool> {
        if self.s.unsent() > 0 {
            let before = self.s.unsent();
            self.s.flush()?;
            return Ok(self.s.unsent() != before);
        }
        Ok(false)
    }
    fn is_established(&self) -> bool {
        true
    }
    fn read(&mut self, buf: &mut [u8], _now_ns: u64) -> Result<usize> {
        self.s.poll_read(buf)
    }
    fn write(&mut self, data: &[u8], _now_ns: u64) -> Result<usize> {
        match self.s.write(data) {
            Ok(n) => Ok(n),
            Err(Error::WouldBlock) => Ok(0),
            Err(e) => Err(e),
        }
    }
    fn shutdown(&mut self, _now_ns: u64) -> Result<()> {
        self.s.close();
        Ok(())
    }
    fn counters(&self) -> TransportCounters {
        let st = self.s.stats();
        TransportCounters {
            rx_packets: st.recv_calls,
            rx_bytes: st.recv_bytes,
            tx_packets: st.send_calls,
            tx_bytes: st.send_bytes,
            ..Default::default()
        }
    }
}

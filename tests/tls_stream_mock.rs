//! `TlsStream` over an in-memory `ByteTransport` that dribbles bytes: random partial
//! sends, random short receives, WouldBlock in between. The server is a `TlsSession`
//! echoing everything. No sockets: this is the contract the XDP transport will meet.

use pipeline_testkit::certs::certs;
use pipeline::error::{Error, Result};
use pipeline::tls::{TlsConfig, TlsContext, TlsSession, TlsVersion};
use pipeline::transport::kernel_tls::TlsStream;
use pipeline::transport::ByteTransport;
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) % n as u64) as usize
    }
}

struct Dribble {
    srv: TlsSession,
    to_client: Vec<u8>,
    off: usize,
    rng: Rng,
    open: bool,
    recv_calls: usize,
}

impl Dribble {
    fn serve(&mut self) {
        if !self.srv.is_handshake_done() {
            self.srv.handshake().unwrap();
        }
        if self.srv.is_handshake_done() {
            let mut buf = [0u8; 8192];
            loop {
                let n = match self.srv.read_plaintext(&mut buf) {
                    Ok(n) => n,
                    Err(Error::Closed(_)) => break, // our close_notify at the end
                    Err(e) => panic!("server: {e}"),
                };
                if n == 0 {
                    break;
                }
                self.srv.write_plaintext(&buf[..n]).unwrap();
            }
        }
        if self.off == self.to_client.len() {
            self.to_client.clear();
            self.off = 0;
        }
        self.srv.drain_ciphertext_into(&mut self.to_client);
    }
}

impl ByteTransport for Dribble {
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv_calls += 1;
        self.serve();
        let have = self.to_client.len() - self.off;
        if have == 0 || self.rng.below(4) == 0 {
            return Err(Error::WouldBlock);
        }
        let n = (1 + self.rng.below(have.min(5000))).min(buf.len());
        buf[..n].copy_from_slice(&self.to_client[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
    fn send(&mut self, data: &[u8]) -> Result<usize> {
        if self.rng.below(5) == 0 {
            return Err(Error::WouldBlock);
        }
        let n = 1 + self.rng.below(data.len().min(3000));
        self.srv.feed_ciphertext(&data[..n]).unwrap();
        self.serve();
        Ok(n)
    }
    fn close(&mut self) {
        self.open = false;
    }
    fn is_open(&self) -> bool {
        self.open
    }
}

fn run(v: TlsVersion, seed: u64) {
    let (cert, key) = certs().leaf("server");
    let sctx = TlsContext::new_server(&cert, &key, TlsVersion::Tls12, TlsVersion::Tls13).unwrap();
    let cctx = TlsContext::new(&TlsConfig {
        ca_file: Some(certs().ca()),
        min_version: v,
        max_version: v,
        ..TlsConfig::default()
    })
    .unwrap();
    let io = Dribble {
        srv: sctx.server_session().unwrap(),
        to_client: Vec::new(),
        off: 0,
        rng: Rng(seed),
        open: true,
        recv_calls: 0,
    };
    let mut s = TlsStream::new(io, cctx.client_session("localhost").unwrap());
    s.handshake(Duration::from_secs(10)).unwrap();
    let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let mut rng = Rng(seed ^ 0x55);
    let mut sent = 0;
    let mut got = Vec::new();
    let mut out = vec![0u8; 70_000];
    let mut idle = 0;
    while got.len() < data.len() {
        if sent < data.len() {
            let n = (1 + rng.below(20_000)).min(data.len() - sent);
            match s.write(&data[sent..sent + n]) {
                Ok(k) => sent += k,
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("{e}"),
            }
        } else {
            s.flush().unwrap();
        }
        let want = 1 + rng.below(out.len());
        let n = s.poll_read(&mut out[..want]).unwrap();
        got.extend_from_slice(&out[..n]);
        idle = if n == 0 { idle + 1 } else { 0 };
        assert!(idle < 10_000, "stalled: sent {sent}, got {}", got.len());
    }
    assert!(got == data, "{v:?} seed {seed}: echo differs");
    s.close_graceful(Duration::from_secs(5)).unwrap();
    assert!(!s.transport().is_open());
    let (io, _) = s.into_parts();
    assert!(io.srv.peer_closed(), "server did not see our close_notify");
}

#[test]
fn dribbling_transport_tls13() {
    for seed in [1u64, 2, 3] {
        run(TlsVersion::Tls13, seed);
    }
}

#[test]
fn dribbling_transport_tls12() {
    for seed in [4u64, 5] {
        run(TlsVersion::Tls12, seed);
    }
}

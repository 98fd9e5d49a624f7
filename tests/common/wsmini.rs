//! A minimal WebSocket client for the end-to-end tests and the transport benchmark,
//! over any `TlsStream<T>`: the upgrade (Sec-WebSocket-Accept checked), unmasked server
//! frames parsed in place, continuation frames joined, pings answered, close frames
//! reported with their code and reason, client frames masked with a random key.
//! (The library's own `pipeline::ws` is tested on its own; this keeps the transport
//! tests independent of it.) Also the feed checker for `tools/exchange_sim.py` messages.
#![allow(dead_code)]

use pipeline::transport::kernel_tls::TlsStream;
use pipeline::transport::ByteTransport;
use pipeline::Error;
use std::time::{Duration, Instant};

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SAFETY: writes at most N bytes into b.
    let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), N, 0) };
    assert_eq!(r as usize, N);
    b
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Binary,
    Text,
    Pong,
    /// A ping from the server (already answered).
    Ping,
    Close {
        code: u16,
        reason: String,
    },
}

pub struct WsClient<T: ByteTransport> {
    pub tls: TlsStream<T>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    frag: Vec<u8>,
    frag_kind: Option<Kind>,
    /// Where the last message's payload is: in `buf` or in `frag`.
    last: (bool, usize, usize),
    pub pings_answered: u64,
    pub closed: bool,
}

impl<T: ByteTransport> WsClient<T> {
    /// Send the upgrade request and check the 101 answer.
    pub fn connect(
        mut tls: TlsStream<T>,
        host: &str,
        path: &str,
        timeout: Duration,
    ) -> pipeline::Result<Self> {
        let key = pipeline::ws::sha1::base64(&random_bytes::<16>());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tls.write_all(req.as_bytes(), timeout)?;
        let deadline = Instant::now() + timeout;
        let mut resp = Vec::new();
        let mut tmp = vec![0u8; 65536];
        let hdr_end = loop {
            if let Some(p) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout("websocket upgrade response".into()));
            }
            let n = tls.read_timeout(&mut tmp, left)?;
            resp.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&resp[..hdr_end]).to_string();
        let status = head.lines().next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            return Err(Error::WebSocket {
                close_code: 0,
                reason: format!("upgrade refused: {status}"),
            });
        }
        let want = pipeline::ws::handshake::accept_key(&key);
        let accept = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("sec-websocket-accept")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        if accept != want {
            return Err(Error::WebSocket {
                close_code: 0,
                reason: format!("bad Sec-WebSocket-Accept {accept:?}"),
            });
        }
        let mut buf = vec![0u8; 1 << 20];
        let rest = &resp[hdr_end..];
        buf[..rest.len()].copy_from_slice(rest);
        Ok(WsClient {
            tls,
            buf,
            start: 0,
            end: rest.len(),
            frag: Vec::with_capacity(1 << 17),
            frag_kind: None,
            last: (false, 0, 0),
            pings_answered: 0,
            closed: false,
        })
    }

    /// The payload of the message last returned by `next`.
    pub fn payload(&self) -> &[u8] {
        let (frag, a, b) = self.last;
        if frag {
            &self.frag[a..b]
        } else {
            &self.buf[a..b]
        }
    }

    /// Send one masked frame.
    pub fn send_frame(
        &mut self,
        opcode: u8,
        data: &[u8],
        timeout: Duration,
    ) -> pipeline::Result<()> {
        let mut f = Vec::with_capacity(data.len() + 14);
        f.push(0x80 | opcode);
        if data.len() < 126 {
            f.push(0x80 | data.len() as u8);
        } else if data.len() < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(data.len() as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(data.len() as u64).to_be_bytes());
        }
        let mask = random_bytes::<4>();
        f.extend_from_slice(&mask);
        f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        self.tls.write_all(&f, timeout)
    }
    pub fn send_text(&mut self, s: &str) -> pipeline::Result<()> {
        self.send_frame(0x1, s.as_bytes(), Duration::from_secs(5))
    }
    pub fn send_binary(&mut self, d: &[u8]) -> pipeline::Result<()> {
        self.send_frame(0x2, d, Duration::from_secs(5))
    }
    pub fn send_ping(&mut self, d: &[u8]) -> pipeline::Result<()> {
        self.send_frame(0x9, d, Duration::from_secs(5))
    }

    /// Try to parse one frame from the buffer; `Ok(None)` = need more bytes.
    fn parse(&mut self) -> pipeline::Result<Option<Kind>> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() < 2 {
                return Ok(None);
            }
            let b0 = avail[0];
            let b1 = avail[1];
            if b1 & 0x80 != 0 {
                return Err(Error::WebSocket {
                    close_code: 1002,
                    reason: "masked server frame".into(),
                });
            }
            let (len, hl) = match b1 & 0x7f {
                126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4),
                127 if avail.len() >= 10 => (
                    u64::from_be_bytes(avail[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => return Ok(None),
                n => (n as usize, 2),
            };
            if avail.len() < hl + len {
                if hl + len > self.buf.len() {
                    let need = (hl + len).next_power_of_two();
                    self.buf.resize(need * 2, 0);
                }
                return Ok(None);
            }
            let a = self.start + hl;
            let b = a + len;
            self.start = b;
            let fin = b0 & 0x80 != 0;
            let op = b0 & 0x0f;
            match op {
                0x0 => {
                    self.frag.extend_from_slice(&self.buf[a..b]);
                    if fin {
                        let k = self.frag_kind.take().unwrap_or(Kind::Binary);
                        self.last = (true, 0, self.frag.len());
                        return Ok(Some(k));
                    }
                }
                0x1 | 0x2 => {
                    let k = if op == 1 { Kind::Text } else { Kind::Binary };
                    if fin {
                        self.last = (false, a, b);
                        return Ok(Some(k));
                    }
                    self.frag.clear();
                    self.frag.extend_from_slice(&self.buf[a..b]);
                    self.frag_kind = Some(k);
                }
                0x9 => {
                    let data = self.buf[a..b].to_vec();
                    self.send_frame(0xA, &data, Duration::from_secs(5))?;
                    self.pings_answered += 1;
                    self.last = (false, a, b);
                    return Ok(Some(Kind::Ping));
                }
                0xA => {
                    self.last = (false, a, b);
                    return Ok(Some(Kind::Pong));
                }
                0x8 => {
                    let p = &self.buf[a..b];
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    let reason = String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).to_string();
                    if !self.closed {
                        self.closed = true;
                        let _ = self.send_frame(0x8, &code.to_be_bytes(), Duration::from_secs(1));
                    }
                    self.last = (false, a, b);
                    return Ok(Some(Kind::Close { code, reason }));
                }
                _ => {
                    return Err(Error::WebSocket {
                        close_code: 1002,
                        reason: format!("opcode {op}"),
                    })
                }
            }
        }
    }

    /// Non-blocking: the next message/control frame if one is complete, else reads once.
    pub fn poll(&mut self) -> pipeline::Result<Option<Kind>> {
        if let Some(k) = self.parse()? {
            return Ok(Some(k));
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > self.buf.len() / 2 || self.buf.len() - self.end < 65536 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < 65536 {
            let l = self.buf.len();
            self.buf.resize(l * 2, 0);
        }
        let n = self.tls.poll_read(&mut self.buf[self.end..])?;
        self.end += n;
        if n > 0 {
            return self.parse();
        }
        Ok(None)
    }

    /// Blocking (poll + transport wait) up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> pipeline::Result<Kind> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(k) = self.poll()? {
                return Ok(k);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout("websocket message".into()));
            }
            self.wait(left.min(Duration::from_millis(20)))?;
        }
    }

    fn wait(&mut self, d: Duration) -> pipeline::Result<()> {
        // Read straight into the frame buffer, sleeping in the transport up to `d`.
        match self.tls.read_timeout(&mut self.buf[self.end..], d) {
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(Error::Timeout(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The exchange simulator's message `seq`: size and content (see tools/exchange_sim.py).
pub fn mixed_size(seq: u64) -> usize {
    let h = (seq.wrapping_mul(2654435761)) & 0xffff_ffff;
    if seq % 997 == 996 {
        65536
    } else if seq % 101 == 100 {
        1024 + (h % 15361) as usize
    } else {
        1 + (h % 1024) as usize
    }
}

pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB88320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = t[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Check message `seq` of size `want` against the simulator's format; returns the
/// embedded send timestamp (CLOCK_MONOTONIC ns) when the message has a header.
pub fn check_message(seq: u64, want: usize, m: &[u8]) -> Result<Option<u64>, String> {
    if m.len() != want {
        return Err(format!("message {seq}: {} bytes, expected {want}", m.len()));
    }
    let o = (seq.wrapping_mul(131)) as usize;
    let from = if m.len() >= 24 { 24 } else { 0 };
    for (i, &b) in m.iter().enumerate().skip(from) {
        if b != (o.wrapping_add(i) & 0xff) as u8 {
            return Err(format!("message {seq}: byte {i} is {b:#x}"));
        }
    }
    if m.len() < 24 {
        return Ok(None);
    }
    let s = u64::from_le_bytes(m[0..8].try_into().unwrap());
    let ts = u64::from_le_bytes(m[8..16].try_into().unwrap());
    let size = u32::from_le_bytes(m[16..20].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(m[20..24].try_into().unwrap());
    if s != seq {
        return Err(format!("expected message {seq}, got {s}"));
    }
    if size != want {
        return Err(format!(
            "message {seq}: header size {size}, expected {want}"
        ));
    }
    if crc != crc32(&m[24..]) {
        return Err(format!("message {seq}: crc32 mismatch"));
    }
    Ok(Some(ts))
}

/// CLOCK_MONOTONIC in ns (the simulator's clock).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

//! The Rust exchange feed server: one copy for the peer benchmark (`benches/peers.rs`)
//! and `pipeline demo`. Rust + OpenSSL (the library's `TlsTransport` over a kernel
//! socket), TLS 1.3 with only TLS_AES_128_GCM_SHA256, a WebSocket upgrade, then commands
//! from the client ([`command`]: "run SIZE COUNT RATE", a masked text frame). A message
//! is a binary frame `[seq u64 LE][CLOCK_MONOTONIC send ns u64 LE][pattern]` where
//! pattern byte `i` is `i as u8` (see [`check`]); a text frame "done" ends a run.
//!
//! RATE 0 is the batched flat-out mode: frames packed into 16 KiB TLS records (many
//! messages per record; a 16 KiB message spans two records), one clock read per record.
//! RATE > 0 is the paced mode: one record per message, stamped when sent. How the
//! server waits for a message's due time is its [`Pacing`]: the benchmark spins (so
//! CPU 0 stays busy: this VM's hypervisor steals time from an idle vCPU), the demo
//! sleeps (it shares the box). The stamp is taken after the wait either way, so the
//! one-way latency a client measures does not include the server's wake-up.
//!
//! Unlike `tools/exchange_sim.py` (Python, about 6,000 msg/s here), it keeps up with
//! the client, so what a client measures is the client.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::stage::TlsTransport;
use pipeline::tls::{TlsContext, TlsVersion};
use pipeline::transport::kernel::KernelSocket;
use pipeline::{Error, Result};

use crate::feed::mono_ns;
use crate::process::gettid;

/// Handshake and write deadline.
const T: Duration = Duration::from_secs(20);
/// The TLS record the batched mode fills (many frames per record).
pub const RECORD: usize = 16384;
/// Message sizes the server accepts: the header, up to a 16-bit WebSocket length.
pub const SIZES: std::ops::RangeInclusive<usize> = 16..=65535;

/// How the paced mode waits until a message is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// Spin: the CPU stays busy (the benchmark, on its own core).
    Spin,
    /// Sleep: the CPU is free for others (the demo on a shared box); messages already
    /// due after a late wake-up go out at once, so the average rate holds.
    Sleep,
}

/// Shared between the server thread and whoever started it.
pub struct ServerCtl {
    /// The server thread's id, set when it starts (0 before): the benchmark's CPU
    /// accounting reads it, and it says the server is up.
    pub tid: AtomicI32,
    /// Set to end the server: the accept loop and the runs check it.
    pub stop: AtomicBool,
    /// Set to cut the current connection's runs short (a client that gave up on a run
    /// and wants its close answered); cleared when the next connection is accepted.
    pub end_runs: AtomicBool,
    /// Messages sent in the last run (the demo's "server sent").
    pub sent: AtomicU64,
    /// The core the server thread pins itself to (None: not pinned).
    pub cpu: Option<usize>,
    pub pacing: Pacing,
}

impl ServerCtl {
    pub fn new(cpu: Option<usize>, pacing: Pacing) -> Arc<ServerCtl> {
        Arc::new(ServerCtl {
            tid: AtomicI32::new(0),
            stop: AtomicBool::new(false),
            end_runs: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            cpu,
            pacing,
        })
    }
}

/// The command a client sends for a run (RATE 0 = flat out).
pub fn command(size: usize, count: u64, rate: u64) -> String {
    format!("run {size} {count} {rate}")
}

/// Check message `seq` of a run of `size`-byte messages; returns its send stamp
/// (CLOCK_MONOTONIC ns, the clock every namespace of the host shares).
pub fn check(seq: u64, size: usize, m: &[u8]) -> std::result::Result<u64, String> {
    if m.len() != size || m.len() < 16 {
        return Err(format!("message {seq}: {} bytes, expected {size}", m.len()));
    }
    let got = u64::from_le_bytes(m[0..8].try_into().expect("8 bytes"));
    if got != seq {
        return Err(format!("expected message {seq}, got {got}"));
    }
    if m[16..] != pattern()[..size - 16] {
        return Err(format!("message {seq}: payload differs from the pattern"));
    }
    Ok(u64::from_le_bytes(m[8..16].try_into().expect("8 bytes")))
}

/// The payload after the header: byte i is `i as u8`.
fn pattern() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| (0..*SIZES.end() as u32).map(|i| i as u8).collect())
}

/// Accept connections one after the other (one client at a time) until `ctl.stop`.
/// Errs only when the TLS context cannot be made from `cert`/`key`; a connection that
/// ends badly is reported on stderr and the next one is accepted.
pub fn server_main(l: TcpListener, cert: PathBuf, key: PathBuf, ctl: Arc<ServerCtl>) -> Result<()> {
    if let Some(cpu) = ctl.cpu {
        pipeline::runner::pin_to(cpu)?;
    }
    ctl.tid.store(gettid(), Ordering::SeqCst);
    let ctx = TlsContext::new_server(&cert, &key, TlsVersion::Tls13, TlsVersion::Tls13)?;
    l.set_nonblocking(true).map_err(|e| Error::io("nonblocking listener", e))?;
    while !ctl.stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                ctl.end_runs.store(false, Ordering::SeqCst);
                if let Err(e) = serve(s, &ctx, &ctl) {
                    if !matches!(e, Error::Closed(_)) {
                        eprintln!("  feed server: connection ended: {e}");
                    }
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    Ok(())
}

/// One connection: the TLS and WebSocket handshakes, then runs until the client's close.
pub fn serve(s: TcpStream, ctx: &TlsContext, ctl: &ServerCtl) -> Result<()> {
    // The accepted socket inherits the listener's non-blocking mode; TlsTransport waits
    // with poll(2) either way.
    s.set_nodelay(true).map_err(|e| Error::io("nodelay", e))?;
    let session = ctx.server_session()?;
    // The feed's cipher: TLS 1.3 AES-128-GCM only.
    // SAFETY: a live SSL* and a NUL-terminated string.
    let ok = unsafe { openssl_sys::SSL_set_ciphersuites(session.as_ptr(), c"TLS_AES_128_GCM_SHA256".as_ptr()) };
    if ok != 1 {
        return Err(Error::Config("SSL_set_ciphersuites(TLS_AES_128_GCM_SHA256) failed".into()));
    }
    // The pipeline's own TLS glue, serving the server's side of an accepted socket.
    let mut tls = TlsTransport::new(KernelSocket::from_std(s)?, session);
    tls.handshake(T)?;
    let cipher = tls.session().cipher();
    if cipher != "TLS_AES_128_GCM_SHA256" {
        return Err(Error::Config(format!("negotiated {cipher}, not TLS_AES_128_GCM_SHA256")));
    }
    let mut inb: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let end = loop {
        if let Some(p) = inb.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tls.read_timeout(&mut buf, T)?;
        inb.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&inb[..end]).to_string();
    inb.drain(..end);
    let key_hdr = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key")).map(|(_, v)| v.trim().to_string()))
        .ok_or_else(|| Error::Closed("no Sec-WebSocket-Key".into()))?;
    let accept = pipeline::ws::handshake::accept_key(&key_hdr);
    let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    tls.write_all(resp.as_bytes(), T)?;
    let pattern = pattern();
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let stopped = || ctl.stop.load(Ordering::Relaxed) || ctl.end_runs.load(Ordering::Relaxed);
    loop {
        // One masked frame (< 126 bytes) from the client.
        let (op, cmd) = loop {
            if inb.len() >= 6 {
                let len = (inb[1] & 0x7f) as usize;
                if len < 126 && inb.len() >= 6 + len {
                    let mask = [inb[2], inb[3], inb[4], inb[5]];
                    let p: Vec<u8> = inb[6..6 + len].iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
                    let op = inb[0] & 0xf;
                    inb.drain(..6 + len);
                    break (op, String::from_utf8_lossy(&p).to_string());
                }
            }
            let n = tls.read_timeout(&mut buf, Duration::from_secs(300))?;
            inb.extend_from_slice(&buf[..n]);
        };
        if op == 0x8 {
            let _ = tls.write_all(&[0x88, 2, 0x03, 0xe8], Duration::from_secs(1));
            let _ = tls.close_graceful(Duration::from_secs(1));
            return Ok(());
        }
        if op != 0x1 {
            continue;
        }
        let v: Vec<u64> = cmd.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let (size, count, rate) = match v[..] {
            [size, count, rate] if SIZES.contains(&(size as usize)) => (size as usize, count, rate),
            _ => return Err(Error::Config(format!("bad command {cmd:?}: expected \"run SIZE COUNT RATE\", SIZE {}..={}", SIZES.start(), SIZES.end()))),
        };
        ctl.sent.store(0, Ordering::Relaxed);
        let frame = |out: &mut Vec<u8>, seq: u64, ts: u64| {
            if size < 126 {
                out.extend_from_slice(&[0x82, size as u8]);
            } else {
                out.extend_from_slice(&[0x82, 126]);
                out.extend_from_slice(&(size as u16).to_be_bytes());
            }
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&ts.to_le_bytes());
            out.extend_from_slice(&pattern[..size - 16]);
        };
        if let Some(rate) = std::num::NonZeroU64::new(rate) {
            // Paced: one record per message, stamped when sent.
            let t0 = Instant::now();
            for seq in 0..count {
                if stopped() {
                    break;
                }
                let due = t0 + Duration::from_nanos((seq as u128 * 1_000_000_000 / rate.get() as u128) as u64);
                match ctl.pacing {
                    Pacing::Spin => {
                        while Instant::now() < due {
                            std::hint::spin_loop();
                        }
                    }
                    Pacing::Sleep => {
                        let now = Instant::now();
                        if now < due {
                            std::thread::sleep(due - now);
                        }
                    }
                }
                out.clear();
                frame(&mut out, seq, mono_ns());
                tls.write_all(&out, T)?;
                ctl.sent.store(seq + 1, Ordering::Relaxed);
            }
        } else {
            // Batched: frames packed into 16 KiB records (a larger frame: alone, and
            // OpenSSL splits it into 16 KiB records).
            let mut seq = 0;
            while seq < count && !stopped() {
                out.clear();
                let ts = mono_ns();
                while seq < count && (out.is_empty() || out.len() + size + 4 <= RECORD) {
                    frame(&mut out, seq, ts);
                    seq += 1;
                }
                tls.write_all(&out, T)?;
                ctl.sent.store(seq, Ordering::Relaxed);
            }
        }
        tls.write_all(&[0x81, 4, b'd', b'o', b'n', b'e'], T)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_the_servers_message_and_names_what_is_wrong() {
        let mut m = 7u64.to_le_bytes().to_vec();
        m.extend_from_slice(&123u64.to_le_bytes());
        m.extend_from_slice(&pattern()[..40]);
        assert_eq!(check(7, 56, &m), Ok(123));
        assert!(check(8, 56, &m).unwrap_err().contains("expected message 8, got 7"));
        assert!(check(7, 57, &m).unwrap_err().contains("56 bytes, expected 57"));
        m[30] ^= 1;
        assert!(check(7, 56, &m).unwrap_err().contains("differs from the pattern"));
    }
}

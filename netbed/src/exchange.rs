//! The Rust exchange feed server: one copy for the peer benchmark (`benches/peers.rs`)
//! and `pipeline demo`. Rust + OpenSSL (the library's `TlsTransport` over a kernel
//! socket), TLS 1.3 with only TLS_AES_128_GCM_SHA256, a WebSocket upgrade, then commands
//! from the client ([`command`]: "run SIZE COUNT RATE", a masked text frame). A message
//! is a binary frame `[seq u64 LE][CLOCK_MONOTONIC send ns u64 LE][pattern]` where the
//! pattern is JSON-like market-data text, a different stretch of it for every message
//! (see [`check`]), so it compresses the way a real feed does; a text frame "done" ends
//! a run.
//!
//! permessage-deflate (RFC 7692), off by default: a server made with
//! [`ServerCtl::with_deflate`] accepts a client's `permessage-deflate` offer (see
//! [`accept_deflate`]) and compresses every binary message with the library's
//! [`Deflater`] (context takeover unless the client asks otherwise, RSV1 set, the
//! `00 00 ff ff` tail removed). A client that does not offer it gets the plain feed.
//!
//! RATE 0 is the batched flat-out mode: frames packed into 16 KiB TLS records (many
//! messages per record; a 16 KiB message spans two records), one clock read per record;
//! compressed, the run is deflated ahead ([`AHEAD`] bytes of frames at a time, one clock
//! read per batch) and sent in 16 KiB records, so the server's deflate does not limit
//! the client.
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

use pipeline::stage::{encode_server_frame_rsv1, TlsTransport};
use pipeline::tls::{TlsContext, TlsVersion};
use pipeline::ws::deflate::{Deflater, Negotiated};
use pipeline::ws::DeflateConfig;
use pipeline::transport::kernel::KernelSocket;
use pipeline::{Error, Result};

use crate::feed::mono_ns;
use crate::process::gettid;

/// Handshake and write deadline.
const T: Duration = Duration::from_secs(20);
/// The TLS record the batched mode fills (many frames per record).
pub const RECORD: usize = 16384;
/// How much the compressed batched mode compresses ahead of sending (see [`serve`]).
pub const AHEAD: usize = 64 << 20;
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
    /// permessage-deflate: the zlib level (0..9) the server compresses with when a
    /// client offers the extension; None: never accepted (the plain feed for everyone).
    pub deflate_level: Option<u8>,
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
            deflate_level: None,
        })
    }

    /// A server that accepts permessage-deflate offers and compresses at zlib `level`
    /// (6 is zlib's default, what most exchanges' servers use).
    pub fn with_deflate(cpu: Option<usize>, pacing: Pacing, level: u8) -> Result<Arc<ServerCtl>> {
        if level > 9 {
            return Err(Error::Config(format!("feed server deflate level {level} must be 0..9")));
        }
        let mut ctl = ServerCtl::new(cpu, pacing);
        Arc::get_mut(&mut ctl).expect("just made").deflate_level = Some(level);
        Ok(ctl)
    }
}

/// The server's answer to a client's `Sec-WebSocket-Extensions` offers (every such
/// header's value joined with ", "): the first `permessage-deflate` offer whose
/// parameters are valid, as (response value, parameters in the client's terms); None
/// declines (no offer, or none we accept). RFC 7692 §7.1: `server_no_context_takeover`
/// and `server_max_window_bits=N` offered are answered and kept to (N = 8 is declined:
/// zlib cannot write raw deflate with a 256-byte window); `client_no_context_takeover`
/// is echoed; `client_max_window_bits` (with a value 8..15 or none) is accepted and not
/// answered, so the client keeps its window (§7.1.2.2: the server may omit it).
pub fn accept_deflate(offers: &str) -> Option<(String, Negotiated)> {
    'offer: for offer in offers.split(',') {
        let mut parts = offer.split(';').map(str::trim);
        if !parts.next().is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate")) {
            continue;
        }
        let mut n = Negotiated {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
        };
        let mut resp = String::from("permessage-deflate");
        let mut seen = Vec::new();
        for p in parts {
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().trim_matches('"'))),
                None => (p.to_ascii_lowercase(), None),
            };
            if seen.contains(&k) {
                continue 'offer;
            }
            let bits = v.and_then(|v| v.parse::<u8>().ok()).filter(|b| (8..=15).contains(b));
            match (k.as_str(), v) {
                ("server_no_context_takeover", None) => {
                    n.server_no_context_takeover = true;
                    resp.push_str("; server_no_context_takeover");
                }
                ("client_no_context_takeover", None) => {
                    n.client_no_context_takeover = true;
                    resp.push_str("; client_no_context_takeover");
                }
                ("server_max_window_bits", Some(_)) => match bits {
                    Some(b) if b >= 9 => {
                        n.server_max_window_bits = b;
                        resp.push_str(&format!("; server_max_window_bits={b}"));
                    }
                    _ => continue 'offer,
                },
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", Some(_)) if bits.is_some() => {}
                _ => continue 'offer,
            }
            seen.push(k);
        }
        return Some((resp, n));
    }
    None
}

/// The server's compressor for what [`accept_deflate`] agreed: the library's
/// [`Deflater`] compresses with the "client" window and takeover, so the server's
/// parameters go into those fields.
fn server_deflater(n: &Negotiated, level: u8) -> Deflater {
    let mine = Negotiated {
        client_max_window_bits: n.server_max_window_bits,
        client_no_context_takeover: n.server_no_context_takeover,
        ..*n
    };
    Deflater::new(&mine, &DeflateConfig { threshold: 0, level, ..Default::default() })
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
    if m[16..] != *pattern(seq, size) {
        return Err(format!("message {seq}: payload differs from the pattern"));
    }
    Ok(u64::from_le_bytes(m[8..16].try_into().expect("8 bytes")))
}

/// The text [`pattern`] cuts messages from: 1 MiB, far more than deflate's 32 KiB
/// window, so a message never repeats one the client's inflater still remembers.
const TEXT: usize = 1 << 20;

/// The payload after the header of message `seq` of `size` bytes: the next stretch of
/// a JSON-like depth feed (keys repeat, prices and quantities vary), messages one
/// after the other through the text: deflate at level 6 shrinks it about as much as a
/// real exchange's feed (the ratio is in docs/websocket.md).
fn pattern(seq: u64, size: usize) -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let text = P.get_or_init(|| {
        let mut s = String::with_capacity(TEXT + 256);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut e = 1_700_000_000_000u64;
        while s.len() < TEXT {
            e += next() % 50;
            s.push_str(&format!("{{\"e\":\"depthUpdate\",\"E\":{e},\"s\":\"BTCUSDT\",\"b\":["));
            for _ in 0..(next() % 6 + 1) {
                let r = next();
                s.push_str(&format!("[\"{}.{:02}\",\"{}.{:05}\"],", 60_000 + r % 977, (r >> 10) % 100, (r >> 17) % 7, (r >> 20) % 100_000));
            }
            s.push_str("[\"0\",\"0\"]]}\n");
        }
        s.into_bytes()
    });
    let n = size - 16;
    let at = (seq as usize).wrapping_mul(n) % (TEXT - n + 1);
    &text[at..at + n]
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
    let offers: Vec<&str> = head
        .lines()
        .filter_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-extensions")).map(|(_, v)| v.trim()))
        .collect();
    let agreed = ctl.deflate_level.and_then(|level| accept_deflate(&offers.join(", ")).map(|(r, n)| (r, server_deflater(&n, level))));
    let ext = agreed.as_ref().map(|(r, _)| format!("Sec-WebSocket-Extensions: {r}\r\n")).unwrap_or_default();
    let mut deflater = agreed.map(|(_, d)| d);
    let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{ext}\r\n");
    tls.write_all(resp.as_bytes(), T)?;
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    // The compressed path's message before and after deflate.
    let mut msg: Vec<u8> = Vec::with_capacity(*SIZES.end());
    let mut zbuf = vec![0u8; Deflater::bound(*SIZES.end())];
    // The compressed batched mode's frame ends in `out`.
    let mut ends: Vec<usize> = Vec::new();
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
        let plain = deflater.is_none();
        // Append message `seq`'s frame to `out` (compressed: RSV1 and the deflated
        // payload, whose length is known only afterwards).
        let mut frame = |out: &mut Vec<u8>, seq: u64, ts: u64| -> Result<()> {
            let Some(d) = deflater.as_mut() else {
                if size < 126 {
                    out.extend_from_slice(&[0x82, size as u8]);
                } else {
                    out.extend_from_slice(&[0x82, 126]);
                    out.extend_from_slice(&(size as u16).to_be_bytes());
                }
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&ts.to_le_bytes());
                out.extend_from_slice(pattern(seq, size));
                return Ok(());
            };
            msg.clear();
            msg.extend_from_slice(&seq.to_le_bytes());
            msg.extend_from_slice(&ts.to_le_bytes());
            msg.extend_from_slice(pattern(seq, size));
            let n = d.compress(&msg, &mut zbuf, true)?;
            encode_server_frame_rsv1(out, 0x2, true, &zbuf[..n]);
            Ok(())
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
                frame(&mut out, seq, mono_ns())?;
                tls.write_all(&out, T)?;
                ctl.sent.store(seq + 1, Ordering::Relaxed);
            }
        } else if plain {
            // Batched: frames packed into 16 KiB records (a larger frame: alone, and
            // OpenSSL splits it into 16 KiB records).
            let mut seq = 0;
            while seq < count && !stopped() {
                out.clear();
                let ts = mono_ns();
                while seq < count && (out.is_empty() || out.len() + size + 4 <= RECORD) {
                    frame(&mut out, seq, ts)?;
                    seq += 1;
                }
                tls.write_all(&out, T)?;
                ctl.sent.store(seq, Ordering::Relaxed);
            }
        } else {
            // Batched and compressed: deflating as it sends (level 6 costs the server
            // several times what inflating costs the client) would make the server, not
            // the client, the limit; an exchange compresses once for many clients. So the run is compressed ahead, up to
            // AHEAD bytes at a time (one stamp per batch: when it was compressed), then
            // sent in 16 KiB records that frames cross.
            let mut seq = 0;
            while seq < count && !stopped() {
                out.clear();
                ends.clear();
                let ts = mono_ns();
                while seq < count && out.len() < AHEAD {
                    frame(&mut out, seq, ts)?;
                    ends.push(out.len());
                    seq += 1;
                }
                let first = seq - ends.len() as u64;
                let mut at = 0;
                for rec in out.chunks(RECORD) {
                    if stopped() {
                        break;
                    }
                    tls.write_all(rec, T)?;
                    at += rec.len();
                    ctl.sent.store(first + ends.partition_point(|&e| e <= at) as u64, Ordering::Relaxed);
                }
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
        m.extend_from_slice(pattern(7, 56));
        assert_eq!(check(7, 56, &m), Ok(123));
        assert!(check(8, 56, &m).unwrap_err().contains("expected message 8, got 7"));
        assert!(check(7, 57, &m).unwrap_err().contains("56 bytes, expected 57"));
        m[30] ^= 1;
        assert!(check(7, 56, &m).unwrap_err().contains("differs from the pattern"));
    }

    #[test]
    fn messages_differ_and_run_on_through_the_text() {
        assert_ne!(pattern(0, 256), pattern(1, 256));
        // Message 1 starts where message 0 ends: one continuous feed.
        let both = [pattern(0, 256), pattern(1, 256)].concat();
        assert_eq!(&both[..], &pattern(0, 256 + 240)[..480]);
        assert_eq!(pattern(u64::MAX, 65535).len(), 65519);
    }

    #[test]
    fn accept_deflate_answers_what_rfc7692_allows_and_declines_the_rest() {
        let ok = |o: &str| accept_deflate(o).map(|(r, n)| (r, n.server_max_window_bits, n.server_no_context_takeover));
        // What browsers and our client offer by default: context takeover, 32 KiB window.
        assert_eq!(ok("permessage-deflate; client_max_window_bits"), Some(("permessage-deflate".into(), 15, false)));
        assert_eq!(
            ok("permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"),
            Some(("permessage-deflate; server_no_context_takeover; server_max_window_bits=10".into(), 10, true))
        );
        assert_eq!(
            ok("permessage-deflate; client_no_context_takeover").map(|t| t.0),
            Some("permessage-deflate; client_no_context_takeover".into())
        );
        // An offer we cannot take is passed over for the next one.
        assert_eq!(ok("permessage-deflate; server_max_window_bits=8, permessage-deflate").map(|t| t.1), Some(15));
        for bad in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn with_deflate_refuses_a_level_zlib_does_not_have() {
        assert!(ServerCtl::with_deflate(None, Pacing::Sleep, 10).is_err_and(|e| e.to_string().contains("must be 0..9")));
        assert_eq!(ServerCtl::with_deflate(None, Pacing::Sleep, 6).unwrap().deflate_level, Some(6));
        assert_eq!(ServerCtl::new(None, Pacing::Sleep).deflate_level, None);
    }
}

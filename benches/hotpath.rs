//! The client's receive hot path in instructions per message, for callgrind
//! (`tools/hotpath.sh` runs it and prints the table; see docs/performance.md).
//!
//! What runs is what the XDP pipeline runs after set-up, in one process and one loop
//! (the `inline` layout), minus the AF_XDP rings: Ethernet/IPv4/TCP frames carrying
//! TLS 1.3 AES-128-GCM records (one record per WebSocket message, as a paced feed
//! writes them, or packed into 16 KiB records as the peer benchmark's flat-out feed) go through `tcp::Connection::on_frame` (checksums verified) into
//! `TlsSession::feed_ciphertext`, the real `TransportStage` decrypts into MSG_INBOX
//! with `read_plaintext`, the real `WebSocketStage` parses into WS_FRAME_INFO, and a
//! `FrameReader` (what `Pipeline::next_frame` and the callback stage use) takes and
//! releases every message; ACKs are emitted into a scratch frame as `XdpTransport`
//! emits them into UMEM frames. The frames were built and encrypted beforehand by a
//! server-side OpenSSL session (not measured).
//!
//! `XdpTransport` itself needs a running AF_XDP engine; `Rx` below repeats its RX glue
//! (descriptor loop -> `on_frame` -> `feed_ciphertext`, ACKs via `poll_transmit` +
//! `emit_control`) over a slice of frames standing in for RAW_INBOX.
//!
//! Only `measured` is counted (`--toggle-collect`), so set-up, the handshakes, the
//! encryption and a warm-up of the first tenth of the messages are excluded; it also
//! asserts that the measured loop makes no Rust allocation. Without valgrind it also runs (a smoke test, wall clock
//! printed but meaningless on a shared box).
//!
//! `cargo bench --bench hotpath -- <payload bytes> [messages]`; `HOTPATH_PACKED=1`: the
//! messages packed into 16 KiB records instead of one record each.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pipeline::error::Result;
use pipeline::ring::{ElemRing, MsgInbox, MsgOutbox, OverrunPolicy, PongFrame, WsFrameInfo};
use pipeline::shm::{names, ShmDir};
use pipeline::stage::{
    encode_server_frame, Delivery, FrameReader, Stage, SyntheticScript, SyntheticTransport, Transport, TransportStage,
    WebSocketStage,
};
use pipeline::stats::StatsRegion;
use pipeline::tcp::{Connection, Transmit};
use pipeline::tls::{TlsConfig, TlsContext, TlsSession, TlsVersion};
use pipeline::wire::{flags, TcpOptionsRepr};
use pipeline::ws::{ClientHandshake, HandshakeConfig, WsUrl};
use pipeline_testkit::alloc::{self, CountingAlloc};
use pipeline_testkit::certs;
use pipeline_testkit::synthetic::unique;
use pipeline_testkit::tcp_sim::{peer_frame, peer_pair_config};
use pipeline_testkit::tls_memory::connected_pair;

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

/// RX descriptors per drive, as `XdpTransport` takes them from RAW_INBOX.
const RX_BATCH: usize = 64;
const MSS: usize = 1448;
const PEER_ISN: u32 = 0x1000;

/// Our TCP + TLS fed from pre-built frames; the upgrade is answered by the library's
/// synthetic server (set-up only, not measured).
struct Rx {
    upgrade: Option<SyntheticTransport>,
    conn: Connection,
    tls: TlsSession,
    /// Segments as the server would send them: (end sequence number, frame).
    frames: Vec<(u32, Vec<u8>)>,
    next: usize,
    /// Segments up to this index may be sent (the warm-up's share, then all); set
    /// from outside the stage that owns this transport.
    stop: Arc<AtomicUsize>,
    /// The server honours our window: it sends nothing beyond this right edge, which
    /// every ACK we emit moves (scaled by our window scale).
    right: u32,
    scale: u8,
    ack: Vec<u8>,
    fatal: Option<pipeline::Error>,
    acks: u64,
}

impl Transport for Rx {
    fn name(&self) -> &'static str {
        "hotpath"
    }

    fn drive(&mut self, now_ns: u64) -> Result<bool> {
        if let Some(u) = self.upgrade.as_mut() {
            return u.drive(now_ns);
        }
        let now_us = now_ns / 1000;
        let mut end = self.next;
        let stop = self.stop.load(Ordering::Relaxed);
        while end < stop && end - self.next < RX_BATCH && seq_le(self.frames[end].0, self.right) {
            end += 1;
        }
        let tls = &mut self.tls;
        let fatal = &mut self.fatal;
        for (_, f) in &self.frames[self.next..end] {
            self.conn.on_frame(now_us, f, |bytes| {
                if let Err(e) = tls.feed_ciphertext(bytes) {
                    fatal.get_or_insert(e);
                }
            });
        }
        let moved = end > self.next;
        self.next = end;
        while self.conn.poll_event().is_some() {}
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        while let Some(t) = self.conn.poll_transmit(now_us) {
            if let Transmit::Control(seg) = t {
                let n = self.conn.emit_control(&seg, &mut self.ack)?;
                black_box(&self.ack[..n]);
                self.right = seg.ack.wrapping_add((seg.window as u32) << self.scale);
                self.acks += 1;
            }
        }
        Ok(moved)
    }

    fn is_established(&self) -> bool {
        true
    }

    fn rx_space(&mut self, free: usize) {
        self.conn.set_rx_space(free);
    }

    fn read(&mut self, buf: &mut [u8], now_ns: u64) -> Result<usize> {
        if let Some(u) = self.upgrade.as_mut() {
            let n = u.read(buf, now_ns)?;
            if n > 0 {
                // The whole 101 response comes in one read: TLS data from now on.
                self.upgrade = None;
            }
            return Ok(n);
        }
        self.tls.read_plaintext(buf)
    }

    fn write(&mut self, data: &[u8], now_ns: u64) -> Result<usize> {
        match self.upgrade.as_mut() {
            Some(u) => u.write(data, now_ns),
            None => Ok(data.len()),
        }
    }

    fn shutdown(&mut self, _now_ns: u64) -> Result<()> {
        Ok(())
    }
}

/// A client and a server session with the handshake done and the tickets swallowed.
fn tls_pair() -> (TlsSession, TlsSession) {
    let c = certs::certs();
    let (cert, key) = c.leaf("server");
    let sctx = TlsContext::new_server(&cert, &key, TlsVersion::Tls13, TlsVersion::Tls13).unwrap();
    // The pipeline's defaults (pipeline::xdp_setup), pinned to the benchmark's suite.
    let cctx = TlsContext::new(&TlsConfig {
        ca_file: Some(c.ca()),
        ciphersuites: Some("TLS_AES_128_GCM_SHA256".into()),
        // HOTPATH_READ_AHEAD=1: OpenSSL's read-ahead, to compare (not the pipeline's default).
        read_ahead: std::env::var_os("HOTPATH_READ_AHEAD").is_some_and(|v| v == "1"),
        ..TlsConfig::default()
    })
    .unwrap();
    let (cl, sv) = connected_pair(&cctx, &sctx);
    assert_eq!(cl.cipher(), "TLS_AES_128_GCM_SHA256");
    (cl, sv)
}

fn seq_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// Connected with an ISN of 1000; the peer's data starts at PEER_ISN + 1. Also our
/// window scale and the right edge of the window our handshake ACK opened.
fn tcp() -> (Connection, u8, u32) {
    let mut c = Connection::new(peer_pair_config()).unwrap();
    c.connect_with_isn(0, 1000, 0).unwrap();
    let mut scale = 0;
    while let Some(t) = c.poll_transmit(0) {
        if let Transmit::Control(syn) = t {
            scale = syn.options.window_scale.unwrap_or(0);
        }
    }
    let opts = TcpOptionsRepr { mss: Some(MSS as u16), window_scale: Some(7), ..Default::default() };
    let synack = peer_frame(PEER_ISN, 1001, flags::SYN | flags::ACK, &[], opts);
    c.on_frame(10, &synack, |_| {});
    let mut right = PEER_ISN.wrapping_add(1);
    while let Some(t) = c.poll_transmit(10) {
        if let Transmit::Control(seg) = t {
            right = seg.ack.wrapping_add((seg.window as u32) << scale);
        }
    }
    assert!(c.is_established());
    (c, scale, right)
}

/// `count` binary messages of `size` bytes as MSS-sized segments: one TLS record per
/// message (a paced feed), or `packed`: the frames written back to back in 16 KiB
/// records (the peer benchmark's flat-out feed; a 16 KiB message spans two). The first
/// `warm` messages end a record; also returns how many segments carry them (the
/// warm-up gets only those, so it leaves no decrypted-but-unread work behind).
fn frames(server: &mut TlsSession, size: usize, count: usize, warm: usize, packed: bool) -> (Vec<(u32, Vec<u8>)>, usize) {
    server.set_max_send_fragment(16384).unwrap();
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut ws = Vec::new();
    let mut stream = Vec::new();
    let write = |server: &mut TlsSession, ws: &mut Vec<u8>, stream: &mut Vec<u8>| {
        let mut off = 0;
        while off < ws.len() {
            off += server.write_plaintext(&ws[off..]).unwrap();
        }
        server.drain_ciphertext_into(stream);
        ws.clear();
    };
    let mut warm_end = 0;
    for i in 0..count {
        encode_server_frame(&mut ws, 0x2, true, &payload);
        if !packed || i + 1 == warm || i + 1 == count {
            write(server, &mut ws, &mut stream);
        }
        if i + 1 == warm {
            warm_end = stream.len();
        }
    }
    let mut seq = PEER_ISN.wrapping_add(1);
    let segs = stream
        .chunks(MSS)
        .map(|seg| {
            let f = peer_frame(seq, 1001, flags::ACK | flags::PSH, seg, TcpOptionsRepr::default());
            seq = seq.wrapping_add(seg.len() as u32);
            (seq, f)
        })
        .collect();
    (segs, warm_end.div_ceil(MSS))
}

/// The inline loop (one clock read per loop, as `runner::run_loop`) until `count`
/// messages were taken and released. Returns the payload bytes seen (plus each
/// message's last byte, so the payload is read).
#[inline(always)]
fn run(t: &mut TransportStage<Rx>, w: &mut WebSocketStage, reader: &mut FrameReader, count: usize) -> u64 {
    let mut got = 0usize;
    let mut bytes = 0u64;
    let mut idle = 0u32;
    while got < count {
        let now = pipeline::stage::now_ns();
        let mut moved = t.poll(now).unwrap().moved();
        moved |= w.poll(now).unwrap().moved();
        while got < count {
            let Some(f) = reader.take() else { break };
            // SAFETY: `f` is not released until after this read.
            let p = unsafe { reader.payload(&f) };
            bytes += p.len() as u64 + p[p.len() - 1] as u64;
            reader.release(&f);
            got += 1;
            moved = true;
        }
        idle = if moved { 0 } else { idle + 1 };
        assert!(idle < 1000, "stalled after {got} of {count} messages");
    }
    reader.publish();
    bytes
}

/// The warm-up, separate so callgrind can count it on its own
/// (`--toggle-collect=hotpath::warm_up`).
#[inline(never)]
fn warm_up(t: &mut TransportStage<Rx>, w: &mut WebSocketStage, reader: &mut FrameReader, count: usize) -> u64 {
    run(t, w, reader, count)
}

/// The counted part (callgrind's `--toggle-collect`), after a warm-up.
#[inline(never)]
fn measured(t: &mut TransportStage<Rx>, w: &mut WebSocketStage, reader: &mut FrameReader, count: usize) -> u64 {
    run(t, w, reader, count)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let size: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(256);
    let count: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(if size > 4096 { 2_000 } else { 20_000 });
    assert!(size >= 1, "payload size must be at least 1 byte");
    let packed = std::env::var_os("HOTPATH_PACKED").is_some_and(|v| v == "1");

    let (cl, mut sv) = tls_pair();
    // Warm-up: the first tenth, so the buffers that grow to a batch's size have grown.
    let warm = (count / 10).max(1);
    let (data, warm_segs) = frames(&mut sv, size, count, warm, packed);
    let stop = Arc::new(AtomicUsize::new(warm_segs));
    let (name, _guard) = unique(&format!("hotpath{size}"));
    let dir = ShmDir::create(&name).unwrap();
    let stats = StatsRegion::create(&dir).unwrap();
    let inbox = MsgInbox::create(&dir, 4 << 20, OverrunPolicy::Backpressure).unwrap();
    let outbox = MsgOutbox::create(&dir, 1 << 20).unwrap();
    let (pongs_tx, pongs_rx) = ElemRing::<PongFrame>::create(&dir, names::PONGS, 256).unwrap().split();
    let (frames_tx, frames_rx) = ElemRing::<WsFrameInfo>::create(&dir, names::WS_FRAME_INFO, 1 << 14).unwrap().split();
    let url = WsUrl::parse("wss://localhost/feed").unwrap();
    let hs = ClientHandshake::new(&url, &HandshakeConfig::default()).unwrap();
    let (conn, scale, right) = tcp();
    let rx = Rx {
        upgrade: Some(SyntheticTransport::new(SyntheticScript::default())),
        conn,
        tls: cl,
        frames: data,
        next: 0,
        stop: stop.clone(),
        right,
        scale,
        ack: vec![0u8; 2048],
        fatal: None,
        acks: 0,
    };
    let mut t = TransportStage::new(
        rx,
        hs,
        inbox.writer(),
        outbox.reader(),
        pongs_rx,
        stats.clone(),
        outbox.max_payload(),
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    let mut w = WebSocketStage::new(inbox.clone(), frames_tx, pongs_tx, stats.clone(), Delivery::Messages, 1 << 20);
    let mut reader = FrameReader::new(frames_rx, inbox.clone());
    // Set-up: the upgrade, through the same stages.
    for _ in 0..100 {
        let now = pipeline::stage::now_ns();
        t.poll(now).unwrap();
        w.poll(now).unwrap();
        if t.transport().upgrade.is_none() {
            break;
        }
    }
    assert!(t.transport().upgrade.is_none(), "upgrade not done");
    let segs = t.transport().frames.len();

    let mut bytes = warm_up(&mut t, &mut w, &mut reader, warm);
    stop.store(segs, Ordering::Relaxed);
    let timed = count - warm;
    alloc::arm();
    let t0 = std::time::Instant::now();
    bytes += measured(&mut t, &mut w, &mut reader, timed);
    let dt = t0.elapsed();
    let allocs = alloc::disarm();
    // Our code allocates nothing in steady state (OpenSSL's own mallocs do not pass
    // through Rust's allocator and are not counted here).
    assert_eq!(allocs, 0, "Rust allocations in the measured loop");
    let expect = count as u64 * (size as u64 + ((size - 1) as u8) as u64);
    assert_eq!(bytes, expect, "every message delivered whole");
    let rx = t.transport();
    assert_eq!(rx.next, segs, "every segment consumed");
    let count = timed;
    println!(
        "hotpath: {count} messages of {size} B in {segs} segments ({}), {} ACKs; {:.0} ns/msg wall (not meaningful under valgrind or on a shared box)",
        if packed { "16 KiB records" } else { "one record per message" },
        rx.acks,
        dt.as_nanos() as f64 / count as f64
    );
}

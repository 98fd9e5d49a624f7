//! RX hot-path benchmark: in-order receive of 1448-byte segments through
//! `Connection::on_frame` (Ethernet/IPv4/TCP parse, checksum verification, sequence
//! checks, delivery, adaptive ACK emission), plus the checksum and the TX build path.
//! Instant-based, medians of several runs; prints a table and writes
//! bench-results/tcp_rx.json.

use pipeline_testkit::tcp_sim::peer_frame;
use pipeline::tcp::{Connection, TcpConfig, Transmit};
use pipeline::wire::{
    checksum, flags, MacAddr, TcpOptionsRepr,
};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

const SEG: usize = 1448;
const FRAMES: usize = 8192;
const RUNS: usize = 11;
const PEER_ISN: u32 = 0xffff_0000; // wraps during the run

fn cfg(verify: bool) -> TcpConfig {
    let mut c = TcpConfig::new(
        MacAddr([2, 0, 0, 0, 0, 1]),
        MacAddr([2, 0, 0, 0, 0, 2]),
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000),
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 443),
    );
    c.verify_checksums = verify;
    c.rcv_buf_max = 1 << 30;
    c
}


fn established(verify: bool) -> Connection {
    let mut c = Connection::new(cfg(verify)).unwrap();
    c.connect_with_isn(0, 1000, 0).unwrap();
    while c.poll_transmit(0).is_some() {}
    let synack = peer_frame(
        PEER_ISN,
        1001,
        flags::SYN | flags::ACK,
        &[],
        TcpOptionsRepr {
            mss: Some(1460),
            window_scale: Some(7),
            ..Default::default()
        },
    );
    c.on_frame(10, &synack, |_| {});
    c.set_rx_space(1 << 30);
    while c.poll_transmit(10).is_some() {}
    assert!(c.is_established());
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// ns per segment for one run over all frames.
fn rx_run(frames: &[Vec<u8>], verify: bool) -> f64 {
    let mut c = established(verify);
    let mut ackbuf = [0u8; 128];
    let mut delivered = 0usize;
    let mut acks = 0usize;
    let t = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        let now = 20 + i as u64 / 16; // a clock read once per batch of 16
        c.on_frame(now, f, |d| {
            delivered += d.len();
            black_box(d);
        });
        if i % 16 == 15 {
            c.set_rx_space(1 << 30);
            while let Some(tx) = c.poll_transmit(now) {
                if let Transmit::Control(seg) = tx {
                    let n = c.emit_control(&seg, &mut ackbuf).unwrap();
                    black_box(&ackbuf[..n]);
                    acks += 1;
                }
            }
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / frames.len() as f64;
    assert_eq!(delivered, frames.len() * SEG);
    // One ACK per polled batch of 16 (the policy asks for one after 8; the batch ACK covers all).
    assert!(acks >= frames.len() / 16, "adaptive ACK: {acks}");
    ns
}

/// Cache-hot variant: a ring of 256 frames (370 KB, like a just-written RX batch),
/// each re-stamped with the next sequence number (incremental checksum update, ~2 ns)
/// right before it is received. `total` segments per run.
fn rx_hot_run(ring: &mut [Vec<u8>], total: usize, verify: bool) -> f64 {
    let mut c = established(verify);
    let mut ackbuf = [0u8; 128];
    let mut delivered = 0usize;
    let t = Instant::now();
    for i in 0..total {
        let f = &mut ring[i % ring.len()];
        let new = PEER_ISN.wrapping_add(1 + (i * SEG) as u32);
        let old = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
        if old != new {
            let cs = u16::from_be_bytes([f[50], f[51]]);
            f[38..42].copy_from_slice(&new.to_be_bytes());
            f[50..52].copy_from_slice(&checksum::update32(cs, old, new).to_be_bytes());
        }
        let now = 20 + i as u64 / 16;
        c.on_frame(now, f, |d| {
            delivered += d.len();
            black_box(d);
        });
        if i % 16 == 15 {
            c.set_rx_space(1 << 30);
            while let Some(tx) = c.poll_transmit(now) {
                if let Transmit::Control(seg) = tx {
                    let n = c.emit_control(&seg, &mut ackbuf).unwrap();
                    black_box(&ackbuf[..n]);
                }
            }
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / total as f64;
    assert_eq!(
        delivered,
        total * SEG,
        "all segments accepted (checksums still valid)"
    );
    ns
}

fn checksum_gbps(len: usize) -> f64 {
    let buf: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let iters = (256 << 20) / len;
    let t = Instant::now();
    let mut acc = 0u16;
    for _ in 0..iters {
        acc = acc.wrapping_add(checksum::sum(black_box(&buf)));
    }
    black_box(acc);
    (iters * len) as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn tx_run() -> f64 {
    let mut c = established(true);
    // Make room: pretend the peer window is huge by acking as we go.
    let mut frame = vec![0u8; 2048];
    let off = c.payload_offset();
    frame[off..off + SEG].fill(0xab);
    let n = 4096;
    let mut total = 0.0;
    let mut sent = 0;
    let mut ack = 1001u32;
    while sent < n {
        let t = Instant::now();
        let mut k = 0;
        while c.send_capacity() >= SEG && k < 32 {
            let len = c.send_data(30, &mut frame, SEG, k).unwrap();
            black_box(&frame[..len]);
            k += 1;
        }
        total += t.elapsed().as_nanos() as f64;
        sent += k as usize;
        ack = ack.wrapping_add((k as usize * SEG) as u32);
        let a = peer_frame(
            PEER_ISN.wrapping_add(1),
            ack,
            flags::ACK,
            &[],
            TcpOptionsRepr::default(),
        );
        c.on_frame(40, &a, |_| {});
        while c.pop_acked().is_some() {}
    }
    total / sent as f64
}

fn main() {
    let payload = vec![0x5au8; SEG];
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| {
            peer_frame(
                PEER_ISN.wrapping_add(1 + (i * SEG) as u32),
                1001,
                flags::ACK | flags::PSH,
                &payload,
                TcpOptionsRepr::default(),
            )
        })
        .collect();
    // Warm up.
    rx_run(&frames, true);
    let rx_verify = median((0..RUNS).map(|_| rx_run(&frames, true)).collect());
    let mut ring: Vec<Vec<u8>> = frames[..256].to_vec();
    let rx_hot = median(
        (0..RUNS)
            .map(|_| rx_hot_run(&mut ring, 4 * FRAMES, true))
            .collect(),
    );
    let rx_hot_nv = median(
        (0..RUNS)
            .map(|_| rx_hot_run(&mut ring, 4 * FRAMES, false))
            .collect(),
    );
    let rx_noverify = median((0..RUNS).map(|_| rx_run(&frames, false)).collect());
    let cs_1448 = median((0..RUNS).map(|_| checksum_gbps(1448)).collect());
    let cs_64k = median((0..RUNS).map(|_| checksum_gbps(65536)).collect());
    let tx = median((0..RUNS).map(|_| tx_run()).collect());

    let mseg = |ns: f64| 1e3 / ns;
    let gbit = |ns: f64| SEG as f64 * 8.0 / ns;
    println!("tcp_rx benchmark ({FRAMES} x {SEG}-byte segments per run, median of {RUNS} runs; loadavg {})",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    println!("| measurement | ns/segment | Msegments/s | payload Gbit/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| RX in-order, checksums verified, cache-hot frames | {rx_hot:.1} | {:.2} | {:.1} |",
        mseg(rx_hot),
        gbit(rx_hot)
    );
    println!("| RX in-order, checksums not verified, cache-hot frames | {rx_hot_nv:.1} | {:.2} | {:.1} |", mseg(rx_hot_nv), gbit(rx_hot_nv));
    println!("| RX in-order, checksums verified, cold 12 MB of frames | {rx_verify:.1} | {:.2} | {:.1} |", mseg(rx_verify), gbit(rx_verify));
    println!(
        "| RX in-order, checksums not verified, cold frames | {rx_noverify:.1} | {:.2} | {:.1} |",
        mseg(rx_noverify),
        gbit(rx_noverify)
    );
    println!(
        "| TX send_data (headers + checksum) | {tx:.1} | {:.2} | {:.1} |",
        mseg(tx),
        gbit(tx)
    );
    println!("| checksum | GB/s |");
    println!("| --- | ---: |");
    println!("| 1448 B | {cs_1448:.2} |");
    println!("| 64 KiB | {cs_64k:.2} |");

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let json = format!(
        "{{\n  \"bench\": \"tcp_rx\",\n  \"segment_bytes\": {SEG},\n  \"frames_per_run\": {FRAMES},\n  \"runs\": {RUNS},\n  \
         \"rx_hot_verify_ns_per_segment\": {rx_hot:.2},\n  \"rx_hot_verify_segments_per_sec\": {:.0},\n  \
         \"rx_hot_noverify_ns_per_segment\": {rx_hot_nv:.2},\n  \"rx_cold_verify_ns_per_segment\": {rx_verify:.2},\n  \"rx_cold_noverify_ns_per_segment\": {rx_noverify:.2},\n  \
         \"tx_ns_per_segment\": {tx:.2},\n  \"checksum_gbytes_per_sec_1448\": {cs_1448:.3},\n  \
         \"checksum_gbytes_per_sec_64k\": {cs_64k:.3},\n  \"loadavg\": \"{}\"\n}}\n",
        1e9 / rx_hot,
        load.trim()
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tcp_rx.json"), json).unwrap();
    println!("wrote {}", dir.join("tcp_rx.json").display());
}

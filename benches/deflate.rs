//! permessage-deflate cost: inflate (and deflate) per message at 256 B and 16 KiB of
//! market-data JSON, msgs/s of a whole Pipeline on a compressed synthetic feed
//! against the same feed uncompressed (and offered but declined, the copy path), and
//! the XDP Pipeline on a compressed feed from the Rust exchange server against the same
//! feed uncompressed.
//!
//! `cargo bench --bench deflate` (root for the XDP rows) prints a table and writes
//! `bench-results/deflate.json`. Plain `Instant` timing, median and best of RUNS runs.
//! The synthetic transport replays pre-built server bytes in 16 KiB reads (a TLS
//! record's worth): no network, no TLS, so the rows show what the WebSocket stage's
//! inflation costs the pipeline.
//!
//! XDP rows: the veth bed of `benches/peers.rs` (server namespace: the exchange server
//! `pipeline_netbed::exchange` made with `ServerCtl::with_deflate` at zlib level 6,
//! pinned to CPU 0, batched flat-out mode, its JSON-like pattern; client namespace: the
//! public `Pipeline`, `TransportKind::Xdp`, layout inline, wait backoff, callback
//! delivery checking each message's seq and size, pinned to CPU 1). `Config::deflate`
//! `Some(DeflateConfig::default())` (the server compresses every message, context
//! takeover) against `None` (the same server sends the same messages plain), the two
//! taking turns run by run, XDP_RUNS rounds, median (and best) of each. Per run: a
//! warm-up of a tenth, then the measured run on the same connection; msgs/s from the
//! first message to the "done" after the last; bytes the transport received; the stage
//! thread's CPU per message over the same interval, from its schedstat (exact run time,
//! read in the callback at the first message and at "done"); the compressed/uncompressed
//! ratios per round, their median (the `%` rows). The box is shared and
//! loaded: the compressed/uncompressed ratios, measured side by side, are what counts.
//! Without root (and CI unset) the XDP rows are skipped with the reason; with CI set
//! that is a failure. Without `--bench` (`cargo test --all-targets` runs this binary)
//! nothing is measured or written.

use std::hint::black_box;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Pipeline, TransportKind};
use pipeline::stats::Counter;
use pipeline_testkit::certs::certs;
use pipeline_testkit::exchange::{command, server_main, Pacing, ServerCtl};
use pipeline_testkit::feed::mono_ns;
use pipeline_testkit::netns::{Side, TestBed};
use pipeline_testkit::schedstat;
use pipeline::runner::{Layout, WaitKind};
use pipeline::stage::{encode_server_frame, encode_server_frame_rsv1, SyntheticScript};
use pipeline::ws::deflate::{Deflater, Inflater, Negotiated, TAIL};
use pipeline::ws::DeflateConfig;

const RUNS: usize = 9;
const PIPE_RUNS: usize = 3;
const XDP_RUNS: usize = 5;
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

fn neg() -> Negotiated {
    Negotiated {
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        server_no_context_takeover: false,
        client_no_context_takeover: false,
    }
}

/// A trade-like JSON message of about `n` bytes (varying numbers: compressible the way
/// a real feed is, not trivially).
fn message(i: usize, n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n + 128);
    let mut k = 0usize;
    s.push_str(&format!("{{\"stream\":\"btcusdt@depth\",\"data\":{{\"e\":\"depthUpdate\",\"E\":{},\"s\":\"BTCUSDT\",\"b\":[", 1_700_000_000_000u64 + i as u64));
    while s.len() + 40 < n {
        let x = (i * 7919 + k * 104_729) % 100_000;
        s.push_str(&format!("[\"{}.{:02}\",\"{}.{:05}\"],", 60_000 + x % 977, x % 100, x % 7, x));
        k += 1;
    }
    s.push_str("[\"0\",\"0\"]]}}");
    while s.len() < n {
        s.push(' ');
    }
    s.truncate(n);
    s.into_bytes()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

struct Row {
    name: String,
    unit: &'static str,
    median: f64,
    best: f64,
    extra: String,
}

impl Row {
    /// A time per message: the median and the fastest of `times`.
    fn ns_per_msg(name: String, times: &[f64], extra: String) -> Row {
        Row { name, unit: "ns/msg", median: median(times.to_vec()), best: best(times), extra }
    }
}

/// Compress `msgs` as a server with context takeover would (level 6, zlib's default).
fn compress_all(msgs: &[Vec<u8>], level: u8) -> Vec<Vec<u8>> {
    let mut d = Deflater::new(&neg(), &DeflateConfig { threshold: 0, level, ..Default::default() });
    msgs.iter()
        .map(|m| {
            let mut out = vec![0; Deflater::bound(m.len())];
            let n = d.compress(m, &mut out, true).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

fn inflate_rows(size: usize, count: usize, rows: &mut Vec<Row>) {
    let msgs: Vec<Vec<u8>> = (0..count).map(|i| message(i, size)).collect();
    let comp = compress_all(&msgs, 6);
    let plain: usize = msgs.iter().map(Vec::len).sum();
    let wire: usize = comp.iter().map(Vec::len).sum();
    let mut out = vec![0u8; size + 1024];
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let mut inf = Inflater::new(&neg());
        let t = Instant::now();
        for c in &comp {
            let r = inf.inflate(c, &mut out).unwrap();
            let r2 = inf.inflate(&TAIL, &mut out[r.produced..]).unwrap();
            black_box(r.produced + r2.produced);
            inf.end_message();
        }
        times.push(t.elapsed().as_nanos() as f64 / count as f64);
    }
    // Check once: the output is the message.
    let mut inf = Inflater::new(&neg());
    for (m, c) in msgs.iter().zip(&comp) {
        let r = inf.inflate(c, &mut out).unwrap();
        let r2 = inf.inflate(&TAIL, &mut out[r.produced..]).unwrap();
        assert_eq!(&out[..r.produced + r2.produced], &m[..]);
        inf.end_message();
    }
    let ratio = format!("ratio {:.2} ({} -> {} B/msg)", plain as f64 / wire as f64, size, wire / count);
    rows.push(Row::ns_per_msg(format!("inflate {size} B message (context takeover)"), &times, ratio));
    // The copy the uncompressed path pays at least: memcpy of the message.
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        for m in &msgs {
            out[..m.len()].copy_from_slice(black_box(m));
            black_box(&out);
        }
        times.push(t.elapsed().as_nanos() as f64 / count as f64);
    }
    rows.push(Row::ns_per_msg(format!("memcpy {size} B (for scale)"), &times, String::new()));
    // Our send side: deflate level 1 (the default) with context takeover.
    let mut times = Vec::new();
    let mut buf = vec![0u8; Deflater::bound(size)];
    for _ in 0..RUNS {
        let mut d = Deflater::new(&neg(), &DeflateConfig::default());
        let t = Instant::now();
        for m in &msgs {
            black_box(d.compress(m, &mut buf, true).unwrap());
        }
        times.push(t.elapsed().as_nanos() as f64 / count as f64);
    }
    rows.push(Row::ns_per_msg(format!("deflate {size} B message (level 1, send side)"), &times, String::new()));
}

#[derive(Clone, Copy, PartialEq)]
enum Feed {
    Plain,
    Declined,
    Compressed,
}

fn pipeline_run(data: &Arc<Vec<u8>>, n: usize, feed: Feed, tag: &str) -> f64 {
    let mut c = Config::new("wss://synthetic.bench/feed");
    c.name = Some(format!("bench-deflate-{}-{tag}", std::process::id()));
    c.transport = TransportKind::Synthetic(SyntheticScript {
        data: data.clone(),
        chunk: 16 << 10,
        extensions: (feed == Feed::Compressed).then(|| "permessage-deflate".to_string()),
        ..Default::default()
    });
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.quiet = true;
    if feed != Feed::Plain {
        c.deflate = Some(DeflateConfig::default());
    }
    let mut p = Pipeline::start(c).expect("start");
    let mut rx = p.receiver().unwrap();
    let mut t0 = None;
    let mut got = 0usize;
    let mut bytes = 0usize;
    while got < n {
        let f = rx.next_frame_timeout(Duration::from_secs(30)).expect("message");
        t0.get_or_insert_with(Instant::now);
        bytes += f.payload().len();
        got += 1;
    }
    let dt = t0.unwrap().elapsed().as_secs_f64();
    black_box(bytes);
    p.stop();
    (n - 1) as f64 / dt
}

fn pipeline_rows(size: usize, n: usize, rows: &mut Vec<Row>) {
    let msgs: Vec<Vec<u8>> = (0..1024).map(|i| message(i, size)).collect();
    let comp = compress_all(&msgs, 6);
    // The compressed feed with context takeover must be one stream: compress the whole
    // sequence (n messages cycling through the 1024).
    let mut d = Deflater::new(&neg(), &DeflateConfig { threshold: 0, level: 6, ..Default::default() });
    let mut plain = Vec::new();
    let mut packed = Vec::new();
    let mut buf = vec![0u8; Deflater::bound(size)];
    for i in 0..n {
        let m = &msgs[i % msgs.len()];
        encode_server_frame(&mut plain, 1, true, m);
        let k = d.compress(m, &mut buf, true).unwrap();
        encode_server_frame_rsv1(&mut packed, 1, true, &buf[..k]);
    }
    drop(comp);
    let plain = Arc::new(plain);
    let packed = Arc::new(packed);
    for (feed, data, label) in [
        (Feed::Plain, &plain, "uncompressed"),
        (Feed::Declined, &plain, "deflate offered, declined (copy path)"),
        (Feed::Compressed, &packed, "compressed"),
    ] {
        let mut rates = Vec::new();
        for r in 0..PIPE_RUNS {
            rates.push(pipeline_run(data, n, feed, &format!("{size}-{r}-{}", label.len())));
        }
        rows.push(Row {
            name: format!("pipeline {size} B feed, {label}"),
            unit: "msgs/s",
            median: median(rates.clone()),
            best: rates.iter().copied().fold(0.0, f64::max),
            extra: format!("{:.1} MB on the wire", data.len() as f64 / 1e6),
        });
    }
}

/// What the XDP client's callback sees, read by the bench's thread.
#[derive(Default)]
struct Sink {
    size: AtomicU64,
    got: AtomicU64,
    bad: AtomicU64,
    first_ns: AtomicU64,
    end_ns: AtomicU64,
    done: AtomicBool,
    /// The stage thread's run time (its schedstat, read in the callback) at the first
    /// message and at "done": the CPU of the same interval as the msgs/s (not the wait
    /// while the server compresses ahead).
    cpu_first: AtomicU64,
    cpu_end: AtomicU64,
}

/// One XDP run's measures.
struct XdpRun {
    msgs_per_s: f64,
    wire_per_msg: f64,
    cpu_ns_per_msg: f64,
}

/// A fresh XDP Pipeline to the bed's exchange server: a warm-up of a tenth of `count`,
/// then `count` messages flat out, every one checked (seq order, size) in the callback.
fn xdp_run(bed: &TestBed, port: u16, size: usize, count: u64, compressed: bool, tag: &str) -> XdpRun {
    let mut c = Config::new(&format!("wss://{}:{port}/", bed.server_ip));
    c.name = Some(format!("bench-deflate-xdp-{}-{tag}", std::process::id()));
    c.transport = TransportKind::Xdp;
    c.ca_file = Some(certs().ca());
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.cores = vec![CLIENT_CPU];
    c.quiet = true;
    c.deflate = compressed.then(DeflateConfig::default);
    let sink = Arc::new(Sink::default());
    let s = sink.clone();
    let cb = Box::new(move |payload: &[u8], opcode: u8, _fin: bool| {
        if opcode == 0x2 {
            let got = s.got.load(Ordering::Relaxed);
            if got == 0 {
                s.cpu_first.store(schedstat("/proc/thread-self/schedstat"), Ordering::Relaxed);
                s.first_ns.store(mono_ns(), Ordering::Relaxed);
            }
            let seq = payload.get(0..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).unwrap_or(u64::MAX);
            if seq != got || payload.len() as u64 != s.size.load(Ordering::Relaxed) {
                s.bad.fetch_add(1, Ordering::Relaxed);
            }
            s.got.store(got + 1, Ordering::Relaxed);
        } else if opcode == 0x1 && payload == b"done" {
            s.end_ns.store(mono_ns(), Ordering::Relaxed);
            s.cpu_end.store(schedstat("/proc/thread-self/schedstat"), Ordering::Relaxed);
            s.done.store(true, Ordering::Release);
        }
    });
    bed.in_client(|| {
        let p = Pipeline::start_with_callback(c, cb).unwrap_or_else(|e| panic!("xdp pipeline: {e}"));
        let deflate = p.stats().get(Counter::Deflate);
        assert_eq!(deflate > 1, compressed, "permessage-deflate agreed iff offered (stats word {deflate})");
        let one = |n: u64| {
            sink.got.store(0, Ordering::SeqCst);
            sink.done.store(false, Ordering::SeqCst);
            sink.size.store(size as u64, Ordering::SeqCst);
            p.send_text(&command(size, n, 0)).expect("send the run command");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !sink.done.load(Ordering::Acquire) {
                assert!(Instant::now() < deadline, "xdp {size} B run: {} of {n} messages, state {:?}", sink.got.load(Ordering::SeqCst), p.state());
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(sink.got.load(Ordering::SeqCst), n, "xdp {size} B: messages");
            assert_eq!(sink.bad.load(Ordering::SeqCst), 0, "xdp {size} B: messages out of order or of the wrong size");
        };
        one((count / 10).max(100));
        let (rx0, inf0) = (p.stats().get(Counter::RxBytes), p.stats().get(Counter::InflatedMessages));
        one(count);
        let (rx1, inf1) = (p.stats().get(Counter::RxBytes), p.stats().get(Counter::InflatedMessages));
        let (cpu0, cpu1) = (sink.cpu_first.load(Ordering::SeqCst), sink.cpu_end.load(Ordering::SeqCst));
        assert_eq!(inf1 - inf0, if compressed { count } else { 0 }, "xdp {size} B: inflated messages");
        let _ = p.close(1000, "bench done");
        p.wait_disconnected(Duration::from_secs(2));
        p.stop();
        let el = sink.end_ns.load(Ordering::SeqCst).saturating_sub(sink.first_ns.load(Ordering::SeqCst)) as f64 / 1e9;
        XdpRun {
            msgs_per_s: (count - 1) as f64 / el.max(1e-9),
            wire_per_msg: (rx1 - rx0) as f64 / count as f64,
            cpu_ns_per_msg: cpu1.saturating_sub(cpu0) as f64 / count as f64,
        }
    })
}

/// The XDP rows (see the header), or the reason they were skipped.
fn xdp_rows(rows: &mut Vec<Row>) {
    let Some(bed) = TestBed::new_or_skip("deflate benchmark, XDP rows") else {
        eprintln!("deflate: XDP rows skipped (see above): run as root for them");
        return;
    };
    let (cert, key) = certs().leaf("veth");
    let ip = bed.server_ip;
    let l = bed.in_server(move || TcpListener::bind((ip, 0)).expect("bind"));
    let port = l.local_addr().unwrap().port();
    let ctl = ServerCtl::with_deflate(Some(SERVER_CPU), Pacing::Spin, 6).expect("server");
    let c2 = ctl.clone();
    let server = bed.spawn_in(Side::Server, move || server_main(l, cert, key, c2));
    while ctl.tid.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (_, la) = pipeline_testkit::netns::try_run(&["cat", "/proc/loadavg"]);
    eprintln!("deflate: XDP rows, server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}; load average {} (shared box: read the ratios)", la.trim());
    for (size, count) in [(256usize, 500_000u64), (16 << 10, 8_000)] {
        let mut plain = Vec::new();
        let mut comp = Vec::new();
        for r in 0..XDP_RUNS {
            // Taking turns, so both see the same background load.
            for compressed in [false, true] {
                let run = xdp_run(&bed, port, size, count, compressed, &format!("{size}-{r}-{}", compressed as u8));
                eprintln!(
                    "  round {}: {size:>5} B {:<12} {:>10.0} msg/s  {:>7.1} B/msg on the wire  client {:>7.0} ns/msg",
                    r + 1,
                    if compressed { "compressed" } else { "uncompressed" },
                    run.msgs_per_s,
                    run.wire_per_msg,
                    run.cpu_ns_per_msg
                );
                if compressed { &mut comp } else { &mut plain }.push(run);
            }
        }
        let col = |v: &[XdpRun], f: fn(&XdpRun) -> f64| v.iter().map(f).collect::<Vec<f64>>();
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let wire_p = median(col(&plain, |r| r.wire_per_msg));
        let wire_c = median(col(&comp, |r| r.wire_per_msg));
        for (label, v, wire) in [("uncompressed", &plain, wire_p), ("compressed", &comp, wire_c)] {
            let rate = col(v, |r| r.msgs_per_s);
            let cpu = col(v, |r| r.cpu_ns_per_msg);
            let note = format!("{count} msgs/run, {wire:.1} B/msg received by the transport ({:.1} MB/run)", wire * count as f64 / 1e6);
            rows.push(Row { name: format!("xdp pipeline {size} B feed, {label}"), unit: "msgs/s", median: median(rate.clone()), best: max(&rate), extra: note });
            rows.push(Row::ns_per_msg(
                format!("xdp pipeline {size} B feed, {label}: client CPU"),
                &cpu,
                "the stage thread's schedstat run time, first message to \"done\", / messages".into(),
            ));
        }
        // Per round: the two runs side by side.
        let ratios: Vec<f64> = plain.iter().zip(&comp).map(|(p, c)| c.msgs_per_s / p.msgs_per_s).collect();
        let cpu_ratios: Vec<f64> = plain.iter().zip(&comp).map(|(p, c)| c.cpu_ns_per_msg / p.cpu_ns_per_msg).collect();
        rows.push(Row {
            name: format!("xdp pipeline {size} B: compressed / uncompressed msgs/s"),
            unit: "%",
            median: 100.0 * median(ratios.clone()),
            best: 100.0 * max(&ratios),
            extra: format!(
                "client CPU x{:.2}, wire bytes x{:.3} (deflate ratio {:.2})",
                median(cpu_ratios),
                wire_c / wire_p,
                wire_p / wire_c
            ),
        });
    }
    ctl.stop.store(true, Ordering::SeqCst);
    let _ = server.join();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` only runs this binary.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("deflate: not run (use `cargo bench --bench deflate`; root for the XDP rows)");
        return;
    }
    let mut rows = Vec::new();
    inflate_rows(256, 20_000, &mut rows);
    inflate_rows(16 << 10, 1_000, &mut rows);
    pipeline_rows(256, 300_000, &mut rows);
    pipeline_rows(16 << 10, 10_000, &mut rows);
    xdp_rows(&mut rows);

    println!("{:<56} {:>12} {:>12} {:<7} note", "benchmark", "median", "best", "unit");
    for r in &rows {
        println!("{:<56} {:>12.1} {:>12.1} {:<7} {}", r.name, r.median, r.best, r.unit, r.extra);
    }
    let mut json = format!("{{\n  \"runs\": {RUNS},\n  \"pipeline_runs\": {PIPE_RUNS},\n  \"xdp_runs\": {XDP_RUNS},\n  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        json.push_str(&format!(
            "    {{\"name\": {:?}, \"unit\": {:?}, \"median\": {:.1}, \"best\": {:.1}, \"note\": {:?}}}{}\n",
            r.name,
            r.unit,
            r.median,
            r.best,
            r.extra,
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    json.push_str("  ]\n}\n");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(dir.join("deflate.json"), json)) {
        eprintln!("could not write bench-results/deflate.json: {e}");
    }
}

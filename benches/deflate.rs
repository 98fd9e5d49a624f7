//! permessage-deflate cost: inflate (and deflate) per message at 256 B and 16 KiB of
//! market-data JSON, and msgs/s of a whole Pipeline on a compressed synthetic feed
//! against the same feed uncompressed (and offered but declined, the copy path).
//!
//! `cargo bench --bench deflate` prints a table and writes `bench-results/deflate.json`.
//! Plain `Instant` timing, median and best of RUNS runs. The synthetic transport
//! replays pre-built server bytes in 16 KiB reads (a TLS record's worth): no network,
//! no TLS, so the rows show what the WebSocket stage's inflation costs the pipeline.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Pipeline, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stage::{encode_server_frame, encode_server_frame_rsv1, SyntheticScript};
use pipeline::ws::deflate::{Deflater, Inflater, Negotiated, TAIL};
use pipeline::ws::DeflateConfig;

const RUNS: usize = 9;
const PIPE_RUNS: usize = 3;

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
    rows.push(Row {
        name: format!("inflate {size} B message (context takeover)"),
        unit: "ns/msg",
        median: median(times.clone()),
        best: best(&times),
        extra: format!("ratio {:.2} ({} -> {} B/msg)", plain as f64 / wire as f64, size, wire / count),
    });
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
    rows.push(Row {
        name: format!("memcpy {size} B (for scale)"),
        unit: "ns/msg",
        median: median(times.clone()),
        best: best(&times),
        extra: String::new(),
    });
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
    rows.push(Row {
        name: format!("deflate {size} B message (level 1, send side)"),
        unit: "ns/msg",
        median: median(times.clone()),
        best: best(&times),
        extra: String::new(),
    });
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

fn main() {
    let mut rows = Vec::new();
    inflate_rows(256, 20_000, &mut rows);
    inflate_rows(16 << 10, 1_000, &mut rows);
    pipeline_rows(256, 300_000, &mut rows);
    pipeline_rows(16 << 10, 10_000, &mut rows);

    println!("{:<56} {:>12} {:>12} {:<7} note", "benchmark", "median", "best", "unit");
    for r in &rows {
        println!("{:<56} {:>12.1} {:>12.1} {:<7} {}", r.name, r.median, r.best, r.unit, r.extra);
    }
    let mut json = format!("{{\n  \"runs\": {RUNS},\n  \"pipeline_runs\": {PIPE_RUNS},\n  \"results\": [\n");
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

//! In-memory TLS 1.3 (AES-128-GCM) decrypt throughput of the client `TlsSession`:
//! a server session encrypts N records of a given size into a buffer (not timed), the
//! client is then timed taking that ciphertext in 64 KiB chunks (as one `recv` would
//! deliver it) and decrypting it into a 64 KiB buffer. Paths compared: OpenSSL's memory
//! BIO, our slice BIO fed by copy, our slice BIO lent the chunk (zero-copy), each with
//! read-ahead off/on. RUNS runs per cell with variants interleaved; median wall clock,
//! and median and minimum of this thread's CPU time (the dev box is shared; CPU time is
//! the steadier number). Prints a table and writes `bench-results/tls_throughput.json`.
//! Env: TLS_BENCH_ONLY=<path substring>, TLS_BENCH_SIZE=<bytes>, TLS_BENCH_RUNS=<n>.
//!
//! `cargo bench --bench tls_throughput` (harness = false).

use pipeline_testkit::certs;
use pipeline_testkit::tls_memory::connected_pair;

use pipeline::tls::{ReadBio, TlsConfig, TlsContext, TlsSession, TlsVersion};
use std::time::Instant;

const RUNS: usize = 7;
const SIZES: [usize; 4] = [64, 256, 1024, 16384];
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// feed_ciphertext (a copy into the BIO) then read_plaintext until empty.
    Feed,
    /// read_plaintext_from(chunk) until the chunk is consumed (zero-copy with ReadBio::Slice).
    Lend,
    /// Like Lend but `out` holds exactly one record: one call (and one error-queue
    /// clear) per record, to show what batching saves.
    LendOnePerCall,
}

struct Variant {
    name: &'static str,
    read_bio: ReadBio,
    read_ahead: bool,
    path: Path,
}

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn pair(cctx: &TlsContext, sctx: &TlsContext) -> (TlsSession, TlsSession) {
    let (c, s) = connected_pair(cctx, sctx);
    assert_eq!(c.cipher(), "TLS_AES_128_GCM_SHA256");
    (c, s)
}

/// One timed run: returns (wall seconds, thread CPU seconds).
fn run(v: &Variant, size: usize, records: usize, cctx: &TlsContext, sctx: &TlsContext, out: &mut [u8]) -> (f64, f64) {
    let (mut c, mut s) = pair(cctx, sctx);
    s.set_max_send_fragment(size.max(512)).unwrap();
    let msg = vec![0x5au8; size];
    let mut cipher = Vec::with_capacity(records * (size + 22));
    for _ in 0..records {
        assert_eq!(s.write_plaintext(&msg).unwrap(), size);
        s.drain_ciphertext_into(&mut cipher);
    }
    assert_eq!(cipher.len(), records * (size + 22), "one record per message");
    let c0 = thread_cpu();
    let t0 = Instant::now();
    let mut total = 0usize;
    match v.path {
        Path::Feed => {
            for chunk in cipher.chunks(CHUNK) {
                c.feed_ciphertext(chunk).unwrap();
                loop {
                    let n = c.read_plaintext(out).unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
            }
        }
        Path::Lend | Path::LendOnePerCall => {
            let out = if v.path == Path::Lend { &mut out[..] } else { &mut out[..size] };
            for chunk in cipher.chunks(CHUNK) {
                let mut pos = 0;
                while pos < chunk.len() {
                    let (used, n) = c.read_plaintext_from(&chunk[pos..], out).unwrap();
                    pos += used;
                    total += n;
                }
                loop {
                    let n = c.read_plaintext(out).unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
            }
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    let dc = thread_cpu() - c0;
    assert_eq!(total, records * size);
    std::hint::black_box(&out[..]);
    (dt, dc)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let certs = certs::certs();
    let (cert, key) = certs.leaf("server");
    let sctx = TlsContext::new_server(&cert, &key, TlsVersion::Tls13, TlsVersion::Tls13).unwrap();
    let variants = [
        Variant { name: "mem BIO", read_bio: ReadBio::Memory, read_ahead: false, path: Path::Feed },
        Variant { name: "mem BIO + read-ahead", read_bio: ReadBio::Memory, read_ahead: true, path: Path::Feed },
        Variant { name: "slice BIO, fed (copy)", read_bio: ReadBio::Slice, read_ahead: false, path: Path::Feed },
        Variant { name: "slice BIO, lent (0-copy)", read_bio: ReadBio::Slice, read_ahead: false, path: Path::Lend },
        Variant { name: "slice BIO, lent, 1 rec/call", read_bio: ReadBio::Slice, read_ahead: false, path: Path::LendOnePerCall },
        Variant { name: "slice BIO, lent + read-ahead", read_bio: ReadBio::Slice, read_ahead: true, path: Path::Lend },
    ];
    let mut out = vec![0u8; CHUNK];
    let mut rows = Vec::new();
    // Optional filters for profiling: TLS_BENCH_ONLY=<substring of path>, TLS_BENCH_SIZE=<bytes>.
    let only = std::env::var("TLS_BENCH_ONLY").ok();
    let only_size: Option<usize> = std::env::var("TLS_BENCH_SIZE").ok().and_then(|s| s.parse().ok());
    let runs: usize = std::env::var("TLS_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(RUNS);
    let chosen: Vec<(&Variant, TlsContext)> = variants
        .iter()
        .filter(|v| only.as_deref().map_or(true, |o| v.name.contains(o)))
        .map(|v| {
            let cctx = TlsContext::new(&TlsConfig {
                ca_file: Some(certs.ca()),
                min_version: TlsVersion::Tls13,
                ciphersuites: Some("TLS_AES_128_GCM_SHA256".into()),
                read_ahead: v.read_ahead,
                read_bio: v.read_bio,
                resumption: false,
                ..TlsConfig::default()
            })
            .unwrap();
            (v, cctx)
        })
        .collect();
    println!("TLS 1.3 AES-128-GCM client decrypt, in memory; {runs} runs per cell, variants interleaved");
    println!("(wall = median wall clock; cpu = median / min of this thread's CPU time; the box is shared)");
    println!(
        "{:<30} {:>6} {:>7} {:>9} {:>9} {:>11} {:>11}",
        "path", "record", "records", "wall MB/s", "wall ns", "cpu med ns", "cpu min ns"
    );
    for &size in SIZES.iter().filter(|&&s| only_size.map_or(true, |o| o == s)) {
        let records = (16 * 1024 * 1024 / size).min(200_000);
        let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); chosen.len()];
        for (v, cctx) in &chosen {
            let _ = run(v, size, records.min(2000), cctx, &sctx, &mut out); // warm-up
        }
        for _ in 0..runs {
            for (k, (v, cctx)) in chosen.iter().enumerate() {
                samples[k].push(run(v, size, records, cctx, &sctx, &mut out));
            }
        }
        for (k, (v, _)) in chosen.iter().enumerate() {
            let t = median(samples[k].iter().map(|x| x.0).collect());
            let tc = median(samples[k].iter().map(|x| x.1).collect());
            let tmin = samples[k].iter().map(|x| x.1).fold(f64::MAX, f64::min);
            let bytes = (records * size) as f64;
            let (mbps, ns) = (bytes / t / 1e6, t * 1e9 / records as f64);
            let (cns, cmin) = (tc * 1e9 / records as f64, tmin * 1e9 / records as f64);
            println!(
                "{:<30} {:>6} {:>7} {:>9.1} {:>9.1} {:>11.1} {:>11.1}",
                v.name, size, records, mbps, ns, cns, cmin
            );
            rows.push(format!(
                "    {{\"path\": \"{}\", \"record_bytes\": {size}, \"records\": {records}, \"wall_mb_per_s\": {mbps:.1}, \"wall_ns_per_record\": {ns:.1}, \"cpu_median_ns_per_record\": {cns:.1}, \"cpu_min_ns_per_record\": {cmin:.1}, \"cpu_min_mb_per_s\": {:.1}}}",
                v.name,
                bytes / tmin / 1e6
            ));
        }
    }
    // Cost of the per-operation error-queue clear.
    let n = if only.is_some() { 1 } else { 5_000_000 };
    let t0 = Instant::now();
    for _ in 0..n {
        // SAFETY: touches only this thread's error queue.
        unsafe { openssl_sys::ERR_clear_error() };
    }
    let clear_ns = t0.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("ERR_clear_error: {clear_ns:.1} ns/call");

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    let json = format!(
        "{{\n  \"bench\": \"tls_throughput\",\n  \"cipher\": \"TLS_AES_128_GCM_SHA256\",\n  \"runs\": {runs},\n  \"statistic\": \"median (wall, cpu) and min (cpu) over runs, variants interleaved\",\n  \"err_clear_error_ns\": {clear_ns:.1},\n  \"results\": [\n{}\n  ]\n}}\n",
        rows.join(",\n")
    );
    std::fs::write(dir.join("tls_throughput.json"), json).unwrap();
    println!("wrote bench-results/tls_throughput.json");
}

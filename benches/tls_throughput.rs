//! In-memory TLS 1.3 (AES-128-GCM) decrypt throughput of the client `TlsSession`:
//! a server session encrypts N records of a given size into a buffer (not timed), the
//! client is then timed feeding that ciphertext in 64 KiB chunks and decrypting it into
//! a 64 KiB buffer. Medians of RUNS runs. Prints a table and writes
//! `bench-results/tls_throughput.json`.
//!
//! `cargo bench --bench tls_throughput` (harness = false).

#[path = "../tests/common/certs.rs"]
mod certs;

use pipeline::tls::{TlsConfig, TlsContext, TlsSession, TlsVersion};
use std::time::Instant;

const RUNS: usize = 7;
const SIZES: [usize; 4] = [64, 256, 1024, 16384];
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// feed_ciphertext (copy into the memory BIO) then read_plaintext.
    MemBio,
}

struct Variant {
    name: &'static str,
    read_ahead: bool,
    path: Path,
}

fn pump(a: &mut TlsSession, b: &mut TlsSession) {
    let mut v = Vec::new();
    a.drain_ciphertext_into(&mut v);
    b.feed_ciphertext(&v).unwrap();
}

fn pair(cctx: &TlsContext, sctx: &TlsContext) -> (TlsSession, TlsSession) {
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    for _ in 0..10 {
        let _ = c.handshake().unwrap();
        pump(&mut c, &mut s);
        let _ = s.handshake().unwrap();
        pump(&mut s, &mut c);
        if c.is_handshake_done() && s.is_handshake_done() {
            break;
        }
    }
    let _ = c.handshake().unwrap();
    assert!(c.is_handshake_done() && s.is_handshake_done());
    // Let the client swallow the post-handshake tickets before timing.
    s.write_plaintext(b"x").unwrap();
    pump(&mut s, &mut c);
    let mut one = [0u8; 16];
    assert_eq!(c.read_plaintext(&mut one).unwrap(), 1);
    assert_eq!(c.cipher(), "TLS_AES_128_GCM_SHA256");
    (c, s)
}

/// One timed run: returns seconds.
fn run(v: &Variant, size: usize, records: usize, cctx: &TlsContext, sctx: &TlsContext, out: &mut [u8]) -> f64 {
    let (mut c, mut s) = pair(cctx, sctx);
    s.set_max_send_fragment(size.max(512)).unwrap();
    let msg = vec![0x5au8; size];
    let mut cipher = Vec::with_capacity(records * (size + 22));
    for _ in 0..records {
        assert_eq!(s.write_plaintext(&msg).unwrap(), size);
        s.drain_ciphertext_into(&mut cipher);
    }
    assert_eq!(cipher.len(), records * (size + 22), "one record per message");
    let t0 = Instant::now();
    let mut total = 0usize;
    match v.path {
        Path::MemBio => {
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
    }
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(total, records * size);
    std::hint::black_box(&out[..]);
    dt
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
        Variant { name: "mem BIO, read-ahead on", read_ahead: true, path: Path::MemBio },
        Variant { name: "mem BIO, read-ahead off", read_ahead: false, path: Path::MemBio },
    ];
    let mut out = vec![0u8; CHUNK];
    let mut rows = Vec::new();
    println!("TLS 1.3 AES-128-GCM client decrypt, in memory, median of {RUNS} runs");
    println!("{:<28} {:>8} {:>9} {:>10} {:>12}", "path", "record", "records", "MB/s", "ns/record");
    for v in &variants {
        let cctx = TlsContext::new(&TlsConfig {
            ca_file: Some(certs.ca()),
            min_version: TlsVersion::Tls13,
            ciphersuites: Some("TLS_AES_128_GCM_SHA256".into()),
            read_ahead: v.read_ahead,
            resumption: false,
            ..TlsConfig::default()
        })
        .unwrap();
        for &size in &SIZES {
            let records = (16 * 1024 * 1024 / size).min(200_000);
            let _ = run(v, size, records.min(2000), &cctx, &sctx, &mut out); // warm-up
            let times: Vec<f64> = (0..RUNS).map(|_| run(v, size, records, &cctx, &sctx, &mut out)).collect();
            let t = median(times);
            let mbps = (records * size) as f64 / t / 1e6;
            let ns = t * 1e9 / records as f64;
            println!("{:<28} {:>8} {:>9} {:>10.1} {:>12.1}", v.name, size, records, mbps, ns);
            rows.push(format!(
                "    {{\"path\": \"{}\", \"record_bytes\": {size}, \"records\": {records}, \"mb_per_s\": {mbps:.1}, \"ns_per_record\": {ns:.1}}}",
                v.name
            ));
        }
    }
    // Cost of the per-operation error-queue clear.
    let n = 5_000_000;
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
        "{{\n  \"bench\": \"tls_throughput\",\n  \"cipher\": \"TLS_AES_128_GCM_SHA256\",\n  \"runs\": {RUNS},\n  \"statistic\": \"median\",\n  \"err_clear_error_ns\": {clear_ns:.1},\n  \"results\": [\n{}\n  ]\n}}\n",
        rows.join(",\n")
    );
    std::fs::write(dir.join("tls_throughput.json"), json).unwrap();
    println!("wrote bench-results/tls_throughput.json");
}

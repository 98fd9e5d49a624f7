//! Full vs resumed TLS handshake times of the kernel transport's TLS path (OpenSSL
//! 3.0, `TlsContext` + `TlsSession` over a kernel socket, as a `wss://` reconnect does
//! it), over loopback and over the veth pair of the namespace test bed.
//!
//! Per connection: TCP connect (timed on its own), then the client's TLS handshake
//! until it is done (TLS 1.3: one round trip; a full handshake verifies the server's
//! certificate against the test CA, a resumed one carries the verified session), then one byte of application data from the server (so the
//! client takes in the session tickets; not timed), then close. "Full": the client
//! context's saved session is cleared first; "resumed": the session saved from the
//! previous connection is offered (the run fails if the server did not resume it).
//! Full and resumed alternate; medians (and p10/p90) over `HS_BENCH_N` (default 300)
//! of each. Server on CPU 0, client on CPU 1; the server is a thread of this process
//! (in the server namespace for veth). Prints a table and writes
//! `bench-results/handshake.json`. The veth rows need root (skipped with a note
//! otherwise).
//!
//! `cargo bench --bench handshake` (harness = false).

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::stage::TlsTransport;
use pipeline::tls::{TlsConfig, TlsContext, TlsVersion};
use pipeline::transport::kernel::{KernelSocket, KernelSocketOptions};
use pipeline_testkit::certs::certs;
use pipeline_testkit::netns::{missing_privileges, Side, TestBed};

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t filled by CPU_SET; sched_setaffinity on this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A TLS server on `ip`: every connection gets the handshake and one byte.
fn serve(ip: &str, leaf: &str, stop: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let (c, k) = certs().leaf(leaf);
    let ctx = TlsContext::new_server(&c, &k, TlsVersion::Tls12, TlsVersion::Tls13).unwrap();
    std::thread::spawn(move || {
        pin_to(0);
        l.set_nonblocking(true).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let s = match l.accept() {
                Ok((s, _)) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
            };
            let _ = s.set_nodelay(true);
            let Ok(ks) = KernelSocket::from_std(s) else { continue };
            let mut t = TlsTransport::new(ks, ctx.server_session().unwrap());
            if t.handshake(Duration::from_secs(5)).is_err() {
                continue;
            }
            let _ = t.write_all(b"x", Duration::from_secs(5));
            // Wait for the client's close (so its ticket read is not cut short).
            let mut b = [0u8; 64];
            let _ = t.read_timeout(&mut b, Duration::from_secs(2));
        }
    });
    port
}

#[derive(Default)]
struct Samples {
    connect: Vec<f64>,
    tls: Vec<f64>,
}

fn one(ip: &str, port: u16, ctx: &TlsContext, resume: bool) -> (f64, f64) {
    if !resume {
        ctx.clear_saved_session();
    } else {
        assert!(ctx.has_saved_session(ip), "no session saved to resume");
    }
    let opts = KernelSocketOptions { connect_timeout: Duration::from_secs(5), ..Default::default() };
    let t0 = Instant::now();
    let io = KernelSocket::connect(ip, port, &opts).unwrap();
    let t1 = Instant::now();
    let mut t = TlsTransport::new(io, ctx.client_session(ip).unwrap());
    t.handshake(Duration::from_secs(5)).unwrap();
    let t2 = Instant::now();
    assert_eq!(t.session().session_reused(), resume, "resumed as asked");
    let mut b = [0u8; 16];
    assert_eq!(t.read_timeout(&mut b, Duration::from_secs(5)).unwrap(), 1);
    t.close();
    ((t1 - t0).as_secs_f64() * 1e6, (t2 - t1).as_secs_f64() * 1e6)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// (full, resumed) samples over `ip:port`.
fn measure(ip: &str, port: u16, n: usize) -> (Samples, Samples, String) {
    pin_to(1);
    let ctx = TlsContext::new(&TlsConfig { ca_file: Some(certs().ca()), ..Default::default() }).unwrap();
    let (mut full, mut res) = (Samples::default(), Samples::default());
    // Warm-up (and the first session to resume).
    for _ in 0..10 {
        one(ip, port, &ctx, false);
    }
    let cipher = {
        let opts = KernelSocketOptions { connect_timeout: Duration::from_secs(5), ..Default::default() };
        let mut t = TlsTransport::new(KernelSocket::connect(ip, port, &opts).unwrap(), ctx.client_session(ip).unwrap());
        t.handshake(Duration::from_secs(5)).unwrap();
        let mut b = [0u8; 16];
        let _ = t.read_timeout(&mut b, Duration::from_secs(5));
        let c = format!("{} {}", t.session().protocol_version(), t.session().cipher());
        t.close();
        c
    };
    for _ in 0..n {
        let (c, h) = one(ip, port, &ctx, false);
        full.connect.push(c);
        full.tls.push(h);
        let (c, h) = one(ip, port, &ctx, true);
        res.connect.push(c);
        res.tls.push(h);
    }
    (full, res, cipher)
}

struct Row {
    path: &'static str,
    full: Samples,
    res: Samples,
    cipher: String,
}

fn main() {
    let n: usize = std::env::var("HS_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut rows = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let port = serve("127.0.0.1", "server", stop.clone());
        let (full, res, cipher) = std::thread::scope(|s| s.spawn(|| measure("127.0.0.1", port, n)).join().unwrap());
        rows.push(Row { path: "loopback", full, res, cipher });
    }
    let _bed;
    match missing_privileges() {
        Some(why) => eprintln!("veth rows skipped: {why}"),
        None => {
            let bed = TestBed::new();
            let ip = bed.server_ip.to_string();
            let st = stop.clone();
            let ip2 = ip.clone();
            let port = bed.in_ns(Side::Server, move || serve(&ip2, "veth", st));
            let (full, res, cipher) = bed.in_client(|| measure(&ip, port, n));
            rows.push(Row { path: "veth", full, res, cipher });
            _bed = bed;
        }
    }
    stop.store(true, Ordering::Relaxed);

    println!("\nTLS handshake, kernel TCP, OpenSSL {} (µs; median [p10..p90] of {n} each)", openssl_version());
    println!("{:<9} {:>24} {:>24} {:>24} {:>10}", "path", "TCP connect", "full TLS handshake", "resumed TLS handshake", "resumed/full");
    let mut json = Vec::new();
    for r in &rows {
        let m = |v: &[f64]| format!("{:.0} [{:.0}..{:.0}]", pct(v, 0.5), pct(v, 0.1), pct(v, 0.9));
        let mut conn = r.full.connect.clone();
        conn.extend_from_slice(&r.res.connect);
        let (f, s) = (pct(&r.full.tls, 0.5), pct(&r.res.tls, 0.5));
        println!("{:<9} {:>24} {:>24} {:>24} {:>10.2}", r.path, m(&conn), m(&r.full.tls), m(&r.res.tls), s / f);
        json.push(format!(
            "    {{\"path\": \"{}\", \"cipher\": \"{}\", \"n\": {n}, \"tcp_connect_us_median\": {:.1}, \"full_us_median\": {f:.1}, \"full_us_p10\": {:.1}, \"full_us_p90\": {:.1}, \"resumed_us_median\": {s:.1}, \"resumed_us_p10\": {:.1}, \"resumed_us_p90\": {:.1}, \"full_with_connect_us_median\": {:.1}, \"resumed_with_connect_us_median\": {:.1}}}",
            r.path,
            r.cipher,
            pct(&conn, 0.5),
            pct(&r.full.tls, 0.1),
            pct(&r.full.tls, 0.9),
            pct(&r.res.tls, 0.1),
            pct(&r.res.tls, 0.9),
            pct(&r.full.connect.iter().zip(&r.full.tls).map(|(a, b)| a + b).collect::<Vec<_>>(), 0.5),
            pct(&r.res.connect.iter().zip(&r.res.tls).map(|(a, b)| a + b).collect::<Vec<_>>(), 0.5),
        ));
    }
    println!("(TLS columns exclude the TCP connect; cipher {})", rows.first().map(|r| r.cipher.as_str()).unwrap_or("?"));
    let text = format!(
        "{{\n  \"bench\": \"handshake\",\n  \"note\": \"client TLS handshake until done, TCP connect excluded (timed separately); server a thread on CPU 0, client CPU 1; kernel TCP; the server certificate is verified on every full handshake, a resumed one carries the verified session; the 2-vCPU box was shared with other builds (p90 is noisy)\",\n  \"rows\": [\n{}\n  ]\n}}\n",
        json.join(",\n")
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(dir.join("handshake.json"), text).unwrap();
    println!("wrote bench-results/handshake.json");
}

fn openssl_version() -> String {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.split_whitespace().nth(1).unwrap_or("?").to_string())
        .unwrap_or_else(|| "?".into())
}

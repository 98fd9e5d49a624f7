//! The product over AF_XDP vs the product over the kernel's TCP, end to end over a veth
//! pair, in one run: two `Pipeline`s (`TransportKind::Xdp` and `TransportKind::Kernel`,
//! both layout `inline`, wait `backoff`, callback delivery, pinned to CPU 1) read a
//! TLS 1.3 (AES-128-GCM) WebSocket feed from a small Rust/OpenSSL server thread in the
//! server namespace (pinned to CPU 0; so the numbers measure the client, not a Python
//! server).
//!
//! `sudo -E cargo bench --bench transport_veth` (root: namespaces, XDP). Prints a table and
//! writes `bench-results/transport_veth.json`. Env: `PL_BENCH_QUICK=1` for one run per
//! size; `PL_BENCH_SMOKE=1` for a quick check that it works (one run, a twentieth of the
//! messages; writes `bench-results/transport_veth-smoke.json.tmp` instead, which git
//! ignores: smoke numbers are not results).
//!
//! - throughput: 64 B, 256 B, 1 KiB messages flat out (the server writes batches of
//!   frames, 16 KiB TLS records); median of runs; messages/s measured in the callback
//!   from the first message to the server's "done" that follows the last one;
//! - latency: 256 B at 20,000 msg/s, one TLS record per message, one-way latency from the
//!   server's CLOCK_MONOTONIC send timestamp to the callback; p50/p99/p99.9, each the
//!   median of 3 runs of 40,000 messages;
//! - CPU per message: the client's pipeline thread (the inline layout runs every stage
//!   and the callback on it) and the server thread, both from
//!   `/proc/self/task/<tid>/schedstat`, their sum (both cores), and all CPUs' busy time from /proc/stat
//!   (includes softirq work not charged to either thread, and everyone else's load).
//!   On veth the XDP program and the copy into the UMEM run on the *sender's* CPU, so
//!   compare the sums, not only the client's share.
//!
//! Both pipelines are connected at once and their runs are interleaved (xdp, kernel,
//! xdp, kernel, ...), so both see the same background load on this shared box.
//! The pipelines back off (spin, yield, 50 µs sleeps) when idle instead of busy-polling,
//! because the box is shared: latency includes those wake-ups.

use pipeline_testkit::certs;
use pipeline_testkit::netns;

use pipeline_testkit::feed::mono_ns;
use netns::TestBed;
use pipeline::pipeline::{Config, Pipeline, PipelineState, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;
use pipeline::tls::{TlsContext, TlsVersion};
use pipeline::stage::TlsTransport;
use pipeline::transport::kernel::KernelSocket;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
/// The server thread's CPU and the client pipelines' CPU.
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

/// The calling thread's CPU time in ns (`schedstat`: exact run time; RUSAGE_THREAD is
/// tick-sampled and reads 0 for runs of a few milliseconds).
fn thread_cpu_ns() -> u64 {
    task_cpu_ns(gettid())
}

/// CPU time of one thread of this process in ns (`schedstat`: time on CPU).
fn task_cpu_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// (busy, total) jiffies over all CPUs.
fn proc_stat() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let l = s.lines().next().unwrap_or("");
    let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

// ---------------------------------------------------------------- server

/// Serve one client: WebSocket upgrade, then commands "run SIZE COUNT RATE" (masked
/// text frames); answers each run with the messages and then a text frame
/// "done <server cpu ns>". Message: [seq u64][send ns u64][pattern...]. A close frame
/// ends it.
fn serve(l: TcpListener, cert: std::path::PathBuf, key: std::path::PathBuf) {
    pin_to(SERVER_CPU);
    let (s, _) = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let ctx = TlsContext::new_server(&cert, &key, TlsVersion::Tls13, TlsVersion::Tls13).unwrap();
    let session = ctx.server_session().unwrap();
    // The feed's cipher: TLS 1.3 AES-128-GCM (the client offers OpenSSL's defaults).
    // SAFETY: a live SSL* and a NUL-terminated string.
    let ok = unsafe { openssl_sys::SSL_set_ciphersuites(session.as_ptr(), c"TLS_AES_128_GCM_SHA256".as_ptr()) };
    assert_eq!(ok, 1, "SSL_set_ciphersuites");
    // The pipeline's own TLS glue, serving the server's side of an accepted socket.
    let mut tls = TlsTransport::new(KernelSocket::from_std(s).unwrap(), session);
    tls.handshake(T).unwrap();
    assert_eq!(tls.session().cipher(), "TLS_AES_128_GCM_SHA256");
    let mut inb: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 65536];
    // Upgrade.
    let end = loop {
        if let Some(p) = inb.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tls.read_timeout(&mut buf, T).unwrap();
        inb.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&inb[..end]).to_string();
    inb.drain(..end);
    let key_hdr = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key")).map(|(_, v)| v.trim().to_string()))
        .unwrap();
    let accept = pipeline::ws::handshake::accept_key(&key_hdr);
    let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    tls.write_all(resp.as_bytes(), T).unwrap();
    let pattern: Vec<u8> = (0..2048u32).map(|i| i as u8).collect();
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        // One masked frame (< 126 bytes) from the client.
        let cmd = loop {
            if inb.len() >= 6 {
                let len = (inb[1] & 0x7f) as usize;
                if inb.len() >= 6 + len {
                    let mask = [inb[2], inb[3], inb[4], inb[5]];
                    let p: Vec<u8> = inb[6..6 + len].iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
                    let op = inb[0] & 0xf;
                    inb.drain(..6 + len);
                    break (op, String::from_utf8_lossy(&p).to_string());
                }
            }
            match tls.read_timeout(&mut buf, Duration::from_secs(120)) {
                Ok(n) => inb.extend_from_slice(&buf[..n]),
                Err(_) => return,
            }
        };
        if cmd.0 == 0x8 {
            // Answer the close (code 1000) and end.
            let _ = tls.write_all(&[0x88, 2, 0x03, 0xe8], Duration::from_secs(1));
            let _ = tls.close_graceful(Duration::from_secs(1));
            return;
        }
        if cmd.0 != 0x1 {
            continue;
        }
        let v: Vec<u64> = cmd.1.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let (size, count, rate) = (v[0] as usize, v[1], v[2]);
        let cpu0 = thread_cpu_ns();
        let frame = |out: &mut Vec<u8>, seq: u64| {
            if size < 126 {
                out.extend_from_slice(&[0x82, size as u8]);
            } else {
                out.extend_from_slice(&[0x82, 126]);
                out.extend_from_slice(&(size as u16).to_be_bytes());
            }
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&mono_ns().to_le_bytes());
            out.extend_from_slice(&pattern[..size - 16]);
        };
        if rate == 0 {
            // Flat out: ~16 KiB of frames per write (one TLS record each).
            let mut seq = 0;
            while seq < count {
                out.clear();
                while seq < count && out.len() + size + 4 <= 16384 {
                    frame(&mut out, seq);
                    seq += 1;
                }
                tls.write_all(&out, T).unwrap();
            }
        } else {
            // Paced: one record per message, sent when due (sleeping, not spinning).
            let t0 = Instant::now();
            for seq in 0..count {
                let due = t0 + Duration::from_nanos(seq * 1_000_000_000 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                out.clear();
                frame(&mut out, seq);
                tls.write_all(&out, T).unwrap();
            }
        }
        let done = format!("done {}", thread_cpu_ns() - cpu0);
        out.clear();
        out.extend_from_slice(&[0x81, done.len() as u8]);
        out.extend_from_slice(done.as_bytes());
        tls.write_all(&out, T).unwrap();
    }
}

// ---------------------------------------------------------------- client

/// What the callback (on the pipeline's thread) tells the bench thread about a run.
#[derive(Default)]
struct Sink {
    /// Messages of the current run so far (written by the callback only).
    got: AtomicU64,
    /// Messages out of order or of the wrong size (must stay 0).
    bad: AtomicU64,
    size: AtomicU64,
    latency: AtomicBool,
    first_ns: AtomicU64,
    end_ns: AtomicU64,
    /// Server CPU ns + 1 once the run's "done" arrived; 0 before.
    done: AtomicU64,
    /// The pipeline thread (the callback records it).
    tid: AtomicI32,
    lat: Mutex<Vec<u64>>,
}

struct Client {
    name: &'static str,
    p: Pipeline,
    sink: Arc<Sink>,
}

fn start_client(name: &'static str, kind: TransportKind, url: &str, tag: &str) -> Client {
    let mut cfg = Config::new(url);
    cfg.name = Some(format!("bench{}_{tag}", std::process::id()));
    cfg.transport = kind;
    cfg.ca_file = Some(certs::certs().ca());
    cfg.layout = Some(Layout::Inline);
    cfg.wait = Some(WaitKind::Backoff);
    cfg.cores = vec![CLIENT_CPU];
    cfg.timeout = T;
    let sink = Arc::new(Sink::default());
    let s = sink.clone();
    let mut lat: Vec<u64> = Vec::new();
    let cb = Box::new(move |payload: &[u8], opcode: u8, _fin: bool| {
        if opcode == 0x2 {
            let got = s.got.load(Ordering::Relaxed);
            if got == 0 {
                s.first_ns.store(mono_ns(), Ordering::Relaxed);
                if s.latency.load(Ordering::Relaxed) {
                    // The buffer the bench thread allocated for this run.
                    std::mem::swap(&mut lat, &mut *s.lat.lock().unwrap());
                    lat.clear();
                }
            }
            let seq = payload.get(0..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).unwrap_or(u64::MAX);
            if seq != got || payload.len() as u64 != s.size.load(Ordering::Relaxed) {
                s.bad.fetch_add(1, Ordering::Relaxed);
            }
            if s.latency.load(Ordering::Relaxed) {
                let ts = u64::from_le_bytes(payload[8..16].try_into().unwrap());
                lat.push(mono_ns().saturating_sub(ts));
            }
            s.got.store(got + 1, Ordering::Relaxed);
        } else if opcode == 0x1 {
            let t = std::str::from_utf8(payload).unwrap_or("");
            if let Some(cpu) = t.strip_prefix("done ").and_then(|x| x.parse::<u64>().ok()) {
                s.end_ns.store(mono_ns(), Ordering::Relaxed);
                s.tid.store(gettid(), Ordering::Relaxed);
                if s.latency.load(Ordering::Relaxed) {
                    std::mem::swap(&mut lat, &mut *s.lat.lock().unwrap());
                }
                s.done.store(cpu + 1, Ordering::Release);
            }
        }
    });
    let p = Pipeline::start_with_callback(cfg, cb).unwrap_or_else(|e| panic!("{name}: start: {e}"));
    Client { name, p, sink }
}

#[derive(Clone, Debug, Default)]
struct Run {
    msgs_per_s: f64,
    client_cpu_ns_per_msg: f64,
    server_cpu_ns_per_msg: f64,
    all_cpu_ns_per_msg: f64,
    lat_ns: Vec<u64>,
}

fn run(c: &Client, size: usize, count: u64, rate: u64, latency: bool) -> Run {
    let s = &c.sink;
    s.got.store(0, Ordering::SeqCst);
    s.bad.store(0, Ordering::SeqCst);
    s.done.store(0, Ordering::SeqCst);
    s.size.store(size as u64, Ordering::SeqCst);
    s.latency.store(latency, Ordering::SeqCst);
    *s.lat.lock().unwrap() = Vec::with_capacity(if latency { count as usize } else { 0 });
    let tid = s.tid.load(Ordering::SeqCst);
    let hz = 100.0; // USER_HZ
    let (b0, _) = proc_stat();
    let c0 = if tid > 0 { task_cpu_ns(tid) } else { 0 };
    c.p.send_text(&format!("run {size} {count} {rate}")).unwrap();
    let deadline = Instant::now() + T + Duration::from_nanos(count * 1_000_000_000 / rate.max(1));
    while s.done.load(Ordering::Acquire) == 0 {
        assert!(
            Instant::now() < deadline,
            "{}: run {size} B x {count}: {} messages, state {:?}",
            c.name,
            s.got.load(Ordering::SeqCst),
            c.p.state()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    let c1 = if tid > 0 { task_cpu_ns(tid) } else { 0 };
    let (b1, _) = proc_stat();
    let got = s.got.load(Ordering::SeqCst);
    assert_eq!(got, count, "{}: messages", c.name);
    assert_eq!(s.bad.load(Ordering::SeqCst), 0, "{}: messages out of order or of the wrong size", c.name);
    let server_cpu = s.done.load(Ordering::SeqCst) - 1;
    let el = (s.end_ns.load(Ordering::SeqCst).saturating_sub(s.first_ns.load(Ordering::SeqCst))) as f64 / 1e9;
    Run {
        msgs_per_s: (count - 1) as f64 / el.max(1e-9),
        client_cpu_ns_per_msg: (c1 - c0) as f64 / count as f64,
        server_cpu_ns_per_msg: server_cpu as f64 / count as f64,
        all_cpu_ns_per_msg: (b1 - b0) as f64 / hz * 1e9 / count as f64,
        lat_ns: std::mem::take(&mut *s.lat.lock().unwrap()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

struct Tput {
    size: usize,
    msgs_per_s: f64,
    client_ns: f64,
    server_ns: f64,
    all_ns: f64,
}

struct Row {
    name: String,
    tput: Vec<Tput>,
    lat: (f64, f64, f64, f64, f64, f64), // p50, p99, p99.9 (µs), client ns/msg, server ns/msg, all ns/msg
}

fn summarize(name: &str, tput_runs: &[(usize, Vec<Run>)], lat_runs: &mut [Run]) -> Row {
    let mut tput = Vec::new();
    for (size, rs) in tput_runs {
        let r = Tput {
            size: *size,
            msgs_per_s: median(rs.iter().map(|r| r.msgs_per_s).collect()),
            client_ns: median(rs.iter().map(|r| r.client_cpu_ns_per_msg).collect()),
            server_ns: median(rs.iter().map(|r| r.server_cpu_ns_per_msg).collect()),
            all_ns: median(rs.iter().map(|r| r.all_cpu_ns_per_msg).collect()),
        };
        eprintln!(
            "  {name}: {size} B flat out: {:.0} msg/s (client {:.0} + server {:.0} = {:.0} ns/msg, all CPUs {:.0} ns/msg); runs (k msg/s): {:?}",
            r.msgs_per_s,
            r.client_ns,
            r.server_ns,
            r.client_ns + r.server_ns,
            r.all_ns,
            rs.iter().map(|r| (r.msgs_per_s / 1e3).round() as u64).collect::<Vec<_>>()
        );
        tput.push(r);
    }
    let lr: Vec<(f64, f64, f64, f64, f64, f64)> = lat_runs
        .iter_mut()
        .map(|r| {
            (
                pct(&mut r.lat_ns, 0.5),
                pct(&mut r.lat_ns, 0.99),
                pct(&mut r.lat_ns, 0.999),
                r.client_cpu_ns_per_msg,
                r.server_cpu_ns_per_msg,
                r.all_cpu_ns_per_msg,
            )
        })
        .collect();
    let m = |f: fn(&(f64, f64, f64, f64, f64, f64)) -> f64| median(lr.iter().map(f).collect());
    let lat = (m(|x| x.0), m(|x| x.1), m(|x| x.2), m(|x| x.3), m(|x| x.4), m(|x| x.5));
    eprintln!(
        "  {name}: 256 B at 20k/s: p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs; runs (p50, p99): {:?}",
        lat.0,
        lat.1,
        lat.2,
        lr.iter().map(|x| (x.0.round() as u64, x.1.round() as u64)).collect::<Vec<_>>()
    );
    Row { name: name.to_string(), tput, lat }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` (debug) only builds this.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("transport_veth: not run (use `cargo bench --bench transport_veth`, as root)");
        return;
    }
    if !netns::require_root("transport_veth benchmark") {
        return;
    }
    let smoke = std::env::var_os("PL_BENCH_SMOKE").is_some();
    let runs = if smoke || std::env::var_os("PL_BENCH_QUICK").is_some() { 1 } else { 5 };
    let (scale, lat_runs, lat_count) = if smoke { (20, 1, 4_000) } else { (1, 3, 40_000) };
    let bed = TestBed::new();
    // The client veth's receive work (the kernel path's softirq) on the client's CPU.
    let rps = format!("/sys/class/net/{}/queues/rx-0/rps_cpus", bed.client_if);
    let _ = bed.try_cmd(netns::Side::Client, &["sh", "-c", &format!("echo {:x} > {rps}", 1u32 << CLIENT_CPU)]);
    let (cert, key) = certs::certs().leaf("veth");
    // Both clients connected at once (two server threads), runs interleaved x, k, x, k
    // so both see the same background load on this shared box.
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let ip = bed.server_ip;
        let l = bed.in_server(move || TcpListener::bind((ip, 0)).unwrap());
        ports.push(l.local_addr().unwrap().port());
        let (c2, k2) = (cert.clone(), key.clone());
        servers.push(bed.spawn_in(netns::Side::Server, move || serve(l, c2, k2)));
    }
    let (rows, xdp_counters) = bed.in_client(|| {
        let ip = bed.server_ip;
        let cx = start_client("xdp", TransportKind::Xdp, &format!("wss://{ip}:{}/", ports[0]), "x");
        let ck = start_client("kernel", TransportKind::Kernel, &format!("wss://{ip}:{}/", ports[1]), "k");
        let (mut tx, mut tk) = (Vec::new(), Vec::new());
        for (size, count) in [(64usize, 400_000u64), (256, 200_000), (1024, 100_000)] {
            let count = count / scale;
            run(&cx, size, count / 10, 0, false); // warm-up (and the callback learns its thread)
            run(&ck, size, count / 10, 0, false);
            let (mut rx, mut rk) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                rx.push(run(&cx, size, count, 0, false));
                rk.push(run(&ck, size, count, 0, false));
            }
            tx.push((size, rx));
            tk.push((size, rk));
        }
        let (mut lx, mut lk) = (Vec::new(), Vec::new());
        for _ in 0..lat_runs {
            lx.push(run(&cx, 256, lat_count, 20_000, true));
            lk.push(run(&ck, 256, lat_count, 20_000, true));
        }
        let counters: Vec<String> = cx
            .p
            .stats()
            .iter()
            .filter(|(n, v)| *v > 0 && ["retransmits", "dup_acks", "drops", "tx_drops", "inbox_full", "frame_ring_full"].contains(n))
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        let rows = vec![summarize("xdp (Pipeline, AF_XDP + our TCP)", &tx, &mut lx), summarize("kernel (Pipeline, kernel TCP)", &tk, &mut lk)];
        for c in [cx, ck] {
            let _ = c.p.close(1000, "bench done");
            c.p.wait_disconnected(Duration::from_secs(2));
            if let PipelineState::Disconnected { reason } = c.p.state() {
                eprintln!("  {}: {reason}", c.name);
            }
            assert_eq!(c.p.stats().get(Counter::Overruns), 0);
            c.p.stop();
        }
        (rows, counters)
    });
    for s in servers {
        let _ = s.join();
    }
    drop(bed);

    let what = if smoke { "SMOKE RUN (small counts; not results)" } else { "results" };
    println!("\ntransport_veth {what}: Pipeline over TLS 1.3 AES-128-GCM WebSocket over veth, Rust/OpenSSL server thread on CPU {SERVER_CPU}, clients inline + backoff on CPU {CLIENT_CPU}; medians of {runs} run(s)");
    println!("xdp pipeline counters: {}", if xdp_counters.is_empty() { "no retransmits, dup ACKs or drops".to_string() } else { xdp_counters.join(", ") });
    println!("| transport | 64 B msg/s | 256 B msg/s | 1 KiB msg/s | 256 B @ 20k/s p50 / p99 / p99.9 (µs) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {:.2} M | {:.2} M | {:.2} M | {:.1} / {:.1} / {:.1} |",
            r.name,
            r.tput[0].msgs_per_s / 1e6,
            r.tput[1].msgs_per_s / 1e6,
            r.tput[2].msgs_per_s / 1e6,
            r.lat.0,
            r.lat.1,
            r.lat.2
        );
    }
    let (x, k) = (&rows[0], &rows[1]);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "| xdp / kernel | {:.2}x | {:.2}x | {:.2}x | {:.2}x / {:.2}x / {:.2}x |",
        ratio(x.tput[0].msgs_per_s, k.tput[0].msgs_per_s),
        ratio(x.tput[1].msgs_per_s, k.tput[1].msgs_per_s),
        ratio(x.tput[2].msgs_per_s, k.tput[2].msgs_per_s),
        ratio(x.lat.0, k.lat.0),
        ratio(x.lat.1, k.lat.1),
        ratio(x.lat.2, k.lat.2)
    );
    println!("\nCPU per message (ns): client pipeline thread + server thread = both cores / all CPUs (/proc/stat)");
    println!("| transport | 64 B | 256 B | 1 KiB | 256 B @ 20k/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let c = |t: &Tput| format!("{:.0} + {:.0} = {:.0} / {:.0}", t.client_ns, t.server_ns, t.client_ns + t.server_ns, t.all_ns);
        println!(
            "| {} | {} | {} | {} | {:.0} + {:.0} = {:.0} / {:.0} |",
            r.name,
            c(&r.tput[0]),
            c(&r.tput[1]),
            c(&r.tput[2]),
            r.lat.3,
            r.lat.4,
            r.lat.3 + r.lat.4,
            r.lat.5
        );
    }
    let cr = |i: usize| {
        format!(
            "{:.2}x / {:.2}x",
            ratio(x.tput[i].client_ns, k.tput[i].client_ns),
            ratio(x.tput[i].client_ns + x.tput[i].server_ns, k.tput[i].client_ns + k.tput[i].server_ns)
        )
    };
    println!("| xdp / kernel (client / both cores) | {} | {} | {} | {:.2}x / {:.2}x |", cr(0), cr(1), cr(2), ratio(x.lat.3, k.lat.3), ratio(x.lat.3 + x.lat.4, k.lat.3 + k.lat.4));

    let mut j = String::from("{\n  \"bench\": \"transport_veth\",\n  \"client\": \"Pipeline, layout inline, wait backoff, callback delivery\",\n");
    j += &format!("  \"smoke\": {smoke},\n  \"runs\": {runs},\n  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        j += &format!("    {{\"transport\": \"{}\", \"throughput\": [", r.name);
        for (n, t) in r.tput.iter().enumerate() {
            j += &format!(
                "{}{{\"size\": {}, \"msgs_per_s\": {:.0}, \"client_cpu_ns_per_msg\": {:.0}, \"server_cpu_ns_per_msg\": {:.0}, \"both_cores_cpu_ns_per_msg\": {:.0}, \"all_cpu_ns_per_msg\": {:.0}}}",
                if n > 0 { ", " } else { "" },
                t.size,
                t.msgs_per_s,
                t.client_ns,
                t.server_ns,
                t.client_ns + t.server_ns,
                t.all_ns
            );
        }
        j += &format!(
            "], \"latency_256B_20k\": {{\"p50_us\": {:.1}, \"p99_us\": {:.1}, \"p999_us\": {:.1}, \"client_cpu_ns_per_msg\": {:.0}, \"server_cpu_ns_per_msg\": {:.0}, \"all_cpu_ns_per_msg\": {:.0}}}}}{}\n",
            r.lat.0,
            r.lat.1,
            r.lat.2,
            r.lat.3,
            r.lat.4,
            r.lat.5,
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    j += "  ],\n  \"ratios_xdp_over_kernel\": {\"msgs_per_s\": [";
    j += &(0..3).map(|i| format!("{:.3}", ratio(x.tput[i].msgs_per_s, k.tput[i].msgs_per_s))).collect::<Vec<_>>().join(", ");
    j += "], \"client_cpu\": [";
    j += &(0..3).map(|i| format!("{:.3}", ratio(x.tput[i].client_ns, k.tput[i].client_ns))).collect::<Vec<_>>().join(", ");
    j += "], \"both_cores_cpu\": [";
    j += &(0..3)
        .map(|i| format!("{:.3}", ratio(x.tput[i].client_ns + x.tput[i].server_ns, k.tput[i].client_ns + k.tput[i].server_ns)))
        .collect::<Vec<_>>()
        .join(", ");
    j += &format!("], \"latency_p50\": {:.3}, \"latency_p99\": {:.3}}}\n}}\n", ratio(x.lat.0, k.lat.0), ratio(x.lat.1, k.lat.1));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let file = if smoke { "transport_veth-smoke.json.tmp" } else { "transport_veth.json" };
    std::fs::write(dir.join(file), j).unwrap();
    println!("\nwrote bench-results/{file}");
}

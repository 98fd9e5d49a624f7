//! The peer benchmark (issue 11): our `Pipeline` over AF_XDP and over the kernel's TCP
//! against the clients users run today, in one run, on the same feed.
//!
//! `sudo -E cargo bench --bench peers` (root: network namespaces, veth, AF_XDP). Prints
//! the tables with their ratios, writes `bench-results/peers.json` and the latency
//! picture `bench-results/peers-latency.svg`.
//!
//! Topology (the veth test bed): the feed server is a thread in the server namespace,
//! pinned to CPU 0, on the kernel's TCP; the server veth has TX checksum offload off (the
//! test bed does that); the client veth's receive work is steered to CPU 1 with RPS;
//! every client runs on CPU 1.
//!
//! The feed server (`pipeline_netbed::exchange`, shared with `pipeline demo`): Rust +
//! OpenSSL (the library's `TlsTransport` over a kernel socket),
//! TLS 1.3 with only TLS_AES_128_GCM_SHA256, a WebSocket upgrade, then commands from the
//! client ("run SIZE COUNT RATE", a masked text frame). A message is a binary frame
//! `[seq u64 LE][CLOCK_MONOTONIC send ns u64 LE][pattern]`; a text frame "done" ends a
//! run. RATE 0 is the batched flat-out mode: frames packed into 16 KiB TLS records (many
//! messages per record; a 16 KiB message spans two records), one clock read per record.
//! RATE > 0 is the paced mode: one record per message, stamped when sent; the server
//! spins until each message is due (so CPU 0 stays busy: this VM's hypervisor steals
//! time from an idle vCPU).
//!
//! The clients (one at a time: each run connects, warms up with a tenth of the run, is
//! measured, and closes; the clients take turns size by size, round by round, so all of
//! them see the same background load):
//! - `xdp`: `Pipeline`, `TransportKind::Xdp`, layout inline, wait spin, callback
//!   delivery, pinned to CPU 1 (what the library ships for one core);
//! - `kernel`: the same `Pipeline` with `TransportKind::Kernel`;
//! - `tokio-tungstenite`: tokio-tungstenite 0.30 with native-tls, default
//!   `WebSocketConfig` (`None`), on a current-thread tokio runtime on a thread pinned to
//!   CPU 1 (the fastest way to run it on one core: no work stealing, no cross-thread
//!   wake-ups);
//! - `openssl-blocking`: the floor of kernel TCP + OpenSSL: a blocking socket, `SSL_read`
//!   (read-ahead on, 64 KiB read buffer) into one buffer, and a minimal WebSocket frame
//!   walk (no UTF-8 check, no control frames): what no real client can undercut much.
//!
//! Every client does the same per message: check the sequence number and the size
//! (latency runs: read CLOCK_MONOTONIC and keep the difference).
//!
//! Measures:
//! - msgs/s: from the first message to the "done" after the last, at the client; median
//!   of the rounds (3); a run is at least the base count (1M / 500k / 150k / 12k) and
//!   lasts about 1.5 s at the warm-up's rate (at most 8x the base count);
//! - CPU per message, per thread from `/proc/self/task/<tid>/schedstat` (exact run time):
//!   `client` = every thread of this process except the server thread, the bench's own
//!   coordinating thread and the idle burner (so the Pipeline's stage thread, tokio's
//!   thread, the blocking reader); `server` = the server thread; `softirq` = ksoftirqd/0 +
//!   ksoftirqd/1 (this kernel has no IRQ_TIME_ACCOUNTING, so softirq work that interrupts
//!   a thread is charged to that thread: on veth the XDP program and the copy into the
//!   UMEM run on the *sender's* CPU, i.e. in the server thread or ksoftirqd/0);
//!   `both` = client + server + softirq. Also each CPU's busy share from /proc/stat
//!   (everyone's load, tick-sampled: context, not a measure of us);
//! - latency: 256 B at 20,000 msg/s, one record per message, one-way from the server's
//!   stamp to the client's receipt of the message; p50/p99/p99.9 each the median of 3 runs
//!   of 40,000 messages. Both CPUs are kept busy: the server spins to pace; the Pipelines
//!   spin; for the two clients that sleep in the kernel (tokio, blocking), a SCHED_IDLE
//!   burner thread spins on CPU 1 (a waking client preempts it at once), so no client
//!   waits for the hypervisor to wake an idle vCPU.
//!
//! Env:
//! - `PL_BENCH_SMOKE=1`: a quick check that it works (1 round, a fiftieth of the
//!   messages, 2,000 latency messages);
//! - `PL_BENCH_CLIENTS=xdp,kernel,tokio,openssl` and `PL_BENCH_SIZES=64,256` pick a
//!   subset (`PL_BENCH_SIZES=none`: latency only); `PL_BENCH_ROUNDS=N` the rounds
//!   (default 3). Smoke and subset runs write `bench-results/peers-partial.*.tmp`
//!   (git-ignored): only a full run writes `peers.json` and `peers-latency.svg`;
//! - `PL_BENCH_WAIT=backoff|yield|spin`: the Pipelines' wait (default spin);
//! - `PL_BENCH_PROFILE=SECS`: no tables; the xdp client at 256 B flat out for SECS seconds
//!   under `perf record -t <its stage thread>` (`target/peers-xdp-256.perf.data`), then
//!   `perf report`'s top symbols.

use pipeline_testkit::certs;
use pipeline_testkit::exchange::{command, server_main, Pacing, ServerCtl};
use pipeline_testkit::{gettid, schedstat};
use pipeline_testkit::feed::mono_ns;
use pipeline_testkit::netns::{self, Side, TestBed};
use pipeline_testkit::plot::{latency_svg, Curve};
use pipeline::pipeline::{Config, Pipeline, PipelineState, TransportKind};
use pipeline::latency::HistogramSnapshot;
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Latency;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

// ---------------------------------------------------------------- CPU accounting

/// USER_HZ (the unit of /proc/stat).
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The pids of ksoftirqd/0 and ksoftirqd/1.
fn ksoftirqd_pids() -> Vec<u32> {
    let mut v = vec![0u32; 2];
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            for (cpu, slot) in v.iter_mut().enumerate() {
                if comm.trim() == format!("ksoftirqd/{cpu}") {
                    *slot = pid;
                }
            }
        }
    }
    v
}

/// (busy, total) jiffies of cpu0 and cpu1 from /proc/stat (busy excludes idle, iowait
/// and steal).
fn cpu_jiffies() -> [(u64, u64); 2] {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut out = [(0, 0); 2];
    for (i, o) in out.iter_mut().enumerate() {
        let tag = format!("cpu{i} ");
        if let Some(l) = s.lines().find(|l| l.starts_with(&tag)) {
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0) + v.get(7).copied().unwrap_or(0);
            *o = (total - idle, total);
        }
    }
    out
}

#[derive(Clone)]
struct Snap {
    tasks: HashMap<i32, u64>,
    /// Involuntary context switches per thread (preempted while runnable).
    nvcsw: HashMap<i32, u64>,
    /// Steal jiffies of cpu0 + cpu1 (the hypervisor ran someone else).
    steal: u64,
    ksoft: u64,
    cpus: [(u64, u64); 2],
}

fn snap(ksoft: &[u32]) -> Snap {
    let mut tasks = HashMap::new();
    let mut nvcsw = HashMap::new();
    if let Ok(d) = std::fs::read_dir("/proc/self/task") {
        for e in d.flatten() {
            if let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() {
                tasks.insert(tid, schedstat(&format!("/proc/self/task/{tid}/schedstat")));
                let st = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap_or_default();
                let n = st.lines().find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                nvcsw.insert(tid, n);
            }
        }
    }
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let steal = stat
        .lines()
        .filter(|l| l.starts_with("cpu0 ") || l.starts_with("cpu1 "))
        .filter_map(|l| l.split_whitespace().nth(8).and_then(|x| x.parse::<u64>().ok()))
        .sum();
    let ksoft = ksoft.iter().filter(|p| **p > 0).map(|p| schedstat(&format!("/proc/{p}/schedstat"))).sum();
    Snap { tasks, nvcsw, steal, ksoft, cpus: cpu_jiffies() }
}

/// Involuntary context switches of the client's threads between two snapshots.
fn client_preemptions(a: &Snap, b: &Snap, server: i32, exclude: &[i32]) -> u64 {
    b.nvcsw
        .iter()
        .filter(|(tid, _)| **tid != server && !exclude.contains(tid))
        .map(|(tid, n)| n.saturating_sub(a.nvcsw.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// CPU used between two snapshots: (client ns, server ns, softirq ns, cpu0 %, cpu1 %).
fn cpu_delta(a: &Snap, b: &Snap, server: i32, exclude: &[i32]) -> (u64, u64, u64, f64, f64) {
    let mut client = 0;
    let mut srv = 0;
    for (tid, ns) in &b.tasks {
        let d = ns.saturating_sub(a.tasks.get(tid).copied().unwrap_or(0));
        if *tid == server {
            srv += d;
        } else if !exclude.contains(tid) {
            client += d;
        }
    }
    let pct = |i: usize| {
        let (b0, t0) = a.cpus[i];
        let (b1, t1) = b.cpus[i];
        if t1 > t0 {
            100.0 * (b1 - b0) as f64 / (t1 - t0) as f64
        } else {
            0.0
        }
    };
    (client, srv, b.ksoft.saturating_sub(a.ksoft), pct(0), pct(1))
}

// ---------------------------------------------------------------- what every client does per message

/// One run's receipts, on the client's own thread.
struct Recorder {
    size: usize,
    latency: bool,
    got: u64,
    bad: u64,
    first_ns: u64,
    end_ns: u64,
    lat: Vec<u64>,
    /// Our Pipelines: the stats region's stage histograms over this run (not the warm-up).
    stages: Vec<(Latency, HistogramSnapshot)>,
}

impl Recorder {
    fn new(size: usize, count: u64, latency: bool) -> Recorder {
        Recorder {
            size,
            latency,
            got: 0,
            bad: 0,
            first_ns: 0,
            end_ns: 0,
            lat: Vec::with_capacity(if latency { count as usize } else { 0 }),
            stages: Vec::new(),
        }
    }
    #[inline]
    fn on_binary(&mut self, p: &[u8]) {
        if self.got == 0 {
            self.first_ns = mono_ns();
        }
        let seq = p.get(0..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).unwrap_or(u64::MAX);
        if seq != self.got || p.len() != self.size {
            self.bad += 1;
        }
        if self.latency {
            let ts = u64::from_le_bytes(p[8..16].try_into().unwrap());
            self.lat.push(mono_ns().saturating_sub(ts));
        }
        self.got += 1;
    }
    fn done(&mut self) {
        self.end_ns = mono_ns();
    }
}

/// The clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Xdp,
    Kernel,
    Tokio,
    Blocking,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Xdp => "ours, XDP transport (Pipeline)",
            Kind::Kernel => "ours, kernel transport (Pipeline)",
            Kind::Tokio => "tokio-tungstenite 0.30 (native-tls)",
            Kind::Blocking => "minimal blocking OpenSSL reader",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Kind::Xdp => "xdp",
            Kind::Kernel => "kernel",
            Kind::Tokio => "tokio_tungstenite",
            Kind::Blocking => "openssl_blocking",
        }
    }
    /// Whether the client busy-polls (else a latency run adds the idle burner).
    fn spins(self) -> bool {
        matches!(self, Kind::Xdp | Kind::Kernel) && wait_kind() == WaitKind::Spin
    }
}

trait Peer {
    /// One run: send the command, receive until "done".
    fn run(&mut self, size: usize, count: u64, rate: u64, latency: bool) -> Recorder;
    /// The thread that handles the messages (for the profile).
    fn tid(&self) -> i32;
    fn close(self: Box<Self>);
}

// ---------------------------------------------------------------- ours: Pipeline

#[derive(Default)]
struct Sink {
    got: AtomicU64,
    bad: AtomicU64,
    size: AtomicU64,
    latency: AtomicBool,
    first_ns: AtomicU64,
    end_ns: AtomicU64,
    done: AtomicBool,
    tid: AtomicI32,
    lat: Mutex<Vec<u64>>,
    waiter: Mutex<Option<std::thread::Thread>>,
}

struct PipelinePeer {
    p: Pipeline,
    sink: Arc<Sink>,
    what: &'static str,
}

/// The stats region's stage histograms of `p` as they are now.
fn stage_histograms(p: &Pipeline) -> Vec<(Latency, HistogramSnapshot)> {
    Latency::ALL.iter().filter_map(|&h| Some((h, p.stats_region().histogram(h)?))).collect()
}

fn wait_kind() -> WaitKind {
    match std::env::var("PL_BENCH_WAIT").as_deref() {
        Ok("backoff") => WaitKind::Backoff,
        Ok("yield") => WaitKind::Yield,
        _ => WaitKind::Spin,
    }
}

fn pipeline_peer(kind: TransportKind, what: &'static str, url: &str, quiet: bool) -> PipelinePeer {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut cfg = Config::new(url);
    cfg.name = Some(format!("peers{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    cfg.transport = kind;
    cfg.ca_file = Some(certs::certs().ca());
    cfg.layout = Some(Layout::Inline);
    cfg.wait = Some(wait_kind());
    cfg.cores = vec![CLIENT_CPU];
    cfg.timeout = T;
    cfg.quiet = quiet;
    let sink = Arc::new(Sink::default());
    let s = sink.clone();
    let mut lat: Vec<u64> = Vec::new();
    let cb = Box::new(move |payload: &[u8], opcode: u8, _fin: bool| {
        if opcode == 0x2 {
            let got = s.got.load(Ordering::Relaxed);
            if got == 0 {
                s.first_ns.store(mono_ns(), Ordering::Relaxed);
                if s.latency.load(Ordering::Relaxed) {
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
        } else if opcode == 0x1 && payload == b"done" {
            s.end_ns.store(mono_ns(), Ordering::Relaxed);
            s.tid.store(gettid(), Ordering::Relaxed);
            if s.latency.load(Ordering::Relaxed) {
                std::mem::swap(&mut lat, &mut *s.lat.lock().unwrap());
            }
            s.done.store(true, Ordering::Release);
            if let Some(t) = s.waiter.lock().unwrap().take() {
                t.unpark();
            }
        }
    });
    let p = Pipeline::start_with_callback(cfg, cb).unwrap_or_else(|e| panic!("{what}: start: {e}"));
    PipelinePeer { p, sink, what }
}

impl Peer for PipelinePeer {
    fn run(&mut self, size: usize, count: u64, rate: u64, latency: bool) -> Recorder {
        let s = &self.sink;
        s.got.store(0, Ordering::SeqCst);
        s.bad.store(0, Ordering::SeqCst);
        s.done.store(false, Ordering::SeqCst);
        s.size.store(size as u64, Ordering::SeqCst);
        s.latency.store(latency, Ordering::SeqCst);
        *s.lat.lock().unwrap() = Vec::with_capacity(if latency { count as usize } else { 0 });
        *s.waiter.lock().unwrap() = Some(std::thread::current());
        let before = stage_histograms(&self.p);
        self.p.send_text(&command(size, count, rate)).unwrap_or_else(|e| panic!("{}: send: {e}", self.what));
        let deadline = Instant::now() + T + Duration::from_nanos(count * 1_000_000_000 / rate.max(1));
        while !s.done.load(Ordering::Acquire) {
            assert!(
                Instant::now() < deadline,
                "{}: run {size} B x {count}: {} messages, state {:?}",
                self.what,
                s.got.load(Ordering::SeqCst),
                self.p.state()
            );
            std::thread::park_timeout(Duration::from_millis(200));
        }
        let mut r = Recorder::new(size, 0, false);
        r.got = s.got.load(Ordering::SeqCst);
        r.bad = s.bad.load(Ordering::SeqCst);
        r.first_ns = s.first_ns.load(Ordering::SeqCst);
        r.end_ns = s.end_ns.load(Ordering::SeqCst);
        r.lat = std::mem::take(&mut *s.lat.lock().unwrap());
        r.stages = stage_histograms(&self.p)
            .into_iter()
            .zip(before)
            .map(|((h, after), (_, before))| (h, after.since(&before)))
            .collect();
        r
    }
    fn tid(&self) -> i32 {
        self.sink.tid.load(Ordering::SeqCst)
    }
    fn close(self: Box<Self>) {
        let _ = self.p.close(1000, "bench done");
        self.p.wait_disconnected(Duration::from_secs(2));
        if let PipelineState::Disconnected { reason } = self.p.state() {
            if !format!("{reason}").contains("1000") {
                eprintln!("  {}: {reason}", self.what);
            }
        }
        self.p.stop();
    }
}

// ---------------------------------------------------------------- threaded peers (tokio, blocking)

enum Cmd {
    Run(usize, u64, u64, bool),
    Close,
}

/// A client living on its own thread (pinned to CPU 1, in the client namespace),
/// driven by commands.
struct ThreadPeer {
    tx: mpsc::Sender<Cmd>,
    rx: mpsc::Receiver<Recorder>,
    tid: i32,
    h: Option<std::thread::JoinHandle<()>>,
}

impl Peer for ThreadPeer {
    fn run(&mut self, size: usize, count: u64, rate: u64, latency: bool) -> Recorder {
        self.tx.send(Cmd::Run(size, count, rate, latency)).expect("client thread gone");
        let wait = T + Duration::from_nanos(count * 1_000_000_000 / rate.max(1));
        self.rx.recv_timeout(wait).unwrap_or_else(|e| panic!("client thread: run {size} B x {count}: {e}"))
    }
    fn tid(&self) -> i32 {
        self.tid
    }
    fn close(mut self: Box<Self>) {
        let _ = self.tx.send(Cmd::Close);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

/// Spawn `body` on a thread in the client namespace pinned to CPU 1; it gets the
/// command and result channels once it is connected (it sends its tid first).
fn thread_peer<F>(bed: &TestBed, body: F) -> ThreadPeer
where
    F: FnOnce(mpsc::Receiver<Cmd>, mpsc::Sender<Recorder>, mpsc::Sender<i32>) + Send + 'static,
{
    let (ctx, crx) = mpsc::channel();
    let (rtx, rrx) = mpsc::channel();
    let (ttx, trx) = mpsc::channel();
    let h = bed.spawn_in(Side::Client, move || {
        pin_to(CLIENT_CPU);
        body(crx, rtx, ttx)
    });
    let tid = trx.recv_timeout(T).expect("client thread did not connect");
    ThreadPeer { tx: ctx, rx: rrx, tid, h: Some(h) }
}

fn tokio_peer(bed: &TestBed, addr: SocketAddr, ca: PathBuf) -> ThreadPeer {
    thread_peer(bed, move |cmds, results, tid| {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().expect("tokio runtime");
        let url = format!("wss://{addr}/");
        let mut ws = rt.block_on(async {
            let pem = std::fs::read(&ca).expect("read CA");
            let tls = native_tls::TlsConnector::builder()
                .add_root_certificate(native_tls::Certificate::from_pem(&pem).expect("CA pem"))
                .build()
                .expect("native-tls connector");
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("tokio connect");
            // Default WebSocketConfig (None); TLS from native-tls (OpenSSL on Linux).
            let (ws, _) = tokio_tungstenite::client_async_tls_with_config(url.as_str(), tcp, None, Some(tokio_tungstenite::Connector::NativeTls(tls)))
                .await
                .expect("tokio-tungstenite handshake");
            ws
        });
        tid.send(gettid()).unwrap();
        while let Ok(Cmd::Run(size, count, rate, latency)) = cmds.recv() {
            let r = rt.block_on(async {
                let mut rec = Recorder::new(size, count, latency);
                ws.send(Message::text(command(size, count, rate))).await.expect("tokio send");
                while let Some(m) = ws.next().await {
                    match m.expect("tokio-tungstenite read") {
                        Message::Binary(b) => rec.on_binary(&b),
                        Message::Text(t) if t.as_str() == "done" => {
                            rec.done();
                            break;
                        }
                        _ => {}
                    }
                }
                rec
            });
            results.send(r).unwrap();
        }
        rt.block_on(async {
            let _ = ws.close(None).await;
            // Read until the server's close (or the end).
            while let Some(Ok(_)) = ws.next().await {}
        });
    })
}

extern "C" {
    fn SSL_set_fd(ssl: *mut openssl_sys::SSL, fd: libc::c_int) -> libc::c_int;
}

/// The floor: blocking kernel TCP + OpenSSL + a minimal frame walk.
fn blocking_peer(bed: &TestBed, addr: SocketAddr, ca: PathBuf) -> ThreadPeer {
    thread_peer(bed, move |cmds, results, tid| {
        use openssl_sys as ossl;
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_nodelay(true).unwrap();
        let ca = std::ffi::CString::new(ca.to_str().unwrap()).unwrap();
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            _ => unreachable!(),
        };
        // SAFETY: plain OpenSSL calls on objects made here and used only on this thread;
        // every pointer checked; buffers outlive the calls that use them.
        let ssl = unsafe {
            let ctx = ossl::SSL_CTX_new(ossl::TLS_client_method());
            assert!(!ctx.is_null());
            assert_eq!(ossl::SSL_CTX_load_verify_locations(ctx, ca.as_ptr(), std::ptr::null()), 1);
            ossl::SSL_CTX_set_verify(ctx, ossl::SSL_VERIFY_PEER, None);
            ossl::SSL_CTX_set_read_ahead(ctx, 1);
            ossl::SSL_CTX_ctrl(ctx, 127 /* SSL_CTRL_SET_DEFAULT_READ_BUFFER_LEN */, 65536, std::ptr::null_mut());
            let ssl = ossl::SSL_new(ctx);
            assert!(!ssl.is_null());
            assert_eq!(ossl::X509_VERIFY_PARAM_set1_ip(ossl::SSL_get0_param(ssl), ip.as_ptr(), 4), 1);
            assert_eq!(SSL_set_fd(ssl, sock.as_raw_fd()), 1);
            assert_eq!(ossl::SSL_connect(ssl), 1, "SSL_connect");
            ossl::SSL_CTX_free(ctx); // the SSL holds its own reference
            ssl
        };
        let write = |d: &[u8]| {
            // SAFETY: ssl is live; d is a valid buffer.
            let n = unsafe { ossl::SSL_write(ssl, d.as_ptr().cast(), d.len() as i32) };
            assert_eq!(n as usize, d.len(), "SSL_write");
        };
        let mut buf = vec![0u8; 1 << 18];
        let mut lo: usize;
        let mut hi = 0usize;
        let read = |buf: &mut [u8], hi: usize| -> usize {
            // SAFETY: ssl is live; the destination is the unused tail of buf.
            let n = unsafe { ossl::SSL_read(ssl, buf[hi..].as_mut_ptr().cast(), (buf.len() - hi).min(1 << 30) as i32) };
            assert!(n > 0, "SSL_read: {n}");
            n as usize
        };
        write(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes());
        loop {
            if let Some(p) = buf[..hi].windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(buf.starts_with(b"HTTP/1.1 101"), "upgrade refused");
                lo = p + 4;
                break;
            }
            hi += read(&mut buf, hi);
        }
        tid.send(gettid()).unwrap();
        while let Ok(Cmd::Run(size, count, rate, latency)) = cmds.recv() {
            let c = command(size, count, rate);
            let mut f = vec![0x81, 0x80 | c.len() as u8, 1, 2, 3, 4];
            f.extend(c.bytes().enumerate().map(|(i, b)| b ^ [1u8, 2, 3, 4][i & 3]));
            write(&f);
            let mut rec = Recorder::new(size, count, latency);
            'run: loop {
                // Walk the complete frames in buf[lo..hi].
                while hi - lo >= 2 {
                    let l7 = (buf[lo + 1] & 0x7f) as usize;
                    let (hl, len) = match l7 {
                        126 if hi - lo >= 4 => (4, u16::from_be_bytes([buf[lo + 2], buf[lo + 3]]) as usize),
                        127 if hi - lo >= 10 => (10, u64::from_be_bytes(buf[lo + 2..lo + 10].try_into().unwrap()) as usize),
                        126 | 127 => break,
                        n => (2, n),
                    };
                    if hi - lo < hl + len {
                        break;
                    }
                    let op = buf[lo] & 0xf;
                    let p = &buf[lo + hl..lo + hl + len];
                    lo += hl + len;
                    if op == 0x2 {
                        rec.on_binary(p);
                    } else if op == 0x1 && p == b"done" {
                        rec.done();
                        break 'run;
                    }
                }
                if lo == hi {
                    lo = 0;
                    hi = 0;
                } else if buf.len() - hi < 32768 {
                    buf.copy_within(lo..hi, 0);
                    hi -= lo;
                    lo = 0;
                }
                hi += read(&mut buf, hi);
            }
            results.send(rec).unwrap();
        }
        // SAFETY: ssl is live and freed once.
        unsafe {
            ossl::SSL_shutdown(ssl);
            ossl::SSL_free(ssl);
        }
    })
}

// ---------------------------------------------------------------- burner

/// A SCHED_IDLE thread spinning on CPU 1 while `on` (keeps the vCPU from idling for the
/// clients that sleep in the kernel; any waking thread preempts it).
struct Burner {
    stop: Arc<AtomicBool>,
    h: Option<std::thread::JoinHandle<()>>,
    tid: i32,
}

impl Burner {
    fn start() -> Burner {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (ttx, trx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            pin_to(CLIENT_CPU);
            // SAFETY: sched_param is plain data; 0 = this thread.
            unsafe {
                let p = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &p);
            }
            ttx.send(gettid()).unwrap();
            while !s.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let tid = trx.recv().unwrap();
        Burner { stop, h: Some(h), tid }
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------- runs and statistics

#[derive(Clone, Debug, Default)]
struct Run {
    count: u64,
    msgs_per_s: f64,
    client_ns: f64,
    server_ns: f64,
    softirq_ns: f64,
    cpu0: f64,
    cpu1: f64,
    /// Involuntary context switches of the client's threads during the run.
    preempted: u64,
    /// Hypervisor steal on CPU 0 + CPU 1 during the run (ms, tick-sampled).
    steal_ms: u64,
    lat_ns: Vec<u64>,
    stages: Vec<(Latency, HistogramSnapshot)>,
}

impl Run {
    fn both_ns(&self) -> f64 {
        self.client_ns + self.server_ns + self.softirq_ns
    }
}

struct Env<'a> {
    bed: &'a TestBed,
    port: u16,
    ctl: Arc<ServerCtl>,
    ksoft: Vec<u32>,
    xdp_announced: AtomicBool,
}

impl Env<'_> {
    fn connect(&self, kind: Kind) -> Box<dyn Peer> {
        let ip = self.bed.server_ip;
        let url = format!("wss://{ip}:{}/", self.port);
        let addr = SocketAddr::from((ip, self.port));
        let ca = certs::certs().ca();
        match kind {
            Kind::Xdp => {
                let quiet = self.xdp_announced.swap(true, Ordering::SeqCst);
                let bed = self.bed;
                Box::new(bed.in_client(|| pipeline_peer(TransportKind::Xdp, "xdp", &url, quiet)))
            }
            Kind::Kernel => Box::new(self.bed.in_client(|| pipeline_peer(TransportKind::Kernel, "kernel", &url, true))),
            Kind::Tokio => Box::new(tokio_peer(self.bed, addr, ca)),
            Kind::Blocking => Box::new(blocking_peer(self.bed, addr, ca)),
        }
    }

    /// One measured run on a fresh connection, after a warm-up of a tenth of `count`.
    /// Flat out, the run is at least `count` messages and lasts about `secs` at the
    /// warm-up's rate (at most 8x `count`): short runs on this shared box are noise.
    fn measure(&self, kind: Kind, size: usize, count: u64, rate: u64, latency: bool, secs: f64) -> Run {
        let mut peer = self.connect(kind);
        let warm = if rate == 0 { (count / 10).max(100) } else { 2_000.min(count) };
        let w = peer.run(size, warm, rate, false);
        let count = if rate == 0 {
            let warm_rate = (warm - 1) as f64 / (w.end_ns.saturating_sub(w.first_ns).max(1) as f64 / 1e9);
            ((warm_rate * secs) as u64).clamp(count, count * 8)
        } else {
            count
        };
        let burner = if latency && !kind.spins() { Some(Burner::start()) } else { None };
        let me = gettid();
        let mut exclude = vec![me];
        exclude.extend(burner.as_ref().map(|b| b.tid));
        let s0 = snap(&self.ksoft);
        let r = peer.run(size, count, rate, latency);
        let s1 = snap(&self.ksoft);
        drop(burner);
        peer.close();
        assert_eq!(r.got, count, "{}: messages", kind.name());
        assert_eq!(r.bad, 0, "{}: messages out of order or of the wrong size", kind.name());
        let srv = self.ctl.tid.load(Ordering::SeqCst);
        let (c, s, k, p0, p1) = cpu_delta(&s0, &s1, srv, &exclude);
        let preempted = client_preemptions(&s0, &s1, srv, &exclude);
        let steal_ms = (s1.steal - s0.steal) * 1000 / clock_ticks();
        let el = r.end_ns.saturating_sub(r.first_ns) as f64 / 1e9;
        Run {
            count,
            msgs_per_s: (count - 1) as f64 / el.max(1e-9),
            client_ns: c as f64 / count as f64,
            server_ns: s as f64 / count as f64,
            softirq_ns: k as f64 / count as f64,
            cpu0: p0,
            cpu1: p1,
            preempted,
            steal_ms,
            lat_ns: r.lat,
            stages: r.stages,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Percentile of sorted samples, in µs.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[derive(Clone, Default)]
struct Tput {
    msgs_per_s: f64,
    client_ns: f64,
    server_ns: f64,
    softirq_ns: f64,
    both_ns: f64,
    cpu0: f64,
    cpu1: f64,
    runs: Vec<f64>,
}

fn summarize_tput(rs: &[Run]) -> Tput {
    Tput {
        msgs_per_s: median(rs.iter().map(|r| r.msgs_per_s).collect()),
        client_ns: median(rs.iter().map(|r| r.client_ns).collect()),
        server_ns: median(rs.iter().map(|r| r.server_ns).collect()),
        softirq_ns: median(rs.iter().map(|r| r.softirq_ns).collect()),
        both_ns: median(rs.iter().map(|r| r.both_ns()).collect()),
        cpu0: median(rs.iter().map(|r| r.cpu0).collect()),
        cpu1: median(rs.iter().map(|r| r.cpu1).collect()),
        runs: rs.iter().map(|r| r.msgs_per_s).collect(),
    }
}

#[derive(Clone, Default)]
struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
    runs: Vec<(f64, f64, f64)>,
    /// Per run: involuntary context switches of the client, steal ms.
    preempted: Vec<(u64, u64)>,
    /// All runs' samples, sorted (ns): the picture.
    all: Vec<u64>,
}

fn summarize_lat(rs: &mut [Run]) -> Lat {
    let mut runs = Vec::new();
    let mut all = Vec::new();
    let preempted = rs.iter().map(|r| (r.preempted, r.steal_ms)).collect();
    for r in rs.iter_mut() {
        r.lat_ns.sort_unstable();
        runs.push((pct(&r.lat_ns, 0.5), pct(&r.lat_ns, 0.99), pct(&r.lat_ns, 0.999)));
        all.extend_from_slice(&r.lat_ns);
    }
    all.sort_unstable();
    Lat {
        p50: median(runs.iter().map(|x| x.0).collect()),
        p99: median(runs.iter().map(|x| x.1).collect()),
        p999: median(runs.iter().map(|x| x.2).collect()),
        runs,
        preempted,
        all,
    }
}

fn size_name(s: usize) -> String {
    if s >= 1024 {
        format!("{} KiB", s / 1024)
    } else {
        format!("{s} B")
    }
}

fn rate_str(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.1} k", r / 1e3)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

// ---------------------------------------------------------------- main

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` only builds this.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("peers: not run (use `sudo -E cargo bench --bench peers`)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 || !netns::require_root("peers benchmark") {
        eprintln!(
            "peers: FAILED: this benchmark needs root (network namespaces, a veth pair, AF_XDP, XDP programs; \
             CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF, CAP_NET_RAW, CAP_IPC_LOCK); euid is {euid}. Run it as \
             `sudo -E cargo bench --bench peers`"
        );
        std::process::exit(1);
    }
    let smoke = std::env::var_os("PL_BENCH_SMOKE").is_some();
    let profile: Option<u64> = std::env::var("PL_BENCH_PROFILE").ok().and_then(|s| s.parse().ok());
    let rounds: usize = std::env::var("PL_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(if smoke { 1 } else { 3 });
    let (scale, lat_runs, lat_count) = if smoke { (50, 1, 2_000) } else { (1, 3, 40_000) };
    // Flat-out runs last about this long (at least the base count; see Env::measure).
    let run_secs = if smoke { 0.0 } else { 1.5 };
    let mut kinds = vec![Kind::Xdp, Kind::Kernel, Kind::Tokio, Kind::Blocking];
    if let Some(l) = env_list("PL_BENCH_CLIENTS") {
        kinds.retain(|k| l.iter().any(|n| k.key().starts_with(n.as_str())));
    }
    let all_sizes: [(usize, u64); 4] = [(64, 1_000_000), (256, 500_000), (1024, 150_000), (16384, 12_000)];
    let mut sizes: Vec<(usize, u64)> = all_sizes.to_vec();
    if let Some(l) = env_list("PL_BENCH_SIZES") {
        sizes.retain(|(s, _)| l.iter().any(|n| n.parse::<usize>().ok() == Some(*s)));
    }

    let bed = TestBed::new();
    // The client veth's receive work on the client's CPU.
    let rps = format!("/sys/class/net/{}/queues/rx-0/rps_cpus", bed.client_if);
    let (ok, msg) = bed.try_cmd(Side::Client, &["sh", "-c", &format!("echo {:x} > {rps}", 1u32 << CLIENT_CPU)]);
    if !ok {
        eprintln!("peers: could not set RPS on the client veth: {msg}");
    }
    let (cert, key) = certs::certs().leaf("veth");
    let ip = bed.server_ip;
    let l = bed.in_server(move || TcpListener::bind((ip, 0)).expect("bind"));
    let port = l.local_addr().unwrap().port();
    let ctl = ServerCtl::new(Some(SERVER_CPU), Pacing::Spin);
    let c2 = ctl.clone();
    let server = bed.spawn_in(Side::Server, move || server_main(l, cert, key, c2));
    while ctl.tid.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let env = Env { bed: &bed, port, ctl: ctl.clone(), ksoft: ksoftirqd_pids(), xdp_announced: AtomicBool::new(false) };
    eprintln!(
        "peers: server thread on CPU {SERVER_CPU}, clients on CPU {CLIENT_CPU} (Pipelines: inline, wait {}, callback delivery); {rounds} round(s){}",
        wait_kind().name(),
        if smoke { "; SMOKE (small counts, not results)" } else { "" }
    );
    let (ok, la) = netns::try_run(&["cat", "/proc/loadavg"]);
    let loadavg = if ok { la.trim().to_string() } else { String::new() };
    eprintln!("peers: load average at start: {loadavg}");

    if let Some(secs) = profile {
        run_profile(&env, secs);
        ctl.stop.store(true, Ordering::SeqCst);
        let _ = server.join();
        return;
    }

    // Throughput: rounds x sizes x clients, the clients taking turns.
    let mut tput: HashMap<(Kind, usize), Vec<Run>> = HashMap::new();
    for round in 0..rounds {
        for &(size, count) in &sizes {
            let count = (count / scale).max(200);
            for &k in &kinds {
                let r = env.measure(k, size, count, 0, false, run_secs);
                eprintln!(
                    "  round {}: {:>6} {:<36} {:>8} msgs {:>9} msg/s  client {:>6.0} + server {:>5.0} + softirq {:>4.0} = {:>6.0} ns/msg  (cpu0 {:.0} %, cpu1 {:.0} %)",
                    round + 1,
                    size_name(size),
                    k.name(),
                    r.count,
                    rate_str(r.msgs_per_s),
                    r.client_ns,
                    r.server_ns,
                    r.softirq_ns,
                    r.both_ns(),
                    r.cpu0,
                    r.cpu1
                );
                tput.entry((k, size)).or_default().push(r);
            }
        }
    }
    // Latency: 256 B at 20k/s.
    let mut lat: HashMap<Kind, Vec<Run>> = HashMap::new();
    for i in 0..lat_runs {
        for &k in &kinds {
            let r = env.measure(k, 256, lat_count, 20_000, true, 0.0);
            let mut s = r.lat_ns.clone();
            s.sort_unstable();
            eprintln!(
                "  latency run {}: {:<36} p50 {:>7.1} µs  p99 {:>7.1} µs  p99.9 {:>8.1} µs  (client preempted {} times, steal {} ms)",
                i + 1,
                k.name(),
                pct(&s, 0.5),
                pct(&s, 0.99),
                pct(&s, 0.999),
                r.preempted,
                r.steal_ms
            );
            // A histogram nobody fed (server_to_delivered without the server_stamp
            // option) says nothing: leave it out rather than print a row of zeros.
            for (h, snap) in r.stages.iter().filter(|(_, s)| s.count > 0) {
                eprintln!(
                    "      {:<22} {:>7} msgs  p50 {:>7.1} µs  p99 {:>7.1} µs  p99.9 {:>8.1} µs  max {:>8.1} µs",
                    h.name(),
                    snap.count,
                    snap.quantile(0.5) as f64 / 1e3,
                    snap.quantile(0.99) as f64 / 1e3,
                    snap.quantile(0.999) as f64 / 1e3,
                    snap.max_ns as f64 / 1e3
                );
            }
            lat.entry(k).or_default().push(r);
        }
    }
    ctl.stop.store(true, Ordering::SeqCst);
    let _ = server.join();
    let (ok, la) = netns::try_run(&["cat", "/proc/loadavg"]);
    let loadavg_end = if ok { la.trim().to_string() } else { String::new() };
    drop(bed);

    stage_report(&kinds, &lat, smoke || kinds.len() < 4 || sizes.len() < 4, smoke, lat_runs);
    let t: HashMap<(Kind, usize), Tput> = tput.iter().map(|(k, v)| (*k, summarize_tput(v))).collect();
    let l: HashMap<Kind, Lat> = lat.iter_mut().map(|(k, v)| (*k, summarize_lat(v))).collect();
    report(&kinds, &sizes, &t, &l, smoke, rounds, lat_runs, &loadavg, &loadavg_end);
}

/// Our Pipelines' per-stage latency in the paced runs, from the stats region's
/// histograms (the runs pooled): a table on stderr and one curve per stage in
/// `bench-results/peers-stages.svg` (`peers-stages-partial.svg.tmp` for smoke and
/// subset runs).
fn stage_report(kinds: &[Kind], lat: &HashMap<Kind, Vec<Run>>, partial: bool, smoke: bool, lat_runs: usize) {
    let mut series: Vec<(String, Curve)> = Vec::new();
    eprintln!("\nper-stage latency, 256 B at 20,000 msg/s (stats region histograms, {lat_runs} run(s) pooled):");
    for k in kinds {
        let Some(runs) = lat.get(k) else { continue };
        let mut pooled: Vec<(Latency, HistogramSnapshot)> = Vec::new();
        for r in runs {
            for (h, snap) in &r.stages {
                match pooled.iter_mut().find(|(p, _)| p == h) {
                    Some((_, acc)) => acc.merge(snap),
                    None => pooled.push((*h, snap.clone())),
                }
            }
        }
        for (h, snap) in pooled.iter().filter(|(_, s)| s.count > 0) {
            eprintln!(
                "  {:<36} {:<22} {:>7} msgs  p50 {:>7.1}  p90 {:>7.1}  p99 {:>7.1}  p99.9 {:>8.1}  max {:>8.1} µs",
                k.name(),
                h.name(),
                snap.count,
                snap.quantile(0.5) as f64 / 1e3,
                snap.quantile(0.9) as f64 / 1e3,
                snap.quantile(0.99) as f64 / 1e3,
                snap.quantile(0.999) as f64 / 1e3,
                snap.max_ns as f64 / 1e3
            );
            let top = (snap.count as f64).log10().max(1.0);
            series.push((format!("{} {}", k.key(), h.name()), Curve::from_quantiles(top, |q| snap.quantile(q) as f64)));
        }
    }
    if series.is_empty() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let f = if partial { "peers-stages-partial.svg.tmp" } else { "peers-stages.svg" };
    let title = format!("our Pipelines, per stage: 256 B at 20,000 msg/s over veth{}", if smoke { " (SMOKE)" } else { "" });
    std::fs::write(dir.join(f), latency_svg(&series, &title, "percentile")).expect("write stage svg");
    eprintln!("  wrote bench-results/{f}");
}

#[allow(clippy::too_many_arguments)]
fn report(
    kinds: &[Kind],
    sizes: &[(usize, u64)],
    t: &HashMap<(Kind, usize), Tput>,
    l: &HashMap<Kind, Lat>,
    smoke: bool,
    rounds: usize,
    lat_runs: usize,
    load0: &str,
    load1: &str,
) {
    let what = if smoke { "SMOKE RUN (small counts; not results)" } else { "results" };
    let get = |k: Kind, s: usize| t.get(&(k, s)).cloned().unwrap_or_default();
    let has = |k: Kind| kinds.contains(&k);
    println!("\npeers {what}: TLS 1.3 AES-128-GCM WebSocket feed over veth; Rust/OpenSSL server thread on CPU {SERVER_CPU}, clients on CPU {CLIENT_CPU}; medians of {rounds} run(s), latency medians of {lat_runs}");
    println!("load average: {load0} at start, {load1} at the end");
    let hdr: Vec<String> = sizes.iter().map(|(s, _)| size_name(*s)).collect();
    println!("\nmsgs/s (CPU 0 / CPU 1 busy, /proc/stat: everyone's load)");
    println!("| client | {} |", hdr.join(" | "));
    println!("| --- |{}", " ---: |".repeat(sizes.len()));
    for &k in kinds {
        let cells: Vec<String> = sizes.iter().map(|(s, _)| {
            let x = get(k, *s);
            format!("{} ({:.0}/{:.0} %)", rate_str(x.msgs_per_s), x.cpu0, x.cpu1)
        }).collect();
        println!("| {} | {} |", k.name(), cells.join(" | "));
    }
    let ratio_row = |label: &str, a: Kind, b: Kind, f: &dyn Fn(&Tput) -> f64| {
        if has(a) && has(b) {
            let cells: Vec<String> = sizes.iter().map(|(s, _)| format!("{:.2}x", ratio(f(&get(a, *s)), f(&get(b, *s))))).collect();
            println!("| {label} | {} |", cells.join(" | "));
        }
    };
    ratio_row("xdp / tokio-tungstenite (target >= 2.0x)", Kind::Xdp, Kind::Tokio, &|x| x.msgs_per_s);
    ratio_row("xdp / kernel (target >= 1.3x)", Kind::Xdp, Kind::Kernel, &|x| x.msgs_per_s);
    ratio_row("xdp / openssl-blocking", Kind::Xdp, Kind::Blocking, &|x| x.msgs_per_s);
    ratio_row("kernel / tokio-tungstenite", Kind::Kernel, Kind::Tokio, &|x| x.msgs_per_s);
    println!("\nruns (k msg/s):");
    for &k in kinds {
        let cells: Vec<String> = sizes.iter().map(|(s, _)| format!("{}: {:?}", size_name(*s), get(k, *s).runs.iter().map(|r| (r / 1e3).round() as u64).collect::<Vec<_>>())).collect();
        println!("  {}: {}", k.name(), cells.join("; "));
    }

    println!("\nCPU per message (ns): client threads + server thread + ksoftirqd = both CPUs");
    println!("| client | {} |", hdr.join(" | "));
    println!("| --- |{}", " ---: |".repeat(sizes.len()));
    for &k in kinds {
        let cells: Vec<String> = sizes.iter().map(|(s, _)| {
            let x = get(k, *s);
            format!("{:.0} + {:.0} + {:.0} = {:.0}", x.client_ns, x.server_ns, x.softirq_ns, x.both_ns)
        }).collect();
        println!("| {} | {} |", k.name(), cells.join(" | "));
    }
    ratio_row("xdp / tokio-tungstenite, client (target <= 0.4x)", Kind::Xdp, Kind::Tokio, &|x| x.client_ns);
    ratio_row("xdp / tokio-tungstenite, both CPUs (target <= 0.75x)", Kind::Xdp, Kind::Tokio, &|x| x.both_ns);
    ratio_row("xdp / kernel, client", Kind::Xdp, Kind::Kernel, &|x| x.client_ns);
    ratio_row("xdp / kernel, both CPUs", Kind::Xdp, Kind::Kernel, &|x| x.both_ns);

    println!("\nlatency, 256 B at 20,000 msg/s, one record per message (µs; median of {lat_runs} runs)");
    println!("| client | p50 | p99 | p99.9 | runs (p50 / p99 / p99.9) | client preempted (times), steal (ms), per run |");
    println!("| --- | ---: | ---: | ---: | --- | --- |");
    for &k in kinds {
        let x = l.get(&k).cloned().unwrap_or_default();
        let runs: Vec<String> = x.runs.iter().map(|r| format!("{:.0}/{:.0}/{:.0}", r.0, r.1, r.2)).collect();
        let pre: Vec<String> = x.preempted.iter().map(|(p, st)| format!("{p}, {st}")).collect();
        println!("| {} | {:.1} | {:.1} | {:.1} | {} | {} |", k.name(), x.p50, x.p99, x.p999, runs.join(", "), pre.join("; "));
    }
    let lr = |a: Kind, b: Kind, label: &str| {
        if let (Some(x), Some(y)) = (l.get(&a), l.get(&b)) {
            println!("| {label} | {:.2}x | {:.2}x | {:.2}x | | |", ratio(x.p50, y.p50), ratio(x.p99, y.p99), ratio(x.p999, y.p999));
        }
    };
    lr(Kind::Xdp, Kind::Tokio, "xdp / tokio-tungstenite (target <= 0.5x)");
    lr(Kind::Xdp, Kind::Kernel, "xdp / kernel");

    // JSON.
    let mut j = String::from("{\n  \"bench\": \"peers\",\n");
    j += &format!("  \"smoke\": {smoke},\n  \"rounds\": {rounds},\n  \"latency_runs\": {lat_runs},\n");
    j += &format!("  \"load_average\": [\"{load0}\", \"{load1}\"],\n");
    j += &format!("  \"pipeline\": \"layout inline, wait {}, callback delivery, pinned to CPU {CLIENT_CPU}\",\n", wait_kind().name());
    j += "  \"clients\": [\n";
    for (i, &k) in kinds.iter().enumerate() {
        j += &format!("    {{\"client\": \"{}\", \"name\": \"{}\", \"throughput\": [", k.key(), k.name());
        for (n, (s, _)) in sizes.iter().enumerate() {
            let x = get(k, *s);
            j += &format!(
                "{}{{\"size\": {s}, \"msgs_per_s\": {:.0}, \"runs_msgs_per_s\": [{}], \"client_cpu_ns_per_msg\": {:.1}, \"server_cpu_ns_per_msg\": {:.1}, \"softirq_cpu_ns_per_msg\": {:.1}, \"both_cpus_ns_per_msg\": {:.1}, \"cpu0_busy_pct\": {:.1}, \"cpu1_busy_pct\": {:.1}}}",
                if n > 0 { ", " } else { "" },
                x.msgs_per_s,
                x.runs.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
                x.client_ns,
                x.server_ns,
                x.softirq_ns,
                x.both_ns,
                x.cpu0,
                x.cpu1
            );
        }
        let x = l.get(&k).cloned().unwrap_or_default();
        j += &format!(
            "], \"latency_256B_20k\": {{\"p50_us\": {:.1}, \"p99_us\": {:.1}, \"p999_us\": {:.1}, \"runs\": [{}], \"client_preempted_steal_ms\": [{}]}}}}{}\n",
            x.p50,
            x.p99,
            x.p999,
            x.runs.iter().map(|r| format!("[{:.1}, {:.1}, {:.1}]", r.0, r.1, r.2)).collect::<Vec<_>>().join(", "),
            x.preempted.iter().map(|(p, st)| format!("[{p}, {st}]")).collect::<Vec<_>>().join(", "),
            if i + 1 < kinds.len() { "," } else { "" }
        );
    }
    j += "  ],\n  \"ratios\": {";
    let mut parts = Vec::new();
    let rj = |a: Kind, b: Kind, f: &dyn Fn(&Tput) -> f64| -> Option<String> {
        if has(a) && has(b) {
            Some(sizes.iter().map(|(s, _)| format!("{:.3}", ratio(f(&get(a, *s)), f(&get(b, *s))))).collect::<Vec<_>>().join(", "))
        } else {
            None
        }
    };
    for (name, a, b, f) in [
        ("xdp_over_tokio_msgs_per_s", Kind::Xdp, Kind::Tokio, &(|x: &Tput| x.msgs_per_s) as &dyn Fn(&Tput) -> f64),
        ("xdp_over_kernel_msgs_per_s", Kind::Xdp, Kind::Kernel, &|x: &Tput| x.msgs_per_s),
        ("xdp_over_tokio_client_cpu", Kind::Xdp, Kind::Tokio, &|x: &Tput| x.client_ns),
        ("xdp_over_tokio_both_cpus", Kind::Xdp, Kind::Tokio, &|x: &Tput| x.both_ns),
        ("xdp_over_kernel_client_cpu", Kind::Xdp, Kind::Kernel, &|x: &Tput| x.client_ns),
        ("xdp_over_kernel_both_cpus", Kind::Xdp, Kind::Kernel, &|x: &Tput| x.both_ns),
    ] {
        if let Some(v) = rj(a, b, f) {
            parts.push(format!("\"{name}\": [{v}]"));
        }
    }
    if let (Some(x), Some(y)) = (l.get(&Kind::Xdp), l.get(&Kind::Tokio)) {
        parts.push(format!("\"xdp_over_tokio_latency_p50\": {:.3}, \"xdp_over_tokio_latency_p99\": {:.3}", ratio(x.p50, y.p50), ratio(x.p99, y.p99)));
    }
    j += &parts.join(", ");
    j += &format!("}},\n  \"sizes\": [{}]\n}}\n", sizes.iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>().join(", "));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    // Only a full run (every client, every size, not smoke) writes the results files.
    let partial = smoke || kinds.len() < 4 || sizes.len() < 4;
    let (jf, sf) = if partial { ("peers-partial.json.tmp", "peers-latency-partial.svg.tmp") } else { ("peers.json", "peers-latency.svg") };
    std::fs::write(dir.join(jf), j).expect("write json");
    let series: Vec<(String, Curve)> =
        kinds.iter().filter_map(|k| l.get(k).map(|x| (k.name().to_string(), Curve::from_sorted_ns(&x.all)))).collect();
    let title = format!("256 B messages at 20,000 msg/s over veth, {} runs pooled{}", lat_runs, if smoke { " (SMOKE)" } else { "" });
    std::fs::write(dir.join(sf), latency_svg(&series, &title, "one-way latency, server send stamp to client receipt")).expect("write svg");
    println!("\nwrote bench-results/{jf} and bench-results/{sf}");
}

/// `perf record` on the xdp client's stage thread at 256 B flat out.
fn run_profile(env: &Env, secs: u64) {
    let mut peer = env.connect(Kind::Xdp);
    peer.run(256, 50_000, 0, false);
    let tid = peer.tid();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers-xdp-256.perf.data");
    eprintln!("peers: profiling the xdp stage thread (tid {tid}) for {secs} s into {}", out.display());
    let mut perf = std::process::Command::new("perf")
        .args(["record", "-F", "4999", "-t", &tid.to_string(), "-o", out.to_str().unwrap(), "--", "sleep", &secs.to_string()])
        .spawn()
        .expect("spawn perf (is it installed?)");
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut rates = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        let r = peer.run(256, 500_000, 0, false);
        n += r.got;
        rates.push((r.got - 1) as f64 / (r.end_ns - r.first_ns) as f64 * 1e9);
    }
    let _ = perf.wait();
    peer.close();
    eprintln!("peers: {n} messages, median {} msg/s during the profile", rate_str(median(rates.clone())));
    let rep = std::process::Command::new("perf")
        .args(["report", "-i", out.to_str().unwrap(), "--no-children", "--sort", "dso,symbol", "--stdio"])
        .output()
        .expect("perf report");
    let text = String::from_utf8_lossy(&rep.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    // OpenSSL's assembly (AES-GCM, GHASH) has no symbols in Debian's libcrypto: sum it
    // (every row, however small).
    let unresolved: f64 = lines
        .iter()
        .filter(|l| l.contains("libcrypto") && l.contains("] 0x"))
        .filter_map(|l| l.split_whitespace().next()?.trim_end_matches('%').parse::<f64>().ok())
        .sum();
    let mut summary = format!("xdp client stage thread, 256 B flat out, {} msg/s median, perf record -F 4999 -t <tid> for {secs} s\n", rate_str(median(rates.clone())));
    summary += &format!("libcrypto without symbols (AES-GCM/GHASH assembly), summed: {unresolved:.2}%\n");
    for l in lines.iter().take(40) {
        summary += l.trim_end();
        summary += "\n";
    }
    println!("{summary}");
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results/peers-profile-xdp-256.txt");
    let _ = std::fs::write(&f, summary);
    println!("wrote {}", f.display());
}

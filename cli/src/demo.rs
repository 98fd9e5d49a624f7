//! `pipeline demo`: the Rust exchange feed server (`pipeline_netbed::exchange`, the one
//! the peer benchmark measures against; TLS with a fresh test CA) streamed to the
//! pipeline. As root: the server runs in its own network namespace behind a veth pair,
//! and the pipeline connects from a second namespace twice, one after the other: over
//! AF_XDP, then over the kernel's TCP; the two summaries are printed side by side with
//! their ratios and both latency distributions are drawn into one SVG. Otherwise (said in
//! one line): the kernel transport on loopback.
//!
//! Each transport gets the same two runs on one connection: `--count` messages flat out
//! (msgs/s) and `--latency-count` messages paced at `--rate` (one-way latency from the
//! server's send stamp).
//!
//! Everything it creates (namespaces, veth, temporary directory, the server thread) is
//! removed at the end, also on failure and on Ctrl-C (SIGINT/SIGTERM end the run
//! through the normal path so the guards' `Drop` run).

use std::io::{IsTerminal, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Pipeline, PipelineState, Receiver, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline_netbed::certs;
use pipeline_netbed::exchange::{self, command, server_main, Pacing, ServerCtl};
use pipeline_netbed::feed::mono_ns;
use pipeline_netbed::netns::{missing_privileges, Side, TestBed};
use pipeline_netbed::plot::{latency_svg, Curve};
use pipeline_netbed::process::run_checked;

use crate::signals::{self, interrupted};
use crate::{option_value, usage_error};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Auto,
    Xdp,
    Kernel,
}

struct Opts {
    count: u64,
    latency_count: u64,
    rate: u64,
    size: usize,
    transport: Want,
    duration: f64,
    layout: Option<Layout>,
    wait: Option<WaitKind>,
    plot: PathBuf,
}

fn number<T: std::str::FromStr>(v: String, what: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{what} needs a number, not {v:?}"))
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        count: 500_000,
        latency_count: 40_000,
        rate: 20_000,
        size: 256,
        transport: Want::Auto,
        duration: 30.0,
        layout: None,
        wait: None,
        plot: PathBuf::from("pipeline-demo-latency.svg"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| option_value(&mut it, name);
        match a.as_str() {
            "--count" => o.count = number(val("--count")?, "--count")?,
            "--latency-count" => o.latency_count = number(val("--latency-count")?, "--latency-count")?,
            "--rate" => o.rate = number(val("--rate")?, "--rate (messages per second)")?,
            "--size" => o.size = number(val("--size")?, "--size (bytes)")?,
            "--duration" => {
                o.duration = number(val("--duration")?, "--duration (seconds)")?;
                if o.duration.is_nan() || o.duration <= 0.0 || o.duration > 86_400.0 {
                    return Err("--duration must be > 0 and at most 86400 (seconds)".into());
                }
            }
            "--transport" => {
                o.transport = match val("--transport")?.as_str() {
                    "xdp" => Want::Xdp,
                    "kernel" => Want::Kernel,
                    "auto" => Want::Auto,
                    t => return Err(format!("--transport {t:?}: expected xdp, kernel or auto")),
                }
            }
            "--layout" => {
                o.layout = Some(Layout::parse(&val("--layout")?).map_err(|e| e.to_string())?)
            }
            "--wait" => o.wait = Some(WaitKind::parse(&val("--wait")?).map_err(|e| e.to_string())?),
            "--plot" => o.plot = PathBuf::from(val("--plot")?),
            s => return Err(format!("demo: unknown argument {s:?}")),
        }
    }
    if o.count == 0 || o.latency_count == 0 {
        return Err("--count and --latency-count must be > 0".into());
    }
    if o.rate == 0 {
        return Err("--rate must be > 0 (the latency run is paced; --count is the flat-out run)".into());
    }
    if !exchange::SIZES.contains(&o.size) {
        return Err(format!(
            "--size {}: the feed server sends {}..={} bytes (an 8-byte sequence number and an 8-byte send stamp first)",
            o.size,
            exchange::SIZES.start(),
            exchange::SIZES.end()
        ));
    }
    Ok(o)
}

/// Temporary directory, removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server thread: stopped on drop (also on failure and Ctrl-C), and joined if it
/// ends within a second (a write to a client that is gone can block it for longer; the
/// process exit then ends it).
struct Server {
    ctl: Arc<ServerCtl>,
    thread: Option<JoinHandle<pipeline::Result<()>>>,
    port: u16,
}

/// What the server thread runs (`spawn` puts it in the right namespace).
type ServerBody = Box<dyn FnOnce() -> pipeline::Result<()> + Send>;

impl Server {
    /// Start it on `l` (bound in the namespace it serves) and wait until it runs.
    fn start(
        l: TcpListener,
        cert: PathBuf,
        key: PathBuf,
        spawn: impl FnOnce(ServerBody) -> JoinHandle<pipeline::Result<()>>,
    ) -> Result<Server, String> {
        let port = l.local_addr().map_err(|e| format!("feed server address: {e}"))?.port();
        let ctl = ServerCtl::new(None, Pacing::Sleep);
        let c = ctl.clone();
        let mut s = Server { ctl, thread: Some(spawn(Box::new(move || server_main(l, cert, key, c)))), port };
        while s.ctl.tid.load(Ordering::SeqCst) == 0 {
            if s.thread.as_ref().is_some_and(|t| t.is_finished()) {
                return Err(match s.thread.take().map(JoinHandle::join) {
                    Some(Ok(Err(e))) => format!("feed server: {e}"),
                    _ => "feed server: its thread ended".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(s)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(1);
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(Ok(Err(e))) = self.thread.take().filter(|t| t.is_finished()).map(JoinHandle::join) {
            eprintln!("pipeline demo: feed server: {e}");
        }
    }
}

/// "native" / "generic (skb)" from `ip -d link` (in the caller's namespace), while the
/// program is attached.
fn xdp_mode(iface: &str) -> String {
    let d = run_checked(&["ip", "-d", "link", "show", "dev", iface])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if d.contains("xdpgeneric") {
        "XDP generic (skb) mode".into()
    } else if d.contains("xdpdrv") || d.contains("xdp ") || d.contains("prog/xdp") {
        "XDP native (driver) mode".into()
    } else {
        "XDP mode unknown".into()
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// One run (one command to the server) as the client saw it.
#[derive(Default)]
struct Run {
    /// The next sequence number expected: messages received in order, with the gaps.
    want: u64,
    gaps: u64,
    bad: u64,
    first_bad: Option<String>,
    bytes: u64,
    secs: f64,
    /// Server send stamp -> receipt, ns, sorted at the end of the run.
    lat: Vec<u64>,
    /// The server's "done" arrived.
    done: bool,
    /// Messages the server sent, as it counted them.
    sent: u64,
}

impl Run {
    fn clean(&self) -> bool {
        self.gaps == 0 && self.bad == 0
    }
}

/// One transport's two runs and its end.
struct Outcome {
    name: String,
    /// The connection was over AF_XDP: our TCP, whose packet counters mean something.
    xdp: bool,
    flat: Run,
    paced: Run,
    layout: String,
    wait: String,
    counters: Vec<(String, u64)>,
    reason: String,
}

impl Outcome {
    fn counter(&self, n: &str) -> u64 {
        self.counters.iter().find(|(k, _)| k == n).map(|(_, v)| *v).unwrap_or(0)
    }
    fn complete(&self, o: &Opts) -> bool {
        self.flat.want >= o.count && self.paced.want >= o.latency_count && self.flat.done && self.paced.done
    }
    fn clean(&self) -> bool {
        self.flat.clean() && self.paced.clean() && self.counter("overruns") == 0
    }
    fn msgs_per_s(&self) -> f64 {
        if self.flat.secs > 0.0 {
            self.flat.want as f64 / self.flat.secs
        } else {
            0.0
        }
    }
}

/// Ask the server for `count` messages at `rate` (0: flat out), read and check them until
/// its "done", printing progress. Stops early (the run not `done`) when interrupted or
/// past `deadline` (CLOCK_MONOTONIC ns). One clock read per message: the one the latency
/// needs also times the run and the progress lines.
fn run(
    p: &Pipeline,
    rx: &mut Receiver,
    size: usize,
    count: u64,
    rate: u64,
    deadline: u64,
    ctl: &ServerCtl,
) -> Result<Run, String> {
    p.send_text(&command(size, count, rate)).map_err(|e| format!("send the run command: {e}"))?;
    let samples = if rate > 0 { count.min(50_000_000) as usize } else { 0 };
    let mut r = Run { lat: Vec::with_capacity(samples), ..Run::default() };
    let tty = std::io::stdout().is_terminal();
    let every: u64 = if tty { 250_000_000 } else { 1_000_000_000 };
    let start = mono_ns();
    let mut next_print = start + every;
    let (mut win_start, mut win_from, mut win_lat_from) = (start, 0u64, 0usize);
    let (mut first, mut last, mut printed) = (None::<u64>, start, false);
    while !interrupted() {
        let got = rx.next_frame_timeout(Duration::from_millis(20)).map(|f| {
            let now = mono_ns();
            let p = f.payload();
            let seq = p.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            (f.opcode(), seq.map(|s| (s, exchange::check(s, size, p))), p == b"done", now, p.len())
        });
        let now = match got {
            Some((2, seq, _, now, len)) => {
                first.get_or_insert(now);
                last = now;
                r.bytes += len as u64;
                match seq {
                    Some((s, checked)) if s >= r.want => {
                        r.gaps += s - r.want;
                        r.want = s + 1;
                        match checked {
                            Ok(sent) if rate > 0 => r.lat.push(now.saturating_sub(sent)),
                            Ok(_) => {}
                            Err(e) => {
                                r.bad += 1;
                                r.first_bad.get_or_insert(e);
                            }
                        }
                    }
                    Some((s, _)) => {
                        r.bad += 1;
                        r.first_bad.get_or_insert(format!("message {s} after message {}", r.want - 1));
                    }
                    None => {
                        r.bad += 1;
                        r.first_bad.get_or_insert(format!("a {len}-byte message (no sequence number)"));
                    }
                }
                now
            }
            Some((1, _, true, _, _)) => {
                r.done = true;
                break;
            }
            Some((_, _, _, now, _)) => now,
            None => {
                if let PipelineState::Disconnected { reason } = p.state() {
                    return Err(format!("disconnected after {} messages: {}", r.want, reason.message));
                }
                mono_ns()
            }
        };
        if now >= deadline {
            break;
        }
        if now >= next_print {
            let dt = (now - win_start) as f64 / 1e9;
            let mut w: Vec<u64> = r.lat[win_lat_from..].to_vec();
            w.sort_unstable();
            let lat = if rate > 0 {
                format!("  latency p50 {:>7.1} µs  p99 {:>8.1} µs", pct(&w, 50.0), pct(&w, 99.0))
            } else {
                String::new()
            };
            let line = format!("  {:>9} messages  {:>9.0} msg/s{lat}", r.want, (r.want - win_from) as f64 / dt);
            if tty {
                print!("\r{line}");
            } else {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
            (win_start, win_from, win_lat_from, printed) = (now, r.want, r.lat.len(), true);
            next_print = now + every;
        }
    }
    if tty && printed {
        println!();
    }
    r.secs = first.map(|f| (last - f) as f64 / 1e9).unwrap_or(0.0);
    r.sent = ctl.sent.load(Ordering::Relaxed);
    r.lat.sort_unstable();
    Ok(r)
}

/// Connect one `Pipeline`, do both runs, close. Runs inside the client namespace when
/// there is a bed (the caller's thread has joined it).
fn client(name: &str, url: &str, ca: &Path, xdp: Option<&str>, o: &Opts, ctl: &ServerCtl) -> Result<Outcome, String> {
    let mut cfg = Config::new(url);
    cfg.ca_file = Some(ca.to_path_buf());
    cfg.name = Some(format!("demo{}{}", std::process::id(), if xdp.is_some() { "x" } else { "k" }));
    cfg.layout = o.layout;
    cfg.wait = o.wait;
    if let Some(iface) = xdp {
        cfg.transport = TransportKind::Xdp;
        cfg.iface = Some(iface.to_string());
    }
    let mut p = Pipeline::start(cfg).map_err(|e| format!("connect {url}: {e}"))?;
    let layout = p.layout().name().to_string();
    let wait = p.wait_kind().name().to_string();
    let name = match xdp {
        Some(iface) => format!("{name} ({})", xdp_mode(iface)),
        None => name.to_string(),
    };
    println!("connected: layout {layout}, wait {wait}");
    let mut rx = p.receiver().ok_or("no receiver")?;
    let deadline = mono_ns().saturating_add((o.duration * 1e9) as u64);
    println!("  flat out: {} messages of {} B", o.count, o.size);
    let flat = run(&p, &mut rx, o.size, o.count, 0, deadline, ctl);
    let paced = match &flat {
        Ok(f) if f.done => {
            println!("  paced: {} messages of {} B at {} msg/s", o.latency_count, o.size, o.rate);
            run(&p, &mut rx, o.size, o.latency_count, o.rate, deadline, ctl)
        }
        _ => Ok(Run::default()),
    };
    if !matches!((&flat, &paced), (Ok(f), Ok(r)) if f.done && r.done) {
        // The server is still streaming a run and reads our close only after it.
        ctl.end_runs.store(true, Ordering::SeqCst);
    }
    let _ = p.close(1000, if interrupted() { "interrupted" } else { "demo done" });
    drop(rx);
    p.wait_disconnected(Duration::from_secs(5));
    let reason = match p.state() {
        PipelineState::Disconnected { reason } => reason.message,
        s => format!("{s:?}"),
    };
    let counters = p.stats().iter().map(|(n, v)| (n.to_string(), v)).collect();
    p.stop();
    Ok(Outcome { name, xdp: xdp.is_some(), flat: flat?, paced: paced?, layout, wait, counters, reason })
}

pub fn main(args: &[String]) -> ExitCode {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    signals::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    match demo(&o) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(signals::exit_status()),
        Err(e) => {
            eprintln!("pipeline demo: {e}");
            ExitCode::from(signals::exit_status())
        }
    }
}

fn demo(o: &Opts) -> Result<bool, String> {
    // (AF_XDP, kernel over the veth) as root; else the kernel transport on loopback.
    let (xdp, kernel, bed) = match (o.transport, missing_privileges()) {
        (Want::Xdp, Some(r)) => return Err(format!("--transport xdp: {r}")),
        (Want::Xdp, None) => (true, false, true),
        (Want::Kernel, missing) => (false, true, missing.is_none()),
        (Want::Auto, None) => (true, true, true),
        (Want::Auto, Some(r)) => {
            println!("AF_XDP needs root with CAP_NET_ADMIN/CAP_NET_RAW/CAP_BPF/CAP_IPC_LOCK ({r}): running the demo over the kernel transport on loopback only");
            (false, true, false)
        }
    };
    let tmp = TempDir(std::env::temp_dir().join(format!("pipeline-demo-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).map_err(|e| format!("{}: {e}", tmp.0.display()))?;
    // A fresh test CA; the "veth" leaf is valid for the bed's server address.
    let certs = certs::generate(&tmp.0)?;
    let ca = certs.ca();
    let (cert, key) = certs.leaf(if bed { "veth" } else { "server" });
    let what = format!(
        "{} + {} messages of {} B (flat out, then paced at {} msg/s); TLS 1.3 AES-128-GCM, fresh test CA",
        o.count, o.latency_count, o.size, o.rate
    );
    let mut outcomes = Vec::new();
    // A transport that fails is said and the next one still runs: its summary is worth
    // having.
    let mut failed = false;
    let mut keep = |name: &str, r: Result<Outcome, String>| match r {
        Ok(r) => outcomes.push(r),
        Err(e) => {
            eprintln!("pipeline demo: {name}: {e}");
            failed = true;
        }
    };
    if bed {
        let bed = TestBed::create(&format!("pld{}", std::process::id()), 1)?;
        if interrupted() {
            return Err("interrupted".into());
        }
        let ip = bed.server_ip;
        let l = bed
            .try_in_ns(Side::Server, move || TcpListener::bind((ip, 0)))?
            .map_err(|e| format!("feed server: bind {ip}: {e}"))?;
        let server = Server::start(l, cert, key, |f| bed.spawn_in(Side::Server, f))?;
        println!("feed server (Rust): wss://{ip}:{}/ in netns {}, {what}", server.port, bed.server_ns);
        let url = format!("wss://{ip}:{}/", server.port);
        for (on, iface, name) in [(xdp, Some(bed.client_if.as_str()), "AF_XDP"), (kernel, None, "kernel TCP")] {
            if !on || interrupted() {
                continue;
            }
            println!();
            match iface {
                Some(i) => println!("client: AF_XDP on {i} (netns {}, veth pair, tx checksum offload off on both ends)", bed.client_ns),
                None => println!("client: kernel TCP from netns {} over the same veth pair", bed.client_ns),
            }
            let (url, ca, ctl) = (&url, &ca, &*server.ctl);
            let name = if iface.is_some() { name.to_string() } else { format!("{name} (veth)") };
            let label = name.clone();
            keep(&label, bed.try_in_ns(Side::Client, move || client(&name, url, ca, iface, o, ctl)).and_then(|r| r));
        }
        drop(server);
        drop(bed);
    } else {
        let l = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("feed server: bind 127.0.0.1: {e}"))?;
        let server = Server::start(l, cert, key, std::thread::spawn)?;
        println!("feed server (Rust): wss://127.0.0.1:{}/, {what}", server.port);
        println!("client: kernel TCP transport on loopback");
        let url = format!("wss://127.0.0.1:{}/", server.port);
        keep("kernel TCP (loopback)", client("kernel TCP (loopback)", &url, &ca, None, o, &server.ctl));
    }
    let mut ok = !failed;
    for r in &outcomes {
        ok &= summary(r, o);
    }
    if let [x, k] = &outcomes[..] {
        side_by_side(x, k);
    }
    let series: Vec<(String, Curve)> = outcomes
        .iter()
        .filter(|r| !r.paced.lat.is_empty())
        .map(|r| (r.name.clone(), Curve::from_sorted_ns(&r.paced.lat)))
        .collect();
    if series.is_empty() {
        eprintln!("pipeline demo: no latency samples, so no latency picture");
        return Ok(false);
    }
    let svg = latency_svg(
        &series,
        &format!("pipeline demo: {} B at {} msg/s", o.size, o.rate),
        "one-way latency, server send stamp to client receipt",
    );
    let shown = std::path::absolute(&o.plot).unwrap_or_else(|_| o.plot.clone());
    match std::fs::write(&o.plot, svg) {
        Ok(()) => println!("\nlatency picture: {}", shown.display()),
        Err(e) => {
            eprintln!("pipeline demo: cannot write the latency picture {}: {e}", shown.display());
            ok = false;
        }
    }
    Ok(ok && !interrupted())
}

/// One transport's summary; whether it got every message, in order and intact.
fn summary(r: &Outcome, o: &Opts) -> bool {
    let complete = r.complete(o);
    let clean = r.clean();
    let short = |run: &Run, want: u64| {
        if run.want >= want && run.done {
            String::new()
        } else if interrupted() {
            " (interrupted)".into()
        } else {
            " (INCOMPLETE)".into()
        }
    };
    println!();
    println!("summary: {}", r.name);
    println!("  layout / wait   {} / {}", r.layout, r.wait);
    println!(
        "  messages        {} of {} flat out{}, {} of {} paced{} (server sent {} + {})",
        r.flat.want,
        o.count,
        short(&r.flat, o.count),
        r.paced.want,
        o.latency_count,
        short(&r.paced, o.latency_count),
        r.flat.sent,
        r.paced.sent
    );
    println!(
        "  rate            {:.0} msg/s, {:.1} MB/s flat out ({} messages in {:.3} s)",
        r.msgs_per_s(),
        if r.flat.secs > 0.0 { r.flat.bytes as f64 / r.flat.secs / 1e6 } else { 0.0 },
        r.flat.want,
        r.flat.secs
    );
    let l = &r.paced.lat;
    println!(
        "  latency (µs)    p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} samples at {} msg/s, server send stamp -> client receipt)",
        pct(l, 50.0),
        pct(l, 99.0),
        pct(l, 99.9),
        pct(l, 100.0),
        l.len(),
        o.rate
    );
    if clean {
        println!("  drops/gaps      none (every message in sequence, every payload checked)");
    } else {
        println!(
            "  drops/gaps      {} missing, {} corrupt or out of order, {} ring overruns{}",
            r.flat.gaps + r.paced.gaps,
            r.flat.bad + r.paced.bad,
            r.counter("overruns"),
            r.flat.first_bad.as_ref().or(r.paced.first_bad.as_ref()).map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
    }
    if r.xdp {
        println!(
            "  network         {} packets, {} retransmits, {} dropped packets (recovered by TCP)",
            r.counter("rx_packets"),
            r.counter("retransmits"),
            r.counter("drops")
        );
    }
    println!("  closed          {}", r.reason);
    complete && clean
}

/// The two transports' figures in columns, with XDP/kernel per figure.
fn side_by_side(x: &Outcome, k: &Outcome) {
    let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
    println!();
    println!("side by side (the same server and feed, one transport after the other; the box may be shared: compare the ratios)");
    println!("  {:<22} {:>12} {:>12} {:>11}", "", "AF_XDP", "kernel TCP", "XDP/kernel");
    let row = |what: &str, a: f64, b: f64, prec: usize| {
        println!("  {what:<22} {a:>12.prec$} {b:>12.prec$} {:>11}", ratio(a, b));
    };
    row("msgs/s flat out", x.msgs_per_s(), k.msgs_per_s(), 0);
    for (label, p) in [("latency p50 (µs)", 50.0), ("latency p99 (µs)", 99.0), ("latency p99.9 (µs)", 99.9)] {
        row(label, pct(&x.paced.lat, p), pct(&k.paced.lat, p), 1);
    }
    println!("  (msgs/s: higher is better; latency: lower is better)");
}

//! `pipeline demo`: a local exchange simulator (tools/exchange_sim.py, TLS with a fresh
//! test CA) streamed to the pipeline. As root: the simulator runs in its own network
//! namespace behind a veth pair and the pipeline connects over AF_XDP from a second
//! namespace. Otherwise (said in one line): the kernel transport on loopback.
//!
//! Everything it creates (namespaces, veth, temporary directory, the simulator) is
//! removed at the end, also on failure and on Ctrl-C (SIGINT/SIGTERM end the run
//! through the normal path so the guards' `Drop` run).

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Pipeline, PipelineState, TransportKind};
use pipeline::runner::{Layout, WaitKind};

use super::usage_error;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

const SERVER_IP: &str = "10.201.1.1";
const CLIENT_IP: &str = "10.201.1.2";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Auto,
    Xdp,
    Kernel,
}

struct Opts {
    count: u64,
    rate: f64,
    transport: Want,
    duration: f64,
    sizes: String,
    layout: Option<Layout>,
    wait: Option<WaitKind>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        count: 100_000,
        rate: 6_000.0,
        transport: Want::Auto,
        duration: 30.0,
        sizes: "mixed".into(),
        layout: None,
        wait: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--count" => {
                o.count = val("--count")?
                    .parse()
                    .map_err(|_| "--count needs a number")?
            }
            "--rate" => {
                o.rate = val("--rate")?
                    .parse()
                    .map_err(|_| "--rate needs messages per second (0 = flat out)")?
            }
            "--duration" => {
                o.duration = val("--duration")?
                    .parse()
                    .map_err(|_| "--duration needs seconds")?;
                if o.duration.is_nan() || o.duration <= 0.0 {
                    return Err("--duration must be > 0".into());
                }
            }
            "--sizes" => o.sizes = val("--sizes")?,
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
            s => return Err(format!("demo: unknown argument {s:?}")),
        }
    }
    if o.count == 0 {
        return Err("--count must be > 0".into());
    }
    Ok(o)
}

/// The repository (for tools/): $PIPELINE_REPO, an ancestor of the executable holding
/// tools/exchange_sim.py, or the source tree this binary was built from.
fn repo() -> PathBuf {
    if let Some(r) = std::env::var_os("PIPELINE_REPO") {
        return r.into();
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("tools/exchange_sim.py").exists() {
                return dir.to_path_buf();
            }
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> String {
    if let Ok(p) = std::env::var("PL_PYTHON") {
        return p;
    }
    let venv = "/opt/libpipeline-venv/bin/python";
    if Path::new(venv).exists() {
        venv.into()
    } else {
        "python3".into()
    }
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why AF_XDP + namespaces cannot be used here, or None.
fn no_xdp_reason() -> Option<String> {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!("not root (euid {euid})"));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    let need = [
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
        (14, "CAP_IPC_LOCK"),
        (21, "CAP_SYS_ADMIN"),
        (39, "CAP_BPF"),
    ];
    let missing: Vec<&str> = need
        .iter()
        .filter(|(b, _)| eff & (1u64 << b) == 0)
        .map(|(_, n)| *n)
        .collect();
    if !missing.is_empty() {
        return Some(format!("missing {}", missing.join(", ")));
    }
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

/// Temporary directory, removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two namespaces and a veth pair (like tests/common/netns.rs); deleted on drop.
struct Bed {
    client_ns: String,
    server_ns: String,
    client_if: String,
}

impl Bed {
    fn new() -> Result<Bed, String> {
        reap_stale();
        let base = format!("pld{}", std::process::id());
        let bed = Bed {
            client_ns: format!("{base}c"),
            server_ns: format!("{base}s"),
            client_if: format!("{base}c"),
        };
        let server_if = format!("{base}s");
        // From here on Drop removes whatever exists.
        run(&["ip", "netns", "add", &bed.client_ns])?;
        run(&["ip", "netns", "add", &bed.server_ns])?;
        run(&[
            "ip",
            "link",
            "add",
            &bed.client_if,
            "netns",
            &bed.client_ns,
            "type",
            "veth",
            "peer",
            "name",
            &server_if,
            "netns",
            &bed.server_ns,
        ])?;
        for (ns, ifn, ip) in [
            (&bed.client_ns, &bed.client_if, CLIENT_IP),
            (&bed.server_ns, &server_if, SERVER_IP),
        ] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                ifn,
            ])?;
            run(&["ip", "-n", ns, "link", "set", "dev", ifn, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "dev", "lo", "up"])?;
            // Checksum offload off (else the kernel peer's frames reach the XSK with
            // partial checksums); segmentation offloads off: no oversized frames.
            if run(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", ifn, "tx", "off", "tso", "off", "gso",
                "off", "gro", "off",
            ])
            .is_err()
            {
                run(&["ip", "netns", "exec", ns, "ethtool", "-K", ifn, "tx", "off"])?;
            }
        }
        Ok(bed)
    }
}

/// "native" / "generic (skb)" from `ip -d link` (in the caller's namespace), while the
/// program is attached.
fn xdp_mode(iface: &str) -> String {
    let d = run(&["ip", "-d", "link", "show", "dev", iface]).unwrap_or_default();
    if d.contains("xdpgeneric") {
        "XDP generic (skb) mode".into()
    } else if d.contains("xdpdrv") || d.contains("xdp ") || d.contains("prog/xdp") {
        "XDP native (driver) mode".into()
    } else {
        "XDP mode unknown".into()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Namespaces `pld<pid>c|s` of demos that were killed before cleaning up.
fn reap_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("pld") else {
            continue;
        };
        let pid = rest.trim_end_matches(['c', 's']);
        if rest.len() == pid.len() + 1
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The simulator process; killed on drop (it also exits when its stdin closes).
struct Sim {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    port: u16,
}

impl Sim {
    fn start(
        ns: Option<&str>,
        host: &str,
        cert: &Path,
        key: &Path,
        o: &Opts,
    ) -> Result<Sim, String> {
        let script = repo().join("tools/exchange_sim.py");
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &python()]);
                c
            }
            None => Command::new(python()),
        };
        c.arg(&script)
            .args([
                "--host",
                host,
                "--port",
                "0",
                "--once",
                "--exit-on-stdin-eof",
                "--cert",
            ])
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args([
                "--count",
                &o.count.to_string(),
                "--rate",
                &o.rate.to_string(),
                "--sizes",
                &o.sizes,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| format!("start {}: {e}", script.display()))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let port = line
            .split("\"port\":")
            .nth(1)
            .and_then(|p| p.trim().trim_end_matches('}').trim().parse().ok());
        match port {
            Some(port) => Ok(Sim {
                child,
                stdout: Some(out),
                port,
            }),
            None => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                Err(format!(
                    "the exchange simulator did not start: {}{}",
                    line.trim(),
                    err.trim()
                ))
            }
        }
    }

    /// Stop it and return its JSON summary line.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut rest);
        }
        let _ = self.child.wait();
        rest.lines()
            .rev()
            .find(|l| l.contains("\"summary\""))
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn certs(dir: &Path, xdp: bool) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let sh = repo().join("tools/testcerts.sh");
    let d = dir.to_str().ok_or("non-UTF-8 temp dir")?;
    run(&["sh", sh.to_str().ok_or("non-UTF-8 path")?, d])?;
    if !xdp {
        return Ok((
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        ));
    }
    // testcerts.sh names localhost/127.0.0.1: add a leaf for the veth address.
    let (key, csr, pem, ext) = (
        dir.join("feed.key"),
        dir.join("feed.csr"),
        dir.join("feed.pem"),
        dir.join("feed.ext"),
    );
    std::fs::write(
        &ext,
        format!("subjectAltName=IP:{SERVER_IP},DNS:feed.test\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .map_err(|e| e.to_string())?;
    let s = |p: &PathBuf| p.to_str().unwrap_or_default().to_string();
    run(&[
        "openssl",
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &s(&key),
    ])?;
    run(&[
        "openssl",
        "req",
        "-new",
        "-key",
        &s(&key),
        "-subj",
        "/CN=feed",
        "-out",
        &s(&csr),
    ])?;
    run(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &format!("{d}/ca.pem"),
        "-CAkey",
        &format!("{d}/ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&pem),
    ])?;
    Ok((dir.join("ca.pem"), pem, key))
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = t[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// What a message of exchange_sim.py says: (seq, send time or 0, intact).
fn check(p: &[u8], want: u64) -> (u64, u64, bool) {
    if p.len() < 24 {
        let ok = p
            .iter()
            .enumerate()
            .all(|(i, &b)| b == ((want.wrapping_mul(131) + i as u64) & 0xFF) as u8);
        return (want, 0, ok);
    }
    let seq = u64::from_le_bytes(p[0..8].try_into().unwrap());
    let sent = u64::from_le_bytes(p[8..16].try_into().unwrap());
    let size = u32::from_le_bytes(p[16..20].try_into().unwrap());
    let crc = u32::from_le_bytes(p[20..24].try_into().unwrap());
    (
        seq,
        sent,
        size as usize == p.len() && crc32(&p[24..]) == crc,
    )
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

struct Outcome {
    received: u64,
    gaps: u64,
    bad: u64,
    secs: f64,
    bytes: u64,
    lat: Vec<u64>,
    layout: String,
    wait: String,
    counters: Vec<(String, u64)>,
    reason: String,
}

/// Connect, read and check the feed, print progress. Runs inside the client namespace
/// for XDP (the caller's thread has joined it).
fn client(
    url: &str,
    ca: &Path,
    xdp: Option<&str>,
    o: &Opts,
    mode: &mut String,
) -> Result<Outcome, String> {
    let mut cfg = Config::new(url);
    cfg.ca_file = Some(ca.to_path_buf());
    cfg.name = Some(format!("demo{}", std::process::id()));
    cfg.layout = o.layout;
    cfg.wait = o.wait;
    if let Some(iface) = xdp {
        cfg.transport = TransportKind::Xdp;
        cfg.iface = Some(iface.to_string());
    }
    let mut p = Pipeline::start(cfg).map_err(|e| format!("connect {url}: {e}"))?;
    let layout = p.layout().name().to_string();
    let wait = p.wait_kind().name().to_string();
    if let Some(iface) = xdp {
        *mode = xdp_mode(iface);
    }
    println!(
        "connected: layout {layout}, wait {wait}; streaming {} messages",
        o.count
    );
    let mut rx = p.receiver().ok_or("no receiver")?;
    let tty = std::io::stdout().is_terminal();
    let mut lat = Vec::with_capacity(o.count.min(50_000_000) as usize);
    let (mut want, mut gaps, mut bad, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs_f64(o.duration);
    let every = Duration::from_millis(if tty { 250 } else { 1000 });
    let mut next_print = Instant::now() + every;
    let (mut win_n, mut win_start, mut win_lat_from) = (0u64, Instant::now(), 0usize);
    let mut closing = false;
    loop {
        if (interrupted() || Instant::now() > deadline) && !closing {
            closing = true;
            let _ = p.close(
                1000,
                if interrupted() {
                    "interrupted"
                } else {
                    "duration reached"
                },
            );
        }
        let got = rx.next_frame_timeout(Duration::from_millis(20)).map(|f| {
            let now = now_ns();
            (f.opcode(), check(f.payload(), want), f.payload().len(), now)
        });
        match got {
            Some((2, (seq, sent, ok), len, now)) if !closing => {
                let t = Instant::now();
                first.get_or_insert(t);
                last = t;
                if seq > want {
                    gaps += seq - want;
                } else if seq < want || !ok {
                    bad += 1;
                }
                want = seq + 1;
                bytes += len as u64;
                win_n += 1;
                if sent != 0 && now >= sent {
                    lat.push(now - sent);
                }
                if want >= o.count {
                    closing = true;
                    let _ = p.close(1000, "demo done");
                }
            }
            Some(_) => {}
            None => {
                if let PipelineState::Disconnected { .. } = p.state() {
                    break;
                }
            }
        }
        if Instant::now() >= next_print && !closing {
            let dt = win_start.elapsed().as_secs_f64();
            let mut w: Vec<u64> = lat[win_lat_from..].to_vec();
            w.sort_unstable();
            let line = format!(
                "  {:>9} messages  {:>9.0} msg/s  latency p50 {:>7.1} µs  p99 {:>8.1} µs",
                want,
                win_n as f64 / dt,
                pct(&w, 50.0),
                pct(&w, 99.0)
            );
            if tty {
                print!("\r{line}");
            } else {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
            (win_n, win_start, win_lat_from) = (0, Instant::now(), lat.len());
            next_print = Instant::now() + every;
        }
    }
    if tty {
        println!();
    }
    drop(rx);
    let reason = match p.state() {
        PipelineState::Disconnected { reason } => reason.message,
        _ => String::new(),
    };
    let counters = p.stats().iter().map(|(n, v)| (n.to_string(), v)).collect();
    p.stop();
    let secs = first
        .map(|f| last.duration_since(f).as_secs_f64())
        .unwrap_or(0.0);
    lat.sort_unstable();
    Ok(Outcome {
        received: want,
        gaps,
        bad,
        secs,
        bytes,
        lat,
        layout,
        wait,
        counters,
        reason,
    })
}

/// Run `f` on a thread that has joined network namespace `ns`.
fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> Result<R, String> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            // SAFETY: setns on a valid namespace fd; affects only this thread (and the
            // threads it creates).
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err("client thread panicked".into()))
    })
}

pub fn main(args: &[String]) -> ExitCode {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    // SAFETY: handlers that only store to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_signal as *const () as libc::sighandler_t);
    }
    match demo(&o) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(if interrupted() { 130 } else { 1 }),
        Err(e) => {
            eprintln!("pipeline demo: {e}");
            ExitCode::from(if interrupted() { 130 } else { 1 })
        }
    }
}

fn demo(o: &Opts) -> Result<bool, String> {
    let xdp = match o.transport {
        Want::Kernel => false,
        Want::Xdp => {
            if let Some(r) = no_xdp_reason() {
                return Err(format!("--transport xdp: {r}"));
            }
            true
        }
        Want::Auto => match no_xdp_reason() {
            None => true,
            Some(r) => {
                println!("AF_XDP needs root with CAP_NET_ADMIN/CAP_NET_RAW/CAP_BPF/CAP_IPC_LOCK ({r}): running the same demo over the kernel transport on loopback");
                false
            }
        },
    };
    let tmp = TempDir(std::env::temp_dir().join(format!("pipeline-demo-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).map_err(|e| format!("{}: {e}", tmp.0.display()))?;
    let (ca, cert, key) = certs(&tmp.0, xdp)?;
    let rate = if o.rate > 0.0 {
        format!("{:.0} msg/s", o.rate)
    } else {
        "flat out".into()
    };
    let outcome;
    let sim_summary;
    let mut mode = String::new();
    if xdp {
        let bed = Bed::new()?;
        if interrupted() {
            return Err("interrupted".into());
        }
        let sim = Sim::start(Some(&bed.server_ns), SERVER_IP, &cert, &key, o)?;
        println!(
            "exchange simulator: wss://{SERVER_IP}:{}/ in netns {} ({} messages, sizes {}, {rate}; TLS, fresh test CA)",
            sim.port, bed.server_ns, o.count, o.sizes
        );
        println!(
            "client: AF_XDP on {} (netns {}, veth pair, tx checksum offload off on both ends)",
            bed.client_if, bed.client_ns
        );
        let url = format!("wss://{SERVER_IP}:{}/", sim.port);
        let iface = bed.client_if.clone();
        let mode_ref = &mut mode;
        outcome = in_netns(&bed.client_ns, move || {
            client(&url, &ca, Some(&iface), o, mode_ref)
        })??;
        sim_summary = sim.finish();
        drop(bed);
    } else {
        let sim = Sim::start(None, "127.0.0.1", &cert, &key, o)?;
        println!(
            "exchange simulator: wss://127.0.0.1:{}/ ({} messages, sizes {}, {rate}; TLS, fresh test CA)",
            sim.port, o.count, o.sizes
        );
        println!("client: kernel TCP transport on loopback");
        let url = format!("wss://127.0.0.1:{}/", sim.port);
        outcome = client(&url, &ca, None, o, &mut mode)?;
        sim_summary = sim.finish();
    }
    let r = &outcome;
    let c = |n: &str| {
        r.counters
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    let sent = sim_summary
        .split("\"sent\": ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse::<u64>().ok());
    let transport = if xdp {
        format!(
            "AF_XDP ({})",
            if mode.is_empty() {
                "unknown mode"
            } else {
                &mode
            }
        )
    } else {
        "kernel TCP (loopback)".into()
    };
    let complete = r.received >= o.count;
    let clean = r.gaps == 0 && r.bad == 0 && c("overruns") == 0;
    println!();
    println!("summary");
    println!("  transport       {transport}");
    println!("  layout / wait   {} / {}", r.layout, r.wait);
    println!(
        "  messages        {} of {}{}",
        r.received,
        o.count,
        if complete {
            ""
        } else if interrupted() {
            " (interrupted)"
        } else {
            " (INCOMPLETE)"
        }
    );
    if let Some(s) = sent {
        println!("  server sent     {s}");
    }
    println!(
        "  rate            {:.0} msg/s, {:.1} MB/s over {:.2} s",
        if r.secs > 0.0 {
            r.received as f64 / r.secs
        } else {
            0.0
        },
        if r.secs > 0.0 {
            r.bytes as f64 / r.secs / 1e6
        } else {
            0.0
        },
        r.secs
    );
    println!(
        "  latency (µs)    p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} samples, server send -> client read)",
        pct(&r.lat, 50.0),
        pct(&r.lat, 99.0),
        pct(&r.lat, 99.9),
        pct(&r.lat, 100.0),
        r.lat.len()
    );
    if clean {
        println!("  drops/gaps      none (every message in sequence, every crc32 checked)");
    } else {
        println!(
            "  drops/gaps      {} missing, {} corrupt or out of order, {} ring overruns",
            r.gaps,
            r.bad,
            c("overruns")
        );
    }
    println!(
        "  network         {} packets, {} retransmits, {} dropped packets (recovered by TCP)",
        c("rx_packets"),
        c("retransmits"),
        c("drops")
    );
    println!("  closed          {}", r.reason);
    Ok(complete && clean)
}

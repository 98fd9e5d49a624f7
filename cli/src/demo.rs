//! `pipeline demo`: a local exchange simulator (tools/exchange_sim.py, TLS with a fresh
//! test CA) streamed to the pipeline. As root: the simulator runs in its own network
//! namespace behind a veth pair and the pipeline connects over AF_XDP from a second
//! namespace. Otherwise (said in one line): the kernel transport on loopback.
//!
//! The namespaces and veth pair, the simulator and the certificates come from
//! `pipeline-netbed`, the same code the tests and the veth benchmark use.
//!
//! Everything it creates (namespaces, veth, temporary directory, the simulator) is
//! removed at the end, also on failure and on Ctrl-C (SIGINT/SIGTERM end the run
//! through the normal path so the guards' `Drop` run).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Pipeline, PipelineState, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline_netbed::exsim::ExSim;
use pipeline_netbed::feed::{crc32, mono_ns};
use pipeline_netbed::netns::{missing_privileges, Side, TestBed};
use pipeline_netbed::process::run_checked;
use pipeline_netbed::{certs, python};

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
        let mut val = |name: &str| option_value(&mut it, name);
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

/// Temporary directory, removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
            let now = mono_ns();
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
    let xdp = match o.transport {
        Want::Kernel => false,
        Want::Xdp => {
            if let Some(r) = missing_privileges() {
                return Err(format!("--transport xdp: {r}"));
            }
            true
        }
        Want::Auto => match missing_privileges() {
            None => true,
            Some(r) => {
                println!("AF_XDP needs root with CAP_NET_ADMIN/CAP_NET_RAW/CAP_BPF/CAP_IPC_LOCK ({r}): running the same demo over the kernel transport on loopback");
                false
            }
        },
    };
    let tmp = TempDir(std::env::temp_dir().join(format!("pipeline-demo-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).map_err(|e| format!("{}: {e}", tmp.0.display()))?;
    // A fresh test CA; the "veth" leaf is valid for the bed's server address.
    let certs = certs::generate(&tmp.0)?;
    let ca = certs.ca();
    let (cert, key) = certs.leaf(if xdp { "veth" } else { "server" });
    let py = python::find().unwrap_or_else(|_| "python3".into());
    let sim_args = [
        "--once".to_string(),
        "--count".into(),
        o.count.to_string(),
        "--rate".into(),
        o.rate.to_string(),
        "--sizes".into(),
        o.sizes.clone(),
    ];
    let sim_args: Vec<&str> = sim_args.iter().map(String::as_str).collect();
    let rate = if o.rate > 0.0 {
        format!("{:.0} msg/s", o.rate)
    } else {
        "flat out".into()
    };
    let outcome;
    let sim_summary;
    let mut mode = String::new();
    if xdp {
        let bed = TestBed::create(&format!("pld{}", std::process::id()), 1)?;
        if interrupted() {
            return Err("interrupted".into());
        }
        let server_ip = bed.server_ip.to_string();
        let sim = ExSim::spawn(&py, Some(&bed.server_ns), &server_ip, &cert, &key, &sim_args)?;
        println!(
            "exchange simulator: wss://{server_ip}:{}/ in netns {} ({} messages, sizes {}, {rate}; TLS, fresh test CA)",
            sim.port, bed.server_ns, o.count, o.sizes
        );
        println!(
            "client: AF_XDP on {} (netns {}, veth pair, tx checksum offload off on both ends)",
            bed.client_if, bed.client_ns
        );
        let url = format!("wss://{server_ip}:{}/", sim.port);
        let iface = bed.client_if.clone();
        let mode_ref = &mut mode;
        outcome = bed.try_in_ns(Side::Client, move || {
            client(&url, &ca, Some(&iface), o, mode_ref)
        })??;
        sim_summary = sim.finish();
        drop(bed);
    } else {
        let sim = ExSim::spawn(&py, None, "127.0.0.1", &cert, &key, &sim_args)?;
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

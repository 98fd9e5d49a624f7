//! `pipeline stat [NAME] [--once] [--json | --prometheus] [--plot FILE] [--window MS]`:
//! a pipeline's counters, rates, stage latencies and liveness, live; with no NAME the
//! list of pipelines (running or left behind by a dead process).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipeline::latency::HistogramSnapshot;
use pipeline::runner::{Layout, WaitKind};
use pipeline::shm::ShmDir;
use pipeline::stats::{DisconnectReason, Latency, State, StatsRegion};

use crate::usage_error;

pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

fn value(counters: &[(String, u64)], name: &str) -> u64 {
    counters
        .iter()
        .find(|c| c.0 == name)
        .map(|c| c.1)
        .unwrap_or(0)
}

/// One JSON object: name, state, layout, wait, reason (the message), reason_kind (the
/// [`pipeline::stats::DisconnectKind`] name, "" while not disconnected), close_code
/// (the kind's close code, 0 if none), counters.
pub fn json(name: &str, counters: &[(String, u64)], reason: Option<&DisconnectReason>) -> String {
    let mut s = format!(
        "{{\"name\":\"{}\",\"state\":\"{}\",\"layout\":\"{}\",\"wait\":\"{}\",\"reason\":\"{}\",\"reason_kind\":\"{}\",\"close_code\":{},\"counters\":{{",
        esc(name),
        State::name(value(counters, "state")),
        Layout::from_code(value(counters, "layout")),
        WaitKind::from_code(value(counters, "wait")),
        esc(reason.map_or("", |r| r.message.as_str())),
        reason.map_or("", |r| r.kind.name()),
        reason.map_or(0, |r| r.kind.close_code()),
    );
    for (i, (n, v)) in counters.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"{}\":{v}", esc(n)));
    }
    s.push_str("}}");
    s
}

fn table(name: &str, counters: &[(String, u64)], reason: Option<&DisconnectReason>) -> String {
    let mut s = format!(
        "pipeline {name}: {} (layout {}, wait {})\n",
        State::name(value(counters, "state")),
        Layout::from_code(value(counters, "layout")),
        WaitKind::from_code(value(counters, "wait"))
    );
    if let Some(r) = reason {
        s.push_str(&format!("reason: {} [{}]\n", r.message, r.kind.name()));
    }
    // Feed counters only where a feed wrote them; the lag histogram on one line.
    let feed = counters.iter().any(|(n, v)| n.starts_with("feed_") && *v != 0);
    for (n, v) in counters {
        if matches!(n.as_str(), "state" | "layout" | "wait")
            || (n.starts_with("feed_") && !feed)
            || n.starts_with("feed_lag_b")
        {
            continue;
        }
        s.push_str(&format!("  {n:<24} {v:>16}\n"));
    }
    if feed {
        let mut h = String::new();
        for (n, v) in counters {
            if let Some(b) = n.strip_prefix("feed_lag_b").and_then(|b| b.parse::<u32>().ok()) {
                if *v != 0 {
                    let edge = match b {
                        0 => "<1us".to_string(),
                        23.. => ">=4.2s".to_string(),
                        b => format!("<{}us", 1u64 << b),
                    };
                    h.push_str(&format!(" {edge}:{v}"));
                }
            }
        }
        if !h.is_empty() {
            s.push_str(&format!("  feed lag behind winner  {h}\n"));
        }
    }
    s
}

/// Counters shown as rates (per second between two samples).
const RATED: [&str; 6] = ["messages", "app_frames", "payload_bytes", "rx_packets", "rx_bytes", "inbox_bytes"];

/// Quantiles shown per stage: (label, quantile).
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// Is the pipeline's owner process alive, and how long since a stage loop's heartbeat?
struct Liveness {
    owner_pid: u32,
    alive: bool,
    heartbeat_age_s: f64,
}

fn liveness(stats: &StatsRegion) -> Liveness {
    let pid = match stats.owner_pid() {
        0 => stats.creator_pid(),
        p => p,
    };
    // SAFETY: signal 0 only checks that the process exists (EPERM: it does, not ours).
    let alive = pid != 0
        && (unsafe { libc::kill(pid as i32, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
    // A zombie (killed, not yet reaped by its parent) is dead too.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false);
    let hb = stats.last_heartbeat();
    let now = pipeline::stage::now_ns();
    Liveness {
        owner_pid: pid,
        alive: alive && !zombie,
        heartbeat_age_s: if hb == 0 { f64::NAN } else { now.saturating_sub(hb) as f64 / 1e9 },
    }
}

/// Everything one report shows.
struct Report {
    name: String,
    counters: Vec<(String, u64)>,
    reason: Option<DisconnectReason>,
    live: Liveness,
    /// Per second, over the window between two samples (empty with one sample).
    rates: Vec<(&'static str, f64)>,
    hists: Vec<(Latency, HistogramSnapshot)>,
}

fn sample(name: &str, stats: &StatsRegion, prev: Option<&(Instant, Vec<(String, u64)>)>) -> (Report, (Instant, Vec<(String, u64)>)) {
    let counters = stats.snapshot();
    let at = Instant::now();
    let rates = match prev {
        Some((t0, c0)) => {
            let dt = at.duration_since(*t0).as_secs_f64().max(1e-6);
            RATED.iter().map(|n| (*n, value(&counters, n).saturating_sub(value(c0, n)) as f64 / dt)).collect()
        }
        None => Vec::new(),
    };
    let reason = (stats.state_code() >= 3).then(|| stats.reason());
    let hists = Latency::ALL.iter().filter_map(|&h| Some((h, stats.histogram(h)?))).collect();
    let r = Report { name: name.to_string(), counters: counters.clone(), reason, live: liveness(stats), rates, hists };
    (r, (at, counters))
}

/// "connected", or "dead (owner pid N gone; last heartbeat 3.2 s ago)".
fn status(r: &Report) -> String {
    if r.live.alive {
        return State::name(value(&r.counters, "state")).to_string();
    }
    format!("dead (owner pid {} gone; last heartbeat {})", r.live.owner_pid, ago(r.live.heartbeat_age_s))
}

fn ago(s: f64) -> String {
    if s.is_nan() {
        "unknown".into()
    } else if s < 120.0 {
        format!("{s:.1} s ago")
    } else if s < 7200.0 {
        format!("{:.1} min ago", s / 60.0)
    } else {
        format!("{:.1} h ago", s / 3600.0)
    }
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn report_table(r: &Report) -> String {
    let mut s = table(&r.name, &r.counters, r.reason.as_ref());
    if !r.live.alive {
        // The first line says what the region says; the owner is gone all the same.
        s = s.replacen(
            &format!("pipeline {}: ", r.name),
            &format!("pipeline {}: {} — region says ", r.name, status(r)),
            1,
        );
    }
    if !r.rates.is_empty() {
        s.push_str("rates (per second):");
        for (n, v) in &r.rates {
            s.push_str(&format!(" {n} {v:.0}"));
        }
        s.push('\n');
    }
    if r.hists.iter().any(|(_, h)| h.count > 0) {
        s.push_str(&format!("  {:<22} {:>10}", "latency (us)", "count"));
        for (l, _) in QUANTILES {
            s.push_str(&format!(" {l:>9}"));
        }
        s.push_str(&format!(" {:>9}\n", "max"));
        // The server's one-way row only where a server stamp is configured (counted).
        for (h, snap) in r.hists.iter().filter(|(h, snap)| Latency::STAGES.contains(h) || snap.count > 0) {
            s.push_str(&format!("  {:<22} {:>10}", h.name(), snap.count));
            for (_, q) in QUANTILES {
                s.push_str(&format!(" {:>9}", us(snap.quantile(q))));
            }
            s.push_str(&format!(" {:>9}\n", us(snap.max_ns)));
        }
    }
    s
}

fn report_json(r: &Report) -> String {
    let mut s = json(&r.name, &r.counters, r.reason.as_ref());
    s.pop(); // the closing brace: more fields follow
    s.push_str(&format!(
        ",\"alive\":{},\"owner_pid\":{},\"heartbeat_age_s\":{},\"rates\":{{",
        r.live.alive,
        r.live.owner_pid,
        if r.live.heartbeat_age_s.is_nan() { "null".to_string() } else { format!("{:.3}", r.live.heartbeat_age_s) }
    ));
    for (i, (n, v)) in r.rates.iter().enumerate() {
        s.push_str(&format!("{}\"{n}\":{v:.3}", if i > 0 { "," } else { "" }));
    }
    s.push_str("},\"latency_ns\":{");
    for (i, (h, snap)) in r.hists.iter().enumerate() {
        s.push_str(&format!(
            "{}\"{}\":{{\"count\":{},\"mean\":{:.1}",
            if i > 0 { "," } else { "" },
            h.name(),
            snap.count,
            snap.mean_ns()
        ));
        for (l, q) in QUANTILES {
            s.push_str(&format!(",\"{}\":{}", l.replace('.', ""), snap.quantile(q)));
        }
        s.push_str(&format!(",\"max\":{}}}", snap.max_ns));
    }
    s.push_str("}}");
    s
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Text exposition format 0.0.4 (node_exporter's textfile collector reads it).
fn report_prometheus(r: &Report) -> String {
    let p = label(&r.name);
    let mut s = String::new();
    s.push_str("# HELP pipeline_up 1 while the pipeline's owner process is alive.\n# TYPE pipeline_up gauge\n");
    s.push_str(&format!("pipeline_up{{pipeline=\"{p}\"}} {}\n", r.live.alive as u8));
    if !r.live.heartbeat_age_s.is_nan() {
        s.push_str("# HELP pipeline_heartbeat_age_seconds Time since a stage loop last ran.\n");
        s.push_str("# TYPE pipeline_heartbeat_age_seconds gauge\n");
        s.push_str(&format!("pipeline_heartbeat_age_seconds{{pipeline=\"{p}\"}} {:.3}\n", r.live.heartbeat_age_s));
    }
    for (n, v) in &r.counters {
        let m: String = n.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        s.push_str(&format!("# TYPE pipeline_{m} gauge\npipeline_{m}{{pipeline=\"{p}\"}} {v}\n"));
    }
    for (n, v) in &r.rates {
        s.push_str(&format!("# TYPE pipeline_{n}_per_second gauge\npipeline_{n}_per_second{{pipeline=\"{p}\"}} {v:.3}\n"));
    }
    if !r.hists.is_empty() {
        s.push_str("# HELP pipeline_latency_seconds Per-stage message latency (arrival, decrypted, parsed, delivered).\n");
        s.push_str("# TYPE pipeline_latency_seconds summary\n");
        for (h, snap) in &r.hists {
            let l = format!("pipeline=\"{p}\",stage=\"{}\"", h.name());
            for (_, q) in QUANTILES.iter().chain(&[("max", 1.0)]) {
                s.push_str(&format!("pipeline_latency_seconds{{{l},quantile=\"{q}\"}} {:e}\n", snap.quantile(*q) as f64 / 1e9));
            }
            s.push_str(&format!("pipeline_latency_seconds_sum{{{l}}} {:e}\n", snap.sum_ns as f64 / 1e9));
            s.push_str(&format!("pipeline_latency_seconds_count{{{l}}} {}\n", snap.count));
        }
    }
    s
}

/// The per-stage latency distribution as SVG (the shared picture of benches and demo).
fn plot(r: &Report, path: &str) -> std::io::Result<()> {
    use pipeline_netbed::plot::{latency_svg, Curve};
    let series: Vec<(String, Curve)> = r
        .hists
        .iter()
        .filter(|(_, h)| h.count > 0)
        .map(|(h, snap)| {
            let top = (snap.count as f64).log10().max(1.0);
            (h.name().to_string(), Curve::from_quantiles(top, |q| snap.quantile(q) as f64))
        })
        .collect();
    let title = format!("pipeline {}: per-stage latency", r.name);
    std::fs::write(path, latency_svg(&series, &title, "percentile"))
}

fn list() -> ExitCode {
    let names = ShmDir::list();
    if names.is_empty() {
        println!("no pipelines");
        return ExitCode::SUCCESS;
    }
    println!("{:<32} {:<12} {:>8} {:>12}  status", "NAME", "STATE", "PID", "MESSAGES");
    for n in names {
        match ShmDir::open(&n).and_then(|d| StatsRegion::attach(&d)) {
            Ok(st) => {
                let (r, _) = sample(&n, &st, None);
                let state = State::name(value(&r.counters, "state"));
                let st = if r.live.alive { "alive".to_string() } else { status(&r) };
                println!("{n:<32} {state:<12} {:>8} {:>12}  {st}", r.live.owner_pid, value(&r.counters, "messages"));
            }
            Err(e) => println!("{n:<32} {:<12} {:>8} {:>12}  unreadable: {e}", "?", "?", "?"),
        }
    }
    ExitCode::SUCCESS
}

pub fn main(args: &[String]) -> ExitCode {
    let (mut name, mut once, mut as_json, mut prom, mut plot_to) = (None, false, false, false, None);
    let mut window = Duration::from_millis(250);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--once" => once = true,
            "--json" => as_json = true,
            "--prometheus" => prom = true,
            "--plot" => match it.next() {
                Some(f) => plot_to = Some(f.clone()),
                None => return usage_error("--plot needs a FILE"),
            },
            "--window" => match it.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(ms) if ms > 0 => window = Duration::from_millis(ms),
                _ => return usage_error("--window needs milliseconds (> 0)"),
            },
            s if s.starts_with('-') => return usage_error(&format!("unknown option {s:?}")),
            s => {
                if name.replace(s.to_string()).is_some() {
                    return usage_error("stat takes one NAME");
                }
            }
        }
    }
    if as_json && prom {
        return usage_error("--json and --prometheus are exclusive");
    }
    let Some(name) = name else {
        return list();
    };
    let stats = match ShmDir::open(&name).and_then(|d| StatsRegion::attach(&d)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(1);
        }
    };
    // One-shot outputs (--once, --prometheus, --plot) sample twice, `window` apart, for
    // the rates; a dead pipeline's counters do not move, so once is enough.
    let one_shot = once || prom || plot_to.is_some();
    let mut prev = None;
    if one_shot && liveness(&stats).alive {
        prev = Some(sample(&name, &stats, None).1);
        std::thread::sleep(window);
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        let (r, next) = sample(&name, &stats, prev.as_ref());
        prev = Some(next);
        if let Some(f) = &plot_to {
            if let Err(e) = plot(&r, f) {
                eprintln!("pipeline: writing {f}: {e}");
                return ExitCode::from(1);
            }
            if !as_json && !prom && !once {
                return ExitCode::SUCCESS;
            }
        }
        let text = if prom {
            report_prometheus(&r)
        } else if as_json {
            report_json(&r)
        } else {
            report_table(&r)
        };
        let mut out = std::io::stdout().lock();
        if tty && !one_shot && !as_json {
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        if writeln!(out, "{}", text.trim_end()).is_err() {
            return ExitCode::SUCCESS;
        }
        let _ = out.flush();
        drop(out);
        if one_shot {
            return ExitCode::SUCCESS;
        }
        if !r.live.alive {
            eprintln!("pipeline: {name}: {}", status(&r));
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs(1));
        if !ShmDir::path_for(&name).exists() {
            eprintln!("pipeline: {name} has stopped");
            return ExitCode::SUCCESS;
        }
    }
}

//! `pipeline connect`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pipeline::pipeline::{Config, DisconnectKind, DisconnectReason, Pipeline, PipelineState, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stage::{encode_server_frame, Delivery, SyntheticScript};

use crate::signals::{self, interrupted};
use crate::stat::json;
use crate::{option_value, usage_error};

pub(crate) struct Opts {
    pub(crate) cfg: Config,
    /// Further URLs: legs of one feed with the first.
    pub(crate) more_urls: Vec<String>,
    pub(crate) feed: crate::feed::FeedOpts,
    pub(crate) sends: Vec<String>,
    pub(crate) count: Option<u64>,
    pub(crate) stats_json: Option<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut it = args.iter();
    let mut url = None;
    let mut cfg = Config::new("");
    let mut o = Opts {
        cfg: Config::new(""),
        more_urls: Vec::new(),
        feed: Default::default(),
        sends: Vec::new(),
        count: None,
        stats_json: None,
    };
    let mut synthetic: Option<usize> = None;
    let (mut ping_ns, mut live_ns): (Option<u64>, Option<u64>) = (None, None);
    while let Some(a) = it.next() {
        let mut val = |name: &str| option_value(&mut it, name);
        match a.as_str() {
            "--transport" => {
                cfg.transport = match val("--transport")?.as_str() {
                    "kernel" => TransportKind::Kernel,
                    "xdp" => TransportKind::Xdp,
                    t => return Err(format!("--transport {t:?}: expected xdp or kernel")),
                }
            }
            "--iface" => cfg.iface = Some(val("--iface")?),
            "--layout" => {
                cfg.layout = Some(Layout::parse(&val("--layout")?).map_err(|e| e.to_string())?)
            }
            "--wait" => {
                cfg.wait = Some(WaitKind::parse(&val("--wait")?).map_err(|e| e.to_string())?)
            }
            "--cores" => {
                let v = val("--cores")?;
                cfg.cores = v
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .parse::<usize>()
                            .map_err(|_| format!("--cores {v:?}: expected a list like 2,3,4"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--ca-file" => cfg.ca_file = Some(val("--ca-file")?.into()),
            "--insecure" => cfg.insecure = true,
            "--send" => o.sends.push(val("--send")?),
            "--reconnect" => cfg.reconnect = pipeline::feed::ReconnectPolicy::standard(),
            "--subscribe" => cfg
                .subscriptions
                .push(pipeline::pipeline::Subscription::Text(val("--subscribe")?)),
            "--ping-interval" | "--liveness-timeout" => {
                let name = a.as_str();
                let v: f64 = val(name)?.parse().map_err(|_| format!("{name} needs seconds"))?;
                if !(v > 0.0 && v < 86_400.0) {
                    return Err(format!("{name} must be between 0 and 86400 seconds"));
                }
                let ns = (v * 1e9) as u64;
                if name == "--ping-interval" {
                    ping_ns = Some(ns);
                } else {
                    live_ns = Some(ns);
                }
            }
            "--count" => {
                o.count = Some(
                    val("--count")?
                        .parse()
                        .map_err(|_| "--count needs a number".to_string())?,
                )
            }
            "--timeout" => {
                let s: f64 = val("--timeout")?
                    .parse()
                    .map_err(|_| "--timeout needs seconds".to_string())?;
                if !(s > 0.0 && s < 86_400.0) {
                    return Err("--timeout must be between 0 and 86400 seconds".into());
                }
                cfg.timeout = Duration::from_secs_f64(s);
            }
            "--close-timeout" => {
                let s: f64 = val("--close-timeout")?
                    .parse()
                    .map_err(|_| "--close-timeout needs seconds".to_string())?;
                if !(s > 0.0 && s < 86_400.0) {
                    return Err("--close-timeout must be between 0 and 86400 seconds".into());
                }
                cfg.close_timeout = Duration::from_secs_f64(s);
            }
            "--stats-json" => o.stats_json = Some(val("--stats-json")?),
            "--dedup-json-field" => o.feed.field = Some(val("--dedup-json-field")?),
            "--contiguous" => o.feed.contiguous = true,
            "--hold-ms" => {
                let v: f64 = val("--hold-ms")?.parse().map_err(|_| "--hold-ms needs milliseconds".to_string())?;
                if !(v >= 0.0 && v <= 60_000.0) {
                    return Err("--hold-ms must be between 0 and 60000".into());
                }
                o.feed.hold_ms = Some(v);
            }
            "--rotate-every" => {
                let v: f64 = val("--rotate-every")?.parse().map_err(|_| "--rotate-every needs seconds".to_string())?;
                if !(v >= 0.1 && v < 86_400.0) {
                    return Err("--rotate-every must be between 0.1 and 86400 seconds".into());
                }
                o.feed.rotate_every = Some(v);
            }
            "--name" => cfg.name = Some(val("--name")?),
            "--frames" => cfg.delivery = Delivery::Frames,
            "--deflate" => {
                cfg.deflate.get_or_insert_with(Default::default);
            }
            "--deflate-client-bits" | "--deflate-server-bits" | "--deflate-threshold" => {
                let v = val(a)?;
                let d = cfg.deflate.get_or_insert_with(Default::default);
                let n: usize = v.parse().map_err(|_| format!("{a} needs a number"))?;
                match a.as_str() {
                    "--deflate-threshold" => d.threshold = n,
                    _ => {
                        let b = u8::try_from(n).ok().filter(|b| (8..=15).contains(b)).ok_or(format!("{a} {v}: expected 8..15"))?;
                        if a == "--deflate-client-bits" {
                            d.client_max_window_bits = b;
                        } else {
                            d.server_max_window_bits = b;
                        }
                    }
                }
            }
            "--deflate-client-no-context-takeover" => {
                cfg.deflate.get_or_insert_with(Default::default).client_no_context_takeover = true;
            }
            "--deflate-server-no-context-takeover" => {
                cfg.deflate.get_or_insert_with(Default::default).server_no_context_takeover = true;
            }
            "--external-consumer" => cfg.external_consumer = true,
            "--synthetic" => {
                synthetic = Some(
                    val("--synthetic")?
                        .parse()
                        .map_err(|_| "--synthetic needs a number".to_string())?,
                )
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s => {
                if url.is_none() {
                    url = Some(s.to_string());
                } else {
                    o.more_urls.push(s.to_string());
                }
            }
        }
    }
    cfg.url = url.ok_or("connect needs a URL")?;
    if !o.more_urls.is_empty() && o.feed.field.is_none() {
        return Err("several URLs are legs of one feed and need a key to arbitrate on: --dedup-json-field NAME".into());
    }
    if o.feed.field.is_none() && (o.feed.contiguous || o.feed.hold_ms.is_some()) {
        return Err("--contiguous and --hold-ms go with --dedup-json-field NAME".into());
    }
    if let Some(n) = synthetic {
        let mut data = Vec::new();
        for i in 0..n {
            encode_server_frame(
                &mut data,
                1,
                true,
                format!("synthetic message {i}").as_bytes(),
            );
        }
        cfg.transport = TransportKind::Synthetic(SyntheticScript {
            data: Arc::new(data),
            chunk: 1400,
            ..Default::default()
        });
    }
    if ping_ns.is_some() || live_ns.is_some() {
        // One given: the other from it (timeout = 3 intervals; interval = timeout / 3).
        let (i, t) = match (ping_ns, live_ns) {
            (Some(i), Some(t)) => (i, t),
            (Some(i), None) => (i, i * 3),
            (None, Some(t)) => (t / 3, t),
            _ => unreachable!(),
        };
        cfg.liveness = Some(
            pipeline::feed::LivenessConfig::new(i, t)
                .map_err(|e| format!("--ping-interval/--liveness-timeout: {e}"))?,
        );
    }
    o.cfg = cfg;
    Ok(o)
}

pub(crate) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn write_stats(p: &Pipeline, path: &Option<String>) {
    if let Some(path) = path {
        let counters: Vec<(String, u64)> =
            p.stats().iter().map(|(n, v)| (n.to_string(), v)).collect();
        let reason = match p.state() {
            PipelineState::Disconnected { reason } => Some(reason),
            _ => None,
        };
        let text = json(p.name(), &counters, reason.as_ref());
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("pipeline: cannot write {path}: {e}");
        }
    }
}

/// A server close with 1000 (or our own completed close) is success.
fn clean(reason: &DisconnectReason) -> bool {
    matches!(
        reason.kind,
        DisconnectKind::CloseCompleted { .. } | DisconnectKind::ServerClosed { code: 1000, .. }
    )
}

pub fn main(args: &[String]) -> ExitCode {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    signals::install(&[libc::SIGINT, libc::SIGTERM]);
    if o.feed.wanted() || !o.more_urls.is_empty() {
        return crate::feed::main(o);
    }
    let mut p = match Pipeline::start(o.cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(1);
        }
    };
    if p.stats_region().get(pipeline::stats::Counter::Reconnects) == 0 {
        // Events, one line each on stderr (stdout stays one line per message).
        let stats = p.stats_region().clone();
        p.on_state_change(Box::new(move |st| match st {
            PipelineState::Reconnecting { attempt, cause } => eprintln!(
                "pipeline: reconnecting: attempt {attempt} after {} ({})",
                cause.name(),
                stats.reason().message
            ),
            PipelineState::Connected => eprintln!(
                "pipeline: connected: generation {}",
                stats.get(pipeline::stats::Counter::Generation)
            ),
            _ => {}
        }));
    }
    for s in &o.sends {
        if let Err(e) = p.send_text(s) {
            eprintln!("pipeline: send: {e}");
            return ExitCode::from(1);
        }
    }
    let mut rx = match p.receiver() {
        Some(r) => r,
        None => {
            // --external-consumer: another process reads the frames; wait for the end.
            eprintln!(
                "pipeline {}: frames are left to an external consumer (pipeline_consumer.h)",
                p.name()
            );
            while !p.wait_disconnected(Duration::from_millis(100)) {
                if interrupted() {
                    let _ = p.close(1001, "interrupted");
                    p.wait_disconnected(Duration::from_secs(5));
                    break;
                }
            }
            let reason = match p.state() {
                PipelineState::Disconnected { reason } => reason,
                // Interrupted and the close not finished within 5 s.
                _ => DisconnectReason::new(DisconnectKind::Unknown, "close not finished"),
            };
            write_stats(&p, &o.stats_json);
            p.stop();
            if clean(&reason) {
                return ExitCode::SUCCESS;
            }
            eprintln!("pipeline: {reason}");
            return ExitCode::from(1);
        }
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out.lock());
    let mut n = 0u64;
    let mut closing = false;
    let code = loop {
        if interrupted() && !closing {
            closing = true;
            let _ = p.close(1001, "interrupted");
        }
        let got = rx.next_frame_timeout(Duration::from_millis(50)).map(|f| {
            if f.opcode() == 1 || (f.opcode() == 0 && f.text().is_some()) {
                f.text().unwrap_or("").replace('\n', "\\n")
            } else {
                hex(f.payload())
            }
        });
        match got {
            Some(_) if o.count.is_some_and(|c| n >= c) => {} // closing: drop the rest
            Some(line) => {
                if writeln!(out, "{line}").is_err() {
                    break 1; // stdout closed
                }
                n += 1;
                if o.count == Some(n) && !closing {
                    closing = true;
                    let _ = out.flush();
                    if let Err(e) = p.close(1000, "done") {
                        eprintln!("pipeline: close: {e}");
                        break 1;
                    }
                }
            }
            None => {
                let _ = out.flush();
                if let PipelineState::Disconnected { reason } = p.state() {
                    if rx.next_frame_timeout(Duration::from_millis(20)).is_some() {
                        // Unreachable in practice (drained above); never drop a message silently.
                        eprintln!("pipeline: message arrived after the disconnect");
                    }
                    if clean(&reason) && (o.count.is_none() || o.count <= Some(n)) {
                        break 0;
                    }
                    if interrupted() {
                        break 130;
                    }
                    eprintln!("pipeline: {reason}");
                    break 1;
                }
            }
        }
    };
    let _ = out.flush();
    drop(rx);
    write_stats(&p, &o.stats_json);
    p.stop();
    ExitCode::from(code)
}

//! `pipeline stat NAME [--once] [--json]`: a running pipeline's counters, live.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use pipeline::runner::{Layout, WaitKind};
use pipeline::shm::ShmDir;
use pipeline::stats::{DisconnectReason, State, StatsRegion};

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

pub fn main(args: &[String]) -> ExitCode {
    let (mut name, mut once, mut as_json) = (None, false, false);
    for a in args {
        match a.as_str() {
            "--once" => once = true,
            "--json" => as_json = true,
            s if s.starts_with('-') => return usage_error(&format!("unknown option {s:?}")),
            s => {
                if name.replace(s.to_string()).is_some() {
                    return usage_error("stat takes one NAME");
                }
            }
        }
    }
    let Some(name) = name else {
        return usage_error("stat needs a pipeline NAME");
    };
    let stats = match ShmDir::open(&name).and_then(|d| StatsRegion::attach(&d)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(1);
        }
    };
    let tty = std::io::stdout().is_terminal();
    loop {
        let counters = stats.snapshot();
        let reason = (stats.state_code() >= 3).then(|| stats.reason());
        let text = if as_json {
            json(&name, &counters, reason.as_ref())
        } else {
            table(&name, &counters, reason.as_ref())
        };
        let mut out = std::io::stdout().lock();
        if tty && !once && !as_json {
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        if writeln!(out, "{text}").is_err() {
            return ExitCode::SUCCESS;
        }
        let _ = out.flush();
        drop(out);
        if once {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs(1));
        if !ShmDir::path_for(&name).exists() {
            eprintln!("pipeline: {name} has stopped");
            return ExitCode::SUCCESS;
        }
    }
}

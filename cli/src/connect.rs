//! `pipeline connect`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pipeline::pipeline::{
    Config, DisconnectKind, DisconnectReason, Pipeline, PipelineState, Sender, Timestamps, TransportKind,
};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stage::{encode_server_frame, Delivery, SyntheticScript};

use crate::signals::{self, interrupted};
use crate::stat::{esc, json};
use pipeline::ws::sha1::base64;
use crate::{option_value, usage_error};

pub(crate) struct Opts {
    pub(crate) cfg: Config,
    /// Further URLs: legs of one feed with the first.
    pub(crate) more_urls: Vec<String>,
    pub(crate) feed: crate::feed::FeedOpts,
    pub(crate) sends: Vec<String>,
    pub(crate) count: Option<u64>,
    pub(crate) stats_json: Option<String>,
    pub(crate) printer: Printer,
    /// `-v`: the upgrade and the events on stderr.
    pub(crate) verbose: bool,
    /// `--no-stdin`: do not read stdin at all.
    pub(crate) no_stdin: bool,
    /// `-E/--exit-on-eof`: the end of stdin closes the connection (1000).
    pub(crate) exit_on_eof: bool,
}

/// Exit statuses of `pipeline connect` (listed in `--help` and docs/cli.md).
pub(crate) mod status {
    pub const OK: u8 = 0;
    /// Anything not below: shared memory, a capability, a stage that died, stdout closed.
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    /// TCP/IP: refused, unreachable, timed out, reset, the stream ended without a close.
    pub const CONNECT: u8 = 3;
    pub const TLS: u8 = 4;
    /// The upgrade failed, or the server broke the protocol (we closed 1002/1007/1009).
    pub const PROTOCOL: u8 = 5;
    /// The server closed with a code other than 1000 (or before `--count` was
    /// reached), or did not finish the close handshake we started.
    pub const SERVER_CLOSED: u8 = 6;
}

/// The exit status for how a connection ended (`count_short`: it ended cleanly before
/// `--count` messages).
fn status_of(kind: &DisconnectKind, count_short: bool) -> u8 {
    match kind {
        DisconnectKind::CloseCompleted { .. } | DisconnectKind::ServerClosed { code: 1000, .. } => {
            if count_short {
                status::SERVER_CLOSED
            } else {
                status::OK
            }
        }
        DisconnectKind::ServerClosed { .. }
        | DisconnectKind::CloseTimeout
        | DisconnectKind::ClosedAfterOurClose => status::SERVER_CLOSED,
        DisconnectKind::Network
        | DisconnectKind::TcpReset
        | DisconnectKind::TcpClosed
        | DisconnectKind::Timeout => status::CONNECT,
        DisconnectKind::Tls => status::TLS,
        DisconnectKind::UpgradeFailed | DisconnectKind::ProtocolError { .. } => status::PROTOCOL,
        _ => status::OTHER,
    }
}

/// The status for a failed `Pipeline::start`: a configuration the library refused is a
/// usage error like a bad option.
fn status_of_start(e: &pipeline::Error) -> u8 {
    match e {
        pipeline::Error::Config(_) => status::USAGE,
        e => status_of(&DisconnectKind::from_error(e), false),
    }
}

/// The reason for people; a 1009 also says whose limit it was and what raises ours.
fn explain(reason: &DisconnectReason, max_message: usize) -> String {
    match reason.kind {
        DisconnectKind::ProtocolError { close_code: 1009 } => format!(
            "{reason}: the limit is {max_message} bytes (--max-message); raise it with --max-message BYTES"
        ),
        DisconnectKind::ServerClosed { code: 1009, .. } => format!(
            "{reason}: the server's limit on what we send was exceeded (ours, for what we receive, is {max_message} bytes: --max-message)"
        ),
        _ => reason.message.clone(),
    }
}

/// How binary messages are written to stdout (text messages are always one line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum BinaryMode {
    /// The payload's bytes as they are, nothing added (websocat's way).
    Raw,
    /// Lower-case hex and a newline (the default: safe on a terminal, one line each).
    #[default]
    Hex,
    /// Standard base64 with padding and a newline.
    Base64,
}

/// Formats received messages for stdout: `--binary`, `--jsonl`.
#[derive(Default)]
pub(crate) struct Printer {
    pub(crate) binary: BinaryMode,
    pub(crate) jsonl: bool,
}

impl Printer {
    /// Append `payload`'s rendering to `line` (cleared first). `ts`: the library's
    /// per-stage stamps of the message, where it has them (`--jsonl` prints them).
    pub(crate) fn render(&self, line: &mut Vec<u8>, opcode: u8, fin: bool, payload: &[u8], ts: Option<Timestamps>) {
        line.clear();
        // A continuation (`--frames`) that is valid UTF-8 prints as text, as before.
        let text = (opcode == 1 || opcode == 0).then(|| std::str::from_utf8(payload).ok()).flatten();
        if self.jsonl {
            let ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            // Wall clock minus CLOCK_MONOTONIC, read together (before the payload's
            // encoding, which takes a while for a large message).
            let off = ns.wrapping_sub(pipeline::stage::now_ns());
            let body = match (opcode, text) {
                (1, Some(t)) => format!("\"text\":\"{}\"", esc(t)),
                _ => format!("\"base64\":\"{}\"", base64(payload)),
            };
            // "ts": the library's stamps along the stages (Unix ns; see docs/cli.md),
            // then when the CLI took it.
            let stages = ts.map_or(String::new(), |t| {
                format!(
                    "\"arrival_unix_ns\":{},\"decrypted_unix_ns\":{},\"parsed_unix_ns\":{},\"delivered_unix_ns\":{},",
                    t.arrival_ns.wrapping_add(off),
                    t.decrypted_ns.wrapping_add(off),
                    t.parsed_ns.wrapping_add(off),
                    t.delivered_ns.wrapping_add(off)
                )
            });
            let _ = writeln!(
                line,
                "{{\"opcode\":{opcode},\"fin\":{fin},\"length\":{},{body},\"ts\":{{{stages}\"cli_recv_unix_ns\":{ns}}}}}",
                payload.len()
            );
            return;
        }
        match (text, self.binary) {
            (Some(t), _) if opcode == 1 || opcode == 0 => {
                line.extend_from_slice(t.replace('\n', "\\n").as_bytes());
                line.push(b'\n');
            }
            (_, BinaryMode::Raw) => line.extend_from_slice(payload),
            (_, BinaryMode::Hex) => {
                line.extend_from_slice(hex(payload).as_bytes());
                line.push(b'\n');
            }
            (_, BinaryMode::Base64) => {
                line.extend_from_slice(base64(payload).as_bytes());
                line.push(b'\n');
            }
        }
    }
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
        printer: Printer::default(),
        verbose: false,
        no_stdin: false,
        exit_on_eof: false,
    };
    let mut binary_given = false;
    let mut max_message: Option<usize> = None;
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
                if !(0.0..=60_000.0).contains(&v) {
                    return Err("--hold-ms must be between 0 and 60000".into());
                }
                o.feed.hold_ms = Some(v);
            }
            "--rotate-every" => {
                let v: f64 = val("--rotate-every")?.parse().map_err(|_| "--rotate-every needs seconds".to_string())?;
                if !(0.1..86_400.0).contains(&v) {
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
            "-H" | "--header" => {
                let v = val(a)?;
                let (n, value) = v
                    .split_once(':')
                    .filter(|(n, _)| !n.trim().is_empty())
                    .ok_or(format!("{a} {v:?}: expected 'Name: value'"))?;
                cfg.headers.push((n.trim().to_string(), value.trim().to_string()));
            }
            "--protocol" => cfg.subprotocols.push(val("--protocol")?),
            "-v" | "--verbose" => o.verbose = true,
            "--binary" => {
                binary_given = true;
                o.printer.binary = match val("--binary")?.as_str() {
                    "raw" => BinaryMode::Raw,
                    "hex" => BinaryMode::Hex,
                    "base64" => BinaryMode::Base64,
                    b => return Err(format!("--binary {b:?}: expected raw, hex or base64")),
                }
            }
            "--jsonl" => o.printer.jsonl = true,
            "--max-message" => {
                let v = val("--max-message")?;
                let n: usize = v.parse().map_err(|_| format!("--max-message {v:?}: expected a number of bytes"))?;
                if !(1..=MAX_MESSAGE_LIMIT).contains(&n) {
                    return Err(format!("--max-message {n}: expected 1..{MAX_MESSAGE_LIMIT} bytes"));
                }
                max_message = Some(n);
            }
            "--no-stdin" => o.no_stdin = true,
            "-E" | "--exit-on-eof" => o.exit_on_eof = true,
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
    if binary_given && o.printer.jsonl {
        return Err("--binary does not apply with --jsonl (binary payloads are base64 there)".into());
    }
    if o.no_stdin && o.exit_on_eof {
        return Err("--exit-on-eof needs stdin (it was turned off by --no-stdin)".into());
    }
    if let Some(n) = max_message {
        // Config's advice: an inbox of twice the limit or more, so fragment headers and
        // control frames inside a message of the limit still fit.
        cfg.max_message = n;
        cfg.inbox_size = cfg.inbox_size.max((2 * n).next_power_of_two());
    }
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

/// `--max-message` at most 256 MiB: its MSG_INBOX (twice that) lives in /dev/shm.
const MAX_MESSAGE_LIMIT: usize = 256 << 20;

fn hex(b: &[u8]) -> String {
    // A table, not format! per byte: a 1 MiB message is 2 MiB of output.
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Write the final counters' JSON: `-` to stdout (after every message: the caller has
/// flushed and released its stdout writer), any other value to that file.
pub(crate) fn emit_stats(path: &str, text: String) {
    if path == "-" {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
            eprintln!("pipeline: cannot write the stats to stdout");
        }
    } else if let Err(e) = std::fs::write(path, text + "\n") {
        eprintln!("pipeline: cannot write {path}: {e}");
    }
}

fn write_stats(p: &Pipeline, path: &Option<String>) {
    if let Some(path) = path {
        let counters: Vec<(String, u64)> =
            p.stats().iter().map(|(n, v)| (n.to_string(), v)).collect();
        let reason = match p.state() {
            PipelineState::Disconnected { reason } => Some(reason),
            _ => None,
        };
        emit_stats(path, json(p.name(), &counters, reason.as_ref()));
    }
}

/// Whether to read stdin: not with `--no-stdin`, and not from a terminal we are in
/// the background of (reading it would stop the whole job with SIGTTIN). A closed or
/// empty stdin (`< /dev/null`, cron) is read and simply ends.
fn stdin_wanted(no_stdin: bool) -> bool {
    if no_stdin {
        return false;
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return true;
    }
    // SAFETY: plain queries of our process group and the terminal's; no memory passed.
    unsafe { libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// Send each line of stdin as a text message, from a thread of its own (a blocking
/// read must not hold up the receive loop). The line end (`\n` or `\r\n`) is not
/// sent; an empty line is an empty message. At the end of stdin: a 1000 close with
/// `exit_on_eof`, else nothing (the connection stays up, as with `--send`).
fn spawn_stdin(tx: Sender, exit_on_eof: bool) {
    let run = move || {
        let mut input = std::io::stdin().lock();
        let mut line = Vec::new();
        let mut n = 0u64;
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break, // end of input (an unreadable stdin ends too)
                Ok(_) => {}
            }
            n += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            let Ok(text) = std::str::from_utf8(&line) else {
                eprintln!("pipeline: stdin line {n} is not UTF-8: not sent (a text message must be UTF-8)");
                continue;
            };
            loop {
                match tx.send_text(text) {
                    Ok(()) => break,
                    // MSG_OUTBOX full: the transport drains it; wait, never drop a line.
                    Err(pipeline::Error::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
                    Err(pipeline::Error::Closed(_)) => return,
                    Err(e) => {
                        eprintln!("pipeline: stdin line {n} not sent: {e}");
                        break;
                    }
                }
            }
        }
        if exit_on_eof {
            // Refused only when a close is already under way: nothing to add then.
            let _ = tx.close(1000, "end of input");
        }
    };
    // Detached: a read blocked on a quiet stdin must not keep the process from exiting.
    if let Err(e) = std::thread::Builder::new().name("stdin".into()).spawn(run) {
        eprintln!("pipeline: cannot start the stdin reader: {e}");
    }
}

/// `-v`: the upgrade as it went, `>` for what we sent, `<` for what we got.
fn print_upgrade(p: &Pipeline, offered: &[String]) {
    let Some(u) = p.upgrade() else { return };
    let mut err = std::io::stderr().lock();
    for l in u.request.lines() {
        let _ = writeln!(err, "> {l}");
    }
    for l in u.response.lines() {
        let _ = writeln!(err, "< {l}");
    }
    let _ = match (&u.protocol, offered.is_empty()) {
        (Some(pr), _) => writeln!(err, "pipeline: subprotocol: {pr}"),
        (None, false) => writeln!(err, "pipeline: subprotocol: none (the server chose none of {})", offered.join(", ")),
        (None, true) => Ok(()),
    };
}

pub fn main(args: &[String]) -> ExitCode {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    signals::install(&[libc::SIGINT, libc::SIGTERM]);
    if o.feed.wanted() || !o.more_urls.is_empty() {
        if o.exit_on_eof {
            return usage_error("-E/--exit-on-eof: a feed (several URLs, --dedup-json-field, --rotate-every) does not read stdin");
        }
        return crate::feed::main(o);
    }
    let max_message = o.cfg.max_message;
    let offered = o.cfg.subprotocols.clone();
    let mut p = match Pipeline::start(o.cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(if interrupted() { signals::exit_status() } else { status_of_start(&e) });
        }
    };
    if o.verbose {
        print_upgrade(&p, &offered);
    }
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
    for s in &o.sends {
        if let Err(e) = p.send_text(s) {
            eprintln!("pipeline: send: {e}");
            return ExitCode::from(status::OTHER);
        }
    }
    if stdin_wanted(o.no_stdin) {
        spawn_stdin(p.sender(), o.exit_on_eof);
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
            if interrupted() {
                return ExitCode::from(signals::exit_status());
            }
            let code = status_of(&reason.kind, false);
            if code != status::OK {
                eprintln!("pipeline: {}", explain(&reason, max_message));
            }
            return ExitCode::from(code);
        }
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out.lock());
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut closing = false;
    let code = loop {
        if interrupted() && !closing {
            closing = true;
            let _ = p.close(1001, "interrupted");
        }
        if let Some(f) = rx.next_frame_timeout(Duration::from_millis(50)) {
            if o.count.is_some_and(|c| n >= c) {
                continue; // closing: drop the rest
            }
            if o.verbose && (f.after_reconnect() || f.after_overrun()) {
                eprintln!(
                    "pipeline: gap: {}",
                    if f.after_overrun() {
                        "MSG_INBOX was overrun: messages were lost before this one"
                    } else {
                        "first message after a reconnect: what the server sent meanwhile is not replayed"
                    }
                );
            }
            o.printer.render(&mut line, f.opcode(), f.is_final(), f.payload(), Some(f.timestamps()));
            drop(f);
            if out.write_all(&line).is_err() {
                break status::OTHER; // stdout closed
            }
            n += 1;
            if o.count == Some(n) && !closing {
                closing = true;
                let _ = out.flush();
                if let Err(e) = p.close(1000, "done") {
                    eprintln!("pipeline: close: {e}");
                    break status::OTHER;
                }
            }
            continue;
        }
        let _ = out.flush();
        let PipelineState::Disconnected { reason } = p.state() else {
            continue;
        };
        if rx.next_frame_timeout(Duration::from_millis(20)).is_some() {
            // Unreachable in practice (drained above); never drop a message silently.
            eprintln!("pipeline: message arrived after the disconnect");
        }
        if o.verbose {
            eprintln!("pipeline: disconnected: {} [{}]", reason, reason.kind.name());
        }
        if interrupted() {
            break signals::exit_status();
        }
        let short = o.count.is_some_and(|c| n < c);
        let code = status_of(&reason.kind, short);
        if short && code == status::SERVER_CLOSED {
            eprintln!("pipeline: {reason} after {n} of --count {} messages", o.count.unwrap_or(0));
        } else if code != status::OK {
            eprintln!("pipeline: {}", explain(&reason, max_message));
        }
        break code;
    };
    let _ = out.flush();
    drop(out);
    drop(rx);
    write_stats(&p, &o.stats_json);
    p.stop();
    ExitCode::from(code)
}

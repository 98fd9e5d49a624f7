//! Drives the Autobahn|Testsuite fuzzing server with `pipeline::pipeline::Pipeline` —
//! the product's own path: kernel transport (`ws://`, or `wss://` through the
//! pipeline's TLS glue), the transport / WebSocket stages run by the runner in the
//! `inline` layout with `backoff` waits, a polling [`Receiver`]. permessage-deflate
//! (RFC 7692) is offered (`Config::deflate`), so the compression cases 12.* and 13.*
//! run too; `--no-deflate` offers nothing.
//!
//! ```text
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001 \
//!     [--agent NAME] [--cases N..M] [--ca-file PEM] [--no-deflate] [--quiet]
//! ```
//!
//! `getCaseCount`, then for every case `runCase?case=n&agent=A`, echoing every message
//! back unchanged (text as text, binary as binary) until the server closes, then
//! `updateReports?agent=A`. `--cases 3..7` runs cases 3 to 7 (1-based, inclusive) of
//! the server's selection. Works with `wss://` (`--ca-file` for a self-signed cert).
//! Exit status 0 when every case ran; the verdicts are in the server's report
//! (`summarize.py`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, DeflateConfig, Pipeline, PipelineState, Receiver};
use pipeline::runner::{Layout, WaitKind};
use pipeline::Error;

struct Args {
    base: String,
    agent: String,
    cases: Option<(usize, usize)>,
    ca_file: Option<String>,
    deflate: bool,
    quiet: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: autobahn_client ws[s]://HOST:PORT [--agent NAME] [--cases N..M] [--ca-file PEM] [--no-deflate] [--quiet]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        base: String::new(),
        agent: "libpipeline".into(),
        cases: None,
        ca_file: None,
        deflate: true,
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--agent" => a.agent = it.next().unwrap_or_else(|| usage()),
            "--ca-file" => a.ca_file = Some(it.next().unwrap_or_else(|| usage())),
            "--no-deflate" => a.deflate = false,
            "--quiet" | "-q" => a.quiet = true,
            "--cases" => {
                let v = it.next().unwrap_or_else(|| usage());
                let (lo, hi) = match v.split_once("..") {
                    Some((l, h)) => (l.parse().ok(), h.parse().ok()),
                    None => (v.parse().ok(), v.parse().ok()),
                };
                match (lo, hi) {
                    (Some(l), Some(h)) if l >= 1 && l <= h => a.cases = Some((l, h)),
                    _ => usage(),
                }
            }
            "-h" | "--help" => usage(),
            _ if a.base.is_empty() && (s.starts_with("ws://") || s.starts_with("wss://")) => {
                a.base = s.trim_end_matches('/').to_string()
            }
            _ => usage(),
        }
    }
    if a.base.is_empty() {
        usage();
    }
    a
}

/// One connection's config. Autobahn's 9.* cases send messages of up to 16 MiB and
/// expect them echoed: `max_message` 16 MiB in a 32 MiB MSG_INBOX (room for fragment
/// headers and control frames), and a 64 MiB MSG_OUTBOX (a record holds up to half).
fn config(a: &Args, url: String) -> Config {
    let mut c = Config::new(&url);
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.ca_file = a.ca_file.as_ref().map(Into::into);
    c.max_message = 16 << 20;
    c.inbox_size = 32 << 20;
    c.outbox_size = 64 << 20;
    c.close_timeout = Duration::from_secs(5);
    c.quiet = true;
    if a.deflate {
        c.deflate = Some(DeflateConfig::default());
    }
    c
}

fn start(a: &Args, path: &str) -> pipeline::Result<(Pipeline, Receiver)> {
    let mut p = Pipeline::start(config(a, format!("{}{path}", a.base)))?;
    let rx = p.receiver().expect("polling delivery");
    Ok((p, rx))
}

fn reason(p: &Pipeline) -> String {
    match p.state() {
        PipelineState::Disconnected { reason } => reason.message,
        s => format!("{s:?}"),
    }
}

/// Connect to `path`, wait for one text message (getCaseCount).
fn get_text(a: &Args, path: &str) -> pipeline::Result<String> {
    let (p, mut rx) = start(a, path)?;
    let mut out = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(f) = rx.next_frame_timeout(Duration::from_secs(1)) {
            out = f.text().map(str::to_string);
        } else if p.wait_disconnected(Duration::ZERO) {
            break;
        }
    }
    out.ok_or_else(|| Error::Closed(format!("no answer on {path}: {}", reason(&p))))
}

/// Queue `send` until MSG_OUTBOX has room (the transport stage drains it meanwhile).
fn send_retrying(mut send: impl FnMut() -> pipeline::Result<()>) -> pipeline::Result<()> {
    loop {
        match send() {
            Err(Error::WouldBlock) => std::thread::sleep(Duration::from_micros(50)),
            r => return r,
        }
    }
}

/// Echo until the server closes. Returns how the case ended.
fn run_case(a: &Args, n: usize) -> String {
    let (p, mut rx) = match start(a, &format!("/runCase?case={n}&agent={}", a.agent)) {
        Ok(x) => x,
        Err(e) => return format!("connect failed: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match rx.next_frame_timeout(Duration::from_secs(1)) {
            // The payload is in place in MSG_INBOX; sending copies it into MSG_OUTBOX,
            // and dropping the frame afterwards releases it.
            Some(f) => {
                let r = match f.opcode() {
                    1 => match f.text() {
                        Some(t) => send_retrying(|| p.send_text(t)),
                        None => Err(Error::Config("text message not UTF-8".into())),
                    },
                    _ => send_retrying(|| p.send_binary(f.payload())),
                };
                if let Err(e) = r {
                    // Closing or closed meanwhile (a protocol error further on).
                    if !matches!(e, Error::Closed(_)) {
                        return format!("send error: {e}");
                    }
                }
            }
            None if p.wait_disconnected(Duration::ZERO) => return reason(&p),
            None if Instant::now() > deadline => {
                let _ = p.close(1000, "");
                p.wait_disconnected(Duration::from_secs(6));
                return "gave up after 120 s".into();
            }
            None => {}
        }
    }
}

fn main() -> ExitCode {
    let a = parse_args();
    let t0 = Instant::now();
    let count: usize = match get_text(&a, "/getCaseCount") {
        Ok(s) => match s.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("getCaseCount answered {s:?}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("getCaseCount failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (lo, hi) = a.cases.unwrap_or((1, count));
    let hi = hi.min(count);
    eprintln!(
        "autobahn_client: {count} cases on the server, running {lo}..={hi} as agent {:?} (Pipeline, inline + backoff{})",
        a.agent,
        if a.deflate { ", permessage-deflate offered" } else { "" }
    );
    for n in lo..=hi {
        let t = Instant::now();
        let how = run_case(&a, n);
        if !a.quiet {
            eprintln!("case {n:>3}/{hi}: {:>7.3} s  {how}", t.elapsed().as_secs_f64());
        }
    }
    // The server writes its report while handling this request, then closes.
    match start(&a, &format!("/updateReports?agent={}", a.agent)) {
        Ok((p, _rx)) => {
            p.wait_disconnected(Duration::from_secs(60));
        }
        Err(e) => {
            eprintln!("updateReports failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "autobahn_client: ran {} cases in {:.1} s",
        hi + 1 - lo,
        t0.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

//! Drives the Autobahn|Testsuite fuzzing server with `pipeline::pipeline::Pipeline`
//! (the product: transport, WebSocket and AppClient stages over shared memory), with
//! permessage-deflate offered, so the compression cases 12.* and 13.* run too.
//!
//! ```text
//! cargo run --release --example autobahn_pipeline -- ws://127.0.0.1:9001 \
//!     [--agent NAME] [--cases N..M] [--ca-file PEM] [--no-deflate] [--quiet]
//! ```
//!
//! `getCaseCount`, then for every case `runCase?case=n&agent=A`, echoing every message
//! back unchanged (text as text, binary as binary) until the server closes, then
//! `updateReports?agent=A`. The payload is echoed straight from MSG_INBOX (the frame
//! borrows it; sending copies it into MSG_OUTBOX). Exit status 0 when every case ran;
//! the verdicts are in the server's report (`summarize.py`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Pipeline, PipelineState};
use pipeline::runner::{Layout, WaitKind};
use pipeline::ws::DeflateConfig;

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
        "usage: autobahn_pipeline ws[s]://HOST:PORT [--agent NAME] [--cases N..M] [--ca-file PEM] [--no-deflate] [--quiet]"
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

fn config(a: &Args, path: &str) -> Config {
    let mut c = Config::new(&format!("{}{path}", a.base));
    c.ca_file = a.ca_file.as_ref().map(Into::into);
    // Autobahn's 9.* cases send up to 16 MiB messages; the inbox holds two.
    c.max_message = 16 << 20;
    c.inbox_size = 32 << 20;
    c.outbox_size = 64 << 20; // a record holds at most half the outbox
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.close_timeout = Duration::from_secs(5);
    c.quiet = true;
    if a.deflate {
        c.deflate = Some(DeflateConfig::default());
    }
    c
}

fn disconnected(p: &Pipeline) -> Option<String> {
    match p.state() {
        PipelineState::Disconnected { reason } => Some(reason),
        _ => None,
    }
}

/// Connect to `path`, wait for one text message (getCaseCount).
fn get_text(a: &Args, path: &str) -> pipeline::Result<String> {
    let mut p = Pipeline::start(config(a, path))?;
    let mut rx = p.receiver().expect("polling receiver");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(f) = rx.next_frame_timeout(Duration::from_millis(200)) {
            if let Some(t) = f.text() {
                return Ok(t.to_string());
            }
        } else if disconnected(&p).is_some() {
            break;
        }
    }
    p.stop();
    Err(pipeline::Error::Closed(format!("no answer on {path}")))
}

/// Echo until the server closes. Returns how the case ended.
fn run_case(a: &Args, n: usize) -> String {
    let mut p = match Pipeline::start(config(a, &format!("/runCase?case={n}&agent={}", a.agent))) {
        Ok(p) => p,
        Err(e) => return format!("connect failed: {e}"),
    };
    let mut rx = p.receiver().expect("polling receiver");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match rx.next_frame_timeout(Duration::from_millis(100)) {
            Some(f) => {
                let sent = loop {
                    let r = match f.opcode() {
                        1 => match f.text() {
                            Some(t) => p.send_text(t),
                            None => break Err("text that is not UTF-8 was delivered".to_string()),
                        },
                        _ => p.send_binary(f.payload()),
                    };
                    match r {
                        Ok(()) => break Ok(()),
                        Err(pipeline::Error::WouldBlock) => std::thread::yield_now(),
                        Err(e) => break Err(e.to_string()),
                    }
                    if disconnected(&p).is_some() {
                        break Ok(());
                    }
                };
                if let Err(e) = sent {
                    return format!("send error: {e}");
                }
            }
            None => {
                if let Some(why) = disconnected(&p) {
                    return why;
                }
                if Instant::now() > deadline {
                    let _ = p.close(1000, "");
                    p.wait_disconnected(Duration::from_secs(6));
                    return "gave up after 600 s".into();
                }
            }
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
        "autobahn_pipeline: {count} cases on the server, running {lo}..={hi} as agent {:?}{}",
        a.agent,
        if a.deflate { " (permessage-deflate offered)" } else { "" }
    );
    for n in lo..=hi {
        let t = Instant::now();
        let how = run_case(&a, n);
        if !a.quiet {
            eprintln!("case {n:>3}/{hi}: {:>7.3} s  {how}", t.elapsed().as_secs_f64());
        }
    }
    // The server writes its report while handling this request.
    match Pipeline::start(config(&a, &format!("/updateReports?agent={}", a.agent))) {
        Ok(p) => {
            p.wait_disconnected(Duration::from_secs(120));
        }
        Err(e) => {
            eprintln!("updateReports failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "autobahn_pipeline: ran {} cases in {:.1} s",
        hi + 1 - lo,
        t0.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

//! Drives the Autobahn|Testsuite fuzzing server with `pipeline::client::WsClient`.
//!
//! ```text
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001 \
//!     [--agent NAME] [--cases N..M] [--ca-file PEM] [--quiet]
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

use pipeline::client::{ClientConfig, Message, WsClient};
use pipeline::ws::MessageKind;

struct Args {
    base: String,
    agent: String,
    cases: Option<(usize, usize)>,
    ca_file: Option<String>,
    quiet: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: autobahn_client ws[s]://HOST:PORT [--agent NAME] [--cases N..M] [--ca-file PEM] [--quiet]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        base: String::new(),
        agent: "libpipeline".into(),
        cases: None,
        ca_file: None,
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--agent" => a.agent = it.next().unwrap_or_else(|| usage()),
            "--ca-file" => a.ca_file = Some(it.next().unwrap_or_else(|| usage())),
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

fn config(a: &Args) -> ClientConfig {
    let mut c = ClientConfig::default();
    if let Some(ca) = &a.ca_file {
        c = c.ca_file(ca);
    }
    // Autobahn's 9.* cases send up to 16 MiB messages (the default limit). Some cases
    // expect the server to close after a long wait; keep the linger short.
    c.close_timeout = Duration::from_secs(5);
    c.close_linger = Duration::from_secs(2);
    c
}

/// Connect to `path`, wait for one text message (getCaseCount).
fn get_text(base: &str, path: &str, cfg: &ClientConfig) -> pipeline::Result<String> {
    let mut ws = WsClient::connect(&format!("{base}{path}"), cfg)?;
    let mut out = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match ws.recv_timeout(Duration::from_secs(1))? {
            Some(Message::Text(t)) => out = Some(t.to_string()),
            Some(Message::Closed { .. }) => break,
            _ => {}
        }
    }
    out.ok_or_else(|| pipeline::Error::Closed(format!("no answer on {path}")))
}

/// Echo until the server closes. Returns how the case ended.
fn run_case(base: &str, n: usize, agent: &str, cfg: &ClientConfig) -> String {
    let url = format!("{base}/runCase?case={n}&agent={agent}");
    let mut ws = match WsClient::connect(&url, cfg) {
        Ok(ws) => ws,
        Err(e) => return format!("connect failed: {e}"),
    };
    // The payload is borrowed from the client's receive buffer: copy it out to send it
    // back (one reused buffer).
    let mut echo: Vec<u8> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let kind = match ws.recv_timeout(Duration::from_secs(1)) {
            Ok(Some(Message::Text(t))) => {
                echo.clear();
                echo.extend_from_slice(t.as_bytes());
                MessageKind::Text
            }
            Ok(Some(Message::Binary(b))) => {
                echo.clear();
                echo.extend_from_slice(b);
                MessageKind::Binary
            }
            Ok(Some(Message::Closed { code, reason })) => {
                return format!("closed by server {code} {reason:?}")
            }
            Ok(Some(_)) => continue, // ping (auto-answered), pong, frames
            Ok(None) => {
                if Instant::now() > deadline {
                    let _ = ws.close(1000, "");
                    return "gave up after 120 s".into();
                }
                continue;
            }
            Err(e) => return format!("error: {e}"),
        };
        if let Err(e) = ws.send_message(kind, &echo) {
            return format!("send error: {e}");
        }
    }
}

fn main() -> ExitCode {
    let a = parse_args();
    let cfg = config(&a);
    let t0 = Instant::now();
    let count: usize = match get_text(&a.base, "/getCaseCount", &cfg) {
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
        "autobahn_client: {count} cases on the server, running {lo}..={hi} as agent {:?}",
        a.agent
    );
    for n in lo..=hi {
        let t = Instant::now();
        let how = run_case(&a.base, n, &a.agent, &cfg);
        if !a.quiet {
            eprintln!(
                "case {n:>3}/{hi}: {:>7.3} s  {how}",
                t.elapsed().as_secs_f64()
            );
        }
    }
    // The server writes its report while handling this request.
    match WsClient::connect(&format!("{}/updateReports?agent={}", a.base, a.agent), &cfg) {
        Ok(mut ws) => loop {
            match ws.recv_timeout(Duration::from_secs(60)) {
                Ok(Some(Message::Closed { .. })) | Err(_) | Ok(None) => break,
                Ok(Some(_)) => {}
            }
        },
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

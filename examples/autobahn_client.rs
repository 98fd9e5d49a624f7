//! Drives the Autobahn|Testsuite fuzzing server with `pipeline::pipeline::Pipeline` —
//! the product's own path: kernel transport (`ws://`, or `wss://` through the
//! pipeline's TLS glue), the transport, WebSocket and AppClient stages run by the
//! runner in the `inline` layout (one thread), callback delivery. permessage-deflate
//! (RFC 7692) is offered (`Config::deflate`), so the compression cases 12.* and 13.*
//! run too; `--no-deflate` offers nothing.
//!
//! ```text
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001 \
//!     [--agent NAME] [--cases N..M] [--ca-file PEM] [--no-deflate]
//!     [--wait yield|backoff|spin] [--quiet]
//! ```
//!
//! `getCaseCount`, then for every case `runCase?case=n&agent=A`, echoing every message
//! back unchanged (text as text, binary as binary) until the server closes, then
//! `updateReports?agent=A`. `--cases 3..7` runs cases 3 to 7 (1-based, inclusive) of
//! the server's selection. Works with `wss://` (`--ca-file` for a self-signed cert).
//! Exit status 0 when every case ran; the verdicts are in the server's report
//! (`summarize.py`).
//!
//! Why a callback and `yield`: Autobahn's 9.*, 12.* and 13.* cases are ping-pong — the
//! server sends the next message when it has the echo of the last one, 1000 times a
//! case — so every microsecond between a message's arrival and its echo's departure
//! counts thousands of times. The echo is queued from the callback, in the same loop
//! that parsed the message and that writes it next (no hand-over to another thread);
//! the loop yields when idle instead of sleeping (a `backoff` sleep of 50 µs, and the
//! polling thread's, on each side of every echo, were ~0.1 ms per round trip). One
//! yielding loop beside the single-threaded fuzzing server fits on two cores. The
//! callback has its [`Sender`] from the start (`Pipeline::start_with_sender_callback`):
//! a message delivered while `start` is still setting up is answered at once too, so
//! an echo is never late for the close of a case that sends a bad frame behind it. An
//! echo that finds MSG_OUTBOX full is copied to a queue the main thread drains in order.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, DeflateConfig, OnMessageFallible, Pipeline, PipelineState, Receiver, Sender};
use pipeline::runner::{Layout, WaitKind};
use pipeline::Error;

struct Args {
    base: String,
    agent: String,
    cases: Option<(usize, usize)>,
    ca_file: Option<String>,
    deflate: bool,
    wait: WaitKind,
    quiet: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: autobahn_client ws[s]://HOST:PORT [--agent NAME] [--cases N..M] [--ca-file PEM] [--no-deflate] [--wait yield|backoff|spin] [--quiet]"
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
        wait: WaitKind::Yield,
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--agent" => a.agent = it.next().unwrap_or_else(|| usage()),
            "--ca-file" => a.ca_file = Some(it.next().unwrap_or_else(|| usage())),
            "--no-deflate" => a.deflate = false,
            "--wait" => {
                a.wait = match it.next().as_deref() {
                    Some("yield") => WaitKind::Yield,
                    Some("backoff") => WaitKind::Backoff,
                    Some("spin") => WaitKind::Spin,
                    _ => usage(),
                }
            }
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
/// (The rings are shared-memory files mapped per connection; their pages are touched
/// only as far as a case uses them, so a small case pays for the mappings, not for
/// 128 MiB.)
fn config(a: &Args, url: String) -> Config {
    let mut c = Config::new(&url);
    c.layout = Some(Layout::Inline);
    c.wait = Some(a.wait);
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

/// What the callback shares with the main thread: the sender, echoes that found
/// MSG_OUTBOX full (in order: once one waits, the later ones queue behind it), and
/// the first send error.
struct Echo {
    sender: Sender,
    backlog: Mutex<VecDeque<(u8, Vec<u8>)>>,
    error: Mutex<Option<String>>,
}

fn send(s: &Sender, opcode: u8, payload: &[u8]) -> pipeline::Result<()> {
    match opcode {
        1 => match std::str::from_utf8(payload) {
            Ok(t) => s.send_text(t),
            Err(_) => Err(Error::Config("text message not UTF-8".into())),
        },
        _ => s.send_binary(payload),
    }
}

impl Echo {
    /// In the AppClient stage (the inline loop): echo now, or queue a copy.
    fn on_message(&self, payload: &[u8], opcode: u8) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        if backlog.is_empty() {
            match send(&self.sender, opcode, payload) {
                Err(Error::WouldBlock) => {}
                r => return self.note(r),
            }
        }
        backlog.push_back((opcode, payload.to_vec()));
    }

    /// On the main thread: send what waits, in order (the loop drains MSG_OUTBOX
    /// meanwhile). Returns whether anything still waits.
    fn drain(&self) -> bool {
        let s = &self.sender;
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((op, m)) = backlog.front() {
            match send(s, *op, m) {
                Err(Error::WouldBlock) => return true,
                r => self.note(r),
            }
            backlog.pop_front();
        }
        false
    }

    fn note(&self, r: pipeline::Result<()>) {
        // Closing or closed meanwhile (a protocol error further on) is how cases end.
        if let Err(e) = r {
            if !matches!(e, Error::Closed(_)) {
                self.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(format!("send error: {e}"));
            }
        }
    }
}

/// Echo until the server closes. Returns how the case ended.
fn run_case(a: &Args, n: usize) -> String {
    let shared: Arc<Mutex<Option<Arc<Echo>>>> = Arc::default();
    let slot = shared.clone();
    let make = Box::new(move |sender: Sender| -> OnMessageFallible {
        let echo = Arc::new(Echo { sender, backlog: Mutex::default(), error: Mutex::default() });
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(echo.clone());
        Box::new(move |payload: &[u8], opcode: u8, _fin: bool| {
            echo.on_message(payload, opcode);
            Ok(())
        })
    });
    let url = format!("{}/runCase?case={n}&agent={}", a.base, a.agent);
    let p = match Pipeline::start_with_sender_callback(config(a, url), make) {
        Ok(p) => p,
        Err(e) => return format!("connect failed: {e}"),
    };
    let Some(echo) = shared.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return "no callback".into();
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if echo.drain() {
            std::thread::yield_now();
            continue;
        }
        if p.wait_disconnected(Duration::from_millis(2)) {
            // (Nothing can be queued after Disconnected.)
            let e = echo.error.lock().unwrap_or_else(|e| e.into_inner()).take();
            return e.unwrap_or_else(|| reason(&p));
        }
        if Instant::now() > deadline {
            let _ = p.close(1000, "");
            p.wait_disconnected(Duration::from_secs(6));
            return "gave up after 120 s".into();
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
        "autobahn_client: {count} cases on the server, running {lo}..={hi} as agent {:?} (Pipeline, inline + {}, callback{})",
        a.agent,
        a.wait.name(),
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

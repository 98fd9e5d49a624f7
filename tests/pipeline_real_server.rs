//! The pipeline against a real third-party WebSocket server (Python `websockets`) over
//! a kernel TCP socket on loopback (`ws://`; `wss://` once the TLS transport lands).
//! Skipped (with a note) when python3 + websockets is missing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Pipeline, PipelineState};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;
use pipeline_testkit::synthetic::*;

const SERVER: &str = r#"
import asyncio, sys, ssl, websockets
N = int(sys.argv[1])
ctx = None
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
async def handler(ws):
    for i in range(N):
        await ws.send(f"srv {i}")
    await ws.send(b"\x00\x01\xff")
    async for m in ws:
        await ws.send(("echo " + m) if isinstance(m, str) else m)
async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=2**20, compression=None, ssl=ctx) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

use pipeline_testkit::ChildGuard as Server;

fn server(n: usize) -> Option<(Server, u16)> {
    server_with(n, &[])
}

fn server_with(n: usize, extra: &[&str]) -> Option<(Server, u16)> {
    // The venv tools/setup.sh makes (asserts with a clear message when it is missing:
    // never a silent skip).
    let py = pipeline_testkit::python::python();
    let mut c = Command::new(&py)
        .args(["-c", SERVER, &n.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(c.stdout.take()?).read_line(&mut line).ok()?;
    let port = line.trim().parse().ok()?;
    Some((Server(c), port))
}

#[test]
fn real_server_messages_echo_ping_and_close() {
    for layout in [Layout::Inline, Layout::Threads, Layout::Processes] {
        let n = 20_000;
        let Some((_srv, port)) = server(n) else {
            return;
        };
        let (name, _g) = unique(&format!("real{}", layout.name()));
        let mut cfg = Config::new(&format!("ws://127.0.0.1:{port}/feed"));
        cfg.name = Some(name.clone());
        cfg.layout = Some(layout);
        cfg.wait = Some(WaitKind::Backoff);
        cfg.inbox_size = 1 << 20;
        cfg.max_message = 1 << 18;
        cfg.quiet = true;
        let mut p = Pipeline::start(cfg).expect("start against the python server");
        let mut rx = p.receiver().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..n {
            assert!(Instant::now() < deadline);
            let f = rx
                .next_frame_timeout(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{}: message {i} missing", layout.name()));
            assert_eq!(f.text().unwrap(), format!("srv {i}"));
        }
        let f = rx
            .next_frame_timeout(Duration::from_secs(10))
            .expect("binary");
        assert_eq!((f.opcode(), f.payload()), (2, &[0u8, 1, 255][..]));
        drop(f);
        p.send_text("hi").unwrap();
        let big = "z".repeat(100_000);
        p.send_text(&big).unwrap();
        p.send_binary(&[9, 8, 7]).unwrap();
        p.ping(b"are you there").unwrap();
        assert_eq!(
            rx.next_frame_timeout(Duration::from_secs(10))
                .expect("echo")
                .text(),
            Some("echo hi")
        );
        assert_eq!(
            rx.next_frame_timeout(Duration::from_secs(10))
                .expect("big echo")
                .payload()
                .len(),
            100_005
        );
        assert_eq!(
            rx.next_frame_timeout(Duration::from_secs(10))
                .expect("bin echo")
                .payload(),
            &[9, 8, 7]
        );
        let t = Instant::now();
        while p.stats().get(Counter::PongsReceived) == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no PONG for our PING"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        p.close(1000, "done").unwrap();
        assert!(p.wait_disconnected(Duration::from_secs(10)));
        match p.state() {
            PipelineState::Disconnected { reason } => assert!(
                matches!(reason.kind, pipeline::pipeline::DisconnectKind::CloseCompleted { .. }),
                "{reason}"
            ),
            s => panic!("{s:?}"),
        }
        p.stop();
    }
}

/// A self-signed certificate for 127.0.0.1 / localhost in a temp dir: (dir, cert, key).
fn cert() -> (std::path::PathBuf, String, String) {
    let dir = std::env::temp_dir().join(format!("plcert{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        dir,
        c.to_string_lossy().into_owned(),
        k.to_string_lossy().into_owned(),
    )
}

#[test]
fn wss_through_the_kernel_tls_transport() {
    let (dir, c, k) = cert();
    let n = 10_000;
    let Some((_srv, port)) = server_with(n, &[&c, &k]) else {
        return;
    };
    // Not trusted: a clear TLS error.
    let (name, _g) = unique("wss_untrusted");
    let mut cfg = Config::new(&format!("wss://127.0.0.1:{port}/"));
    cfg.name = Some(name);
    cfg.quiet = true;
    let e = Pipeline::start(cfg.clone()).expect_err("self-signed certificate must be refused");
    assert!(matches!(e, pipeline::Error::Tls(_)), "{e}");
    // Trusted through ca_file: works, in two layouts.
    for layout in [Layout::Inline, Layout::Threads] {
        let (name, _g) = unique(&format!("wss_{}", layout.name()));
        let Some((_srv, port)) = server_with(n, &[&c, &k]) else {
            return;
        };
        let mut cfg = Config::new(&format!("wss://127.0.0.1:{port}/"));
        cfg.name = Some(name);
        cfg.ca_file = Some(c.clone().into());
        cfg.layout = Some(layout);
        cfg.wait = Some(WaitKind::Backoff);
        cfg.quiet = true;
        let mut p = Pipeline::start(cfg).expect("wss start");
        let mut rx = p.receiver().unwrap();
        for i in 0..n {
            let f = rx
                .next_frame_timeout(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("message {i}"));
            assert_eq!(f.text().unwrap(), format!("srv {i}"));
        }
        assert_eq!(
            rx.next_frame_timeout(Duration::from_secs(10))
                .expect("binary")
                .payload(),
            &[0, 1, 255]
        );
        p.send_text("over tls").unwrap();
        assert_eq!(
            rx.next_frame_timeout(Duration::from_secs(10))
                .expect("echo")
                .text(),
            Some("echo over tls")
        );
        p.close(1000, "bye").unwrap();
        assert!(p.wait_disconnected(Duration::from_secs(10)));
        p.stop();
    }
    let _ = std::fs::remove_dir_all(dir);
}

//! Interop: `pipeline::pipeline::Pipeline` (kernel transport, the stages inline on one
//! runner thread with backoff waits, polling delivery) against a third-party server,
//! Python `websockets` (tools/ws_interop_server.py, venv from tools/setup.sh), over TLS
//! with the test CA (tools/testcerts.sh) and over plain ws://.
//!
//! Each test starts its own server on 127.0.0.1 with a free port; the guard kills it
//! on drop (also when the test panics), and the server exits by itself when its stdin
//! closes.

use std::time::Duration;

use pipeline_testkit::certs::certs;
use pipeline_testkit::ws_server::Server;
use pipeline::error::Error;
use pipeline::pipeline::{Config, Pipeline, PipelineState, Receiver};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stage::Delivery;
use pipeline::stats::Counter;

const T: Duration = Duration::from_secs(20);

/// A blocking client for `url`, trusting the test CA; sizes for 16 MiB messages both
/// ways (MSG_INBOX 32 MiB, MSG_OUTBOX 64 MiB: a record holds up to half).
fn cfg(url: &str) -> Config {
    let mut c = Config::new(url);
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.ca_file = Some(certs().ca().into());
    c.max_message = 16 << 20;
    c.inbox_size = 32 << 20;
    c.outbox_size = 64 << 20;
    c.quiet = true;
    c
}

fn start(c: Config) -> (Pipeline, Receiver) {
    let mut p = Pipeline::start(c).expect("start");
    let rx = p.receiver().expect("polling receiver");
    (p, rx)
}

fn connect(srv: &Server, path: &str) -> (Pipeline, Receiver) {
    start(cfg(&srv.url("localhost", path)))
}

/// Next data message, owned; or how the connection ended.
#[derive(Debug, PartialEq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Closed(pipeline::stats::DisconnectReason),
}

fn next(p: &Pipeline, rx: &mut Receiver) -> Got {
    if let Some(f) = rx.next_frame_timeout(T) {
        return match f.opcode() {
            1 => Got::Text(f.text().expect("text is UTF-8").to_string()),
            2 => Got::Binary(f.payload().to_vec()),
            op => panic!("opcode {op} in message delivery"),
        };
    }
    Got::Closed(reason(p))
}

fn reason(p: &Pipeline) -> pipeline::stats::DisconnectReason {
    assert!(p.wait_disconnected(T), "still {:?} after {T:?}", p.state());
    match p.state() {
        PipelineState::Disconnected { reason } => reason,
        s => panic!("{s:?}"),
    }
}

/// Our close, and the server's answer to it.
fn close(p: &Pipeline, code: u16, why: &str) {
    p.close(code, why).unwrap();
    let r = reason(p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::CloseCompleted { code: c } if c == code), "{r:?}");
}

/// Queue until MSG_OUTBOX has room.
fn send_all(mut send: impl FnMut() -> pipeline::Result<()>) {
    loop {
        match send() {
            Err(Error::WouldBlock) => std::thread::sleep(Duration::from_micros(100)),
            r => return r.unwrap(),
        }
    }
}

fn pattern(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((i + j) % 251) as u8).collect()
}

fn text_pattern(i: usize, size: usize) -> String {
    (0..size)
        .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
        .collect()
}

fn err_text(c: Config) -> String {
    match Pipeline::start(c) {
        Ok(p) => panic!("connected ({:?}), expected an error", p.state()),
        Err(e) => e.to_string(),
    }
}

// ------------------------------------------------------------------ data

#[test]
fn text_and_binary_echo_tls() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/echo");
    p.send_text("hello, wörld ✓").unwrap();
    assert_eq!(next(&p, &mut rx), Got::Text("hello, wörld ✓".into()));
    p.send_binary(&[0, 1, 2, 255]).unwrap();
    assert_eq!(next(&p, &mut rx), Got::Binary(vec![0, 1, 2, 255]));
    close(&p, 1000, "");
}

#[test]
fn sizes_0_to_16mib_echo_tls() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/echo");
    for (i, size) in [0usize, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20, 16 << 20]
        .into_iter()
        .enumerate()
    {
        let msg = pattern(i, size);
        send_all(|| p.send_binary(&msg));
        match next(&p, &mut rx) {
            Got::Binary(b) => assert!(b == msg, "binary of {size} bytes came back different"),
            other => panic!("size {size}: {other:?}"),
        }
    }
    // Text too, at the sizes where the length encoding changes.
    for (i, size) in [0usize, 125, 126, 65536, 4 << 20].into_iter().enumerate() {
        let msg = text_pattern(i, size);
        send_all(|| p.send_text(&msg));
        assert_eq!(next(&p, &mut rx), Got::Text(msg), "text of {size} bytes");
    }
    close(&p, 1000, "");
}

#[test]
fn receive_16mib_message_from_server() {
    let srv = Server::tls();
    let size = 16 << 20;
    let (p, mut rx) = connect(&srv, &format!("/big?size={size}"));
    {
        let f = rx.next_frame_timeout(T).expect("the 16 MiB message");
        assert_eq!(f.opcode(), 2);
        assert!(f.payload() == pattern(0, size).as_slice(), "16 MiB message differs");
    }
    close(&p, 1000, "");
}

#[test]
fn stream_of_messages_then_server_close() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/stream?n=2000&size=200&type=binary");
    for i in 0..2000 {
        match next(&p, &mut rx) {
            Got::Binary(b) => assert!(b == pattern(i, 200), "message {i} differs"),
            other => panic!("message {i}: {other:?}"),
        }
    }
    match next(&p, &mut rx) {
        Got::Closed(r) => assert!(matches!(&r.kind, pipeline::stats::DisconnectKind::ServerClosed { code: 1000, reason } if reason == "stream done"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    let (p, mut rx) = connect(&srv, "/stream?n=300&size=1000&type=text");
    for i in 0..300 {
        assert_eq!(next(&p, &mut rx), Got::Text(text_pattern(i, 1000)), "text message {i}");
    }
    match next(&p, &mut rx) {
        Got::Closed(r) => assert!(matches!(&r.kind, pipeline::stats::DisconnectKind::ServerClosed { code: 1000, reason } if reason == "stream done"), "{r:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fragmented_messages_from_server() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/fragmented");
    assert_eq!(next(&p, &mut rx), Got::Text("fragmented tëxt".into()));
    assert_eq!(next(&p, &mut rx), Got::Binary(vec![0, 1, 2]));
    match next(&p, &mut rx) {
        Got::Binary(b) => assert!(b == pattern(0, 1 << 20), "1 MiB fragmented message differs"),
        other => panic!("{other:?}"),
    }
    assert!(p.stats().get(Counter::Reassembled) >= 3, "reassembled in place");
    close(&p, 1000, "");
}

#[test]
fn fragmented_messages_from_server_in_frame_delivery() {
    let srv = Server::tls();
    let mut c = cfg(&srv.url("localhost", "/fragmented"));
    c.delivery = Delivery::Frames;
    let (p, mut rx) = start(c);
    // (opcode, payload, fin) per frame, in order: continuations have opcode 0.
    let mut frames: Vec<(u8, Vec<u8>, bool)> = Vec::new();
    while frames.iter().filter(|f| f.2).count() < 3 {
        let f = rx.next_frame_timeout(T).expect("a frame");
        frames.push((f.opcode(), f.payload().to_vec(), f.is_final()));
    }
    // websockets sends each fragment non-final and ends the message with an empty
    // final continuation frame; group frames into messages by `fin`.
    let mut msgs: Vec<Vec<&(u8, Vec<u8>, bool)>> = vec![Vec::new()];
    for f in &frames {
        msgs.last_mut().unwrap().push(f);
        if f.2 {
            msgs.push(Vec::new());
        }
    }
    msgs.pop();
    assert_eq!(msgs.len(), 3);
    let payloads: Vec<Vec<Vec<u8>>> = msgs
        .iter()
        .map(|m| m.iter().map(|f| f.1.clone()).collect())
        .collect();
    assert_eq!(
        &payloads[0][..3],
        &[b"frag".to_vec(), b"mented ".to_vec(), "tëxt".as_bytes().to_vec()]
    );
    assert_eq!(&payloads[1][..3], &[vec![0u8], vec![], vec![1, 2]]);
    assert!(payloads[2].len() >= 16, "1 MiB in 64 KiB fragments");
    for (m, kind) in msgs.iter().zip([1u8, 2, 2]) {
        for (i, f) in m.iter().enumerate() {
            assert_eq!(f.0, if i == 0 { kind } else { 0 }, "the first frame has the kind, then continuations");
            assert_eq!(f.2, i == m.len() - 1, "fin only on the last frame");
        }
    }
    assert!(payloads[2].concat() == pattern(0, 1 << 20));
    close(&p, 1000, "");
}

#[test]
fn fragmented_send_is_reassembled_by_server() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/echo");
    p.send_fragment(false, b"frag", false).unwrap();
    // A control frame between fragments is allowed.
    p.ping(b"between").unwrap();
    // A UTF-8 character split across fragments ("ë" = c3 ab).
    p.send_fragment(false, b"mented t\xc3", false).unwrap();
    // Another message may not start while this one is open, nor a piece of another kind.
    assert!(matches!(p.send_text("no"), Err(Error::Config(_))));
    assert!(matches!(p.send_fragment(true, b"no", true), Err(Error::Config(_))));
    p.send_fragment(false, b"\xabxt", true).unwrap();
    assert_eq!(next(&p, &mut rx), Got::Text("fragmented tëxt".into()));
    let big = pattern(7, 3 << 20);
    for (i, chunk) in big.chunks(100_000).enumerate() {
        let last = (i + 1) * 100_000 >= big.len();
        send_all(|| p.send_fragment(true, chunk, last));
    }
    match next(&p, &mut rx) {
        Got::Binary(b) => assert!(b == big, "3 MiB fragmented send differs"),
        other => panic!("{other:?}"),
    }
    close(&p, 1000, "");
}

// ------------------------------------------------------------------ ping / pong

#[test]
fn server_ping_is_answered_with_pong() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/ping");
    // The server sees our pong (it says so).
    assert_eq!(next(&p, &mut rx), Got::Text("pong received: srv-ping-1".into()));
    assert_eq!(p.stats().get(Counter::PingsReceived), 1);
    assert_eq!(p.stats().get(Counter::PongsSent), 1);
    close(&p, 1000, "");
}

#[test]
fn client_ping_gets_pong() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/echo");
    let pongs = |n: u64| {
        let deadline = std::time::Instant::now() + T;
        while p.stats().get(Counter::PongsReceived) < n {
            assert!(std::time::Instant::now() < deadline, "no PONG within {T:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    p.ping(b"cli-ping").unwrap();
    pongs(1);
    p.ping(b"").unwrap();
    pongs(2);
    // Over 125 bytes is refused locally, and the connection stays usable.
    assert!(matches!(p.ping(&[0u8; 126]), Err(Error::Config(_))));
    p.send_text("still open").unwrap();
    assert_eq!(next(&p, &mut rx), Got::Text("still open".into()));
    assert_eq!(p.stats().get(Counter::PingsSent), 2);
    close(&p, 1000, "");
}

// ------------------------------------------------------------------ closing

#[test]
fn server_initiated_close() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/close?code=4001&reason=bye+from+server");
    match next(&p, &mut rx) {
        Got::Closed(r) => assert!(matches!(&r.kind, pipeline::stats::DisconnectKind::ServerClosed { code: 4001, reason } if reason == "bye from server"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(p.send_text("late"), Err(Error::Closed(_))));
    assert!(rx.next_frame().is_none());
    // Code without a reason.
    let (p, mut rx) = connect(&srv, "/close?code=1000");
    match next(&p, &mut rx) {
        Got::Closed(r) => assert!(matches!(&r.kind, pipeline::stats::DisconnectKind::ServerClosed { code: 1000, reason } if reason.is_empty()), "{r:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_initiated_close() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/echo");
    p.send_text("before close").unwrap();
    assert_eq!(next(&p, &mut rx), Got::Text("before close".into()));
    // websockets answers with the code we sent.
    close(&p, 1000, "client done");
    assert!(matches!(p.send_text("late"), Err(Error::Closed(_))));
    // Application codes go through too.
    let (p, _rx) = connect(&srv, "/echo");
    close(&p, 4321, "app");
    // Codes that may not be sent are refused before anything is sent.
    let (p, _rx) = connect(&srv, "/echo");
    assert!(matches!(p.close(1005, ""), Err(Error::Config(_))));
    assert!(matches!(p.close(1000, &"x".repeat(124)), Err(Error::Config(_))));
    assert!(matches!(p.state(), PipelineState::Connected));
    close(&p, 1001, "");
}

// ------------------------------------------------------------------ failures

#[test]
fn unknown_ca_is_refused() {
    let srv = Server::start(Some("untrusted"));
    let e = err_text(cfg(&srv.url("localhost", "/echo")));
    assert!(e.contains("certificate verify failed"), "{e}");
    assert!(e.contains("unable to get local issuer certificate"), "{e}");
}

#[test]
fn wrong_host_name_is_refused() {
    let srv = Server::start(Some("wronghost"));
    let e = err_text(cfg(&srv.url("localhost", "/echo")));
    assert!(e.contains("certificate verify failed: hostname mismatch"), "{e}");
}

#[test]
fn expired_certificate_is_refused() {
    let srv = Server::start(Some("expired"));
    let e = err_text(cfg(&srv.url("localhost", "/echo")));
    assert!(e.contains("certificate verify failed: certificate has expired"), "{e}");
}

#[test]
fn system_store_does_not_trust_the_test_ca() {
    // No ca_file: verification against the system CA store.
    let srv = Server::tls();
    let mut c = cfg(&srv.url("localhost", "/echo"));
    c.ca_file = None;
    let e = err_text(c);
    assert!(e.contains("certificate verify failed"), "{e}");
}

#[test]
fn insecure_skip_verify_is_explicit() {
    let srv = Server::start(Some("untrusted"));
    let mut c = cfg(&srv.url("localhost", "/echo"));
    c.ca_file = None;
    c.insecure = true;
    let (p, mut rx) = start(c);
    p.send_text("unverified").unwrap();
    assert_eq!(next(&p, &mut rx), Got::Text("unverified".into()));
    close(&p, 1000, "");
}

#[test]
fn upgrade_refused_with_403_reports_status_line() {
    let srv = Server::tls();
    match Pipeline::start(cfg(&srv.url("localhost", "/forbidden"))) {
        Err(Error::WebSocket { close_code: 0, reason }) => {
            assert!(reason.contains("HTTP/1.1 403 Forbidden"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let srv = Server::start(None);
    let e = err_text(cfg(&srv.url("127.0.0.1", "/nowhere")));
    assert!(e.contains("HTTP/1.1 404 Not Found"), "{e}");
}

#[test]
fn message_over_max_message_fails_with_1009() {
    let srv = Server::tls();
    let mut c = cfg(&srv.url("localhost", "/big?size=2000"));
    c.max_message = 1000;
    let (p, mut rx) = start(c);
    assert!(rx.next_frame_timeout(T).is_none(), "nothing delivered");
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::ProtocolError { close_code: 1009 }) && r.message.contains("max_message 1000"), "{r:?}");
}

#[test]
fn refused_connection_and_bad_urls() {
    // A port nobody listens on: bind, learn the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = err_text(cfg(&format!("ws://127.0.0.1:{port}/")));
    assert!(e.contains("connection refused"), "{e}");
    for bad in ["http://localhost/", "ws://", "ws://h:0/", "wss://h/#frag"] {
        match Pipeline::start(cfg(bad)) {
            Err(Error::Config(m)) => assert!(m.contains("WebSocket URL"), "{m}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

// ------------------------------------------------------------------ plain ws://, polling

#[test]
fn plain_ws_echo_stream_and_close() {
    let srv = Server::start(None);
    let (p, mut rx) = start(cfg(&srv.url("127.0.0.1", "/echo")));
    p.send_text("plain").unwrap();
    assert_eq!(next(&p, &mut rx), Got::Text("plain".into()));
    let big = pattern(3, 8 << 20);
    send_all(|| p.send_binary(&big));
    match next(&p, &mut rx) {
        Got::Binary(b) => assert!(b == big, "8 MiB echo differs"),
        other => panic!("{other:?}"),
    }
    close(&p, 1000, "");
    let (p, mut rx) = start(cfg(&srv.url("127.0.0.1", "/stream?n=500&size=70000")));
    for i in 0..500 {
        match next(&p, &mut rx) {
            Got::Binary(b) => assert!(b == pattern(i, 70000), "message {i} differs"),
            other => panic!("{i}: {other:?}"),
        }
    }
    match next(&p, &mut rx) {
        Got::Closed(r) => assert!(matches!(&r.kind, pipeline::stats::DisconnectKind::ServerClosed { code: 1000, reason } if reason == "stream done"), "{r:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn polling_returns_none_when_idle() {
    let srv = Server::tls();
    let (p, mut rx) = connect(&srv, "/echo");
    assert!(rx.next_frame().is_none());
    assert!(rx.next_frame_timeout(Duration::from_millis(50)).is_none());
    assert!(matches!(p.state(), PipelineState::Connected));
    p.send_text("x").unwrap();
    assert_eq!(next(&p, &mut rx), Got::Text("x".into()));
    close(&p, 1000, "");
}

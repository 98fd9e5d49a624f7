//! Interop: `pipeline::client::WsClient` against a third-party server, Python
//! `websockets` (tools/ws_interop_server.py, venv from tools/setup.sh), over TLS with
//! the test CA (tools/testcerts.sh) and over plain ws://.
//!
//! Each test starts its own server on 127.0.0.1 with a free port; the guard kills it
//! on drop (also when the test panics), and the server exits by itself when its stdin
//! closes.

use std::time::Duration;

use pipeline_testkit::certs::certs;
use pipeline_testkit::ws_server::Server;
use pipeline::client::{ClientConfig, Frame, Message, WsClient};
use pipeline::error::Error;
use pipeline::ws::{Delivery, MaskMode, MessageKind};

const T: Duration = Duration::from_secs(20);

fn cfg() -> ClientConfig {
    ClientConfig::default().ca_file(certs().ca())
}

fn connect(srv: &Server, path: &str) -> WsClient {
    WsClient::connect(&srv.url("localhost", path), &cfg()).expect("connect")
}

/// Next data message (skipping pings and pongs), owned.
#[derive(Debug, PartialEq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Closed(u16, String),
}

fn next(ws: &mut WsClient) -> Got {
    loop {
        match ws.recv_timeout(T).expect("recv") {
            Some(Message::Text(t)) => return Got::Text(t.to_string()),
            Some(Message::Binary(b)) => return Got::Binary(b.to_vec()),
            Some(Message::Closed { code, reason }) => return Got::Closed(code, reason.into()),
            Some(Message::Ping(_)) | Some(Message::Pong(_)) => {}
            Some(Message::Frame(f)) => panic!("frame in message delivery: {f:?}"),
            None => panic!("nothing received within {T:?}"),
        }
    }
}

/// (kind, payload, first, is_final) of one received frame.
type FrameRec = (MessageKind, Vec<u8>, bool, bool);

fn pattern(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((i + j) % 251) as u8).collect()
}

fn text_pattern(i: usize, size: usize) -> String {
    (0..size)
        .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
        .collect()
}

fn err_text(r: pipeline::Result<WsClient>) -> String {
    match r {
        Ok(_) => panic!("connected, expected an error"),
        Err(e) => e.to_string(),
    }
}

// ------------------------------------------------------------------ data

#[test]
fn text_and_binary_echo_tls() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/echo");
    let s = ws.tls_session().expect("wss has a TLS session");
    assert!(s.protocol_version().starts_with("TLSv1."));
    ws.send_text("hello, wörld ✓").unwrap();
    assert_eq!(next(&mut ws), Got::Text("hello, wörld ✓".into()));
    ws.send_binary(&[0, 1, 2, 255]).unwrap();
    assert_eq!(next(&mut ws), Got::Binary(vec![0, 1, 2, 255]));
    ws.close(1000, "").unwrap();
}

#[test]
fn sizes_0_to_16mib_echo_tls() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/echo");
    for (i, size) in [
        0usize,
        1,
        125,
        126,
        127,
        65535,
        65536,
        65537,
        1 << 20,
        16 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let msg = pattern(i, size);
        ws.send_binary(&msg).unwrap();
        match next(&mut ws) {
            Got::Binary(b) => assert!(b == msg, "binary of {size} bytes came back different"),
            other => panic!("size {size}: {other:?}"),
        }
    }
    // Text too, at the sizes where the length encoding changes.
    for (i, size) in [0usize, 125, 126, 65536, 4 << 20].into_iter().enumerate() {
        let msg = text_pattern(i, size);
        ws.send_text(&msg).unwrap();
        assert_eq!(next(&mut ws), Got::Text(msg), "text of {size} bytes");
    }
    ws.close(1000, "").unwrap();
}

#[test]
fn receive_16mib_message_from_server() {
    let srv = Server::tls();
    let size = 16 << 20;
    let mut ws = connect(&srv, &format!("/big?size={size}"));
    match next(&mut ws) {
        Got::Binary(b) => assert!(b == pattern(0, size), "16 MiB message differs"),
        other => panic!("{other:?}"),
    }
    ws.close(1000, "").unwrap();
}

#[test]
fn stream_of_messages_then_server_close() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/stream?n=2000&size=200&type=binary");
    for i in 0..2000 {
        match next(&mut ws) {
            Got::Binary(b) => assert!(b == pattern(i, 200), "message {i} differs"),
            other => panic!("message {i}: {other:?}"),
        }
    }
    assert_eq!(next(&mut ws), Got::Closed(1000, "stream done".into()));
    let mut ws = connect(&srv, "/stream?n=300&size=1000&type=text");
    for i in 0..300 {
        assert_eq!(
            next(&mut ws),
            Got::Text(text_pattern(i, 1000)),
            "text message {i}"
        );
    }
    assert_eq!(next(&mut ws), Got::Closed(1000, "stream done".into()));
}

#[test]
fn fragmented_messages_from_server() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/fragmented");
    assert_eq!(next(&mut ws), Got::Text("fragmented tëxt".into()));
    assert_eq!(next(&mut ws), Got::Binary(vec![0, 1, 2]));
    match next(&mut ws) {
        Got::Binary(b) => assert!(b == pattern(0, 1 << 20), "1 MiB fragmented message differs"),
        other => panic!("{other:?}"),
    }
    ws.close(1000, "").unwrap();
}

#[test]
fn fragmented_messages_from_server_in_frame_delivery() {
    let srv = Server::tls();
    let c = cfg().delivery(Delivery::Frames);
    let mut ws = WsClient::connect(&srv.url("localhost", "/fragmented"), &c).unwrap();
    // (kind, payload, first, is_final) per frame, in order.
    let mut frames: Vec<FrameRec> = Vec::new();
    while frames.iter().filter(|f| f.3).count() < 3 {
        match ws.recv_timeout(T).unwrap() {
            Some(Message::Frame(Frame {
                kind,
                payload,
                first,
                is_final,
            })) => frames.push((kind, payload.to_vec(), first, is_final)),
            Some(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    // websockets sends each fragment non-final and ends the message with an empty
    // final continuation frame; group frames into messages by `is_final`.
    let mut msgs: Vec<Vec<&FrameRec>> = vec![Vec::new()];
    for f in &frames {
        msgs.last_mut().unwrap().push(f);
        if f.3 {
            msgs.push(Vec::new());
        }
    }
    msgs.pop();
    assert_eq!(msgs.len(), 3);
    let t = MessageKind::Text;
    let b = MessageKind::Binary;
    let payloads: Vec<Vec<Vec<u8>>> = msgs
        .iter()
        .map(|m| m.iter().map(|f| f.1.clone()).collect())
        .collect();
    assert_eq!(
        &payloads[0][..3],
        &[
            b"frag".to_vec(),
            b"mented ".to_vec(),
            "tëxt".as_bytes().to_vec()
        ]
    );
    assert_eq!(&payloads[1][..3], &[vec![0u8], vec![], vec![1, 2]]);
    assert!(payloads[2].len() >= 16, "1 MiB in 64 KiB fragments");
    for (m, kind) in msgs.iter().zip([t, b, b]) {
        for (i, f) in m.iter().enumerate() {
            assert_eq!(f.0, kind, "continuation frames carry the message's type");
            assert_eq!(f.2, i == 0, "first only on the first frame");
            assert_eq!(f.3, i == m.len() - 1, "is_final only on the last frame");
        }
    }
    assert!(payloads[2].concat() == pattern(0, 1 << 20));
    ws.close(1000, "").unwrap();
}

#[test]
fn fragmented_send_is_reassembled_by_server() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/echo");
    let t = MessageKind::Text;
    ws.send_fragment(t, "frag".as_bytes(), false).unwrap();
    // A control frame between fragments is allowed.
    ws.send_ping(b"between").unwrap();
    // A UTF-8 character split across fragments ("ë" = c3 ab).
    ws.send_fragment(t, b"mented t\xc3", false).unwrap();
    // Another message may not start while this one is open.
    assert!(matches!(ws.send_text("no"), Err(Error::Config(_))));
    ws.send_fragment(t, b"\xabxt", true).unwrap();
    assert_eq!(next(&mut ws), Got::Text("fragmented tëxt".into()));
    let big = pattern(7, 3 << 20);
    for (i, chunk) in big.chunks(100_000).enumerate() {
        let last = (i + 1) * 100_000 >= big.len();
        ws.send_fragment(MessageKind::Binary, chunk, last).unwrap();
    }
    match next(&mut ws) {
        Got::Binary(b) => assert!(b == big, "3 MiB fragmented send differs"),
        other => panic!("{other:?}"),
    }
    ws.close(1000, "").unwrap();
}

// ------------------------------------------------------------------ ping / pong

#[test]
fn server_ping_is_answered_with_pong() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/ping");
    // We see the ping, and the server sees our pong (it says so).
    let mut saw_ping = false;
    loop {
        match ws.recv_timeout(T).unwrap() {
            Some(Message::Ping(p)) => {
                assert_eq!(p, b"srv-ping-1");
                saw_ping = true;
            }
            Some(Message::Text(t)) => {
                assert_eq!(t, "pong received: srv-ping-1");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_ping);
    ws.close(1000, "").unwrap();
}

#[test]
fn client_ping_gets_pong() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/echo");
    ws.send_ping(b"cli-ping").unwrap();
    match ws.recv_timeout(T).unwrap() {
        Some(Message::Pong(p)) => assert_eq!(p, b"cli-ping"),
        other => panic!("{other:?}"),
    }
    ws.send_ping(b"").unwrap();
    assert!(matches!(
        ws.recv_timeout(T).unwrap(),
        Some(Message::Pong(b""))
    ));
    // Over 125 bytes is refused locally, and the connection stays usable.
    assert!(matches!(ws.send_ping(&[0u8; 126]), Err(Error::Config(_))));
    ws.send_text("still open").unwrap();
    assert_eq!(next(&mut ws), Got::Text("still open".into()));
    ws.close(1000, "").unwrap();
}

// ------------------------------------------------------------------ closing

#[test]
fn server_initiated_close() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/close?code=4001&reason=bye+from+server");
    assert_eq!(next(&mut ws), Got::Closed(4001, "bye from server".into()));
    assert!(!ws.is_open());
    assert_eq!(ws.close_frame().map(|f| f.code), Some(4001));
    let e = ws.recv().unwrap_err().to_string();
    assert!(e.contains("server closed the WebSocket (code 4001"), "{e}");
    assert!(matches!(ws.send_text("late"), Err(Error::Closed(_))));
    // Code without a reason.
    let mut ws = connect(&srv, "/close?code=1000");
    assert_eq!(next(&mut ws), Got::Closed(1000, "".into()));
}

#[test]
fn client_initiated_close() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/echo");
    ws.send_text("before close").unwrap();
    assert_eq!(next(&mut ws), Got::Text("before close".into()));
    let f = ws.close(1000, "client done").unwrap();
    // websockets answers with the code we sent.
    assert_eq!(f.code, 1000);
    assert!(!ws.is_open());
    assert!(matches!(ws.send_text("late"), Err(Error::Closed(_))));
    // Application codes go through too.
    let mut ws = connect(&srv, "/echo");
    assert_eq!(ws.close(4321, "app").unwrap().code, 4321);
    // Codes that may not be sent are refused before anything is sent.
    let mut ws = connect(&srv, "/echo");
    assert!(matches!(ws.close(1005, ""), Err(Error::Config(_))));
    assert!(matches!(
        ws.close(1000, &"x".repeat(124)),
        Err(Error::Config(_))
    ));
    assert!(ws.is_open());
    ws.close(1001, "").unwrap();
}

// ------------------------------------------------------------------ failures

#[test]
fn unknown_ca_is_refused() {
    let srv = Server::start(Some("untrusted"));
    let e = err_text(WsClient::connect(&srv.url("localhost", "/echo"), &cfg()));
    assert!(e.contains("certificate verify failed"), "{e}");
    assert!(e.contains("unable to get local issuer certificate"), "{e}");
}

#[test]
fn wrong_host_name_is_refused() {
    let srv = Server::start(Some("wronghost"));
    let e = err_text(WsClient::connect(&srv.url("localhost", "/echo"), &cfg()));
    assert!(
        e.contains("certificate verify failed: hostname mismatch"),
        "{e}"
    );
}

#[test]
fn expired_certificate_is_refused() {
    let srv = Server::start(Some("expired"));
    let e = err_text(WsClient::connect(&srv.url("localhost", "/echo"), &cfg()));
    assert!(
        e.contains("certificate verify failed: certificate has expired"),
        "{e}"
    );
}

#[test]
fn system_store_does_not_trust_the_test_ca() {
    // Default config: verification against the system CA store.
    let srv = Server::tls();
    let e = err_text(WsClient::connect(
        &srv.url("localhost", "/echo"),
        &ClientConfig::default(),
    ));
    assert!(e.contains("certificate verify failed"), "{e}");
}

#[test]
fn insecure_skip_verify_is_explicit() {
    let srv = Server::start(Some("untrusted"));
    let c = ClientConfig::default().insecure_skip_verify();
    let mut ws = WsClient::connect(&srv.url("localhost", "/echo"), &c).unwrap();
    ws.send_text("unverified").unwrap();
    assert_eq!(next(&mut ws), Got::Text("unverified".into()));
    ws.close(1000, "").unwrap();
}

#[test]
fn upgrade_refused_with_403_reports_status_line() {
    let srv = Server::tls();
    let r = WsClient::connect(&srv.url("localhost", "/forbidden"), &cfg());
    match r {
        Err(Error::WebSocket {
            close_code: 0,
            reason,
        }) => {
            assert!(reason.contains("HTTP/1.1 403 Forbidden"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let srv = Server::start(None);
    let e = err_text(WsClient::connect(&srv.url("127.0.0.1", "/nowhere"), &cfg()));
    assert!(e.contains("HTTP/1.1 404 Not Found"), "{e}");
}

#[test]
fn message_over_max_message_fails_with_1009() {
    let srv = Server::tls();
    let c = cfg().max_message(1000);
    let mut ws = WsClient::connect(&srv.url("localhost", "/big?size=2000"), &c).unwrap();
    let e = match ws.recv_timeout(T) {
        Ok(Some(m)) => panic!("unexpected {m:?}"),
        Ok(None) => panic!("nothing within {T:?}"),
        Err(e) => e,
    };
    match &e {
        Error::WebSocket { close_code, reason } => {
            assert_eq!(*close_code, 1009);
            assert!(reason.contains("max_message 1000"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!ws.is_open());
}

#[test]
fn refused_connection_and_bad_urls() {
    // A port nobody listens on: bind, learn the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = err_text(WsClient::connect(
        &format!("ws://127.0.0.1:{port}/"),
        &cfg(),
    ));
    assert!(e.contains("connection refused"), "{e}");
    for bad in ["http://localhost/", "ws://", "ws://h:0/", "wss://h/#frag"] {
        match WsClient::connect(bad, &cfg()) {
            Err(Error::Config(m)) => assert!(m.contains("WebSocket URL"), "{m}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

// ------------------------------------------------------------------ plain ws://, options

#[test]
fn plain_ws_echo_stream_and_close() {
    let srv = Server::start(None);
    let mut ws = WsClient::connect(&srv.url("127.0.0.1", "/echo"), &cfg()).unwrap();
    assert!(ws.tls_session().is_none());
    ws.send_text("plain").unwrap();
    assert_eq!(next(&mut ws), Got::Text("plain".into()));
    let big = pattern(3, 8 << 20);
    ws.send_binary(&big).unwrap();
    match next(&mut ws) {
        Got::Binary(b) => assert!(b == big, "8 MiB echo differs"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ws.close(1000, "").unwrap().code, 1000);
    let mut ws =
        WsClient::connect(&srv.url("127.0.0.1", "/stream?n=500&size=70000"), &cfg()).unwrap();
    for i in 0..500 {
        match next(&mut ws) {
            Got::Binary(b) => assert!(b == pattern(i, 70000), "message {i} differs"),
            other => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(next(&mut ws), Got::Closed(1000, "stream done".into()));
}

#[test]
fn zero_mask_is_an_explicit_option_and_works() {
    let srv = Server::tls();
    let mut c = cfg();
    c.mask = MaskMode::Zero;
    let mut ws = WsClient::connect(&srv.url("localhost", "/echo"), &c).unwrap();
    ws.send_text("unmasked payload").unwrap();
    assert_eq!(next(&mut ws), Got::Text("unmasked payload".into()));
    ws.close(1000, "").unwrap();
}

#[test]
fn non_blocking_recv_returns_none_when_idle() {
    let srv = Server::tls();
    let mut ws = connect(&srv, "/echo");
    assert!(ws.recv().unwrap().is_none());
    assert!(ws
        .recv_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
    ws.send_text("x").unwrap();
    assert_eq!(next(&mut ws), Got::Text("x".into()));
    ws.close(1000, "").unwrap();
}

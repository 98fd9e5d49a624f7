//! `WsClient` against scripted raw-TCP servers (in-process threads): the misbehaviours
//! a real server library will not produce — protocol violations, bad upgrades, silent
//! peers, dropped connections — plus exact checks of what the client puts on the wire
//! (close codes, PONG payloads, masking keys). And `WsClient::over` with a transport
//! of our own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pipeline::client::{ClientConfig, Message, WsClient};
use pipeline::error::Error;
use pipeline::transport::kernel::{KernelSocket, KernelSocketOptions};
use pipeline::transport::ByteTransport;
use pipeline::ws::handshake::accept_key;

const T: Duration = Duration::from_secs(10);

/// Start a one-connection server running `script` on the accepted socket.
fn serve<F>(script: F) -> (u16, JoinHandle<()>)
where
    F: FnOnce(TcpStream) + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        script(s);
    });
    (port, h)
}

/// Read the request header; return the Sec-WebSocket-Key.
fn read_request(s: &mut TcpStream) -> String {
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "request cut short");
        req.push(b[0]);
    }
    let req = String::from_utf8(req).unwrap();
    assert!(req.starts_with("GET /"), "{req}");
    req.lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("key")
        .trim()
        .to_string()
}

fn response(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes()
}

/// Accept the upgrade; `extra` goes out in the same write as the 101.
fn upgrade(s: &mut TcpStream, extra: &[u8]) {
    let key = read_request(s);
    let mut r = response(&key);
    r.extend_from_slice(extra);
    s.write_all(&r).unwrap();
}

/// A server frame (unmasked).
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![b0];
    if payload.len() < 126 {
        v.push(payload.len() as u8);
    } else if payload.len() <= 0xffff {
        v.push(126);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// A client frame as read from the wire: (b0, mask key, unmasked payload).
fn read_frame(s: &mut TcpStream) -> Option<(u8, [u8; 4], Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    assert!(h[1] & 0x80 != 0, "client frames must be masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut e = [0u8; 2];
            s.read_exact(&mut e).ok()?;
            u16::from_be_bytes(e) as usize
        }
        127 => {
            let mut e = [0u8; 8];
            s.read_exact(&mut e).ok()?;
            u64::from_be_bytes(e) as usize
        }
        n => n as usize,
    };
    let mut key = [0u8; 4];
    s.read_exact(&mut key).ok()?;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).ok()?;
    for (i, b) in p.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    Some((h[0], key, p))
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

fn cfg() -> ClientConfig {
    ClientConfig {
        close_timeout: Duration::from_millis(500),
        close_linger: Duration::from_millis(500),
        handshake_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn url(port: u16, path: &str) -> String {
    format!("ws://127.0.0.1:{port}{path}")
}

fn recv_err(ws: &mut WsClient) -> Error {
    loop {
        match ws.recv_timeout(T) {
            Ok(Some(Message::Ping(_) | Message::Pong(_))) => {}
            Ok(other) => panic!("expected an error, got {other:?}"),
            Err(e) => return e,
        }
    }
}

#[test]
fn frames_in_the_same_segment_as_the_101_are_delivered() {
    let mut extra = frame(0x81, b"first");
    extra.extend(frame(0x82, &[9, 8, 7]));
    let (port, h) = serve(move |mut s| {
        upgrade(&mut s, &extra);
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p.as_slice()), (0x88, &close_payload(1000, "")[..]));
        s.write_all(&frame(0x88, &close_payload(1000, ""))).unwrap();
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    assert_eq!(ws.recv().unwrap(), Some(Message::Text("first")));
    assert_eq!(ws.recv().unwrap(), Some(Message::Binary(&[9, 8, 7])));
    assert_eq!(ws.close(1000, "").unwrap().code, 1000);
    h.join().unwrap();
}

#[test]
fn protocol_error_sends_close_1002_then_fails() {
    // A masked frame from the server.
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &[]);
        s.write_all(&[0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1]).unwrap();
        let (b0, _, p) = read_frame(&mut s).expect("our close frame");
        assert_eq!(b0, 0x88);
        assert_eq!(&p[..2], &1002u16.to_be_bytes());
        assert!(std::str::from_utf8(&p[2..]).unwrap().contains("masked"));
        // Then the client closes TCP (after waiting for us to close first).
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    match recv_err(&mut ws) {
        Error::WebSocket { close_code, reason } => {
            assert_eq!(close_code, 1002);
            assert!(reason.contains("masked frame from the server"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    assert!(!ws.is_open());
    assert!(matches!(ws.recv(), Err(Error::Closed(_))));
    h.join().unwrap();
}

#[test]
fn invalid_utf8_fails_fast_with_1007() {
    // The first fragment is already invalid; the message never finishes.
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &frame(0x01, b"ok \xff"));
        let (b0, _, p) = read_frame(&mut s).expect("our close frame");
        assert_eq!(b0, 0x88);
        assert_eq!(&p[..2], &1007u16.to_be_bytes());
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    assert!(matches!(
        recv_err(&mut ws),
        Error::WebSocket {
            close_code: 1007,
            ..
        }
    ));
    h.join().unwrap();
}

#[test]
fn ping_between_fragments_is_ponged_and_message_reassembled() {
    let (port, h) = serve(|mut s| {
        let mut b = frame(0x01, b"hel");
        b.extend(frame(0x89, b"p1"));
        b.extend(frame(0x00, b"lo "));
        b.extend(frame(0x89, b"p2"));
        b.extend(frame(0x80, "wörld".as_bytes()));
        upgrade(&mut s, &b);
        let mut keys = Vec::new();
        for want in [&b"p1"[..], b"p2"] {
            let (b0, key, p) = read_frame(&mut s).unwrap();
            assert_eq!(
                (b0, p.as_slice()),
                (0x8a, want),
                "PONG with the PING's payload"
            );
            keys.push(key);
        }
        let (b0, key, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p.as_slice()), (0x81, "hello wörld".as_bytes()));
        keys.push(key);
        // Random masking: a fresh key per frame.
        assert!(
            keys[0] != keys[1] || keys[1] != keys[2],
            "mask keys {keys:?}"
        );
        s.write_all(&frame(0x88, &close_payload(1001, "bye")))
            .unwrap();
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!(
            (b0, p),
            (0x88, close_payload(1001, "")),
            "close echoed with its code"
        );
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    let mut pings = Vec::new();
    let text = loop {
        match ws.recv_timeout(T).unwrap().unwrap() {
            Message::Ping(p) => pings.push(p.to_vec()),
            Message::Text(t) => break t.to_string(),
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(text, "hello wörld");
    assert_eq!(pings, vec![b"p1".to_vec(), b"p2".to_vec()]);
    ws.send_text(&text).unwrap();
    assert_eq!(
        ws.recv_timeout(T).unwrap(),
        Some(Message::Closed {
            code: 1001,
            reason: "bye"
        })
    );
    h.join().unwrap();
}

#[test]
fn empty_close_is_echoed_empty_and_reported_as_1005() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &frame(0x88, b""));
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p.len()), (0x88, 0), "1005 must not go on the wire");
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    assert_eq!(
        ws.recv_timeout(T).unwrap(),
        Some(Message::Closed {
            code: 1005,
            reason: ""
        })
    );
    h.join().unwrap();
}

#[test]
fn tcp_drop_without_close_frame_is_reported() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &frame(0x81, b"last words"));
        // Dropping `s` closes TCP without a close frame.
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    assert_eq!(
        ws.recv_timeout(T).unwrap(),
        Some(Message::Text("last words"))
    );
    h.join().unwrap();
    match recv_err(&mut ws) {
        Error::Closed(m) => assert!(
            m.contains("no WebSocket close frame") && m.contains("1006"),
            "{m}"
        ),
        e => panic!("{e:?}"),
    }
}

#[test]
fn close_times_out_when_the_server_does_not_answer() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &[]);
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p), (0x88, close_payload(4000, "done")));
        // No answer; wait for the client to give up and close TCP.
        let mut b = [0u8; 16];
        let _ = s.read(&mut b);
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    let t0 = Instant::now();
    match ws.close(4000, "done") {
        Err(Error::Timeout(m)) => assert!(m.contains("no close frame"), "{m}"),
        r => panic!("{r:?}"),
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(!ws.is_open());
    h.join().unwrap();
}

#[test]
fn data_after_our_close_is_dropped_until_the_servers_close() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &[]);
        let (b0, _, _) = read_frame(&mut s).unwrap();
        assert_eq!(b0, 0x88);
        let mut b = frame(0x81, b"late data");
        b.extend(frame(0x88, &close_payload(1000, "ok")));
        s.write_all(&b).unwrap();
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    let f = ws.close(1000, "").unwrap();
    assert_eq!((f.code, f.reason_str()), (1000, "ok"));
    h.join().unwrap();
}

#[test]
fn upgrade_failures_are_clear() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "500",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec(),
            "server answered \"HTTP/1.1 500 Internal Server Error\"",
        ),
        (
            "bad accept",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n".to_vec(),
            "Sec-WebSocket-Accept",
        ),
        (
            "not http",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            "not an HTTP response",
        ),
    ];
    for (name, resp, want) in cases {
        let (port, h) = serve(move |mut s| {
            read_request(&mut s);
            s.write_all(&resp).unwrap();
        });
        match WsClient::connect(&url(port, "/"), &cfg()) {
            Err(Error::WebSocket {
                close_code: 0,
                reason,
            }) => {
                assert!(reason.contains(want), "{name}: {reason}")
            }
            other => panic!("{name}: {other:?}"),
        }
        h.join().unwrap();
    }
    // Closed before answering.
    let (port, h) = serve(|mut s| {
        read_request(&mut s);
    });
    let e = WsClient::connect(&url(port, "/"), &cfg())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("closed the connection before a complete response"),
        "{e}"
    );
    h.join().unwrap();
    // Never answers.
    let (port, h) = serve(|mut s| {
        read_request(&mut s);
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
    });
    let mut c = cfg();
    c.handshake_timeout = Duration::from_millis(300);
    match WsClient::connect(&url(port, "/"), &c) {
        Err(Error::Timeout(m)) => assert!(m.contains("no complete response"), "{m}"),
        other => panic!("{other:?}"),
    }
    h.join().unwrap();
}

/// A transport of our own: the kernel socket, counting calls (as the XDP TCP transport
/// would plug in).
struct Counting {
    inner: KernelSocket,
    recvs: usize,
    sends: usize,
}

impl ByteTransport for Counting {
    fn recv_into(&mut self, buf: &mut [u8]) -> pipeline::Result<usize> {
        self.recvs += 1;
        self.inner.recv_into(buf)
    }
    fn send(&mut self, data: &[u8]) -> pipeline::Result<usize> {
        self.sends += 1;
        self.inner.send(data)
    }
    fn close(&mut self) {
        self.inner.close()
    }
    fn is_open(&self) -> bool {
        self.inner.is_open()
    }
    fn wait(&mut self, writable: bool, timeout: Duration) -> pipeline::Result<()> {
        self.inner.wait(writable, timeout)
    }
}

#[test]
fn over_a_caller_supplied_transport() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &[]);
        while let Some((b0, _, p)) = read_frame(&mut s) {
            if b0 == 0x88 {
                s.write_all(&frame(0x88, &p)).unwrap();
                break;
            }
            s.write_all(&frame(b0, &p)).unwrap();
        }
    });
    let sock = KernelSocket::connect("127.0.0.1", port, &KernelSocketOptions::default()).unwrap();
    let t = Counting {
        inner: sock,
        recvs: 0,
        sends: 0,
    };
    // The URL names the host for Host/SNI; the transport is already connected.
    let mut ws = WsClient::over(t, &format!("ws://example.test:{port}/feed"), &cfg()).unwrap();
    ws.send_binary(b"over").unwrap();
    assert_eq!(ws.recv_timeout(T).unwrap(), Some(Message::Binary(b"over")));
    assert!(ws.transport().recvs > 0 && ws.transport().sends > 0);
    assert_eq!(ws.close(1000, "").unwrap().code, 1000);
    h.join().unwrap();
}

#[test]
fn message_too_big_for_the_limit_sends_1009() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &frame(0x82, &[0u8; 300]));
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!(b0, 0x88);
        assert_eq!(&p[..2], &1009u16.to_be_bytes());
    });
    let mut ws = WsClient::connect(&url(port, "/"), &cfg().max_message(256)).unwrap();
    match recv_err(&mut ws) {
        Error::WebSocket {
            close_code: 1009,
            reason,
        } => assert!(reason.contains("max_message 256"), "{reason}"),
        e => panic!("{e:?}"),
    }
    h.join().unwrap();
}

#[test]
fn frame_pieces_delivery_streams_a_large_frame() {
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let want = payload.clone();
    let (port, h) = serve(move |mut s| {
        upgrade(&mut s, &[]);
        let f = frame(0x82, &payload);
        // In pieces, with pauses, so the client sees partial payloads.
        for c in f.chunks(70_000) {
            s.write_all(c).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let (b0, _, _) = read_frame(&mut s).unwrap();
        assert_eq!(b0, 0x88);
        s.write_all(&frame(0x88, &close_payload(1000, ""))).unwrap();
    });
    let c = cfg().delivery(pipeline::ws::Delivery::FramePieces);
    let mut ws = WsClient::connect(&url(port, "/"), &c).unwrap();
    let mut got = Vec::new();
    let mut pieces = 0;
    loop {
        match ws.recv_timeout(T).unwrap() {
            Some(Message::Frame(f)) => {
                assert_eq!(f.first, got.is_empty());
                got.extend_from_slice(f.payload);
                pieces += 1;
                if f.is_final {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(got == want);
    assert!(
        pieces > 1,
        "a 300 kB frame sent in 70 kB pieces arrives in pieces"
    );
    assert_eq!(ws.close(1000, "").unwrap().code, 1000);
    h.join().unwrap();
}

#[test]
fn dropping_an_open_client_sends_going_away() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &[]);
        let (b0, _, p) = read_frame(&mut s).expect("a close frame on drop");
        assert_eq!((b0, p), (0x88, close_payload(1001, "")));
    });
    let ws = WsClient::connect(&url(port, "/"), &cfg()).unwrap();
    drop(ws);
    h.join().unwrap();
}

/// A server that floods PINGs and never reads: one PONG per PING used to be queued
/// without limit (the backlog grew by 131 bytes per PING). Unsent PONGs now coalesce to
/// the latest (RFC 6455 §5.5.3), so the backlog stays at about one frame.
#[test]
fn a_ping_flood_from_a_server_that_never_reads_keeps_one_pong_queued() {
    let n = 100_000;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (port, h) = serve(move |mut s| {
        upgrade(&mut s, &[]);
        let mut flood = Vec::with_capacity(n * 127);
        for i in 0..n {
            let mut p = format!("{i:08}").into_bytes();
            p.resize(125, b'.');
            flood.extend(frame(0x89, &p));
        }
        s.write_all(&flood).unwrap();
        // Never read; keep the connection until the client is done.
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
    });
    let mut c = cfg();
    c.socket.sndbuf = Some(4096);
    let mut ws = WsClient::connect(&url(port, "/"), &c).unwrap();
    let (mut pings, mut most) = (0, 0);
    while pings < n {
        match ws.recv_timeout(T).unwrap() {
            Some(Message::Ping(p)) => {
                assert_eq!(&p[..8], format!("{pings:08}").as_bytes());
                pings += 1;
            }
            other => panic!("after {pings} PINGs: {other:?}"),
        }
        most = most.max(ws.backlog());
    }
    assert!(most <= 2 * 131, "{most} bytes queued for a server that does not read");
    drop(done_tx);
    drop(ws);
    h.join().unwrap();
}

//! `Pipeline` (kernel transport, `ws://`) against scripted raw-TCP servers (in-process
//! threads): the misbehaviours a real server library will not produce — protocol
//! violations, bad upgrades, silent peers, dropped connections — plus exact checks of
//! what the pipeline puts on the wire (close codes, PONG payloads, masking keys, the
//! order of an echo and our close).
//!
//! (Ported from the tests of the retired `client::WsClient`; see docs/pipeline.md.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pipeline::error::Error;
use pipeline::pipeline::{Config, Pipeline, PipelineState, Receiver};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stage::Delivery;
use pipeline::stats::Counter;
use pipeline_testkit::upgrade;
use pipeline_testkit::ws_frames::frame;

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
    let req = upgrade::read_request(s);
    assert!(req.starts_with("GET /"), "{req}");
    upgrade::request_key(&req).to_string()
}

/// Accept the upgrade; `extra` goes out in the same write as the 101.
fn upgrade(s: &mut TcpStream, extra: &[u8]) {
    let key = read_request(s);
    let mut r = upgrade::response(&key, "").into_bytes();
    r.extend_from_slice(extra);
    s.write_all(&r).unwrap();
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

/// The server's side after the client's frames: nothing more (EOF) within `T`.
fn expect_eof(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("{n} more bytes from the client: {:?}", &b[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no EOF from the client: {e}"),
    }
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A blocking client: kernel transport, the stages inline on one runner thread with
/// backoff waits, polling delivery.
fn cfg(port: u16, path: &str) -> Config {
    let mut c = Config::new(&format!("ws://127.0.0.1:{port}{path}"));
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.close_timeout = Duration::from_millis(500);
    c.timeout = Duration::from_secs(5);
    c.quiet = true;
    c
}

fn start(c: Config) -> (Pipeline, Receiver) {
    let mut p = Pipeline::start(c).expect("start");
    let rx = p.receiver().expect("polling receiver");
    (p, rx)
}

/// The next message, owned: (opcode, payload).
fn next(rx: &mut Receiver) -> (u8, Vec<u8>) {
    let f = rx.next_frame_timeout(T).expect("a message within T");
    (f.opcode(), f.payload().to_vec())
}

fn reason(p: &Pipeline) -> pipeline::stats::DisconnectReason {
    assert!(p.wait_disconnected(T), "still {:?} after {T:?}", p.state());
    match p.state() {
        PipelineState::Disconnected { reason } => reason,
        s => panic!("{s:?}"),
    }
}

fn start_err(c: Config) -> Error {
    match Pipeline::start(c) {
        Ok(p) => panic!("connected ({:?}), expected an error", p.state()),
        Err(e) => e,
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
    let (p, mut rx) = start(cfg(port, "/"));
    assert_eq!(next(&mut rx), (1, b"first".to_vec()));
    assert_eq!(next(&mut rx), (2, vec![9, 8, 7]));
    p.close(1000, "").unwrap();
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::CloseCompleted { code: 1000 }), "{r:?}");
    h.join().unwrap();
}

#[test]
fn protocol_error_sends_close_1002_then_fails() {
    // A masked frame from the server.
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &[]);
        s.write_all(&[0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1]).unwrap();
        let (b0, _, p) = read_frame(&mut s).expect("our close frame");
        assert_eq!((b0, p), (0x88, 1002u16.to_be_bytes().to_vec()));
        expect_eof(&mut s);
    });
    let (p, mut rx) = start(cfg(port, "/"));
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::ProtocolError { close_code: 1002 }) && r.message.contains("masked frame from the server"), "{r:?}");
    assert!(rx.next_frame().is_none(), "nothing delivered");
    assert!(matches!(p.send_text("late"), Err(Error::Closed(_))));
    h.join().unwrap();
}

/// Autobahn 3.2, 4.1.3, 5.15 ...: a valid message, then a bad frame, in one write. The
/// message is delivered and the application's answer (an echo) goes out before our
/// close; the connection fails only once the application has taken the message.
/// (The pipeline used to close at once, with the echo refused: "NON-STRICT".)
#[test]
fn a_message_before_a_protocol_error_is_delivered_and_answered_before_our_close() {
    let mut b = frame(0x81, b"hello");
    b.extend([0xA1, 0x00]); // RSV2 set: a protocol error
    b.extend(frame(0x89, b"never answered"));
    let (port, h) = serve(move |mut s| {
        upgrade(&mut s, &b);
        let (b0, _, p) = read_frame(&mut s).expect("the echo");
        assert_eq!((b0, p.as_slice()), (0x81, &b"hello"[..]), "the echo comes first");
        let (b0, _, p) = read_frame(&mut s).expect("our close frame");
        assert_eq!((b0, p), (0x88, 1002u16.to_be_bytes().to_vec()));
        expect_eof(&mut s);
    });
    let (p, mut rx) = start(cfg(port, "/"));
    {
        let f = rx.next_frame_timeout(T).expect("the message before the bad frame");
        assert_eq!(f.text(), Some("hello"));
        // The stage waits for us: the state is still Connected while we hold it.
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(p.state(), PipelineState::Connected), "{:?}", p.state());
        p.send_text(f.text().unwrap()).unwrap();
    }
    assert!(rx.next_frame_timeout(T).is_none());
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::ProtocolError { close_code: 1002 }) && r.message.contains("reserved bits set"), "{r:?}");
    assert_eq!(p.stats().get(Counter::PongsSent), 0, "nothing after the bad frame is processed");
    h.join().unwrap();
}

/// The wait for the application is bounded: one that never takes the message does not
/// keep a broken connection open.
#[test]
fn a_protocol_error_behind_an_untaken_message_still_fails_within_a_second() {
    let mut b = frame(0x81, b"not taken");
    b.extend([0x83, 0x00]); // reserved opcode 3
    let (port, h) = serve(move |mut s| {
        upgrade(&mut s, &b);
        let (b0, _, p) = read_frame(&mut s).expect("our close frame");
        assert_eq!((b0, p), (0x88, 1002u16.to_be_bytes().to_vec()));
    });
    let t0 = Instant::now();
    let (p, _rx) = start(cfg(port, "/"));
    let r = reason(&p);
    let took = t0.elapsed();
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::ProtocolError { close_code: 1002 }) && r.message.contains("reserved opcode"), "{r:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
    h.join().unwrap();
}

#[test]
fn invalid_utf8_fails_fast_with_1007() {
    // The first fragment is already invalid; the message never finishes.
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &frame(0x01, b"ok \xff"));
        let (b0, _, p) = read_frame(&mut s).expect("our close frame");
        assert_eq!((b0, p), (0x88, 1007u16.to_be_bytes().to_vec()));
    });
    let (p, _rx) = start(cfg(port, "/"));
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::ProtocolError { close_code: 1007 }) && r.message.contains("UTF-8"), "{r:?}");
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
            assert_eq!((b0, p.as_slice()), (0x8a, want), "PONG with the PING's payload");
            keys.push(key);
        }
        let (b0, key, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p.as_slice()), (0x81, "hello wörld".as_bytes()));
        keys.push(key);
        // Random masking: a fresh key per frame.
        assert!(keys[0] != keys[1] || keys[1] != keys[2], "mask keys {keys:?}");
        assert!(keys.iter().all(|k| k != &[0; 4]), "no all-zero mask");
        s.write_all(&frame(0x88, &close_payload(1001, "bye"))).unwrap();
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p), (0x88, close_payload(1001, "")), "close echoed with its code");
    });
    let (p, mut rx) = start(cfg(port, "/"));
    let (op, text) = next(&mut rx);
    assert_eq!((op, text.as_slice()), (1, "hello wörld".as_bytes()));
    p.send_text(std::str::from_utf8(&text).unwrap()).unwrap();
    let r = reason(&p);
    assert!(matches!(&r.kind, pipeline::stats::DisconnectKind::ServerClosed { code: 1001, reason } if reason == "bye"), "{r:?}");
    assert_eq!(p.stats().get(Counter::PingsReceived), 2);
    assert_eq!(p.stats().get(Counter::PongsSent), 2);
    h.join().unwrap();
}

#[test]
fn empty_close_is_echoed_empty_and_reported_as_1005() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &frame(0x88, b""));
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p.len()), (0x88, 0), "1005 must not go on the wire");
    });
    let (p, _rx) = start(cfg(port, "/"));
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::ServerClosed { code: 1005, .. }), "{r:?}");
    h.join().unwrap();
}

#[test]
fn tcp_drop_without_close_frame_is_reported() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &frame(0x81, b"last words"));
        // Dropping `s` closes TCP without a close frame.
    });
    let (p, mut rx) = start(cfg(port, "/"));
    assert_eq!(next(&mut rx), (1, b"last words".to_vec()));
    h.join().unwrap();
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::TcpClosed | pipeline::stats::DisconnectKind::TcpReset) && r.message.contains("no WebSocket close"), "{r:?}");
}

#[test]
fn close_times_out_when_the_server_does_not_answer() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &[]);
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p), (0x88, close_payload(4000, "done")));
        // No answer; wait for the client to give up and close TCP.
        expect_eof(&mut s);
    });
    let (p, _rx) = start(cfg(port, "/"));
    let t0 = Instant::now();
    p.close(4000, "done").unwrap();
    assert!(matches!(p.state(), PipelineState::Closing));
    let r = reason(&p);
    let took = t0.elapsed();
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::CloseTimeout) && r.message.contains("500ms"), "{r:?}");
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "{took:?}");
    h.join().unwrap();
}

/// After our close the pipeline still delivers what the server sent before its close
/// (RFC 6455 §1.4: the server may send data until it answers), and ends with the
/// server's answer.
#[test]
fn data_after_our_close_is_delivered_until_the_servers_close() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &[]);
        let (b0, _, _) = read_frame(&mut s).unwrap();
        assert_eq!(b0, 0x88);
        let mut b = frame(0x81, b"late data");
        b.extend(frame(0x88, &close_payload(1000, "ok")));
        s.write_all(&b).unwrap();
    });
    let (p, mut rx) = start(cfg(port, "/"));
    p.close(1000, "").unwrap();
    assert_eq!(next(&mut rx), (1, b"late data".to_vec()));
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::CloseCompleted { code: 1000 }), "{r:?}");
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
        match start_err(cfg(port, "/")) {
            Error::WebSocket { close_code: 0, reason } => {
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
    match start_err(cfg(port, "/")) {
        Error::WebSocket { close_code: 0, reason } => {
            assert!(reason.contains("connection closed during the upgrade"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    h.join().unwrap();
    // Never answers.
    let (port, h) = serve(|mut s| {
        read_request(&mut s);
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
    });
    let mut c = cfg(port, "/");
    c.timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    match start_err(c) {
        Error::Timeout(m) => assert!(m.contains("handshake not finished after 0.3 s"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(3));
    h.join().unwrap();
}

#[test]
fn message_too_big_for_the_limit_sends_1009() {
    let (port, h) = serve(|mut s| {
        upgrade(&mut s, &frame(0x82, &[0u8; 300]));
        let (b0, _, p) = read_frame(&mut s).unwrap();
        assert_eq!((b0, p), (0x88, 1009u16.to_be_bytes().to_vec()));
    });
    let mut c = cfg(port, "/");
    c.max_message = 256;
    let (p, _rx) = start(c);
    let r = reason(&p);
    assert!(matches!(r.kind, pipeline::stats::DisconnectKind::ProtocolError { close_code: 1009 }) && r.message.contains("max_message 256"), "{r:?}");
    h.join().unwrap();
}

/// A 300 kB frame arriving in 70 kB pieces with pauses is delivered whole, in place
/// (frame delivery; the pipeline has no payload-pieces delivery).
#[test]
fn a_large_frame_arriving_in_pieces_is_delivered_whole() {
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let want = payload.clone();
    let (port, h) = serve(move |mut s| {
        upgrade(&mut s, &[]);
        let f = frame(0x82, &payload);
        for c in f.chunks(70_000) {
            s.write_all(c).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let (b0, _, _) = read_frame(&mut s).unwrap();
        assert_eq!(b0, 0x88);
        s.write_all(&frame(0x88, &close_payload(1000, ""))).unwrap();
    });
    let mut c = cfg(port, "/");
    c.delivery = Delivery::Frames;
    let (p, mut rx) = start(c);
    {
        let f = rx.next_frame_timeout(T).expect("the frame");
        assert_eq!((f.opcode(), f.is_final()), (2, true));
        assert!(f.payload() == want.as_slice());
        let base = p.inbox().ring().ptr_at(0) as usize;
        let a = f.payload().as_ptr() as usize;
        assert!(a >= base && a + f.payload().len() <= base + 2 * p.inbox().capacity(), "in place in MSG_INBOX");
    }
    p.close(1000, "").unwrap();
    assert!(matches!(reason(&p).kind, pipeline::stats::DisconnectKind::CloseCompleted { .. }));
    h.join().unwrap();
}

/// A server that floods PINGs and never reads: PONGs coalesce (RFC 6455 §5.5.3), the
/// parsing never stops, and the data behind the flood is delivered.
#[test]
fn a_ping_flood_from_a_server_that_never_reads_does_not_stall_data() {
    let n = 100_000;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (port, h) = serve(move |mut s| {
        upgrade(&mut s, &[]);
        let mut flood = Vec::with_capacity(n * 127 + 16);
        for i in 0..n {
            let mut p = format!("{i:08}").into_bytes();
            p.resize(125, b'.');
            flood.extend(frame(0x89, &p));
        }
        flood.extend(frame(0x81, b"after the flood"));
        s.write_all(&flood).unwrap();
        // Never read; keep the connection until the client is done.
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
    });
    let (p, mut rx) = start(cfg(port, "/"));
    let f = rx.next_frame_timeout(Duration::from_secs(30)).expect("the message behind the flood");
    assert_eq!(f.text(), Some("after the flood"));
    drop(f);
    assert_eq!(p.stats().get(Counter::PingsReceived), n as u64);
    assert!(matches!(p.state(), PipelineState::Connected), "{:?}", p.state());
    drop(done_tx);
    p.stop();
    h.join().unwrap();
}

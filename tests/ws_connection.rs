//! The sans-IO connection: automatic PONG, close handshake from either side with a
//! caller-driven timeout, and "send close with the right code, then fail".

use std::time::{Duration, Instant};

use pipeline::ws::{
    CloseState, Connection, ConnectionConfig, Delivery, Event, FrameBuilder, OpCode, ParserConfig,
};
use pipeline_testkit::ws_frames::*;

fn conn() -> Connection {
    let cfg = ConnectionConfig {
        parser: ParserConfig {
            delivery: Delivery::Messages,
            max_message: 1 << 16,
        },
        close_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    Connection::with_builder(cfg, FrameBuilder::with_seed(5))
}

/// Decode every client frame in `out`: (opcode, fin, payload).
fn sent(out: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < out.len() {
        let (fin, op, _, p, n) = decode_client_frame(&out[i..]);
        v.push((op, fin, p));
        i += n;
    }
    v
}

fn drain(c: &mut Connection, buf: &mut Vec<u8>) -> (Vec<Event>, Option<pipeline::Error>) {
    let mut evs = Vec::new();
    loop {
        match c.next_event(buf) {
            Ok(Some(e)) => evs.push(e),
            Ok(None) => break,
            Err(e) => return (evs, Some(e)),
        }
    }
    let n = c.release();
    buf.drain(..n);
    (evs, None)
}

#[test]
fn ping_is_answered_with_same_payload() {
    let mut c = conn();
    let mut buf = [frame(FIN | PING, b"hb-42"), frame(FIN | TEXT, b"tick")].concat();
    let (evs, err) = drain(&mut c, &mut buf);
    assert!(err.is_none());
    assert_eq!(evs.len(), 2);
    assert_eq!(
        sent(c.pending_output()),
        vec![(PONG, true, b"hb-42".to_vec())]
    );
    let n = c.pending_output().len();
    c.consume_output(n);
    assert!(c.pending_output().is_empty());
}

#[test]
fn server_initiated_close_is_echoed_then_transport_closes() {
    let mut c = conn();
    let mut buf = close_frame(1001, b"restart");
    let (evs, _) = drain(&mut c, &mut buf);
    assert!(matches!(evs[..], [Event::Close(f)] if f.code == 1001 && f.reason_str() == "restart"));
    assert_eq!(
        sent(c.pending_output()),
        vec![(CLOSE, true, 1001u16.to_be_bytes().to_vec())]
    );
    assert!(c.should_close_transport());
    assert!(c.send_text("late").is_err());
    // A close without a code is answered with an empty close (1005 is never sent).
    let mut c = conn();
    let mut buf = frame(FIN | CLOSE, b"");
    drain(&mut c, &mut buf);
    assert_eq!(sent(c.pending_output()), vec![(CLOSE, true, vec![])]);
}

#[test]
fn client_initiated_close_completes_or_times_out() {
    let t0 = Instant::now();
    let mut c = conn();
    c.send_text("bye soon").unwrap();
    c.close(1000, "done", t0).unwrap();
    c.close(1000, "again", t0).unwrap(); // only one close frame
    let mut want_close = 1000u16.to_be_bytes().to_vec();
    want_close.extend_from_slice(b"done");
    assert_eq!(
        sent(c.pending_output()),
        vec![
            (TEXT, true, b"bye soon".to_vec()),
            (CLOSE, true, want_close)
        ]
    );
    assert!(matches!(c.close_state(), CloseState::Sent { .. }));
    assert!(c.send_binary(b"x").is_err(), "no data after our close");
    // Data still arriving before the server's close is delivered.
    let mut buf = [frame(FIN | TEXT, b"in flight"), close_frame(1000, b"")].concat();
    let (evs, _) = drain(&mut c, &mut buf);
    assert_eq!(evs.len(), 2);
    assert!(c.should_close_transport());
    assert_eq!(
        sent(c.pending_output()).len(),
        2,
        "the server's close is not echoed back"
    );

    let mut c = conn();
    c.close(1001, "", t0).unwrap();
    assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(100)));
    assert!(!c.poll_timeout(t0 + Duration::from_millis(99)));
    assert!(c.poll_timeout(t0 + Duration::from_millis(100)));
}

#[test]
fn protocol_errors_send_the_right_close_code_then_fail() {
    for (stream, code) in [
        (frame(FIN | 0x40 | TEXT, b"x"), 1002u16),
        (frame(FIN | TEXT, b"\xc0\xaf"), 1007),
        (frame(FIN | BINARY, &vec![0; (1 << 16) + 1]), 1009),
        (vec![FIN | TEXT, 0x81, 0, 0, 0, 0], 1002),
    ] {
        let mut c = conn();
        let mut buf = stream;
        let (_, err) = drain(&mut c, &mut buf);
        assert!(
            matches!(err, Some(pipeline::Error::WebSocket { close_code, .. }) if close_code == code)
        );
        let out = sent(c.pending_output());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, CLOSE);
        assert_eq!(u16::from_be_bytes([out[0].2[0], out[0].2[1]]), code);
        assert!(std::str::from_utf8(&out[0].2[2..]).is_ok());
        assert!(c.should_close_transport());
        // Still failed, and no second close frame.
        assert!(c.next_event(&mut buf).is_err());
        assert_eq!(sent(c.pending_output()).len(), 1);
    }
}

#[test]
fn fragmented_sends_and_refusals() {
    let mut c = conn();
    c.send(OpCode::Text, false, b"par").unwrap();
    c.send(OpCode::Continuation, true, b"ts").unwrap();
    assert!(c.send(OpCode::Close, true, b"").is_err());
    let server: Vec<u8> = {
        let out = c.pending_output();
        let mut v = Vec::new();
        let mut i = 0;
        while i < out.len() {
            let n = decode_client_frame(&out[i..]).4;
            v.extend(client_to_server_frame(&out[i..i + n]));
            i += n;
        }
        v
    };
    assert_eq!(
        run(&server, &[], cfg(Delivery::Messages)).0,
        vec![Ev::Msg(1, b"parts".to_vec())]
    );
}

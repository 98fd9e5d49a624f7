//! A hostile (or broken) server against the whole pipeline, scripted with the synthetic
//! transport: it must never be able to wedge the pipeline, grow its memory, or keep it
//! from ending. Each test here failed before the fix it guards (issue 9).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::pipeline::{Pipeline, PipelineState};
use pipeline::runner::Layout;
use pipeline::stage::{encode_server_frame, SyntheticScript};
use pipeline::stats::Counter;
use pipeline_testkit::synthetic::*;

type Capture = Arc<Mutex<Vec<(u8, bool, Vec<u8>)>>>;

/// Generous: these machines are shared and loaded; the assertions are on outcomes.
const LONG: Duration = Duration::from_secs(20);

fn reason(p: &Pipeline) -> pipeline::pipeline::DisconnectReason {
    match p.state() {
        PipelineState::Disconnected { reason } => reason,
        s => panic!("not disconnected: {s:?}"),
    }
}

fn close_codes(c: &Capture) -> Vec<Vec<u8>> {
    c.lock()
        .unwrap()
        .iter()
        .filter(|f| f.0 == 0x8)
        .map(|f| f.2.clone())
        .collect()
}

/// A small MSG_INBOX (64 KiB) so a hostile stream fills it quickly.
fn small(name: &str, s: SyntheticScript) -> pipeline::pipeline::Config {
    let mut c = config(name, s, Layout::Inline);
    c.inbox_size = 1 << 16;
    c.max_message = 1 << 14;
    c
}

fn assert_closed_with_1009(p: &Pipeline, cap: &Capture) {
    assert!(
        p.wait_disconnected(LONG),
        "wedged: {:?}, {:?}",
        p.state(),
        p.stats().iter().filter(|c| c.1 > 0).collect::<Vec<_>>()
    );
    let r = reason(p);
    assert_eq!(r.kind, pipeline::pipeline::DisconnectKind::ProtocolError { close_code: 1009 }, "{r}");
    assert_eq!(close_codes(cap), vec![1009u16.to_be_bytes().to_vec()], "{r}");
}

/// Only payload bytes count toward `max_message`: a first fragment followed by endless
/// empty continuations used to fill MSG_INBOX with headers and sit "connected" forever.
#[test]
fn endless_empty_continuations_close_with_1009() {
    let (name, _g) = unique("hostile_cont");
    let mut v = Vec::new();
    encode_server_frame(&mut v, 0x1, false, b"start");
    for _ in 0..50_000 {
        encode_server_frame(&mut v, 0x0, false, &[]); // 100 KB of headers, no payload
    }
    let cap: Capture = Arc::default();
    let s = SyntheticScript { capture: Some(cap.clone()), ..script(v, 0) };
    let p = Pipeline::start(small(&name, s)).unwrap();
    assert_closed_with_1009(&p, &cap);
}

/// The same with PINGs between the fragments (their bytes stay inside the message
/// being reassembled until it ends).
#[test]
fn pings_between_fragments_close_with_1009() {
    let (name, _g) = unique("hostile_pings");
    let mut v = Vec::new();
    encode_server_frame(&mut v, 0x2, false, b"start");
    for _ in 0..1000 {
        encode_server_frame(&mut v, 0x9, true, &[7u8; 100]); // 102 KB of PINGs
    }
    let cap: Capture = Arc::default();
    let s = SyntheticScript { capture: Some(cap.clone()), ..script(v, 0) };
    let p = Pipeline::start(small(&name, s)).unwrap();
    assert_closed_with_1009(&p, &cap);
}

/// `max_message == inbox_size`: a frame that large plus its header can never fit.
#[test]
fn max_message_must_leave_room_for_a_frame_header() {
    let (name, _g) = unique("hostile_cfg");
    let mut c = config(&name, script(vec![], 0), Layout::Inline);
    c.inbox_size = 1 << 16;
    c.max_message = 1 << 16;
    match Pipeline::start(c) {
        Err(pipeline::Error::Config(m)) => {
            assert!(m.contains("max_message") && m.contains("header"), "{m}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("max_message == inbox_size was accepted"),
    }
    // The largest allowed single frame is delivered.
    let (name, _g) = unique("hostile_cfg_max");
    let big = vec![b'x'; (1 << 16) - 14];
    let mut v = Vec::new();
    encode_server_frame(&mut v, 0x1, true, &big);
    let mut c = config(&name, script(v, 1000), Layout::Inline);
    c.inbox_size = 1 << 16;
    c.max_message = big.len();
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    let f = rx.next_frame_timeout(LONG).expect("the largest message");
    assert_eq!(f.payload().len(), big.len());
    drop(f);
    p.stop();
}

/// Our close, and the server never answers it: the pipeline used to stay Closing
/// forever. Now the close timeout ends it, with a reason that says so.
#[test]
fn client_close_ends_when_the_server_ignores_it() {
    let (name, _g) = unique("hostile_noclose");
    let cap: Capture = Arc::default();
    let s = SyntheticScript {
        capture: Some(cap.clone()),
        ignore_close: true,
        ..script(text_frames(3), 0)
    };
    let mut c = config(&name, s, Layout::Inline);
    c.close_timeout = Duration::from_millis(300);
    let p = Pipeline::start(c).unwrap();
    p.close(1000, "bye").unwrap();
    assert!(p.wait_disconnected(LONG), "still {:?}", p.state());
    let r = reason(&p);
    assert_eq!(r.kind, pipeline::pipeline::DisconnectKind::CloseTimeout, "{r}");
    assert!(r.message.contains("300ms"), "{r}");
    assert_eq!(close_codes(&cap), vec![b"\x03\xe8bye".to_vec()]);
    p.stop();
}

/// Our close after a protocol error (1002), to a server that has stopped reading: the
/// close frame can never be written. That path to Closing must end too.
#[test]
fn close_after_a_protocol_error_ends_when_the_server_stops_reading() {
    let (name, _g) = unique("hostile_noread");
    let v = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]; // masked: 1002
    let s = SyntheticScript { stop_reading_after: Some(0), ..script(v, 0) };
    let mut c = config(&name, s, Layout::Inline);
    c.close_timeout = Duration::from_millis(300);
    let p = Pipeline::start(c).unwrap();
    assert!(p.wait_disconnected(LONG), "still {:?}", p.state());
    let r = reason(&p);
    assert_eq!(r.kind, pipeline::pipeline::DisconnectKind::ProtocolError { close_code: 1002 }, "{r}");
    assert!(r.message.contains("masked"), "{r}");
    p.stop();
}

/// PINGs far faster than the server reads our PONGs: the PONGS ring used to fill and
/// stop the WebSocket stage, so data behind the PINGs never arrived. Now unsent PONGs
/// coalesce to the latest (RFC 6455 §5.5.3) and the data flows.
#[test]
fn a_ping_flood_coalesces_pongs_and_never_stalls_data() {
    let (name, _g) = unique("hostile_pingflood");
    let n = 5000;
    let ping = |i: usize| format!("ping {i:05} {}", "p".repeat(80)).into_bytes();
    let mut v = Vec::new();
    for i in 0..n {
        encode_server_frame(&mut v, 0x9, true, &ping(i));
    }
    encode_server_frame(&mut v, 0x1, true, b"after the flood");
    let cap: Capture = Arc::default();
    let s = SyntheticScript {
        capture: Some(cap.clone()),
        client_bytes_per_sec: 2000, // about 20 PONGs a second
        ..script(v, 0)
    };
    let mut p = Pipeline::start(config(&name, s, Layout::Inline)).unwrap();
    let mut rx = p.receiver().unwrap();
    let f = rx.next_frame_timeout(LONG).expect("data behind the PINGs");
    assert_eq!(f.text(), Some("after the flood"));
    drop(f);
    assert_eq!(p.stats().get(Counter::PingsReceived), n as u64);
    // The latest PING is answered; the ones in between were superseded.
    let last = ping(n - 1);
    let deadline = Instant::now() + LONG;
    loop {
        let pongs: Vec<Vec<u8>> =
            cap.lock().unwrap().iter().filter(|f| f.0 == 0xA).map(|f| f.2.clone()).collect();
        if pongs.last() == Some(&last) {
            assert!(pongs.len() < n / 10, "{} PONGs sent for {n} PINGs", pongs.len());
            break;
        }
        assert!(Instant::now() < deadline, "latest PING never answered ({} PONGs)", pongs.len());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(p.state(), PipelineState::Connected), "{:?}", p.state());
    p.stop();
}

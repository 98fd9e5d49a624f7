//! WebSocket behaviour through the whole pipeline with the synthetic server: payloads
//! in place, reassembly, PING/PONG, CLOSE both ways, protocol errors, dead stage
//! processes, pipelines side by side, clean-up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::pipeline::{Pipeline, PipelineState};
use pipeline::ring::{ElemRing, MsgInbox, OverrunPolicy, PongFrame, WsFrameInfo};
use pipeline::runner::Layout;
use pipeline::shm::{names, ShmDir};
use pipeline::stage::{encode_server_frame, Delivery, Stage, SyntheticScript, WebSocketStage};
use pipeline::stats::{Counter, StatsRegion};
use pipeline_testkit::synthetic::*;

type Capture = Arc<Mutex<Vec<(u8, bool, Vec<u8>)>>>;

fn captured(c: &Capture, op: u8, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(f) = c.lock().unwrap().iter().find(|f| f.0 == op) {
            return Some(f.2.clone());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn reason(p: &Pipeline) -> pipeline::pipeline::DisconnectReason {
    match p.state() {
        PipelineState::Disconnected { reason } => reason,
        s => panic!("not disconnected: {s:?}"),
    }
}

#[test]
fn polled_payloads_point_into_msg_inbox() {
    let (name, _g) = unique("inplace");
    let mut p = Pipeline::start(config(
        &name,
        script(text_frames(2000), 700),
        Layout::Inline,
    ))
    .unwrap();
    let base = p.inbox().ring().ptr_at(0) as usize;
    let end = base + 2 * p.inbox().capacity();
    let mut rx = p.receiver().unwrap();
    for i in 0..2000 {
        let f = rx
            .next_frame_timeout(Duration::from_secs(10))
            .expect("frame");
        let a = f.payload().as_ptr() as usize;
        assert!(
            a >= base && a + f.payload().len() <= end,
            "payload {i} at {a:#x} is not inside MSG_INBOX"
        );
        assert_eq!(f.text().unwrap(), msg(i));
    }
    p.stop();
}

#[test]
fn callback_payloads_point_into_msg_inbox() {
    let (name, _g) = unique("inplace_cb");
    let seen: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let s2 = seen.clone();
    let p = Pipeline::start_with_callback(
        config(&name, script(text_frames(500), 0), Layout::Threads),
        Box::new(move |b, _, _| s2.lock().unwrap().push((b.as_ptr() as usize, b.len()))),
    )
    .unwrap();
    let base = p.inbox().ring().ptr_at(0) as usize;
    let end = base + 2 * p.inbox().capacity();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 500 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    for &(a, n) in seen.lock().unwrap().iter() {
        assert!(a >= base && a + n <= end);
    }
}

fn fragmented() -> Vec<u8> {
    let mut v = Vec::new();
    encode_server_frame(&mut v, 0x1, false, b"Hel");
    encode_server_frame(&mut v, 0x9, true, b"mid-ping");
    encode_server_frame(&mut v, 0x0, false, b"lo, ");
    encode_server_frame(&mut v, 0x0, false, &[]);
    encode_server_frame(&mut v, 0x0, true, "wörld".as_bytes());
    encode_server_frame(&mut v, 0x2, true, &[0, 1, 2, 255]);
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    encode_server_frame(&mut v, 0x2, false, &big[..30_000]);
    encode_server_frame(&mut v, 0x0, true, &big[30_000..]);
    v
}

#[test]
fn fragmented_messages_are_reassembled_in_place() {
    for chunk in [1usize, 7, 0] {
        let (name, _g) = unique(&format!("frag{chunk}"));
        let cap: Capture = Arc::default();
        let s = SyntheticScript {
            capture: Some(cap.clone()),
            ..script(fragmented(), chunk)
        };
        let mut p = Pipeline::start(config(&name, s, Layout::Inline)).unwrap();
        let base = p.inbox().ring().ptr_at(0) as usize;
        let mut rx = p.receiver().unwrap();
        let f = rx
            .next_frame_timeout(Duration::from_secs(10))
            .expect("message 1");
        assert_eq!(
            (f.opcode(), f.is_final(), f.text()),
            (1, true, Some("Hello, wörld"))
        );
        let a = f.payload().as_ptr() as usize;
        assert!(
            a >= base && a < base + 2 * (1 << 20),
            "reassembled message must live in MSG_INBOX"
        );
        drop(f);
        let f = rx
            .next_frame_timeout(Duration::from_secs(10))
            .expect("message 2");
        assert_eq!((f.opcode(), f.payload()), (2, &[0u8, 1, 2, 255][..]));
        drop(f);
        let f = rx
            .next_frame_timeout(Duration::from_secs(10))
            .expect("message 3");
        assert_eq!(f.payload().len(), 70_000);
        assert!(f
            .payload()
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8));
        drop(f);
        // The ping in the middle of the fragmented message was answered.
        assert_eq!(
            captured(&cap, 0xA, Duration::from_secs(5)).as_deref(),
            Some(&b"mid-ping"[..])
        );
        assert_eq!(p.stats().get(Counter::Reassembled), 2);
        p.stop();
    }
}

#[test]
fn frames_delivery_hands_out_each_fragment() {
    let (name, _g) = unique("frames");
    let mut c = config(&name, script(fragmented(), 5), Layout::Inline);
    c.delivery = Delivery::Frames;
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    let mut got = Vec::new();
    while got.len() < 7 {
        let f = rx
            .next_frame_timeout(Duration::from_secs(10))
            .expect("frame");
        got.push((f.opcode(), f.is_final(), f.payload().len()));
    }
    assert_eq!(
        got,
        vec![
            (1, false, 3),
            (0, false, 4),
            (0, false, 0),
            (0, true, 6),
            (2, true, 4),
            (2, false, 30_000),
            (0, true, 40_000)
        ]
    );
    p.stop();
}

/// The WebSocket stage alone: PING -> PONG on the PONGS ring, CLOSE -> close reply.
#[test]
fn websocket_stage_answers_ping_and_close_on_the_pongs_ring() {
    let (name, _g) = unique("wsstage");
    let dir = ShmDir::create(&name).unwrap();
    let stats = StatsRegion::create(&dir).unwrap();
    let inbox = MsgInbox::create(&dir, 1 << 16, OverrunPolicy::Backpressure).unwrap();
    let (pongs_tx, mut pc) = ElemRing::<PongFrame>::create(&dir, names::PONGS, 16).unwrap().split();
    let (frames_tx, mut fc) = ElemRing::<WsFrameInfo>::create(&dir, names::WS_FRAME_INFO, 16).unwrap().split();
    let mut ws = WebSocketStage::new(
        inbox.clone(),
        frames_tx,
        pongs_tx,
        stats.clone(),
        Delivery::Messages,
        1 << 15,
    );
    let mut w = inbox.writer();
    let mut v = Vec::new();
    encode_server_frame(&mut v, 0x9, true, b"are you there");
    encode_server_frame(&mut v, 0x8, true, b"\x03\xe9going away");
    // Byte by byte: nothing happens until a frame is complete.
    for (i, b) in v.iter().enumerate() {
        assert_eq!(w.write(&[*b]), 1);
        ws.poll(i as u64).unwrap();
        if i < 14 {
            assert!(pc.pop().is_none(), "PONG before the PING was complete");
        }
    }
    let pong = pc.pop().expect("PONG on the PONGS ring");
    assert_eq!((pong.opcode, pong.bytes()), (0x0A, &b"are you there"[..]));
    let close = pc.pop().expect("close reply on the PONGS ring");
    assert_eq!((close.opcode, close.bytes()), (0x08, &[0x03, 0xe9][..]));
    assert_eq!(stats.state_code(), 2, "closing");
    assert_eq!(
        stats.reason().kind,
        pipeline::pipeline::DisconnectKind::ServerClosed { code: 1001, reason: "going away".into() },
        "{}",
        stats.reason()
    );
    // Control frames leave release markers, not deliverable frames.
    assert_eq!(fc.pop().unwrap().opcode(), 0x9);
    assert_eq!(fc.pop().unwrap().opcode(), 0x8);
}

#[test]
fn ping_is_answered_and_server_close_is_echoed() {
    for layout in [Layout::Inline, Layout::Threads] {
        let (name, _g) = unique(&format!("close{}", layout.name()));
        let cap: Capture = Arc::default();
        let mut v = text_frames(10);
        encode_server_frame(&mut v, 0x9, true, b"hb-1");
        encode_server_frame(&mut v, 0x8, true, b"\x03\xe9going away");
        let s = SyntheticScript {
            capture: Some(cap.clone()),
            ..script(v, 0)
        };
        let mut p = Pipeline::start(config(&name, s, layout)).unwrap();
        assert!(p.wait_disconnected(Duration::from_secs(10)));
        assert_eq!(
            captured(&cap, 0xA, Duration::ZERO).as_deref(),
            Some(&b"hb-1"[..])
        );
        assert_eq!(
            captured(&cap, 0x8, Duration::ZERO).as_deref(),
            Some(&[0x03, 0xe9][..]),
            "close reply echoes the code"
        );
        let r = reason(&p);
        assert_eq!(
            r.kind,
            pipeline::pipeline::DisconnectKind::ServerClosed { code: 1001, reason: "going away".into() },
            "{r}"
        );
        assert_eq!(r.message, "closed by server: code 1001 going away");
        // The ten messages before the close are still delivered.
        let mut rx = p.receiver().unwrap();
        for i in 0..10 {
            assert_eq!(
                rx.next_frame_timeout(Duration::from_secs(2))
                    .expect("msg")
                    .text()
                    .unwrap(),
                msg(i)
            );
        }
        assert!(p.send_text("late").is_err(), "send after disconnect fails");
        p.stop();
    }
}

#[test]
fn client_close_completes_the_handshake() {
    let (name, _g) = unique("cclose");
    let cap: Capture = Arc::default();
    let s = SyntheticScript {
        capture: Some(cap.clone()),
        ..script(text_frames(3), 0)
    };
    let p = Pipeline::start(config(&name, s, Layout::Inline)).unwrap();
    p.send_text("hello").unwrap();
    p.send_binary(&[1, 2, 3]).unwrap();
    p.close(1000, "bye").unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(10)));
    let r = reason(&p);
    assert_eq!(r.kind, pipeline::pipeline::DisconnectKind::CloseCompleted { code: 1000 }, "{r}");
    let c = cap.lock().unwrap().clone();
    assert_eq!(c[0], (1, true, b"hello".to_vec()));
    assert_eq!(c[1], (2, true, vec![1, 2, 3]));
    assert_eq!(c[2], (8, true, b"\x03\xe8bye".to_vec()));
    assert_eq!(p.stats().get(Counter::SentMessages), 2, "data messages");
    p.stop();
}

/// `Pipeline::close` refuses exactly the codes the parser refuses from a server
/// (one rule: `ws::frame::is_valid_close_code`), reserved 1016-2999 included.
#[test]
fn close_refuses_the_codes_rfc_6455_reserves() {
    let (name, _g) = unique("ccodes");
    let p = Pipeline::start(config(&name, script(text_frames(1), 0), Layout::Inline)).unwrap();
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
        match p.close(code, "x") {
            Err(pipeline::Error::Config(m)) => assert!(m.contains("may not be sent"), "{code}: {m}"),
            other => panic!("close({code}) gave {other:?}"),
        }
    }
    assert!(matches!(p.state(), PipelineState::Connected), "a refused close changes nothing");
    p.close(3000, "ok").unwrap();
    p.stop();
}

#[test]
fn masked_server_frame_is_a_protocol_error() {
    let (name, _g) = unique("masked");
    let cap: Capture = Arc::default();
    let v = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    let s = SyntheticScript {
        capture: Some(cap.clone()),
        ..script(v, 0)
    };
    let p = Pipeline::start(config(&name, s, Layout::Inline)).unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(10)));
    let r = reason(&p);
    assert_eq!(r.kind, pipeline::pipeline::DisconnectKind::ProtocolError { close_code: 1002 }, "{r}");
    assert!(r.message.contains("masked"), "{r}");
    assert_eq!(
        captured(&cap, 0x8, Duration::ZERO).as_deref(),
        Some(&1002u16.to_be_bytes()[..])
    );
    p.stop();
}

#[test]
fn dropped_connection_is_reported() {
    let (name, _g) = unique("eof");
    let s = SyntheticScript {
        eof_at_end: true,
        ..script(text_frames(5), 0)
    };
    let p = Pipeline::start(config(&name, s, Layout::Threads)).unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(10)));
    let r = reason(&p);
    assert_eq!(r.kind, pipeline::pipeline::DisconnectKind::TcpClosed, "{r}");
    p.stop();
}

#[test]
fn a_killed_stage_process_is_noticed_and_reported() {
    let (name, _g) = unique("sigkill");
    let s = SyntheticScript {
        bytes_per_sec: 200_000,
        ..script(text_frames(100_000), 0)
    };
    let p = Pipeline::start(config(&name, s, Layout::Processes)).unwrap();
    let pids = p.child_pids();
    assert_eq!(
        pids.len(),
        2,
        "transport and websocket children (polling: no app child)"
    );
    // SAFETY: killing our own child.
    unsafe { libc::kill(pids[1], libc::SIGKILL) };
    assert!(
        p.wait_disconnected(Duration::from_secs(10)),
        "the supervisor must notice"
    );
    let r = reason(&p);
    assert_eq!(
        r.kind,
        pipeline::pipeline::DisconnectKind::StageDied {
            stage: "websocket".into(),
            pid: pids[1],
            exit: pipeline::pipeline::StageExit::Signal(9)
        },
        "{r}"
    );
    assert_eq!(r.message, format!("stage websocket (pid {}) killed by signal 9", pids[1]));
    p.stop();
    // Every child is gone.
    for pid in pids {
        // SAFETY: signal 0 only checks existence.
        assert!(
            unsafe { libc::kill(pid, 0) } != 0,
            "child {pid} still alive"
        );
    }
    assert!(!ShmDir::path_for(&name).exists());
}

#[test]
fn two_pipelines_side_by_side() {
    let (a, _ga) = unique("side_a");
    let (b, _gb) = unique("side_b");
    let mut va = Vec::new();
    let mut vb = Vec::new();
    for i in 0..5000 {
        encode_server_frame(&mut va, 1, true, format!("A{i}").as_bytes());
        encode_server_frame(&mut vb, 1, true, format!("B{i}").as_bytes());
    }
    let mut pa = Pipeline::start(config(&a, script(va, 999), Layout::Inline)).unwrap();
    let mut pb = Pipeline::start(config(&b, script(vb, 0), Layout::Threads)).unwrap();
    assert!(
        ShmDir::path_for(&a).join(names::MSG_INBOX).exists()
            && ShmDir::path_for(&b).join(names::MSG_INBOX).exists()
    );
    let (mut ra, mut rb) = (pa.receiver().unwrap(), pb.receiver().unwrap());
    for i in 0..5000 {
        assert_eq!(
            ra.next_frame_timeout(Duration::from_secs(10))
                .unwrap()
                .text()
                .unwrap(),
            format!("A{i}")
        );
        assert_eq!(
            rb.next_frame_timeout(Duration::from_secs(10))
                .unwrap()
                .text()
                .unwrap(),
            format!("B{i}")
        );
    }
    pa.stop();
    assert!(!ShmDir::path_for(&a).exists());
    assert!(
        ShmDir::path_for(&b).exists(),
        "stopping one pipeline leaves the other alone"
    );
    assert!(matches!(pb.state(), PipelineState::Connected));
    pb.stop();
    assert!(!ShmDir::path_for(&b).exists());
}

#[test]
fn stop_removes_the_shm_directory_in_every_layout() {
    for layout in [Layout::Inline, Layout::Threads, Layout::Processes] {
        let (name, _g) = unique(&format!("stop{}", layout.name()));
        let p = Pipeline::start(config(&name, script(text_frames(10), 0), layout)).unwrap();
        assert!(ShmDir::path_for(&name).join(names::STATS).exists());
        p.stop();
        assert!(
            !ShmDir::path_for(&name).exists(),
            "{} left its directory",
            layout.name()
        );
        assert_eq!(reason(&p).kind, pipeline::pipeline::DisconnectKind::Stopped, "{}", reason(&p));
    }
}

#[test]
fn default_names_are_unique_and_cleaned_up() {
    let mut c1 = config("x", script(vec![], 0), Layout::Inline);
    c1.name = None;
    let c2 = c1.clone();
    let p1 = Pipeline::start(c1).unwrap();
    let p2 = Pipeline::start(c2).unwrap();
    let _g1 = ShmGuard(p1.name().to_string());
    let _g2 = ShmGuard(p2.name().to_string());
    assert_ne!(p1.name(), p2.name());
    assert!(p1.name().starts_with(&std::process::id().to_string()));
    p1.stop();
    p2.stop();
}

#[test]
fn setup_timeout_is_a_clear_error() {
    let (name, _g) = unique("timeout");
    let mut c = config(&name, script(vec![], 0), Layout::Inline);
    c.url = "ws://x/".into();
    c.timeout = Duration::from_millis(1);
    // The synthetic server answers the upgrade at once; a 1 ms deadline may or may not
    // pass first, but either way the pipeline starts or fails cleanly.
    match Pipeline::start(c) {
        Ok(p) => p.stop(),
        Err(e) => assert!(e.to_string().contains("handshake"), "{e}"),
    }
    assert!(!ShmDir::path_for(&name).exists());
}

#[test]
fn overwrite_policy_loses_old_frames_but_never_delivers_garbage() {
    let (name, _g) = unique("overwrite");
    let n = 30_000;
    let data = text_frames(n);
    // About one second of stream: the reader sleeps through the first 300 ms.
    let s = SyntheticScript {
        bytes_per_sec: data.len() as u64,
        ..script(data, 0)
    };
    let mut c = config(&name, s, Layout::Inline);
    c.overrun = OverrunPolicy::Overwrite;
    c.inbox_size = 64 * 1024;
    c.max_message = 16 * 1024;
    c.frame_ring = 1024;
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // fall far behind
    let (mut delivered, mut flagged, mut last) = (0usize, 0usize, None::<usize>);
    while let Some(f) = rx.next_frame_timeout(Duration::from_millis(300)) {
        let text = f.text().map(str::to_string);
        let intact = f.intact();
        if f.after_overrun() {
            flagged += 1;
        }
        drop(f);
        if !intact {
            continue;
        }
        let t = text.expect("utf-8");
        let i: usize = t[1..8]
            .parse()
            .unwrap_or_else(|_| panic!("garbage delivered: {t:?}"));
        assert_eq!(t, msg(i), "damaged message delivered");
        assert!(last.is_none_or(|l| i > l), "out of order");
        last = Some(i);
        delivered += 1;
    }
    assert!(
        delivered > 0 && delivered < n,
        "delivered {delivered} of {n}, flagged {flagged}, {:?} {:?}",
        p.state(),
        p.stats().iter().filter(|c| c.1 > 0).collect::<Vec<_>>()
    );
    assert!(flagged > 0, "the loss is flagged");
    assert!(p.stats().get(Counter::Overruns) > 0 || p.stats().get(Counter::FrameRingFull) > 0);
    assert!(
        matches!(p.state(), PipelineState::Connected),
        "{:?}",
        p.state()
    );
    p.stop();
}

#[test]
fn a_panicking_callback_disconnects_with_the_message() {
    for layout in [Layout::Inline, Layout::Threads, Layout::Processes] {
        let (name, _g) = unique(&format!("panic{}", layout.name()));
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let mut n = 0;
        let p = Pipeline::start_with_callback(
            config(&name, script(text_frames(100), 0), layout),
            Box::new(move |_, _, _| {
                n += 1;
                if n == 50 {
                    panic!("callback bug at message {n}");
                }
            }),
        )
        .unwrap();
        let ok = p.wait_disconnected(Duration::from_secs(10));
        std::panic::set_hook(prev);
        assert!(ok, "{}: not disconnected", layout.name());
        let r = reason(&p);
        assert!(
            matches!(&r.kind, pipeline::pipeline::DisconnectKind::StagePanicked { stage } if stage.split('+').any(|s| s == "app")),
            "{}: {r:?}",
            layout.name()
        );
        assert!(r.message.contains("callback bug at message 50"), "{}: {r}", layout.name());
        p.stop();
    }
}

#[test]
fn sends_from_several_threads_are_serialised() {
    let (name, _g) = unique("mtsend");
    let cap: Capture = Arc::default();
    let s = SyntheticScript { capture: Some(cap.clone()), ..script(vec![], 0) };
    let mut c = config(&name, s, Layout::Threads);
    c.outbox_size = 1 << 16;
    let p = Arc::new(Pipeline::start(c).unwrap());
    let hs: Vec<_> = (0..2)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let m = format!("t{t} {i}");
                    loop {
                        match p.send_text(&m) {
                            Ok(()) => break,
                            Err(pipeline::Error::WouldBlock) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while cap.lock().unwrap().len() < 4000 {
        assert!(Instant::now() < deadline, "{} of 4000 sent", cap.lock().unwrap().len());
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = cap.lock().unwrap();
    for t in 0..2 {
        let mine: Vec<String> = c
            .iter()
            .map(|f| String::from_utf8(f.2.clone()).unwrap())
            .filter(|m| m.starts_with(&format!("t{t} ")))
            .collect();
        assert_eq!(mine.len(), 2000);
        assert!(mine.iter().enumerate().all(|(i, m)| *m == format!("t{t} {i}")), "thread {t}'s messages out of order");
    }
}

/// The reason's kind and details go through the stats region: another process attaching
/// to it (`pipeline stat`, the C API) reads back the same typed reason; the first
/// reason wins, kind included.
#[test]
fn the_disconnect_kind_round_trips_through_the_stats_region() {
    use pipeline::pipeline::{DisconnectKind as K, DisconnectReason, StageExit};
    let kinds = [
        K::ServerClosed { code: 4001, reason: "bye from server".into() },
        K::ServerClosed { code: 1000, reason: "x".repeat(123) },
        K::CloseCompleted { code: 1000 },
        K::ProtocolError { close_code: 1009 },
        K::StageDied { stage: "websocket".into(), pid: 4242, exit: StageExit::Signal(9) },
        K::StageDied { stage: "app".into(), pid: 7, exit: StageExit::Exited(3) },
        K::StageDied { stage: "transport".into(), pid: 8, exit: StageExit::CollectedElsewhere },
        K::StagePanicked { stage: "transport+websocket+app".into() },
        K::TcpReset,
        K::Stopped,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let (name, _g) = unique(&format!("kind{i}"));
        let dir = ShmDir::create(&name).unwrap();
        let stats = StatsRegion::create(&dir).unwrap();
        assert_eq!(stats.reason().kind, K::Unknown, "nothing recorded yet");
        let r = DisconnectReason::new(kind.clone(), format!("reason {i}"));
        stats.disconnect(r.clone());
        stats.disconnect(DisconnectReason::new(K::Stopped, "an echo of the shutdown"));
        let other = StatsRegion::attach(&ShmDir::open(&name).unwrap()).unwrap();
        assert_eq!(other.reason(), r, "{kind:?}");
        assert_eq!(other.state(), PipelineState::Disconnected { reason: r });
        assert_eq!(K::name_of(kind.code()), kind.name());
    }
}

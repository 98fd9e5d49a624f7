//! Reconnect, resubscribe and liveness of one connection over the synthetic transport
//! (deterministic): every way a server ends a connection, one stream across them
//! (FLAG_RECONNECT, a cut message dropped), the events, what never reconnects, and 200
//! reconnects without leaks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::feed::{LivenessConfig, ReconnectPolicy};
use pipeline::pipeline::{Config, DisconnectKind, Pipeline, PipelineState, Subscription};
use pipeline::runner::Layout;
use pipeline::stage::{encode_server_frame, SyntheticScript};
use pipeline::stats::Counter;
use pipeline_testkit::synthetic::*;

type Capture = Arc<Mutex<Vec<(u8, bool, Vec<u8>)>>>;

const MS: u64 = 1_000_000;

fn fast_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_ns: 5 * MS,
        max_ns: 40 * MS,
        jitter: 0.0,
        storm_attempts: 0,
        ..ReconnectPolicy::standard()
    }
}

fn frames(tag: &str, n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        encode_server_frame(&mut v, 0x1, true, format!("{tag}-{i}").as_bytes());
    }
    v
}

enum End {
    Reset,
    Fin,
    Close(u16),
    /// Stay open (the last connection).
    Open,
    /// Stay open and silent (liveness must notice).
    Silent,
}

fn conn(tag: &str, n: usize, end: End, cap: &Capture) -> SyntheticScript {
    let mut data = frames(tag, n);
    let mut s = SyntheticScript::default();
    match end {
        End::Reset => s.reset_at_end = true,
        End::Fin => s.eof_at_end = true,
        End::Close(code) => encode_server_frame(&mut data, 0x8, true, &code.to_be_bytes()),
        End::Open | End::Silent => {}
    }
    s.data = Arc::new(data);
    s.capture = Some(cap.clone());
    s
}

fn cfg(name: &str, first: SyntheticScript, then: Vec<SyntheticScript>) -> Config {
    let mut s = first;
    s.then = then;
    let mut c = config(name, s, Layout::Inline);
    c.reconnect = fast_policy();
    c.subscriptions = vec![
        Subscription::Text("{\"op\":\"subscribe\",\"args\":[\"trades\"]}".into()),
        Subscription::Binary(vec![1, 2, 3]),
    ];
    c
}

fn caps(n: usize) -> Vec<Capture> {
    (0..n).map(|_| Arc::new(Mutex::new(Vec::new()))).collect()
}

/// Every frame's text and whether it carried FLAG_RECONNECT, until `want` frames.
fn collect(p: &mut Pipeline, want: usize, within: Duration) -> Vec<(String, bool)> {
    let mut rx = p.receiver().unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while out.len() < want && Instant::now() < deadline {
        if let Some(f) = rx.next_frame_timeout(Duration::from_millis(50)) {
            out.push((f.text().unwrap_or("<binary>").to_string(), f.after_reconnect()));
        }
    }
    out
}

fn subscribed(c: &Capture) -> bool {
    let v = c.lock().unwrap();
    v.len() >= 2
        && v[0] == (0x1, true, b"{\"op\":\"subscribe\",\"args\":[\"trades\"]}".to_vec())
        && v[1] == (0x2, true, vec![1, 2, 3])
}

#[test]
fn reset_fin_and_close_1001_each_reconnect_and_resubscribe() {
    let (name, _g) = unique("rc_ends");
    let c = caps(4);
    let config = cfg(
        &name,
        conn("a", 5, End::Reset, &c[0]),
        vec![
            conn("b", 5, End::Fin, &c[1]),
            conn("c", 5, End::Close(1001), &c[2]),
            conn("d", 5, End::Open, &c[3]),
        ],
    );
    let mut p = Pipeline::start(config).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    p.on_state_change(Box::new(move |s| ev.lock().unwrap().push(s.clone())));
    let got = collect(&mut p, 20, Duration::from_secs(10));
    let texts: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    let want: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .flat_map(|t| (0..5).map(move |i| format!("{t}-{i}")))
        .collect();
    assert_eq!(texts, want, "one stream across three reconnects");
    let flagged: Vec<usize> = got.iter().enumerate().filter(|g| g.1 .1).map(|g| g.0).collect();
    assert_eq!(flagged, vec![5, 10, 15], "FLAG_RECONNECT on each new connection's first message");
    for (i, cap) in c.iter().enumerate() {
        assert!(subscribed(cap), "connection {i} got the subscriptions first: {:?}", cap.lock().unwrap());
    }
    // The CLOSE 1001 was answered before reconnecting.
    assert!(c[2].lock().unwrap().iter().any(|f| f.0 == 0x8 && f.2 == 1001u16.to_be_bytes()));
    assert_eq!(p.state(), PipelineState::Connected);
    let st = p.stats();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(st.get(Counter::Reconnects), 3, "{:?} {:?}", events.lock().unwrap(), p.stats_region().reason());
    assert_eq!(st.get(Counter::Generation), 3);
    std::thread::sleep(Duration::from_millis(20));
    let ev = events.lock().unwrap().clone();
    let causes: Vec<DisconnectKind> = ev
        .iter()
        .filter_map(|s| match s {
            PipelineState::Reconnecting { cause, attempt } => {
                assert!(*attempt >= 1);
                Some(cause.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(causes.len(), 3, "three Reconnecting events: {ev:?}");
    assert_eq!(causes[0], DisconnectKind::TcpReset);
    assert_eq!(causes[1], DisconnectKind::TcpClosed);
    assert!(matches!(causes[2], DisconnectKind::ServerClosed { code: 1001, .. }), "{:?}", causes[2]);
    assert_eq!(ev.iter().filter(|s| **s == PipelineState::Connected).count(), 3, "{ev:?}");
    p.stop();
}

#[test]
fn a_message_cut_by_the_disconnect_is_not_delivered() {
    let (name, _g) = unique("rc_cut");
    let c = caps(2);
    let mut first = conn("a", 3, End::Fin, &c[0]);
    // A text frame that says 100 bytes and brings 10, then FIN; and the start of a
    // fragmented message.
    let mut data = (*first.data).clone();
    data.extend_from_slice(&[0x81, 100]);
    data.extend_from_slice(b"0123456789");
    first.data = Arc::new(data);
    let mut p = Pipeline::start(cfg(&name, first, vec![conn("b", 3, End::Open, &c[1])])).unwrap();
    let got = collect(&mut p, 6, Duration::from_secs(5));
    let texts: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(texts, ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]);
    assert!(got[3].1 && !got[4].1);
    p.stop();
}

#[test]
fn a_fragment_in_progress_is_dropped_in_messages_delivery() {
    let (name, _g) = unique("rc_frag");
    let c = caps(2);
    let mut first = conn("a", 2, End::Reset, &c[0]);
    let mut data = (*first.data).clone();
    encode_server_frame(&mut data, 0x1, false, b"first half ");
    first.data = Arc::new(data);
    let mut p = Pipeline::start(cfg(&name, first, vec![conn("b", 2, End::Open, &c[1])])).unwrap();
    let got = collect(&mut p, 4, Duration::from_secs(5));
    let texts: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(texts, ["a-0", "a-1", "b-0", "b-1"]);
    p.stop();
}

#[test]
fn close_1008_and_our_close_do_not_reconnect() {
    let (name, _g) = unique("rc_1008");
    let c = caps(2);
    let p = Pipeline::start(cfg(&name, conn("a", 1, End::Close(1008), &c[0]), vec![conn("b", 1, End::Open, &c[1])]))
        .unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(5)));
    match p.state() {
        PipelineState::Disconnected { reason } => {
            assert!(matches!(reason.kind, DisconnectKind::ServerClosed { code: 1008, .. }), "{reason:?}");
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(p.stats().get(Counter::Reconnects), 0);
    p.stop();

    let (name, _g2) = unique("rc_ourclose");
    let c = caps(2);
    let p = Pipeline::start(cfg(&name, conn("a", 1, End::Open, &c[0]), vec![conn("b", 1, End::Open, &c[1])])).unwrap();
    p.close(1000, "bye").unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(5)));
    assert!(matches!(reason_of(&p), DisconnectKind::CloseCompleted { code: 1000 }));
    assert_eq!(p.stats().get(Counter::Reconnects), 0);
    assert!(c[1].lock().unwrap().is_empty(), "no second connection");
    p.stop();
}

fn reason_of(p: &Pipeline) -> DisconnectKind {
    match p.state() {
        PipelineState::Disconnected { reason } => reason.kind,
        s => panic!("{s:?}"),
    }
}

#[test]
fn reconnect_off_ends_as_before() {
    let (name, _g) = unique("rc_off");
    let c = caps(2);
    let mut config = cfg(&name, conn("a", 2, End::Fin, &c[0]), vec![conn("b", 1, End::Open, &c[1])]);
    config.reconnect = ReconnectPolicy::default();
    let p = Pipeline::start(config).unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(5)));
    assert_eq!(reason_of(&p), DisconnectKind::TcpClosed);
    assert!(subscribed(&c[0]), "subscriptions go out without reconnect too");
    p.stop();
}

#[test]
fn max_attempts_gives_up_with_the_reason() {
    let (name, _g) = unique("rc_giveup");
    let c = caps(1);
    let mut config = cfg(&name, conn("a", 1, End::Fin, &c[0]), vec![conn("b", 0, End::Fin, &c[0])]);
    config.reconnect.max_attempts = Some(3);
    let p = Pipeline::start(config).unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(5)));
    match p.state() {
        PipelineState::Disconnected { reason } => {
            assert_eq!(reason.kind, DisconnectKind::TcpClosed);
            assert!(reason.message.contains("gave up after 3"), "{}", reason.message);
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(p.stats().get(Counter::Reconnects), 3);
    p.stop();
}

#[test]
fn liveness_pings_and_a_silent_server_is_reconnected() {
    let (name, _g) = unique("rc_live");
    let c = caps(2);
    let mut config = cfg(&name, conn("a", 2, End::Silent, &c[0]), vec![conn("b", 2, End::Open, &c[1])]);
    config.liveness = Some(LivenessConfig::new(20 * MS, 100 * MS).unwrap());
    let t0 = Instant::now();
    let mut p = Pipeline::start(config).unwrap();
    let got = collect(&mut p, 4, Duration::from_secs(5));
    let texts: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(texts, ["a-0", "a-1", "b-0", "b-1"]);
    assert!(t0.elapsed() >= Duration::from_millis(100), "not before the timeout");
    let pings = c[0].lock().unwrap().iter().filter(|f| f.0 == 0x9).count();
    assert!(pings >= 3, "PINGs every 20 ms on the silent connection: {pings}");
    let st = p.stats();
    assert_eq!(st.get(Counter::LivenessTimeouts), 1);
    assert_eq!(st.get(Counter::ReconnectCause) as u32, DisconnectKind::Timeout.code());
    p.stop();
}

#[test]
fn data_keeps_a_connection_alive() {
    // Data every few ms (a slow synthetic rate) and no PONG ever: alive.
    let (name, _g) = unique("rc_alive");
    let c = caps(1);
    let mut first = conn("a", 200, End::Open, &c[0]);
    first.bytes_per_sec = 2000; // ~ one 5-byte frame every 3 ms
    let mut config = cfg(&name, first, vec![]);
    config.liveness = Some(LivenessConfig::new(20 * MS, 60 * MS).unwrap());
    let p = Pipeline::start(config).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.state(), PipelineState::Connected);
    assert_eq!(p.stats().get(Counter::LivenessTimeouts), 0);
    p.stop();
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn shm_files(name: &str) -> usize {
    std::fs::read_dir(pipeline::shm::ShmDir::path_for(name)).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn two_hundred_reconnects_leak_nothing() {
    let (name, _g) = unique("rc_200");
    let c = caps(1);
    let mut config = cfg(&name, conn("x", 3, End::Fin, &c[0]), vec![conn("x", 3, End::Fin, &c[0])]);
    config.reconnect.initial_ns = MS / 2;
    config.reconnect.max_ns = MS;
    config.reconnect.multiplier = 1.0;
    let mut p = Pipeline::start(config).unwrap();
    let mut rx = p.receiver().unwrap();
    let p = p;
    let mut n = 0usize;
    let mut measure = |rx: &mut pipeline::pipeline::Receiver, until: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while p.stats().get(Counter::Reconnects) < until && Instant::now() < deadline {
            while let Some(f) = rx.next_frame() {
                drop(f);
                n += 1;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    // Warm up (first allocations of every path), then measure 200 more.
    measure(&mut rx, 20);
    let (fd0, shm0, rss0) = (fds(), shm_files(&name), rss_kib());
    measure(&mut rx, 220);
    let (fd1, shm1, rss1) = (fds(), shm_files(&name), rss_kib());
    eprintln!("200 reconnects: fds {fd0} -> {fd1}, /dev/shm entries {shm0} -> {shm1}, RSS {rss0} -> {rss1} KiB, {n} messages");
    assert!(p.stats().get(Counter::Reconnects) >= 220);
    assert_eq!(fd1, fd0, "fd count");
    assert_eq!(shm1, shm0, "shm files");
    assert!(rss1 <= rss0 + 512, "RSS grew {rss0} -> {rss1} KiB (slack 512 KiB)");
    assert!(!matches!(p.state(), PipelineState::Disconnected { .. }), "{:?}", p.state());
    p.stop();
}


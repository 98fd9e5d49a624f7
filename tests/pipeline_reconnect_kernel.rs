//! Reconnect over the kernel transports (ws:// and wss:// on loopback) against
//! `pipeline_testkit::feed_server`: the server ends connections by RST, FIN, close 1001
//! and a stall (no data, no PONG: the liveness check must notice); each time the client
//! reconnects within the backoff, the server receives the subscription again on the new
//! connection, the application sees the events and FLAG_RECONNECT, the stream goes on,
//! and over wss:// the new connections resume the TLS session.

use std::time::{Duration, Instant};

use pipeline::pipeline::{DisconnectKind, Pipeline, PipelineState};
use pipeline::stats::Counter;
use pipeline_testkit::feed_server::{Ending, FeedServer};
use pipeline_testkit::reconnect::{
    check_four_endings, close_without_reconnect, feed_config, feed_config_at, four_endings, record_states,
    take_messages, SUB,
};
use pipeline_testkit::synthetic::unique;

fn run_endings(tls: bool) {
    let per = 5;
    let server = FeedServer::start(tls, four_endings(per), Duration::from_millis(2));
    let (name, _g) = unique(if tls { "rck_tls" } else { "rck_ws" });
    let mut p = Pipeline::start(feed_config(&name, &server)).unwrap();
    let events = record_states(&mut p);
    let mut rx = p.receiver().unwrap();
    check_four_endings(&p, &mut rx, &events, &server, per, Duration::from_secs(20), tls);
    // The stalled connection was pinged (it reads nothing, so only our counter says so).
    assert!(p.stats().get(Counter::PingsSent) >= 3, "liveness pinged the stalled server");
    close_without_reconnect(&p, &server);
}

#[test]
fn ws_rst_fin_close_1001_and_stall_reconnect_and_resubscribe() {
    run_endings(false);
}

#[test]
fn wss_rst_fin_close_1001_and_stall_reconnect_resume_and_resubscribe() {
    run_endings(true);
}

#[test]
fn server_down_then_back_reconnects_after_failed_attempts() {
    // The server goes away (its port refuses); attempts fail with the backoff growing;
    // it comes back on the same port and the stream goes on.
    let server = FeedServer::start(false, vec![(3, Ending::Rst)], Duration::from_millis(2));
    let port = server.port;
    let (name, _g) = unique("rck_down");
    let mut c = feed_config(&name, &server);
    c.liveness = None;
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Some(f) = rx.next_frame_timeout(Duration::from_secs(5)) {
            got.push(f.text().unwrap().to_string());
        }
    }
    drop(server);
    std::thread::sleep(Duration::from_millis(600));
    let attempts = p.stats().get(Counter::Reconnects);
    assert!(attempts >= 3, "attempts while the server is down: {attempts}");
    assert!(matches!(p.state(), PipelineState::Reconnecting { .. }), "{:?}", p.state());
    // Back (same port: a new listener with SO_REUSEADDR from std).
    let back = FeedServer::start_on(false, port, vec![], Duration::from_millis(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 6 && Instant::now() < deadline {
        if let Some(f) = rx.next_frame_timeout(Duration::from_millis(50)) {
            got.push(f.text().unwrap().to_string());
        }
    }
    assert_eq!(&got[3..6], ["0-0", "0-1", "0-2"]);
    assert_eq!(back.connections()[0].received.first(), Some(&(0x1, SUB.as_bytes().to_vec())));
    p.stop();
}

/// A loopback port nothing listens on (bound once, then closed).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn first_connect_with_reconnect_waits_for_a_server_that_comes_up_later() {
    // A feed handler started before its gateway: the first attempts are refused, the
    // server comes up 1 s later, start returns once connected and the stream arrives.
    let port = free_port();
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        FeedServer::start_on(true, port, vec![], Duration::from_millis(2))
    });
    let (name, _g) = unique("rck_first");
    let mut c = feed_config_at(&name, &format!("wss://127.0.0.1:{port}/feed"));
    c.liveness = None;
    c.timeout = Duration::from_secs(10);
    let mut attempts = Vec::new();
    let t0 = Instant::now();
    let mut p = Pipeline::start_reporting(c, &mut |s, why| attempts.push((s.clone(), why.to_string()))).unwrap();
    let waited = t0.elapsed();
    let server = server.join().unwrap();
    assert!(waited >= Duration::from_millis(900), "start returned before the server was up: {waited:?}");
    assert!(attempts.len() >= 3, "refused attempts in 1 s with a 20..200 ms backoff: {attempts:?}");
    for (i, (s, why)) in attempts.iter().enumerate() {
        match s {
            PipelineState::Reconnecting { attempt, cause } => {
                assert_eq!(*attempt as usize, i + 1, "attempts are numbered 1, 2, ...: {attempts:?}");
                assert_eq!(*cause, DisconnectKind::Network, "{why}");
                assert!(why.contains("refused"), "the attempt's error: {why}");
            }
            s => panic!("not a Reconnecting event: {s:?}"),
        }
    }
    assert_eq!(p.state(), PipelineState::Connected);
    let mut rx = p.receiver().unwrap();
    let got = take_messages(&mut rx, 3, Duration::from_secs(5));
    assert_eq!(got.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["0-0", "0-1", "0-2"]);
    // The first connection is not a reconnect: no FLAG_RECONNECT, generation 0.
    assert!(got.iter().all(|(_, r)| !r), "{got:?}");
    assert_eq!(p.stats().get(Counter::Generation), 0);
    assert_eq!(server.connections()[0].received.first(), Some(&(0x1, SUB.as_bytes().to_vec())));
    p.stop();
}

#[test]
fn first_connect_gives_up_at_the_setup_timeout_naming_the_last_error() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/feed");
    let (name, _g) = unique("rck_first_to");
    let mut c = feed_config_at(&name, &url);
    c.timeout = Duration::from_millis(700);
    let mut attempts = 0;
    let t0 = Instant::now();
    let e = Pipeline::start_reporting(c, &mut |_, _| attempts += 1).unwrap_err();
    let took = t0.elapsed();
    match &e {
        pipeline::Error::Timeout(m) => {
            assert!(m.contains("set-up timeout of 0.7 s"), "{m}");
            assert!(m.contains("the last attempt failed") && m.contains("refused"), "{m}");
        }
        e => panic!("expected a timeout naming the last error, got {e}"),
    }
    assert!(attempts >= 2, "{attempts} attempts reported");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "gave up after {took:?}");

    // Reconnect off: the first refusal is the error, at once.
    let (name, _g2) = unique("rck_first_off");
    let mut c = feed_config_at(&name, &url);
    c.reconnect = pipeline::feed::ReconnectPolicy::default();
    let mut attempts = 0;
    let t0 = Instant::now();
    let e = Pipeline::start_reporting(c, &mut |_, _| attempts += 1).unwrap_err();
    assert!(matches!(e, pipeline::Error::Net(_)), "{e}");
    assert!(e.to_string().contains("refused"), "{e}");
    assert_eq!(attempts, 0);
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
}

#[test]
fn first_connect_retries_a_server_that_cuts_the_upgrade() {
    // The first two connections are accepted and closed before the upgrade response
    // (a gateway still starting): the transport stage's own retries, reported the same
    // way; then a real server on the same port streams.
    let cutter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = cutter.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (s, _) = cutter.accept().unwrap();
            drop(s);
        }
        drop(cutter);
        FeedServer::start_on(false, port, vec![], Duration::from_millis(2))
    });
    let (name, _g) = unique("rck_first_cut");
    let mut c = feed_config_at(&name, &format!("ws://127.0.0.1:{port}/feed"));
    c.liveness = None;
    c.timeout = Duration::from_secs(10);
    let mut attempts = Vec::new();
    let mut p = Pipeline::start_reporting(c, &mut |s, why| attempts.push((s.clone(), why.to_string()))).unwrap();
    let server = server.join().unwrap();
    assert!(attempts.len() >= 2, "{attempts:?}");
    let numbers: Vec<u32> = attempts
        .iter()
        .map(|(s, _)| match s {
            PipelineState::Reconnecting { attempt, .. } => *attempt,
            s => panic!("{s:?}"),
        })
        .collect();
    assert_eq!(numbers, (1..=attempts.len() as u32).collect::<Vec<_>>(), "{attempts:?}");
    assert_eq!(p.state(), PipelineState::Connected);
    let mut rx = p.receiver().unwrap();
    let got = take_messages(&mut rx, 3, Duration::from_secs(5));
    assert_eq!(got.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["0-0", "0-1", "0-2"]);
    // Retried inside the stages: the connection that works is counted as a reconnect
    // (documented in docs/pipeline.md): generation >= 1, FLAG_RECONNECT on its first frame.
    assert!(p.stats().get(Counter::Generation) >= 1);
    assert!(got[0].1, "{got:?}");
    assert!(attempts.iter().all(|(s, _)| matches!(s, PipelineState::Reconnecting { cause: DisconnectKind::UpgradeFailed, .. })
        || matches!(s, PipelineState::Reconnecting { cause: DisconnectKind::Network, .. })), "{attempts:?}");
    assert_eq!(server.connections()[0].received.first(), Some(&(0x1, SUB.as_bytes().to_vec())));
    p.stop();
}

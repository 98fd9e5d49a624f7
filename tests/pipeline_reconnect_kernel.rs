//! Reconnect over the kernel transports (ws:// and wss:// on loopback) against
//! `pipeline_testkit::feed_server`: the server ends connections by RST, FIN, close 1001
//! and a stall (no data, no PONG: the liveness check must notice); each time the client
//! reconnects within the backoff, the server receives the subscription again on the new
//! connection, the application sees the events and FLAG_RECONNECT, the stream goes on,
//! and over wss:// the new connections resume the TLS session.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::feed::{LivenessConfig, ReconnectPolicy};
use pipeline::pipeline::{Config, DisconnectKind, Pipeline, PipelineState, Subscription};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;
use pipeline_testkit::certs::certs;
use pipeline_testkit::feed_server::{Ending, FeedServer};
use pipeline_testkit::synthetic::unique;

const MS: u64 = 1_000_000;
const SUB: &str = "{\"op\":\"subscribe\",\"args\":[\"trades\"]}";

fn config(name: &str, server: &FeedServer) -> Config {
    let mut c = Config::new(&server.url());
    c.name = Some(name.to_string());
    c.ca_file = Some(certs().ca());
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.timeout = Duration::from_secs(3);
    c.quiet = true;
    c.reconnect = ReconnectPolicy {
        initial_ns: 20 * MS,
        max_ns: 200 * MS,
        jitter: 0.0,
        storm_attempts: 0,
        ..ReconnectPolicy::standard()
    };
    c.subscriptions = vec![Subscription::Text(SUB.into())];
    c.liveness = Some(LivenessConfig::new(100 * MS, 400 * MS).unwrap());
    c
}

fn run_endings(tls: bool) {
    let per = 5;
    let plan = vec![
        (per, Ending::Rst),
        (per, Ending::Fin),
        (per, Ending::Close1001),
        (per, Ending::Stall),
    ];
    let server = FeedServer::start(tls, plan, Duration::from_millis(2));
    let (name, _g) = unique(if tls { "rck_tls" } else { "rck_ws" });
    let mut p = Pipeline::start(config(&name, &server)).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    p.on_state_change(Box::new(move |s| ev.lock().unwrap().push(s.clone())));
    let mut rx = p.receiver().unwrap();
    let t0 = Instant::now();
    let mut got: Vec<(String, bool)> = Vec::new();
    // 4 ended connections, then the fifth keeps streaming: take 5 of its messages.
    while got.len() < 5 * per && t0.elapsed() < Duration::from_secs(20) {
        if let Some(f) = rx.next_frame_timeout(Duration::from_millis(50)) {
            got.push((f.text().unwrap().to_string(), f.after_reconnect()));
        }
    }
    let texts: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    let want: Vec<String> = (0..5).flat_map(|c| (0..per).map(move |i| format!("{c}-{i}"))).collect();
    assert_eq!(texts, want, "one stream across four reconnects");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.1, i > 0 && i % per == 0, "FLAG_RECONNECT exactly on each new connection's first message ({i})");
    }
    let conns = server.connections();
    assert_eq!(conns.len(), 5);
    for (i, c) in conns.iter().enumerate() {
        assert_eq!(c.received.first(), Some(&(0x1, SUB.as_bytes().to_vec())), "connection {i} got the subscription first");
        if tls && i > 0 {
            assert!(c.resumed, "connection {i} resumed the TLS session");
        }
    }
    // The stalled connection was pinged (it reads nothing, so only our counter says so).
    assert!(p.stats().get(Counter::PingsSent) >= 3, "liveness pinged the stalled server");
    // Our CLOSE reply to 1001.
    assert!(conns[2].received.iter().any(|f| f.0 == 0x8 && f.1 == 1001u16.to_be_bytes()));
    std::thread::sleep(Duration::from_millis(20));
    let ev = events.lock().unwrap().clone();
    let causes: Vec<DisconnectKind> = ev
        .iter()
        .filter_map(|s| match s {
            PipelineState::Reconnecting { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(causes.len(), 4, "{ev:?}");
    assert_eq!(causes[0], DisconnectKind::TcpReset, "{ev:?}");
    assert_eq!(causes[1], DisconnectKind::TcpClosed);
    assert!(matches!(causes[2], DisconnectKind::ServerClosed { code: 1001, .. }), "{:?}", causes[2]);
    assert_eq!(causes[3], DisconnectKind::Timeout, "liveness");
    assert_eq!(ev.iter().filter(|s| **s == PipelineState::Connected).count(), 4, "{ev:?}");
    let st = p.stats();
    assert_eq!(st.get(Counter::Reconnects), 4);
    assert_eq!(st.get(Counter::Generation), 4);
    assert_eq!(st.get(Counter::LivenessTimeouts), 1);
    p.close(1000, "bye").unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(5)));
    assert!(matches!(p.state(), PipelineState::Disconnected { reason } if matches!(reason.kind, DisconnectKind::CloseCompleted { code: 1000 })));
    assert_eq!(server.connections().len(), 5, "our close does not reconnect");
    p.stop();
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
    let mut c = config(&name, &server);
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

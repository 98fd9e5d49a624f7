//! Reconnect over the kernel transports (ws:// and wss:// on loopback) against
//! `pipeline_testkit::feed_server`: the server ends connections by RST, FIN, close 1001
//! and a stall (no data, no PONG: the liveness check must notice); each time the client
//! reconnects within the backoff, the server receives the subscription again on the new
//! connection, the application sees the events and FLAG_RECONNECT, the stream goes on,
//! and over wss:// the new connections resume the TLS session.

use std::time::{Duration, Instant};

use pipeline::pipeline::{Pipeline, PipelineState};
use pipeline::stats::Counter;
use pipeline_testkit::feed_server::{Ending, FeedServer};
use pipeline_testkit::reconnect::{
    check_four_endings, close_without_reconnect, feed_config, four_endings, record_states, SUB,
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

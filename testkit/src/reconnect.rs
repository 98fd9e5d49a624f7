//! Reconnect tests against [`FeedServer`](crate::feed_server::FeedServer): a quick,
//! deterministic reconnect policy, the client config they share, and the checks of the
//! "four endings" run (RST, FIN, close 1001, stall, then a connection that streams).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::feed::{LivenessConfig, ReconnectPolicy};
use pipeline::pipeline::{Config, DisconnectKind, Pipeline, PipelineState, Receiver, Subscription};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;

use crate::certs::certs;
use crate::feed_server::{Ending, FeedServer};

/// One millisecond in nanoseconds.
pub const MS: u64 = 1_000_000;

/// The subscription the reconnect tests send (and expect first on every connection).
pub const SUB: &str = "{\"op\":\"subscribe\",\"args\":[\"trades\"]}";

/// Reconnects after 20 ms doubling up to `max_ms`, without jitter or a storm limit.
pub fn quick_reconnect(max_ms: u64) -> ReconnectPolicy {
    ReconnectPolicy {
        initial_ns: 20 * MS,
        max_ns: max_ms * MS,
        jitter: 0.0,
        storm_attempts: 0,
        ..ReconnectPolicy::standard()
    }
}

/// A client of `server` (test CA, inline, backoff, 3 s timeout, quiet) that reconnects
/// quickly (up to 200 ms), subscribes with [`SUB`] and pings after 100 ms of silence
/// (dead after 400 ms).
pub fn feed_config(name: &str, server: &FeedServer) -> Config {
    feed_config_at(name, &server.url())
}

/// [`feed_config`] for a server at `url` that may not be up yet.
pub fn feed_config_at(name: &str, url: &str) -> Config {
    let mut c = Config::new(url);
    c.name = Some(name.to_string());
    c.ca_file = Some(certs().ca());
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.timeout = Duration::from_secs(3);
    c.quiet = true;
    c.reconnect = quick_reconnect(200);
    c.subscriptions = vec![Subscription::Text(SUB.into())];
    c.liveness = Some(LivenessConfig::new(100 * MS, 400 * MS).unwrap());
    c
}

/// The pipeline's non-zero counters, "name=value ...", for assertion messages.
pub fn nonzero(p: &Pipeline) -> String {
    p.stats().iter().filter(|(_, v)| *v > 0).map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ")
}

/// The causes of the `Reconnecting` states in `ev`.
pub fn causes(ev: &[PipelineState]) -> Vec<DisconnectKind> {
    ev.iter()
        .filter_map(|s| match s {
            PipelineState::Reconnecting { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .collect()
}

/// Every state `p` goes through from now on.
pub fn record_states(p: &mut Pipeline) -> Arc<Mutex<Vec<PipelineState>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    p.on_state_change(Box::new(move |s| ev.lock().unwrap().push(s.clone())));
    events
}

/// The server plan of the four-endings run: `per` messages, then RST; `per`, FIN; `per`,
/// close 1001; `per`, a stall; then a connection that streams.
pub fn four_endings(per: usize) -> Vec<(usize, Ending)> {
    vec![(per, Ending::Rst), (per, Ending::Fin), (per, Ending::Close1001), (per, Ending::Stall)]
}

/// Up to `n` messages (text, FLAG_RECONNECT) within `limit`.
pub fn take_messages(rx: &mut Receiver, n: usize, limit: Duration) -> Vec<(String, bool)> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    while got.len() < n && t0.elapsed() < limit {
        if let Some(f) = rx.next_frame_timeout(Duration::from_millis(50)) {
            got.push((f.text().unwrap().to_string(), f.after_reconnect()));
        }
    }
    got
}

/// Reads `rx` of `p` (its states recorded with [`record_states`] from before it
/// connected: `events`) through [`four_endings`]`(per)` of `server` and checks: one stream "c-i"
/// across the four reconnects with FLAG_RECONNECT on each new connection's first message,
/// the subscription first on every connection (and the TLS session resumed on each new
/// one if `resumed`), our CLOSE reply to 1001, the four causes, four `Connected` states
/// and the reconnect counters.
pub fn check_four_endings(
    p: &Pipeline,
    rx: &mut Receiver,
    events: &Mutex<Vec<PipelineState>>,
    server: &FeedServer,
    per: usize,
    limit: Duration,
    resumed: bool,
) {
    // 4 ended connections, then the fifth keeps streaming: take `per` of its messages.
    let got = take_messages(rx, 5 * per, limit);
    let texts: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    let want: Vec<String> = (0..5).flat_map(|c| (0..per).map(move |i| format!("{c}-{i}"))).collect();
    assert_eq!(texts, want, "one stream across four reconnects; {}", nonzero(p));
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.1, i > 0 && i % per == 0, "FLAG_RECONNECT exactly on each new connection's first message ({i})");
    }
    let conns = server.connections();
    assert_eq!(conns.len(), 5);
    for (i, c) in conns.iter().enumerate() {
        assert_eq!(c.received.first(), Some(&(0x1, SUB.as_bytes().to_vec())), "connection {i} got the subscription first");
        if resumed && i > 0 {
            assert!(c.resumed, "connection {i} resumed the TLS session");
        }
    }
    assert!(conns[2].received.iter().any(|f| f.0 == 0x8 && f.1 == 1001u16.to_be_bytes()), "our CLOSE reply to 1001");
    std::thread::sleep(Duration::from_millis(20));
    let ev = events.lock().unwrap().clone();
    let c = causes(&ev);
    assert_eq!(c.len(), 4, "{ev:?}");
    assert_eq!(c[0], DisconnectKind::TcpReset, "{ev:?}");
    assert_eq!(c[1], DisconnectKind::TcpClosed, "{ev:?}");
    assert!(matches!(c[2], DisconnectKind::ServerClosed { code: 1001, .. }), "{:?}", c[2]);
    assert_eq!(c[3], DisconnectKind::Timeout, "liveness");
    assert_eq!(ev.iter().filter(|s| **s == PipelineState::Connected).count(), 4, "{ev:?}");
    let st = p.stats();
    assert_eq!(st.get(Counter::Reconnects), 4);
    assert_eq!(st.get(Counter::Generation), 4);
    assert_eq!(st.get(Counter::LivenessTimeouts), 1);
}

/// Closes `p` with 1000, checks that the close completed without a reconnect (still 5
/// connections at `server`) and stops it.
pub fn close_without_reconnect(p: &Pipeline, server: &FeedServer) {
    p.close(1000, "bye").unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(5)));
    assert!(
        matches!(p.state(), PipelineState::Disconnected { reason } if matches!(reason.kind, DisconnectKind::CloseCompleted { code: 1000 })),
        "{:?}",
        p.state()
    );
    assert_eq!(server.connections().len(), 5, "our close does not reconnect");
    p.stop();
}

//! A/B legs and rotation through the public `Feed` over the kernel transport, against
//! `pipeline_testkit::feed_server::SeqServer` on loopback (two servers with one origin
//! carry the same `{"seq":N}` feed, each with its own drops and delays).
//!
//! - `ab_disjoint_drops_kill_and_back`: the shared A/B run (`pipeline_testkit::ab`:
//!   disjoint drops, two ranges both drop, B killed mid-stream and back). The merged
//!   stream has every other sequence exactly once and in order, the two missing ranges
//!   are gap events, wins are split, keyless heartbeats come from the primary only, and
//!   the counters add up (also in the legs' stats regions).
//! - `ab_by_callback_disjoint_drops_kill_and_back`: the same run delivered by
//!   `Feed::start_with_callback` on the library's thread.
//! - `rotation_every_2s_over_10s`: one leg rotated every 2 s over a 10 s feed: at least
//!   4 rotations, no gap, no duplicate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::pipeline::{
    ArbiterMode, Feed, FeedConfig, FeedEvent, FeedItem, KeyExtractor, RotationConfig,
};
use pipeline_testkit::ab::{self, leg};
use pipeline_testkit::feed_server::{SeqServer, SeqSpec};
use pipeline_testkit::reconnect::MS;
use pipeline_testkit::synthetic::unique;

fn seq_of(text: &str) -> Option<u64> {
    let t = text.strip_prefix("{\"seq\":")?;
    t[..t.find(',')?].parse().ok()
}

/// The shared A/B run over kernel legs on loopback, polled or by callback.
fn ab_kernel(tag: &str, callback: bool) {
    let origin = Instant::now() + Duration::from_millis(300);
    let (a, b) = ab::specs(origin);
    let sa = SeqServer::start(a);
    let mut sb = SeqServer::start(b);
    let (name, _g) = unique(tag);
    let _legs = [unique(&format!("{tag}-0")).1, unique(&format!("{tag}-1")).1, unique(&format!("{tag}-2")).1];
    let cfg = ab::feed_config(&name, vec![leg(&sa.url()), leg(&sb.url())]);
    let limit = Duration::from_secs(15);
    if !callback {
        let mut feed = Feed::start(cfg).unwrap();
        let o = ab::run_polled(&mut feed, origin, limit, &mut |up| if up { sb.restart() } else { sb.kill() });
        ab::check(&feed, &o, tag);
        feed.stop();
        return;
    }
    let out = Arc::new(Mutex::new(ab::Outcome::default()));
    let o = out.clone();
    let main = std::thread::current().id();
    let mut feed = Feed::start_with_callback(
        cfg,
        Box::new(move |item| {
            // The library's own thread, never the caller's.
            assert_ne!(std::thread::current().id(), main);
            o.lock().unwrap().take(item);
            Ok(())
        }),
    )
    .unwrap();
    let both = ab::drive(origin, limit, &mut |up| if up { sb.restart() } else { sb.kill() }, &mut || {
        std::thread::sleep(Duration::from_millis(5));
        out.lock().unwrap().done()
    });
    assert!(both, "B killed and restarted");
    assert_eq!(feed.error(), None);
    let o = std::mem::take(&mut *out.lock().unwrap());
    feed.with(|f| ab::check(f, &o, tag)).unwrap();
    feed.stop().unwrap();
}

#[test]
fn ab_disjoint_drops_kill_and_back() {
    ab_kernel("feed_ab", false);
}

#[test]
fn ab_by_callback_disjoint_drops_kill_and_back() {
    ab_kernel("feed_abcb", true);
}

#[test]
fn rotation_every_2s_over_10s() {
    let origin = Instant::now() + Duration::from_millis(200);
    let interval = Duration::from_millis(1);
    let end = 10_000u64; // 10 s
    let mut spec = SeqSpec::new("R", origin, interval, end);
    spec.max_delay = Duration::from_micros(500);
    let server = SeqServer::start(spec);
    let (name, _g) = unique("feed_rot");
    let (_g0, _g1) = (unique("feed_rot-0").1, unique("feed_rot-1").1);
    let mut cfg = FeedConfig::new(vec![leg(&server.url())], KeyExtractor::json("seq").unwrap());
    cfg.name = Some(name);
    cfg.mode = ArbiterMode::Contiguous;
    cfg.hold_window = Duration::from_millis(250);
    cfg.rotation = RotationConfig { every_ns: Some(2_000 * MS), ..Default::default() };
    cfg.quiet = true;
    let mut feed = Feed::start(cfg).unwrap();
    let mut seqs = Vec::new();
    let mut legs_seen = Vec::new();
    let mut events = Vec::new();
    let t0 = Instant::now();
    while seqs.last() != Some(&end) && t0.elapsed() < Duration::from_secs(20) {
        match feed.next_timeout(Duration::from_millis(20)) {
            Some(FeedItem::Frame(f)) => {
                seqs.push(seq_of(f.text().unwrap()).unwrap());
                if legs_seen.last() != Some(&f.leg()) {
                    legs_seen.push(f.leg());
                }
            }
            Some(FeedItem::Event(e)) => events.push(e),
            None => {}
        }
    }
    let first = seqs[0];
    let want: Vec<u64> = (first..=end).collect();
    let done = events.iter().filter(|e| matches!(e, FeedEvent::RotationDone { in_step: true, .. })).count();
    eprintln!(
        "rotation: {} delivered from {first}, {done} rotations {:?}, legs in turn {legs_seen:?}, events {events:?}",
        seqs.len(),
        feed.rotations()
    );
    assert!(done >= 4, "at least 4 rotations in 10 s: {events:?}");
    assert_eq!(feed.rotations().0 as usize, done);
    assert!(!events.iter().any(|e| matches!(e, FeedEvent::Gap { .. })), "no gap: {events:?}");
    assert_eq!(feed.gaps(), (0, 0));
    assert!(seqs == want, "no gap, no duplicate: {} delivered of {}", seqs.len(), want.len());
    assert!(legs_seen.len() >= 5, "the feed moved between legs: {legs_seen:?}");
    assert!(server.accepted() >= 5);
    feed.stop();
}

#[test]
fn feed_start_waits_for_a_leg_whose_server_comes_up_later() {
    // Leg 1's gateway is not up yet when the feed starts: its first connect is retried
    // (reconnect on) while leg 0 is up, each attempt an event ahead of its first LegUp;
    // the feed starts once both are connected and the stream is whole.
    let origin = Instant::now();
    let spec = move |tag| {
        let mut s = SeqSpec::new(tag, origin, Duration::from_millis(1), 1_000_000);
        s.max_delay = Duration::from_micros(300);
        s
    };
    let sa = SeqServer::start(spec("A"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        SeqServer::start_at("127.0.0.1", port, None, spec("B"))
    });
    let (name, _g) = unique("feed_late");
    let _legs = [unique("feed_late-0").1, unique("feed_late-1").1, unique("feed_late-2").1];
    let mut b = leg(&format!("ws://127.0.0.1:{port}/feed"));
    b.timeout = Duration::from_secs(10);
    let mut cfg = FeedConfig::new(vec![leg(&sa.url()), b], KeyExtractor::json("seq").unwrap());
    cfg.name = Some(name);
    cfg.mode = ArbiterMode::Contiguous;
    cfg.hold_window = Duration::from_millis(250);
    cfg.quiet = true;
    let t0 = Instant::now();
    let mut feed = Feed::start(cfg).unwrap();
    let waited = t0.elapsed();
    let _sb = late.join().unwrap();
    assert!(waited >= Duration::from_millis(900), "started before leg 1's server was up: {waited:?}");
    let mut events = Vec::new();
    let mut seqs = Vec::new();
    while seqs.len() < 500 && t0.elapsed() < Duration::from_secs(15) {
        match feed.next_timeout(Duration::from_millis(20)) {
            Some(FeedItem::Frame(f)) => seqs.push(f.key().unwrap().seq),
            Some(FeedItem::Event(e)) => events.push(e),
            None => {}
        }
    }
    let attempts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            FeedEvent::LegDown { leg: 1, state: pipeline::pipeline::State::Reconnecting { attempt, cause } } => {
                assert_eq!(*cause, pipeline::pipeline::DisconnectKind::Network, "{e}");
                Some(*attempt)
            }
            _ => None,
        })
        .collect();
    assert!(attempts.len() >= 3, "refused attempts reported: {events:?}");
    assert_eq!(attempts, (1..=attempts.len() as u32).collect::<Vec<_>>(), "numbered 1, 2, ...");
    let up = events.iter().position(|e| matches!(e, FeedEvent::LegUp { leg: 1, generation: 0 }));
    let last_attempt = events.iter().rposition(|e| matches!(e, FeedEvent::LegDown { leg: 1, .. }));
    assert!(up.is_some() && last_attempt < up, "attempts come before leg 1's first LegUp: {events:?}");
    assert_eq!(seqs.len(), 500);
    let bad = seqs.windows(2).position(|w| w[1] != w[0] + 1);
    assert!(bad.is_none(), "contiguous once and in order: {:?}", bad.map(|i| &seqs[i.saturating_sub(3)..(i + 4).min(seqs.len())]));
    assert!(!events.iter().any(|e| matches!(e, FeedEvent::Gap { .. })), "{events:?}");
    feed.stop();
}

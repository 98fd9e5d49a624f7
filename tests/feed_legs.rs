//! A/B legs and rotation through the public `Feed` over the kernel transport, against
//! `pipeline_testkit::feed_server::SeqServer` on loopback (two servers with one origin
//! carry the same `{"seq":N}` feed, each with its own drops and delays).
//!
//! - `ab_disjoint_drops_kill_and_back`: A drops N % 10 == 3 (not while B is away), B
//!   drops N % 10 == 7; both drop 5001 and 5500..=5502; B is killed mid-stream and comes
//!   back (the leg reconnects). The merged stream has every other sequence exactly once
//!   and in order, the two missing ranges are gap events, wins are split, keyless
//!   heartbeats come from the primary only, and the counters add up (also in the legs'
//!   stats regions).
//! - `rotation_every_2s_over_10s`: one leg rotated every 2 s over a 10 s feed: at least
//!   4 rotations, no gap, no duplicate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::pipeline::{
    ArbiterMode, Config, Counter, Feed, FeedConfig, FeedEvent, FeedItem, KeyExtractor, Layout,
    ReconnectPolicy, RotationConfig, State, WaitKind,
};
use pipeline_testkit::feed_server::{SeqServer, SeqSpec};
use pipeline_testkit::synthetic::unique;

const MS: u64 = 1_000_000;

fn leg(url: &str) -> Config {
    let mut c = Config::new(url);
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.timeout = Duration::from_secs(2);
    c.quiet = true;
    c.reconnect = ReconnectPolicy {
        initial_ns: 20 * MS,
        max_ns: 150 * MS,
        jitter: 0.0,
        storm_attempts: 0,
        ..ReconnectPolicy::standard()
    };
    c
}

fn seq_of(text: &str) -> Option<u64> {
    let t = text.strip_prefix("{\"seq\":")?;
    t[..t.find(',')?].parse().ok()
}

#[test]
fn ab_disjoint_drops_kill_and_back() {
    let origin = Instant::now() + Duration::from_millis(300);
    let interval = Duration::from_micros(500); // 2000 msgs/s
    let end = 6000u64; // 3 s
    let both = |n: u64| n == 5001 || (5500..=5502).contains(&n);
    let mut a = SeqSpec::new("A", origin, interval, end);
    // A has no drops while B is away (B is killed at ~1.0 s = seq 2000, back at 1.6 s).
    a.drop = Arc::new(move |n| both(n) || (n % 10 == 3 && !(1600..4400).contains(&n)));
    a.max_delay = Duration::from_millis(1);
    a.seed = 11;
    a.heartbeat_every = 500;
    let mut b = SeqSpec::new("B", origin, interval, end);
    b.drop = Arc::new(move |n| both(n) || n % 10 == 7);
    b.max_delay = Duration::from_millis(2);
    b.seed = 22;
    b.heartbeat_every = 500;
    let sa = SeqServer::start(a);
    let mut sb = SeqServer::start(b);

    let (name, _g) = unique("feed_ab");
    let (_g0, _g1, _g2) = (
        unique("feed_ab-0").1,
        unique("feed_ab-1").1,
        unique("feed_ab-2").1,
    );
    let mut cfg = FeedConfig::new(vec![leg(&sa.url()), leg(&sb.url())], KeyExtractor::json("seq").unwrap());
    cfg.name = Some(name.clone());
    cfg.mode = ArbiterMode::Contiguous;
    // Generous: a vCPU steal of ~100 ms must not turn a late copy into a gap.
    cfg.hold_window = Duration::from_millis(250);
    cfg.quiet = true;
    let mut feed = Feed::start(cfg).unwrap();

    let mut seqs: Vec<u64> = Vec::new();
    let mut hb_legs: Vec<usize> = Vec::new();
    let mut events: Vec<FeedEvent> = Vec::new();
    let mut killed = false;
    let mut restarted = false;
    let t0 = Instant::now();
    while seqs.last() != Some(&end) && t0.elapsed() < Duration::from_secs(15) {
        let since = Instant::now().saturating_duration_since(origin);
        if !killed && since >= Duration::from_millis(1000) {
            sb.kill();
            killed = true;
        }
        if killed && !restarted && since >= Duration::from_millis(1600) {
            sb.restart();
            restarted = true;
        }
        match feed.next_timeout(Duration::from_millis(20)) {
            Some(FeedItem::Frame(f)) => {
                let t = f.text().unwrap().to_string();
                match seq_of(&t) {
                    Some(s) => {
                        assert_eq!(f.key().map(|k| k.seq), Some(s));
                        seqs.push(s);
                    }
                    None => {
                        assert!(t.starts_with("{\"hb\":"), "{t}");
                        hb_legs.push(f.leg());
                    }
                }
            }
            Some(FeedItem::Event(e)) => events.push(e),
            None => {}
        }
    }
    assert!(killed && restarted);
    let first = seqs[0];
    let want: Vec<u64> = (first..=end).filter(|&n| !both(n)).collect();
    if seqs != want {
        let missing: Vec<u64> = want.iter().filter(|n| !seqs.contains(n)).copied().take(20).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        sorted.dedup();
        panic!(
            "merged stream: {} delivered, {} wanted from {first}; missing {missing:?}; {} duplicates; events {events:?}",
            seqs.len(),
            want.len(),
            seqs.len() - sorted.len()
        );
    }
    let gaps: Vec<&FeedEvent> = events.iter().filter(|e| matches!(e, FeedEvent::Gap { .. })).collect();
    assert_eq!(
        gaps,
        vec![
            &FeedEvent::Gap { stream: 0, from: 5001, to: 5001 },
            &FeedEvent::Gap { stream: 0, from: 5500, to: 5502 }
        ],
        "one gap event per range neither leg delivered"
    );
    assert_eq!(feed.gaps(), (2, 4));
    // Leg B went down and came back.
    assert!(
        events.iter().any(|e| matches!(e, FeedEvent::LegDown { leg: 1, state: State::Reconnecting { .. } })),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(e, FeedEvent::LegUp { leg: 1, generation } if *generation >= 1)), "{events:?}");
    // Keyless heartbeats come from the primary (leg 0, never down) only.
    assert!(!hb_legs.is_empty());
    assert!(hb_legs.iter().all(|&l| l == 0), "{hb_legs:?}");

    let (s0, s1) = (feed.leg_stats(0), feed.leg_stats(1));
    eprintln!(
        "A/B: {} delivered from {first}; leg 0 won {} dups {} keyless {}/{} lag p50 <= {:?} ns max {} ns; \
         leg 1 won {} dups {} keyless {}/{} lag max {} ns, downs {}; gaps {:?}",
        seqs.len(),
        s0.won,
        s0.dups,
        s0.keyless_won,
        s0.keyless_dropped,
        s0.lag.quantile_upper_ns(0.5),
        s0.lag.max_ns,
        s1.won,
        s1.dups,
        s1.keyless_won,
        s1.keyless_dropped,
        s1.lag.max_ns,
        s1.downs,
        feed.gaps()
    );
    // Wins are split: each leg won at least the other's drops it carried.
    assert!(s0.won > 200 && s1.won > 200, "wins split: {} / {}", s0.won, s1.won);
    assert_eq!(s0.won + s1.won, seqs.len() as u64, "every delivered keyed message was won once");
    assert_eq!(s0.keyless_won + s1.keyless_won, hb_legs.len() as u64);
    assert_eq!(s1.keyless_won, 0);
    assert!(s1.downs >= 1 && s1.ups >= 2);
    assert_eq!(feed.held(), 0);
    for s in [&s0, &s1] {
        assert_eq!(s.received, s.won + s.dups + s.keyless_won + s.keyless_dropped, "counters add up: {s:?}");
        assert_eq!(s.lag.total() + s.lag_unknown, s.dups, "one lag sample per duplicate");
    }
    // Leg B reconnected (its own counter), and the stats regions say what the arbiter says.
    assert!(feed.leg(1).unwrap().stats().get(Counter::Reconnects) >= 1);
    feed.publish_stats();
    for (i, s) in [(0, &s0), (1, &s1)] {
        let st = feed.leg(i).unwrap().stats();
        assert_eq!(st.get(Counter::FeedWon), s.won);
        assert_eq!(st.get(Counter::FeedDups), s.dups);
        assert_eq!(st.get(Counter::FeedReceived), s.received);
        assert_eq!(st.get(Counter::FeedDowns), s.downs);
    }
    assert_eq!(feed.stats_region().get(Counter::FeedGaps), 2);
    assert_eq!(feed.stats_region().get(Counter::FeedWon), s0.won + s1.won);
    feed.stop();
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

//! The A/B run the feed tests share, whatever the legs' transports (kernel on
//! loopback, AF_XDP or mixed in the namespace test bed) and however the merged stream is
//! delivered (polling `Feed::next*`, or `Feed::start_with_callback`).
//!
//! Two [`SeqServer`]s with one origin carry the same `{"seq":N}` feed at 2000 msgs/s
//! for 3 s: A drops N % 10 == 3 (not while B is away), B drops N % 10 == 7, both drop
//! 5001 and 5500..=5502; each has its own seeded delays; B is killed 1.0 s after the
//! origin and comes back at 1.6 s (its leg reconnects). [`check`] then wants every other
//! sequence exactly once and in order, one gap event per range neither leg had, leg B
//! down and up again, wins split, keyless heartbeats from the primary only, and the
//! counters adding up (in the arbiter and in the legs' stats regions).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::pipeline::{
    ArbiterMode, Config, Counter, Feed, FeedConfig, FeedEvent, FeedItem, KeyExtractor, Layout, State, WaitKind,
};

use crate::feed_server::SeqSpec;
use crate::reconnect::quick_reconnect;

/// A leg of the run: inline, backoff (2 cores), quiet, reconnecting within 150 ms.
pub fn leg(url: &str) -> Config {
    let mut c = Config::new(url);
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.timeout = Duration::from_secs(2);
    c.quiet = true;
    c.reconnect = quick_reconnect(150);
    c
}

/// The run's feed over `legs` (A first: the primary): JSON key `seq`, contiguous, a
/// 250 ms hold window (generous: a vCPU steal of ~100 ms must not turn a late copy
/// into a gap; the default 1 ms is covered deterministically elsewhere).
pub fn feed_config(name: &str, legs: Vec<Config>) -> FeedConfig {
    let mut cfg = FeedConfig::new(legs, KeyExtractor::json("seq").unwrap());
    cfg.name = Some(name.to_string());
    cfg.mode = ArbiterMode::Contiguous;
    cfg.hold_window = Duration::from_millis(250);
    cfg.quiet = true;
    cfg
}

/// The last sequence of the run (3 s at 2000 msgs/s).
pub const END: u64 = 6000;
/// B is killed this long after the origin ...
pub const KILL_AT: Duration = Duration::from_millis(1000);
/// ... and listens again this long after it.
pub const RESTART_AT: Duration = Duration::from_millis(1600);

/// Sequences neither server sends (the gaps).
pub fn both_drop(n: u64) -> bool {
    n == 5001 || (5500..=5502).contains(&n)
}

/// The two servers' specs, `origin` being when sequence 0 is due (leave the feed time
/// to start before it: the run is timed from it).
pub fn specs(origin: Instant) -> (SeqSpec, SeqSpec) {
    let interval = Duration::from_micros(500);
    let mut a = SeqSpec::new("A", origin, interval, END);
    // No drops on A while B is away (killed at seq 2000, back at 3200, plus margin).
    a.drop = Arc::new(move |n| both_drop(n) || (n % 10 == 3 && !(1600..4400).contains(&n)));
    a.max_delay = Duration::from_millis(1);
    a.seed = 11;
    a.heartbeat_every = 500;
    let mut b = SeqSpec::new("B", origin, interval, END);
    b.drop = Arc::new(move |n| both_drop(n) || n % 10 == 7);
    b.max_delay = Duration::from_millis(2);
    b.seed = 22;
    b.heartbeat_every = 500;
    (a, b)
}

/// What the merged stream brought.
#[derive(Default, Debug)]
pub struct Outcome {
    pub seqs: Vec<u64>,
    /// The leg of every keyless heartbeat.
    pub hb_legs: Vec<usize>,
    pub events: Vec<FeedEvent>,
}

fn seq_of(text: &str) -> Option<u64> {
    let t = text.strip_prefix("{\"seq\":")?;
    t[..t.find(',')?].parse().ok()
}

impl Outcome {
    /// Take one item (from `next*()` or a callback).
    pub fn take(&mut self, item: FeedItem<'_>) {
        match item {
            FeedItem::Frame(f) => {
                let t = f.text().expect("text frames");
                match seq_of(t) {
                    Some(s) => {
                        assert_eq!(f.key().map(|k| k.seq), Some(s), "the key read in place is the payload's");
                        self.seqs.push(s);
                    }
                    None => {
                        assert!(t.starts_with("{\"hb\":"), "{t}");
                        self.hb_legs.push(f.leg());
                    }
                }
            }
            FeedItem::Event(e) => self.events.push(e),
        }
    }

    /// The last sequence arrived.
    pub fn done(&self) -> bool {
        self.seqs.last() == Some(&END)
    }
}

/// Drive the run's clock: `server_b(false)` (kill B) at [`KILL_AT`], `server_b(true)`
/// (listen again) at [`RESTART_AT`], calling `step` (which takes the feed's items and
/// says whether the run is complete) until it is (then 300 ms more) or `limit` passes.
/// Returns whether both happened.
pub fn drive(origin: Instant, limit: Duration, server_b: &mut dyn FnMut(bool), step: &mut dyn FnMut() -> bool) -> bool {
    let (mut killed, mut restarted) = (false, false);
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let since = Instant::now().saturating_duration_since(origin);
        if !killed && since >= KILL_AT {
            server_b(false);
            killed = true;
        }
        if killed && !restarted && since >= RESTART_AT {
            server_b(true);
            restarted = true;
        }
        if step() {
            // What the merge decided with the last sequence (a heartbeat won after it,
            // in the queue behind it) is taken too, so the counters can be compared.
            let settle = Instant::now();
            while settle.elapsed() < Duration::from_millis(300) {
                step();
            }
            break;
        }
    }
    killed && restarted
}

/// The run through `Feed::next_timeout` (polling delivery): what it brought; panics
/// unless B was killed and restarted within `limit`.
pub fn run_polled(feed: &mut Feed, origin: Instant, limit: Duration, server_b: &mut dyn FnMut(bool)) -> Outcome {
    let mut o = Outcome::default();
    let both = drive(origin, limit, server_b, &mut || {
        if let Some(item) = feed.next_timeout(Duration::from_millis(20)) {
            o.take(item);
        }
        o.done()
    });
    assert!(both, "B killed and restarted");
    o
}

/// Every check of the run (see the module documentation); `ctx` names the run.
pub fn check(feed: &Feed, o: &Outcome, ctx: &str) {
    let first = *o.seqs.first().unwrap_or_else(|| panic!("{ctx}: nothing delivered; events {:?}", o.events));
    let want: Vec<u64> = (first..=END).filter(|&n| !both_drop(n)).collect();
    if o.seqs != want {
        let missing: Vec<u64> = want.iter().filter(|n| !o.seqs.contains(n)).copied().take(20).collect();
        let mut sorted = o.seqs.clone();
        sorted.sort();
        sorted.dedup();
        panic!(
            "{ctx}: merged stream: {} delivered, {} wanted from {first}; missing {missing:?}; {} duplicates; events {:?}",
            o.seqs.len(),
            want.len(),
            o.seqs.len() - sorted.len(),
            o.events
        );
    }
    let gaps: Vec<&FeedEvent> = o.events.iter().filter(|e| matches!(e, FeedEvent::Gap { .. })).collect();
    assert_eq!(
        gaps,
        vec![&FeedEvent::Gap { stream: 0, from: 5001, to: 5001 }, &FeedEvent::Gap { stream: 0, from: 5500, to: 5502 }],
        "{ctx}: one gap event per range neither leg delivered"
    );
    assert_eq!(feed.gaps(), (2, 4), "{ctx}");
    assert!(
        o.events.iter().any(|e| matches!(e, FeedEvent::LegDown { leg: 1, state: State::Reconnecting { .. } })),
        "{ctx}: leg B went down: {:?}",
        o.events
    );
    assert!(
        o.events.iter().any(|e| matches!(e, FeedEvent::LegUp { leg: 1, generation } if *generation >= 1)),
        "{ctx}: leg B came back: {:?}",
        o.events
    );
    // Keyless heartbeats come from the primary (leg 0, never down) only.
    assert!(!o.hb_legs.is_empty(), "{ctx}");
    assert!(o.hb_legs.iter().all(|&l| l == 0), "{ctx}: {:?}", o.hb_legs);

    let (s0, s1) = (feed.leg_stats(0), feed.leg_stats(1));
    eprintln!(
        "{ctx}: {} delivered from {first}; leg 0 won {} dups {} keyless {}/{} lag p50 <= {:?} ns max {} ns; \
         leg 1 won {} dups {} keyless {}/{} lag max {} ns, downs {}; gaps {:?}",
        o.seqs.len(),
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
    assert!(s0.won > 200 && s1.won > 200, "{ctx}: wins split: {} / {}", s0.won, s1.won);
    assert_eq!(s0.won + s1.won, o.seqs.len() as u64, "{ctx}: every delivered keyed message was won once");
    assert_eq!(s0.keyless_won + s1.keyless_won, o.hb_legs.len() as u64, "{ctx}");
    assert_eq!(s1.keyless_won, 0, "{ctx}");
    assert!(s1.downs >= 1 && s1.ups >= 2, "{ctx}: {s1:?}");
    assert_eq!(feed.held(), 0, "{ctx}");
    for s in [&s0, &s1] {
        assert_eq!(s.received, s.won + s.dups + s.keyless_won + s.keyless_dropped, "{ctx}: counters add up: {s:?}");
        assert_eq!(s.lag.total() + s.lag_unknown, s.dups, "{ctx}: one lag sample per duplicate");
    }
    // Leg B reconnected (its own counter), and the stats regions say what the arbiter says.
    assert!(feed.leg(1).unwrap().stats().get(Counter::Reconnects) >= 1, "{ctx}");
    feed.publish_stats();
    for (i, s) in [(0, &s0), (1, &s1)] {
        let st = feed.leg(i).unwrap().stats();
        assert_eq!(st.get(Counter::FeedWon), s.won, "{ctx}");
        assert_eq!(st.get(Counter::FeedDups), s.dups, "{ctx}");
        assert_eq!(st.get(Counter::FeedReceived), s.received, "{ctx}");
        assert_eq!(st.get(Counter::FeedDowns), s.downs, "{ctx}");
    }
    assert_eq!(feed.stats_region().get(Counter::FeedGaps), 2, "{ctx}");
    assert_eq!(feed.stats_region().get(Counter::FeedWon), s0.won + s1.won, "{ctx}");
}

//! Callback delivery of a `Feed` (`Feed::start_with_callback`) over the synthetic
//! transport (no network): the merge runs on the library's thread; a callback error or
//! panic closes the legs and ends delivery with the reason; calls on the handle from
//! inside the callback are refused instead of deadlocking; and the default hold window
//! (1 ms) in contiguous mode turns a sequence neither leg has into one gap event while
//! everything else arrives once and in order. (The A/B run over real sockets by
//! callback is `feed_legs::ab_by_callback_disjoint_drops_kill_and_back`.)

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pipeline::pipeline::{
    ArbiterMode, CallbackFeed, Config, Feed, FeedConfig, FeedEvent, FeedItem, KeyExtractor, Layout, State,
};
use pipeline::stage::encode_server_frame;
use pipeline_testkit::synthetic::{config, script, unique, ShmGuard};

/// `{"seq":N}` text frames for every N of `seqs`.
fn seq_frames(seqs: impl Iterator<Item = u64>) -> Vec<u8> {
    let mut v = Vec::new();
    for n in seqs {
        encode_server_frame(&mut v, 0x1, true, format!("{{\"seq\":{n}}}").as_bytes());
    }
    v
}

fn leg(name: &str, data: Vec<u8>) -> Config {
    let mut s = script(data, 0);
    s.eof_at_end = true; // the leg ends (no reconnect): the feed finishes
    config(name, s, Layout::Inline)
}

/// The feed's name, and guards for it and its leg regions.
fn names(tag: &str) -> (String, Vec<ShmGuard>) {
    let (name, g) = unique(tag);
    let mut gs = vec![g];
    for i in 0..3 {
        gs.push(unique(&format!("{tag}-{i}")).1);
    }
    (name, gs)
}

fn seq_cfg(name: &str, legs: Vec<Config>) -> FeedConfig {
    let mut cfg = FeedConfig::new(legs, KeyExtractor::json("seq").unwrap());
    cfg.name = Some(name.to_string());
    cfg.quiet = true;
    cfg
}

#[test]
fn default_hold_window_by_callback_gap_once_everything_else_in_order() {
    let (name, _g) = names("fcb_hold");
    // Both legs lack 1000; otherwise the same 1..=3000.
    let data = || seq_frames((1..=3000).filter(|&n| n != 1000));
    let mut cfg = seq_cfg(&name, vec![leg("", data()), leg("", data())]);
    cfg.mode = ArbiterMode::Contiguous;
    assert_eq!(cfg.hold_window, Duration::from_millis(1), "the default under test");
    let got = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let g = got.clone();
    let feed = Feed::start_with_callback(
        cfg,
        Box::new(move |item| {
            let mut g = g.lock().unwrap();
            match item {
                FeedItem::Frame(f) => g.0.push(f.key().unwrap().seq),
                FeedItem::Event(e) => g.1.push(e),
            }
            Ok(())
        }),
    )
    .unwrap();
    assert!(feed.wait_finished(Duration::from_secs(20)), "both legs ended: the feed finishes");
    assert_eq!(feed.error(), None);
    let (seqs, events) = std::mem::take(&mut *got.lock().unwrap());
    let want: Vec<u64> = (1..=3000).filter(|&n| n != 1000).collect();
    assert_eq!(seqs, want, "every other sequence once and in order");
    let gaps: Vec<&FeedEvent> = events.iter().filter(|e| matches!(e, FeedEvent::Gap { .. })).collect();
    assert_eq!(gaps, vec![&FeedEvent::Gap { stream: 0, from: 1000, to: 1000 }], "{events:?}");
    for l in 0..2 {
        let ended = |e: &FeedEvent| matches!(e, FeedEvent::LegDown { leg, state: State::Disconnected { .. } } if *leg == l);
        assert_eq!(events.iter().filter(|e| ended(e)).count(), 1, "leg {l} ended once: {events:?}");
    }
    feed.with(|f| {
        assert_eq!(f.gaps(), (1, 1));
        assert_eq!(f.delivered(), want.len() as u64);
        let (s0, s1) = (f.leg_stats(0), f.leg_stats(1));
        assert_eq!(s0.won + s1.won, want.len() as u64);
        assert_eq!(s0.won + s1.won + s0.dups + s1.dups, 2 * want.len() as u64, "{s0:?} {s1:?}");
    })
    .unwrap();
}

#[test]
fn a_callback_error_closes_the_legs_and_ends_delivery() {
    let (name, _g) = names("fcb_err");
    let mut l = leg("", seq_frames(1..=1000));
    l.transport = match l.transport {
        pipeline::pipeline::TransportKind::Synthetic(mut s) => {
            s.eof_at_end = false; // stays open: only our close ends it
            pipeline::pipeline::TransportKind::Synthetic(s)
        }
        t => t,
    };
    let seen = Arc::new(Mutex::new(0u64));
    let s = seen.clone();
    let mut feed = Feed::start_with_callback(
        seq_cfg(&name, vec![l]),
        Box::new(move |item| {
            if let FeedItem::Frame(f) = item {
                *s.lock().unwrap() += 1;
                if f.key().unwrap().seq == 100 {
                    return Err("seq 100 is enough".into());
                }
            }
            Ok(())
        }),
    )
    .unwrap();
    assert!(feed.wait_finished(Duration::from_secs(10)), "delivery ends at the error");
    assert_eq!(feed.error().as_deref(), Some("the feed callback failed: seq 100 is enough"));
    assert_eq!(*seen.lock().unwrap(), 100, "nothing after the failing call");
    // The leg was asked to close (1011) and goes.
    let closed = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        feed.with(|f| matches!(f.leg(0).unwrap().state(), State::Closing | State::Disconnected { .. })).unwrap()
    });
    assert!(closed, "the leg is closing");
    feed.stop().unwrap();
}

#[test]
fn a_panicking_callback_is_caught_and_reported() {
    let (name, _g) = names("fcb_panic");
    let feed = Feed::start_with_callback(
        seq_cfg(&name, vec![leg("", seq_frames(1..=10))]),
        Box::new(|item| {
            if let FeedItem::Frame(_) = item {
                panic!("boom in the callback");
            }
            Ok(())
        }),
    )
    .unwrap();
    assert!(feed.wait_finished(Duration::from_secs(10)));
    let e = feed.error().unwrap();
    assert!(e.contains("panicked") && e.contains("boom in the callback"), "{e}");
}

#[test]
fn calls_on_the_handle_from_inside_the_callback_are_refused() {
    let (name, _g) = names("fcb_inside");
    let slot: Arc<OnceLock<Arc<CallbackFeed>>> = Arc::new(OnceLock::new());
    let answers = Arc::new(Mutex::new(Vec::new()));
    let (sl, an) = (slot.clone(), answers.clone());
    let feed = Feed::start_with_callback(
        seq_cfg(&name, vec![leg("", seq_frames(1..=2000))]),
        Box::new(move |item| {
            if let (FeedItem::Frame(_), Some(f)) = (item, sl.get()) {
                let mut a = an.lock().unwrap();
                if a.is_empty() {
                    a.push(f.rotate().map_err(|e| e.to_string()));
                    a.push(f.with(|_| ()).map_err(|e| e.to_string()));
                }
            }
            Ok(())
        }),
    )
    .unwrap();
    let feed = Arc::new(feed);
    assert!(slot.set(feed.clone()).is_ok());
    assert!(feed.wait_finished(Duration::from_secs(10)));
    let a = answers.lock().unwrap().clone();
    assert_eq!(a.len(), 2, "the callback ran after the handle was shared: {a:?}");
    for r in &a {
        let e = r.as_ref().unwrap_err();
        assert!(e.contains("inside the feed's own callback"), "{e}");
    }
    // From this thread the same calls work.
    assert!(feed.with(|f| f.delivered()).unwrap() >= 1);
}

#[test]
fn a_stalled_merge_does_not_turn_fills_queued_in_the_other_leg_into_gaps() {
    // Both legs trickle in at 2000 msgs/s with disjoint drops; the consumer stalls for
    // 400 ms (longer than the 250 ms hold) every 300 messages, as a descheduled process
    // does. A hold from before a stall must wait for the other leg's queued frames, not
    // expire at the first batch after it.
    let (name, _g) = names("fcb_stall");
    let trickle = |drop: fn(u64) -> bool| {
        let data = seq_frames((1..=3000).filter(|&n| !drop(n)));
        let mut c = leg("", data);
        if let pipeline::pipeline::TransportKind::Synthetic(s) = &mut c.transport {
            s.bytes_per_sec = 2000 * 14;
        }
        c
    };
    let mut cfg = seq_cfg(&name, vec![trickle(|n| n % 10 == 3), trickle(|n| n % 10 == 7)]);
    cfg.mode = ArbiterMode::Contiguous;
    cfg.hold_window = Duration::from_millis(250);
    let mut feed = Feed::start(cfg).unwrap();
    let (mut seqs, mut gaps) = (Vec::new(), Vec::new());
    let t0 = std::time::Instant::now();
    while seqs.last() != Some(&3000) && t0.elapsed() < Duration::from_secs(20) {
        match feed.next_timeout(Duration::from_millis(20)) {
            Some(FeedItem::Frame(f)) => {
                seqs.push(f.key().unwrap().seq);
                drop(f);
                if seqs.len() % 300 == 0 {
                    std::thread::sleep(Duration::from_millis(400));
                }
            }
            Some(FeedItem::Event(e @ FeedEvent::Gap { .. })) => gaps.push(e),
            _ => {}
        }
    }
    assert_eq!(gaps, vec![], "no gap: every sequence is on one leg or the other");
    assert_eq!(seqs, (1..=3000).collect::<Vec<u64>>());
}

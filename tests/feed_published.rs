//! A merged feed published for the header-only consumer (`Feed::start_published`): two
//! synthetic legs with disjoint drops and one sequence neither has, and a C reader built
//! with `include/pipeline_consumer.h` only (no libpipeline; AddressSanitizer and UBSan)
//! in another process. With `plc_next_feed` it reads every other sequence once and in
//! order, the gap as an event, both legs' ends as events; with `plc_next` (a reader
//! that predates feed events) the same frames, the events passed over. The counters
//! add up and a too-small published inbox is refused at the first message that does not
//! fit.

use std::process::Command;
use std::time::Duration;

use pipeline::pipeline::{
    ArbiterMode, Config, Feed, FeedConfig, KeyExtractor, Layout, PublishConfig, EVENT_RECORD_BYTES,
};
use pipeline::stage::encode_server_frame;
use pipeline_testkit::c_program::feed_reader;
use pipeline_testkit::synthetic::{config, script, unique, ShmGuard};

const END: u64 = 3000;

fn leg(drop: impl Fn(u64) -> bool) -> Config {
    let mut v = Vec::new();
    for n in (1..=END).filter(|&n| !drop(n)) {
        encode_server_frame(&mut v, 0x1, true, format!("{{\"seq\":{n}}}").as_bytes());
    }
    let mut s = script(v, 0);
    s.eof_at_end = true; // each leg ends: two LEG_DOWN events close the stream
    config("", s, Layout::Inline)
}

fn published(tag: &str, publish: PublishConfig) -> (pipeline::pipeline::CallbackFeed, String, Vec<ShmGuard>) {
    let (name, g) = unique(tag);
    let mut guards = vec![g];
    for i in 0..3 {
        guards.push(unique(&format!("{tag}-{i}")).1);
    }
    let legs = vec![leg(|n| n % 10 == 3 || n == 1000), leg(|n| n % 10 == 7 || n == 1000)];
    let mut cfg = FeedConfig::new(legs, KeyExtractor::json("seq").unwrap());
    cfg.name = Some(name.clone());
    cfg.mode = ArbiterMode::Contiguous;
    cfg.hold_window = Duration::from_millis(250);
    cfg.quiet = true;
    (Feed::start_published(cfg, publish).unwrap(), name, guards)
}

fn read(name: &str, mode: &str) -> Vec<u64> {
    let o = Command::new(feed_reader()).args([name, mode, &END.to_string()]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "reader ({mode}): {out} {}", String::from_utf8_lossy(&o.stderr));
    out.trim().strip_prefix("ok ").unwrap_or_else(|| panic!("{out}")).split(' ').map(|x| x.parse().unwrap()).collect()
}

#[test]
fn a_header_only_reader_gets_the_merged_stream_and_its_events() {
    assert_eq!(EVENT_RECORD_BYTES, 48, "sizeof(plc_feed_event)");
    let (feed, name, _g) = published("fpub", PublishConfig::default());
    // frames, gaps, the gap's first sequence, legs gone
    assert_eq!(read(&name, "feed"), vec![END - 1, 1, 1000, 2]);
    assert!(feed.wait_finished(Duration::from_secs(10)), "both legs ended, everything published");
    assert_eq!(feed.error(), None);
    feed.with(|f| {
        assert_eq!(f.gaps(), (1, 1));
        assert_eq!(f.delivered(), END - 1);
        let (s0, s1) = (f.leg_stats(0), f.leg_stats(1));
        assert_eq!(s0.won + s1.won, END - 1);
        assert!(s0.won > 0 && s1.won > 0, "wins split: {} / {}", s0.won, s1.won);
        assert_eq!(s0.received, s0.won + s0.dups);
        assert_eq!(s1.received, s1.won + s1.dups);
    })
    .unwrap();
}

#[test]
fn a_reader_without_feed_events_sees_the_frames_only() {
    let (feed, name, _g) = published("fpubplain", PublishConfig::default());
    let r = read(&name, "plain");
    assert_eq!(r, vec![END - 1, 0, 0, 0], "every frame, no event surfaced");
    assert!(feed.wait_finished(Duration::from_secs(10)));
}

#[test]
fn a_message_larger_than_the_published_inbox_ends_delivery_with_the_reason() {
    let (name, _g) = unique("fpubsmall");
    let _g0 = unique("fpubsmall-0").1;
    let mut v = Vec::new();
    encode_server_frame(&mut v, 0x1, true, format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(8000)).as_bytes());
    let mut cfg = FeedConfig::new(vec![config("", script(v, 0), Layout::Inline)], KeyExtractor::json("seq").unwrap());
    cfg.name = Some(name);
    cfg.quiet = true;
    let bad = Feed::start_published(cfg, PublishConfig { inbox_size: 3000, frame_ring: 64 });
    assert!(bad.unwrap_err().to_string().contains("powers of two"));
    let mut v = Vec::new();
    encode_server_frame(&mut v, 0x1, true, format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(8000)).as_bytes());
    let (name, _g2) = unique("fpubsmall2");
    let _g3 = unique("fpubsmall2-0").1;
    let mut cfg = FeedConfig::new(vec![config("", script(v, 0), Layout::Inline)], KeyExtractor::json("seq").unwrap());
    cfg.name = Some(name);
    cfg.quiet = true;
    let feed = Feed::start_published(cfg, PublishConfig { inbox_size: 4096, frame_ring: 64 }).unwrap();
    assert!(feed.wait_finished(Duration::from_secs(10)));
    let e = feed.error().unwrap();
    assert!(e.contains("does not fit the published MSG_INBOX of 4096 bytes"), "{e}");
}

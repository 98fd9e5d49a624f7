//! The A/B feed run (`pipeline_testkit::ab`) with AF_XDP legs in the namespace test bed:
//! two `SeqServer`s (wss://, the test CA's "veth" leaf) on threads in the server
//! namespace stream the same sequence with disjoint drops and their own delays; B is
//! killed mid-stream and comes back; the merged stream has every sequence once and in
//! order (the two ranges neither sends are gap events), wins are split between the legs
//! and the counters add up. Once with both legs over AF_XDP (two connections sharing
//! the interface's engine), once with A over AF_XDP and B over the kernel.
//!
//! Needs root (skipped otherwise; with `CI` set, a failure).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Feed, TransportKind};
use pipeline_testkit::ab;
use pipeline_testkit::feed_server::SeqServer;
use pipeline_testkit::netns::{Side, TestBed};
use pipeline_testkit::synthetic::unique;

/// One test bed at a time: both runs are timed, the box has two cores.
static ALONE: Mutex<()> = Mutex::new(());

fn fast_rto(t: &mut pipeline::tcp::TcpConfig) {
    t.rto_min_us = 20_000;
    t.rto_initial_us = 200_000;
}

fn leg(bed: &TestBed, server: &SeqServer, xdp: bool) -> Config {
    let mut c = ab::leg(&server.url());
    c.ca_file = Some(pipeline_testkit::certs::certs().ca());
    c.timeout = Duration::from_secs(10);
    if xdp {
        c.transport = TransportKind::Xdp;
        c.iface = Some(bed.client_if.clone());
        c.xdp.tcp_tweak = Some(fast_rto);
    }
    c
}

fn ab_in_bed(tag: &str, b_over_xdp: bool) {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = TestBed::new_or_skip("A/B feed over AF_XDP") else { return };
    // Room for the XDP set-up (engine, ARP, TLS) before sequence 0 is due.
    let origin = Instant::now() + Duration::from_millis(1500);
    let (a, b) = ab::specs(origin);
    let ip = bed.server_ip.to_string();
    let (sa, mut sb) = bed.in_ns(Side::Server, || {
        (SeqServer::start_at(&ip, 0, Some("veth"), a), SeqServer::start_at(&ip, 0, Some("veth"), b))
    });
    let (name, _g) = unique(tag);
    let _legs = [unique(&format!("{tag}-0")).1, unique(&format!("{tag}-1")).1, unique(&format!("{tag}-2")).1];
    let cfg = ab::feed_config(&name, vec![leg(&bed, &sa, true), leg(&bed, &sb, b_over_xdp)]);
    bed.in_client(|| {
        let mut feed = Feed::start(cfg).unwrap();
        assert!(Instant::now() < origin + ab::KILL_AT, "the feed took too long to start for the run's clock");
        // Only an AF_XDP leg has our TCP's local address.
        for (i, xdp) in [(0, true), (1, b_over_xdp)] {
            assert_eq!(feed.leg(i).unwrap().local_addr().is_some(), xdp, "leg {i} over AF_XDP: {xdp}");
        }
        let mut server_b = |up: bool| {
            if up {
                bed.in_ns(Side::Server, || sb.restart());
            } else {
                sb.kill();
            }
        };
        let o = ab::run_polled(&mut feed, origin, Duration::from_secs(20), &mut server_b);
        ab::check(&feed, &o, tag);
        feed.stop();
    });
}

#[test]
fn ab_two_xdp_legs_disjoint_drops_kill_and_back() {
    ab_in_bed("xab_xx", true);
}

#[test]
fn ab_xdp_and_kernel_legs_disjoint_drops_kill_and_back() {
    ab_in_bed("xab_xk", false);
}

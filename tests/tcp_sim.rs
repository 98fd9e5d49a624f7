//! End-to-end simulations: the client `Connection` against a simulated server over a
//! lossy, reordering, duplicating link with virtual time.

use pipeline_testkit::tcp_sim::{c2s_byte, s2c_byte, Faults, Harness, PeerConfig};
use pipeline::tcp::{CloseReason, Event, State};

fn check_stream(got: &[u8], f: fn(u64) -> u8, what: &str) {
    for (i, &b) in got.iter().enumerate() {
        if b != f(i as u64) {
            panic!(
                "{what}: byte {i} differs (got {b:#x}, want {:#x})",
                f(i as u64)
            );
        }
    }
}

fn run_transfer(seed: u64, faults: Faults, bytes: usize, isn: u32, peer_isn: u32) -> Harness {
    let mut cc = Harness::default_config();
    cc.rto_min_us = 5_000;
    cc.rto_initial_us = 20_000;
    let pc = PeerConfig {
        send_bytes: bytes,
        isn: peer_isn,
        rto_us: 10_000,
        ..PeerConfig::default()
    };
    let mut h = Harness::new(cc, pc, faults, faults, seed);
    h.client_send_total = bytes;
    h.connect(isn);
    let ok = h.run_until(600_000_000, |h| {
        h.client_rx.len() >= bytes
            && h.peer.received.len() >= bytes
            && h.client.bytes_in_flight() == 0
    });
    assert!(
        ok,
        "transfer stalled: client rx {} / peer rx {} of {bytes}; client {:?}; stats {:#?}; peer {:?}",
        h.client_rx.len(),
        h.peer.received.len(),
        h.client,
        h.client.stats(),
        h.peer.stats
    );
    assert_eq!(h.client_rx.len(), bytes);
    assert_eq!(h.peer.received.len(), bytes);
    check_stream(&h.client_rx, s2c_byte, "server->client");
    check_stream(&h.peer.received, c2s_byte, "client->server");
    assert_eq!(
        h.peer.stats.window_violations, 0,
        "client sent beyond the advertised window"
    );
    assert_eq!(
        h.peer.stats.bad_frames, 0,
        "client emitted a frame the peer could not parse/verify"
    );
    assert_eq!(h.rx_verdict_malformed, 0);
    assert_eq!(
        h.peer.stats.sack_blocks_invalid, 0,
        "every SACK block describes data really held"
    );
    h
}

#[test]
fn clean_transfer_both_directions() {
    let h = run_transfer(1, Faults::default(), 2 << 20, 1000, 2000);
    let s = h.client.stats();
    assert_eq!(s.retransmits, 0);
    assert_eq!(s.ooo_segments_buffered, 0);
    assert!(h.events.contains(&Event::Established));
    assert_eq!(
        h.free_frames(),
        h.client.config().max_in_flight_segments,
        "every frame came back"
    );
}

#[test]
fn lossy_reordering_duplicating_10mb_each_way() {
    let faults = Faults {
        loss: 0.03,
        duplicate: 0.01,
        reorder: 0.03,
        reorder_delay_us: 200,
        delay_us: 50,
        jitter_us: 20,
    };
    let h = run_transfer(42, faults, 10 << 20, 0x1234_5678, 0x8765_4321);
    let s = *h.client.stats();
    eprintln!(
        "client stats: {s:#?}\npeer: {:?}\nlinks: {:?} {:?}",
        h.peer.stats, h.c2s.stats, h.s2c.stats
    );
    assert!(
        s.ooo_segments_buffered > 100,
        "OOO path: {}",
        s.ooo_segments_buffered
    );
    assert!(s.ooo_bytes_stitched > 0);
    assert!(
        s.dup_acks_sent >= s.ooo_segments_buffered,
        "a dup ACK per OOO segment"
    );
    assert!(s.dup_segments_received > 0, "duplicates seen");
    assert!(s.fast_retransmits > 0, "fast retransmit path");
    assert!(s.rto_expirations > 0, "RTO path");
    assert!(s.dup_acks_received > 0);
    assert!(s.retransmits >= s.fast_retransmits);
    assert!(
        h.peer.stats.sack_blocks_seen > 1000,
        "SACK blocks sent: {}",
        h.peer.stats.sack_blocks_seen
    );
    assert_eq!(h.free_frames(), h.client.config().max_in_flight_segments);
}

#[test]
fn lossy_transfer_across_sequence_wrap() {
    // Both ISNs a few KB below 2^32: both directions wrap early in the transfer.
    let faults = Faults {
        loss: 0.02,
        reorder: 0.02,
        ..Faults::default()
    };
    let h = run_transfer(7, faults, 3 << 20, u32::MAX - 5000, u32::MAX - 3000);
    assert!(h.client.snd_nxt() < 10 << 20, "client sequence wrapped");
    assert!(h.client.rcv_nxt() < 10 << 20, "receive sequence wrapped");
}

#[test]
fn many_seeds_small_transfers() {
    for seed in 100..120 {
        let faults = Faults {
            loss: 0.05,
            duplicate: 0.02,
            reorder: 0.05,
            reorder_delay_us: 150,
            delay_us: 40,
            jitter_us: 30,
        };
        run_transfer(
            seed,
            faults,
            300_000,
            (seed as u32).wrapping_mul(0x9e37_79b9),
            seed as u32,
        );
    }
}

#[test]
fn orderly_close_initiated_by_client() {
    let mut h = Harness::new(
        Harness::default_config(),
        PeerConfig::default(),
        Faults::default(),
        Faults::default(),
        1,
    );
    h.client_send_total = 10_000;
    h.close_when_sent = true;
    h.connect(5);
    assert!(h.run_until(10_000_000, |h| h.client.state() == State::Closed));
    assert!(h.peer.client_fin);
    assert_eq!(h.peer.received.len(), 10_000);
    let reason = h.client.close_reason().unwrap();
    assert!(
        matches!(reason, CloseReason::Normal { by_peer: false, .. }),
        "{reason}"
    );
}

#[test]
fn passive_close_reports_peer_closed() {
    let pc = PeerConfig {
        send_bytes: 5000,
        ..PeerConfig::default()
    };
    let mut h = Harness::new(
        Harness::default_config(),
        pc,
        Faults::default(),
        Faults::default(),
        1,
    );
    h.connect(5);
    assert!(h.run_until(10_000_000, |h| h.client_rx.len() == 5000));
    h.peer.close_when_done = true;
    assert!(h.run_until(10_000_000, |h| h.client.state() == State::Closed));
    assert!(h.events.contains(&Event::PeerFin));
    let r = h.client.close_reason().unwrap();
    assert_eq!(r.to_string(), "connection closed by peer 10.0.0.1:443");
    assert!(!r.is_error());
}

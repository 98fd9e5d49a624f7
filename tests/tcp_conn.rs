//! Targeted tests of each connection path, driving the client with crafted segments.

use pipeline_testkit::tcp_sim::{Faults, Harness, PeerConfig, SynBehaviour};
use pipeline::tcp::{CloseReason, Connection, Event, State, TcpConfig, Transmit};
use pipeline::wire::{flags, parse_tcp_frame, MacAddr, TcpOptionsRepr, TcpSegment};

fn harness(pc: PeerConfig, tweak: impl FnOnce(&mut TcpConfig)) -> Harness {
    let mut cc = Harness::default_config();
    tweak(&mut cc);
    Harness::new(cc, pc, Faults::default(), Faults::default(), 9)
}

fn established(pc: PeerConfig, tweak: impl FnOnce(&mut TcpConfig)) -> Harness {
    let mut h = harness(pc, tweak);
    h.connect(0x4000_0000);
    assert!(h.run_until(5_000_000, |h| h.client.is_established()
        && h.c2s.in_flight() == 0
        && h.s2c.in_flight() == 0));
    // Let the handshake ACK reach the peer.
    h.run_until(1_000, |_| false);
    h
}

/// Everything the client wants to send now, emitted to bytes.
fn drain(h: &mut Harness) -> Vec<(Transmit, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(t) = h.client.poll_transmit(h.now) {
        if let Transmit::Control(seg) = t {
            let n = h.client.emit_control(&seg, &mut buf).unwrap();
            out.push((t, buf[..n].to_vec()));
        } else {
            out.push((t, Vec::new()));
        }
    }
    out
}

fn inject(h: &mut Harness, seq: u32, ack: u32, fl: u8, payload: &[u8]) -> Vec<u8> {
    let f = h.peer.craft(seq, ack, fl, payload, h.now);
    let mut got = Vec::new();
    h.client.on_frame(h.now, &f, |d| got.extend_from_slice(d));
    got
}

fn acks(out: &[(Transmit, Vec<u8>)]) -> Vec<u32> {
    out.iter()
        .filter_map(|(t, _)| match t {
            Transmit::Control(r) if r.flags == flags::ACK => Some(r.ack),
            _ => None,
        })
        .collect()
}

#[test]
fn syn_options_and_isn_randomness() {
    let cfg = Harness::default_config();
    let mut isns = Vec::new();
    for _ in 0..8 {
        let mut c = Connection::new(cfg.clone()).unwrap();
        c.connect(0).unwrap();
        let Some(Transmit::Control(syn)) = c.poll_transmit(0) else {
            panic!("no SYN")
        };
        assert_eq!(syn.flags, flags::SYN);
        assert_eq!(syn.seq, c.iss());
        assert_eq!(syn.options.mss, Some(pipeline::config::TCP_MSS as u16));
        assert_eq!(syn.options.window_scale, Some(7), "4 MiB buffer -> scale 7");
        assert!(
            syn.options.sack_permitted,
            "SACK offered (we send blocks; we ignore the peer's)"
        );
        let mut buf = [0u8; 128];
        let n = c.emit_control(&syn, &mut buf).unwrap();
        let f = parse_tcp_frame(&buf[..n], true).unwrap();
        assert_eq!(TcpOptionsRepr::parse(f.tcp.options()).unwrap(), syn.options);
        isns.push(c.iss());
    }
    isns.sort();
    isns.dedup();
    assert_eq!(isns.len(), 8, "ISNs from getrandom are distinct");
}

#[test]
fn syn_retransmit_then_success() {
    let mut h = harness(
        PeerConfig {
            syn: SynBehaviour::IgnoreFirst(2),
            ..PeerConfig::default()
        },
        |_| {},
    );
    h.connect(1);
    let t0 = h.now;
    assert!(h.run_until(10_000_000, |h| h.client.is_established()));
    assert_eq!(h.client.stats().syn_retransmits, 2);
    assert_eq!(h.peer.stats.syns_seen, 3);
    // 1 s + 2 s backoff before the third SYN.
    assert!(
        h.now - t0 >= 3_000_000 && h.now - t0 < 3_100_000,
        "elapsed {}",
        h.now - t0
    );
    assert_eq!(h.events[0], Event::Established);
}

#[test]
fn syn_timeout_message() {
    let mut h = harness(
        PeerConfig {
            syn: SynBehaviour::Ignore,
            ..PeerConfig::default()
        },
        |c| {
            c.syn_retries = 3;
            c.rto_initial_us = 100_000;
            c.rto_min_us = 100_000;
        },
    );
    h.connect(1);
    assert!(h.run_until(100_000_000, |h| h.client.is_closed()));
    let r = h.client.close_reason().unwrap();
    assert_eq!(
        r,
        CloseReason::SynTimeout {
            remote: "10.0.0.1:443".parse().unwrap(),
            tries: 4
        }
    );
    assert_eq!(
        r.to_string(),
        "connection timed out (no SYN-ACK from 10.0.0.1:443 after 4 tries)"
    );
    assert_eq!(
        r.to_error().to_string(),
        "network: connection timed out (no SYN-ACK from 10.0.0.1:443 after 4 tries)"
    );
    assert_eq!(h.peer.stats.syns_seen, 4);
    assert!(h.events.contains(&Event::Closed(r)));
}

#[test]
fn refused_message() {
    let mut h = harness(
        PeerConfig {
            syn: SynBehaviour::Refuse,
            ..PeerConfig::default()
        },
        |_| {},
    );
    h.connect(1);
    assert!(h.run_until(5_000_000, |h| h.client.is_closed()));
    assert_eq!(
        h.client.close_reason().unwrap().to_string(),
        "connection refused by 10.0.0.1:443"
    );
}

#[test]
fn rst_with_wrong_ack_in_syn_sent_is_ignored() {
    let mut h = harness(
        PeerConfig {
            syn: SynBehaviour::Ignore,
            ..PeerConfig::default()
        },
        |_| {},
    );
    h.connect(1000);
    drain(&mut h);
    inject(&mut h, 0, 5, flags::RST | flags::ACK, &[]);
    assert_eq!(h.client.state(), State::SynSent);
    assert_eq!(h.client.stats().rst_ignored, 0); // wrong ACK: dropped before RST processing
                                                 // A SYN-ACK with a wrong ACK gets a RST with seq = its ack.
    inject(&mut h, 77, 999, flags::SYN | flags::ACK, &[]);
    let out = drain(&mut h);
    assert!(matches!(out[0].0, Transmit::Control(r) if r.flags == flags::RST && r.seq == 999));
    assert_eq!(h.client.state(), State::SynSent);
}

#[test]
fn peer_options_captured() {
    let h = established(
        PeerConfig {
            mss: Some(1000),
            wscale: Some(3),
            rcv_buf: 200_000,
            ..PeerConfig::default()
        },
        |_| {},
    );
    assert_eq!(h.client.peer_mss(), 1000);
    assert_eq!(h.client.max_segment_payload(), 1000);
    assert_eq!(h.client.peer_window_scale(), 3);
    assert_eq!(h.client.our_window_scale(), 7);
    assert_eq!(
        h.client.peer_window(),
        65535,
        "the SYN-ACK window is never scaled"
    );
    let mut h = h;
    let (r, a) = (h.client.rcv_nxt(), h.client.snd_nxt());
    inject(&mut h, r, a, flags::ACK, &[]);
    assert_eq!(
        h.client.peer_window(),
        200_000 >> 3 << 3,
        "later windows are scaled by 3"
    );

    let h = established(
        PeerConfig {
            mss: None,
            wscale: None,
            ..PeerConfig::default()
        },
        |_| {},
    );
    assert_eq!(h.client.peer_mss(), 536);
    assert_eq!(h.client.peer_window_scale(), 0);
    assert_eq!(
        h.client.our_window_scale(),
        0,
        "no scaling unless both sides offer it"
    );

    let h = established(
        PeerConfig {
            timestamps: true,
            ..PeerConfig::default()
        },
        |c| c.timestamps = true,
    );
    assert!(h.client.timestamps_enabled());
    assert_eq!(h.client.max_segment_payload(), 1448);
    assert_eq!(h.client.payload_offset(), 14 + 20 + 32);
}

#[test]
fn timestamps_transfer() {
    let faults = Faults {
        loss: 0.02,
        reorder: 0.02,
        ..Faults::default()
    };
    let mut cc = Harness::default_config();
    cc.timestamps = true;
    cc.rto_min_us = 5_000;
    let pc = PeerConfig {
        timestamps: true,
        send_bytes: 1 << 20,
        ..PeerConfig::default()
    };
    let mut h = Harness::new(cc, pc, faults, faults, 3);
    h.client_send_total = 1 << 20;
    h.connect(9);
    assert!(h.run_until(100_000_000, |h| h.client_rx.len() == 1 << 20
        && h.peer.received.len() == 1 << 20));
    assert!(h.client.timestamps_enabled());
    assert_eq!(h.peer.stats.bad_frames, 0);
}

#[test]
fn window_scale_honoured_small_peer_window() {
    // Peer buffer 20 000 bytes, scale 2, application not reading: the client may never
    // put more than the advertised (scaled) window in flight.
    let pc = PeerConfig {
        wscale: Some(2),
        rcv_buf: 20_000,
        app_reads: false,
        ..PeerConfig::default()
    };
    let mut h = established(pc, |c| c.rto_min_us = 10_000);
    h.client_send_total = 200_000;
    h.run_until(2_000_000, |_| false);
    assert_eq!(h.peer.stats.window_violations, 0);
    assert!(h.peer.received.len() <= 20_000);
    assert!(h.peer.stats.max_client_flight <= 20_000);
    assert!(
        h.client.peer_window() < h.client.max_segment_payload() as u32,
        "peer window (nearly) closed"
    );
    // Persist probing with backoff (the window is too small for a segment and nothing
    // is in flight), not data retransmission.
    assert!(
        h.client.stats().zero_window_probes >= 2,
        "{:?}",
        h.client.stats()
    );
    assert!(h.peer.stats.zero_window_probes_seen >= 2);
    assert_eq!(h.client.stats().retransmits, 0);
    // The application reads without sending a window update (as if it were lost):
    // the next probe's answer reopens the window.
    let t0 = h.now;
    while h.peer.received.len() < 200_000 {
        h.peer.app_read(u32::MAX);
        h.run_until(50_000, |_| false);
        assert!(
            h.now - t0 < 60_000_000,
            "stalled at {}",
            h.peer.received.len()
        );
    }
    assert_eq!(h.peer.stats.window_violations, 0);
    assert!(
        !h.client.is_closed(),
        "zero window must not kill the connection: {:?}",
        h.client.close_reason()
    );
}

#[test]
fn client_zero_window_and_window_update() {
    let pc = PeerConfig {
        send_bytes: 300_000,
        ..PeerConfig::default()
    };
    let mut h = harness(pc, |c| c.rcv_buf_max = 64 << 10);
    h.client_buf = 64 << 10;
    h.client_stalled = true;
    h.connect(3);
    h.run_until(2_000_000, |_| false);
    assert!(
        h.client_rx.len() <= 64 << 10,
        "no more than the window: {}",
        h.client_rx.len()
    );
    assert!(h.client.stats().zero_windows_advertised > 0);
    let before = h.client_rx.len();
    h.client_stalled = false;
    h.consume();
    assert!(h.run_until(60_000_000, |h| h.client_rx.len() == 300_000));
    assert!(h.client_rx.len() > before);
    assert!(
        h.client.stats().window_updates_sent > 0,
        "{:?}",
        h.client.stats()
    );
}

#[test]
fn adaptive_ack_every_8_segments_or_100us() {
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let mut seq = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    for i in 0..7 {
        assert_eq!(inject(&mut h, seq, ack, flags::ACK, &[i; 100]).len(), 100);
        seq = seq.wrapping_add(100);
        assert!(
            drain(&mut h).is_empty(),
            "no ACK before 8 segments (segment {i})"
        );
    }
    inject(&mut h, seq, ack, flags::ACK, &[7; 100]);
    seq = seq.wrapping_add(100);
    assert_eq!(acks(&drain(&mut h)), vec![seq]);
    // One segment then time: ACK after 100 µs.
    inject(&mut h, seq, ack, flags::ACK, &[8; 100]);
    seq = seq.wrapping_add(100);
    assert!(drain(&mut h).is_empty());
    assert_eq!(h.client.next_deadline(), Some(h.now + 100));
    h.now += 99;
    assert!(drain(&mut h).is_empty());
    h.now += 1;
    assert_eq!(acks(&drain(&mut h)), vec![seq]);
}

#[test]
fn ooo_buffered_stitched_with_dup_ack_each() {
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let base = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    let data: Vec<u8> = (0..4000u32).map(|i| (i * 13) as u8).collect();
    // Segments 2, 3 (with an overlap), 4 arrive before 1.
    assert!(inject(
        &mut h,
        base.wrapping_add(1000),
        ack,
        flags::ACK,
        &data[1000..2000]
    )
    .is_empty());
    assert_eq!(acks(&drain(&mut h)), vec![base]);
    assert!(inject(
        &mut h,
        base.wrapping_add(1500),
        ack,
        flags::ACK,
        &data[1500..3000]
    )
    .is_empty());
    assert!(inject(
        &mut h,
        base.wrapping_add(3000),
        ack,
        flags::ACK,
        &data[3000..4000]
    )
    .is_empty());
    let out = drain(&mut h);
    assert_eq!(
        acks(&out),
        vec![base, base],
        "a dup ACK for every OOO segment"
    );
    // SACK blocks: the most recent range first, then the others.
    assert!(h.client.sack_enabled());
    let Transmit::Control(last) = out[1].0 else {
        panic!()
    };
    assert_eq!(
        last.options.sack.as_slice(),
        &[(base.wrapping_add(1000), base.wrapping_add(4000))]
    );
    let f = parse_tcp_frame(&out[1].1, true).unwrap();
    assert_eq!(
        TcpOptionsRepr::parse(f.tcp.options()).unwrap().sack,
        last.options.sack
    );
    // Duplicate of an OOO segment: still a dup ACK.
    inject(
        &mut h,
        base.wrapping_add(3000),
        ack,
        flags::ACK,
        &data[3000..4000],
    );
    assert_eq!(acks(&drain(&mut h)), vec![base]);
    assert_eq!(h.client.ooo_bytes(), 3000);
    let got = inject(&mut h, base, ack, flags::ACK, &data[..1000]);
    assert_eq!(
        got, data,
        "gap filled: everything delivered in order, zero-copy + stitched"
    );
    assert_eq!(
        acks(&drain(&mut h)),
        vec![base.wrapping_add(4000)],
        "immediate ACK on gap fill"
    );
    let s = h.client.stats();
    assert_eq!(s.ooo_segments_buffered, 4);
    assert_eq!(s.ooo_bytes_stitched, 3000);
    assert_eq!(h.client.ooo_bytes(), 0);
}

/// A caller out of ACK frames hands the pure ACK back (`defer_ack`): it is owed again
/// as what it was (here two duplicate ACKs), sent later with the newest ack number and
/// SACK blocks. Nothing is lost, and the counters do not count an ACK that never left.
#[test]
fn a_deferred_ack_is_sent_later_up_to_date() {
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let base = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    let data = vec![7u8; 3000];
    let sent_before = h.client.stats().acks_sent;
    // Two out-of-order segments: two dup ACKs owed. The caller has no frame for either.
    inject(&mut h, base.wrapping_add(1000), ack, flags::ACK, &data[1000..2000]);
    inject(&mut h, base.wrapping_add(2000), ack, flags::ACK, &data[2000..3000]);
    for _ in 0..2 {
        let Some(Transmit::Control(seg)) = h.client.poll_transmit(h.now) else {
            panic!("a dup ACK owed")
        };
        assert_eq!(seg.flags, flags::ACK);
        h.client.defer_ack(&seg);
    }
    let s = h.client.stats();
    assert_eq!(s.acks_deferred, 2);
    assert_eq!(s.acks_sent, sent_before, "deferred ACKs are not counted as sent");
    let dups_before = s.dup_acks_sent;
    // Frames are back: both dup ACKs go (a sender without SACK counts them), each
    // with the newest SACK blocks.
    let out = drain(&mut h);
    assert_eq!(acks(&out), vec![base, base]);
    for o in &out {
        let Transmit::Control(seg) = o.0 else { panic!() };
        assert_eq!(seg.options.sack.as_slice(), &[(base.wrapping_add(1000), base.wrapping_add(3000))]);
    }
    let s = h.client.stats();
    assert_eq!(s.acks_sent, sent_before + 2);
    assert_eq!(s.dup_acks_sent, dups_before + 2);
}

#[test]
fn ooo_store_is_bounded() {
    let mut h = established(PeerConfig::default(), |c| {
        c.reorder_bytes = 4096;
        c.reorder_segments = 2;
    });
    drain(&mut h);
    let base = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    inject(&mut h, base.wrapping_add(100), ack, flags::ACK, &[1; 10]);
    inject(&mut h, base.wrapping_add(200), ack, flags::ACK, &[2; 10]);
    inject(&mut h, base.wrapping_add(300), ack, flags::ACK, &[3; 10]); // third hole: dropped
    inject(&mut h, base.wrapping_add(5000), ack, flags::ACK, &[4; 10]); // beyond arena: dropped
    let s = *h.client.stats();
    assert_eq!(s.ooo_segments_buffered, 2);
    assert_eq!(s.ooo_segments_dropped, 2);
    assert_eq!(
        acks(&drain(&mut h)).len(),
        4,
        "dropped OOO segments are still dup-ACKed"
    );
}

#[test]
fn duplicate_and_overlapping_segments() {
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let base = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    assert_eq!(
        inject(&mut h, base, ack, flags::ACK, &data[..200]).len(),
        200
    );
    drain(&mut h);
    // A retransmitted old segment: dup ACK, nothing delivered.
    assert!(inject(&mut h, base, ack, flags::ACK, &data[..200]).is_empty());
    assert_eq!(acks(&drain(&mut h)), vec![base.wrapping_add(200)]);
    assert_eq!(h.client.stats().dup_segments_received, 1);
    // Partial overlap: only the new part is delivered.
    let got = inject(
        &mut h,
        base.wrapping_add(150),
        ack,
        flags::ACK,
        &data[150..300],
    );
    assert_eq!(got, &data[200..300]);
    assert_eq!(h.client.stats().partial_overlaps_trimmed, 1);
    assert_eq!(h.client.rcv_nxt(), base.wrapping_add(300));
}

#[test]
fn rfc5961_rst_and_syn_checks() {
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let nxt = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    // Out of window: ignored silently.
    inject(&mut h, nxt.wrapping_add(50_000_000), ack, flags::RST, &[]);
    assert!(drain(&mut h).is_empty());
    assert_eq!(h.client.stats().rst_ignored, 1);
    // In window but not exact: challenge ACK, stay up.
    inject(&mut h, nxt.wrapping_add(100), ack, flags::RST, &[]);
    assert_eq!(acks(&drain(&mut h)), vec![nxt]);
    assert_eq!(h.client.stats().challenge_acks, 1);
    assert_eq!(h.client.state(), State::Established);
    // SYN in a synchronized state: challenge ACK.
    inject(&mut h, nxt.wrapping_add(7), 0, flags::SYN, &[]);
    assert_eq!(acks(&drain(&mut h)), vec![nxt]);
    assert_eq!(h.client.stats().challenge_acks, 2);
    assert_eq!(h.client.state(), State::Established);
    // An ACK for data never sent: ACK back, drop.
    inject(
        &mut h,
        nxt,
        ack.wrapping_add(10_000),
        flags::ACK,
        &[1, 2, 3],
    );
    assert_eq!(acks(&drain(&mut h)), vec![nxt]);
    assert_eq!(h.client.rcv_nxt(), nxt, "segment dropped");
    // Exact RST: reset.
    inject(&mut h, nxt, 0, flags::RST, &[]);
    assert!(h.client.is_closed());
    assert_eq!(
        h.client.close_reason().unwrap().to_string(),
        "connection reset by 10.0.0.1:443"
    );
}

#[test]
fn fin_sequence_checked_and_out_of_order_fin() {
    let mut h = established(PeerConfig::default(), |c| c.close_on_peer_fin = false);
    drain(&mut h);
    let nxt = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    // FIN after a hole: remembered, not processed.
    inject(
        &mut h,
        nxt.wrapping_add(10),
        ack,
        flags::ACK | flags::FIN,
        &[9; 10],
    );
    assert_eq!(h.client.state(), State::Established);
    assert_eq!(acks(&drain(&mut h)), vec![nxt]);
    // Filling the hole processes the FIN.
    inject(&mut h, nxt, ack, flags::ACK, &[8; 10]);
    assert_eq!(h.client.state(), State::CloseWait);
    assert_eq!(acks(&drain(&mut h)), vec![nxt.wrapping_add(21)]);
    let ev: Vec<Event> = std::iter::from_fn(|| h.client.poll_event()).collect();
    assert!(ev.contains(&Event::PeerFin));
    // We can still send in CLOSE_WAIT; close() sends FIN -> LAST_ACK.
    assert!(h.client.send_capacity() > 0);
    h.client.close(h.now);
    let out = drain(&mut h);
    assert!(matches!(out[0].0, Transmit::Control(r) if r.flags == flags::FIN | flags::ACK));
    assert_eq!(h.client.state(), State::LastAck);
    inject(
        &mut h,
        nxt.wrapping_add(21),
        ack.wrapping_add(1),
        flags::ACK,
        &[],
    );
    assert!(h.client.is_closed());
}

fn send_segments(h: &mut Harness, frames: &mut [Vec<u8>], n: usize, len: usize) -> Vec<u32> {
    let off = h.client.payload_offset();
    let mut seqs = Vec::new();
    for (i, f) in frames.iter_mut().enumerate().take(n) {
        f[off..off + len].fill(i as u8);
        seqs.push(h.client.snd_nxt());
        h.client.send_data(h.now, f, len, i as u32).unwrap();
    }
    seqs
}

#[test]
fn fast_retransmit_on_third_dup_ack_and_uncapped_count() {
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let mut frames = vec![vec![0u8; 2048]; 8];
    let seqs = send_segments(&mut h, &mut frames, 8, 1000);
    let nxt = h.client.rcv_nxt();
    // First segment acked, second lost: dup ACKs for seqs[1].
    inject(&mut h, nxt, seqs[1], flags::ACK, &[]);
    assert_eq!(h.client.pop_acked(), Some(0), "frame freed by ACK");
    for i in 0..2 {
        inject(&mut h, nxt, seqs[1], flags::ACK, &[]);
        assert!(
            drain(&mut h).is_empty(),
            "no retransmit after {} dup ACKs",
            i + 1
        );
    }
    inject(&mut h, nxt, seqs[1], flags::ACK, &[]);
    let out = drain(&mut h);
    assert_eq!(out.len(), 1);
    assert!(
        matches!(out[0].0, Transmit::Retransmit { handle: 1, seq, len: 1000 } if seq == seqs[1])
    );
    // The frame can be refreshed (current ACK) and still verifies.
    let n = h
        .client
        .refresh_data_frame(&mut frames[1], seqs[1], 1000)
        .unwrap();
    let f = parse_tcp_frame(&frames[1][..n], true).unwrap();
    assert_eq!(f.tcp.seq(), seqs[1]);
    assert_eq!(f.tcp.payload(), &[1u8; 1000][..]);
    // Many more dup ACKs: counted, no stall, no extra retransmit storms.
    for _ in 0..20 {
        inject(&mut h, nxt, seqs[1], flags::ACK, &[]);
    }
    assert!(drain(&mut h).is_empty());
    assert_eq!(h.client.stats().dup_acks_received, 23);
    // Partial ACK (NewReno): up to seqs[4] -> retransmit the next hole at once.
    inject(&mut h, nxt, seqs[4], flags::ACK, &[]);
    let out = drain(&mut h);
    assert!(matches!(out[0].0, Transmit::Retransmit { handle: 4, .. }));
    let freed: Vec<u32> = std::iter::from_fn(|| h.client.pop_acked()).collect();
    assert_eq!(freed, vec![1, 2, 3]);
    // Full ACK ends recovery.
    let a = h.client.snd_nxt();
    inject(&mut h, nxt, a, flags::ACK, &[]);
    assert_eq!(h.client.bytes_in_flight(), 0);
    assert_eq!(h.client.stats().fast_retransmits, 1);
    assert_eq!(h.client.stats().partial_ack_retransmits, 1);
}

#[test]
fn rto_backoff_karn_and_give_up() {
    let mut h = established(PeerConfig::default(), |c| {
        c.max_retransmits = 4;
        c.rto_min_us = 200_000;
    });
    drain(&mut h);
    let srtt_before = h.client.stats().srtt_us;
    let mut frames = vec![vec![0u8; 2048]; 2];
    let seqs = send_segments(&mut h, &mut frames, 2, 500);
    let rto0 = h.client.rto_us();
    assert_eq!(rto0, 200_000, "handshake RTT is tiny: RTO at the floor");
    let mut expected = rto0;
    let mut t = h.now;
    for k in 1..=4 {
        let d = h.client.next_deadline().unwrap();
        assert_eq!(d - t, expected, "RTO {k}");
        h.now = d - 1;
        assert!(drain(&mut h).is_empty());
        h.now = d;
        let out = drain(&mut h);
        assert!(
            matches!(out[0].0, Transmit::Retransmit { handle: 0, .. }),
            "{out:?}"
        );
        t = d;
        expected = (expected * 2).min(60_000_000);
    }
    // An ACK of the retransmitted segment: no RTT sample (Karn), backoff reset.
    h.now += 3_000;
    let r = h.client.rcv_nxt();
    inject(&mut h, r, seqs[1], flags::ACK, &[]);
    assert_eq!(
        h.client.stats().srtt_us,
        srtt_before,
        "Karn: no sample from a retransmitted segment"
    );
    assert_eq!(h.client.rto_us(), rto0, "backoff reset by a new ACK");
    // Now never ACK again: give up after max_retransmits with a clear reason.
    let t0 = h.now;
    while !h.client.is_closed() {
        h.now = h.client.next_deadline().unwrap();
        drain(&mut h);
        assert!(h.now - t0 < 100_000_000);
    }
    let r = h.client.close_reason().unwrap();
    assert!(
        r.to_string()
            .starts_with("connection timed out (data to 10.0.0.1:443 unacknowledged after 4"),
        "{r}"
    );
    assert_eq!(
        h.client.pop_acked(),
        Some(0),
        "all frames handed back on close"
    );
    assert_eq!(h.client.pop_acked(), Some(1));
    assert_eq!(h.client.stats().rto_expirations, 8);
}

#[test]
fn rto_min_and_max_respected() {
    let mut h = established(PeerConfig::default(), |c| {
        c.rto_min_us = 1_000;
        c.rto_max_us = 8_000;
        c.max_retransmits = 100;
    });
    drain(&mut h);
    let mut frames = vec![vec![0u8; 2048]; 1];
    send_segments(&mut h, &mut frames, 1, 100);
    let mut last = h.now;
    for _ in 0..10 {
        let d = h.client.next_deadline().unwrap();
        assert!(d - last <= 8_000);
        h.now = d;
        drain(&mut h);
        last = d;
    }
    assert_eq!(h.client.rto_us(), 8_000);
}

#[test]
fn send_respects_window_and_frame_budget() {
    let mut h = established(PeerConfig::default(), |c| c.max_in_flight_segments = 4);
    drain(&mut h);
    let mut frames = vec![vec![0u8; 2048]; 5];
    send_segments(&mut h, &mut frames, 4, 100);
    assert_eq!(h.client.send_capacity(), 0, "frame budget exhausted");
    assert!(matches!(
        h.client.send_data(h.now, &mut frames[4], 100, 4),
        Err(pipeline::Error::WouldBlock)
    ));
    // Acknowledged frames count against the budget until the caller collects them.
    let (r, a) = (h.client.rcv_nxt(), h.client.snd_nxt());
    inject(&mut h, r, a, flags::ACK, &[]);
    assert_eq!(h.client.frames_in_flight(), 0);
    assert_eq!(h.client.send_capacity(), 0);
    let freed: Vec<u32> = std::iter::from_fn(|| h.client.pop_acked()).collect();
    assert_eq!(freed, vec![0, 1, 2, 3]);
    assert!(h.client.send_capacity() > 0);
    let too_big = h.client.max_segment_payload() + 1;
    assert!(h
        .client
        .send_data(h.now, &mut frames[4], too_big, 4)
        .is_err());
}

#[test]
fn handshake_ack_loss_recovered_by_challenge_ack() {
    // The peer retransmits its SYN-ACK (our ACK was lost): we answer with an ACK.
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let isn = h.peer.isn();
    let a = h.client.snd_nxt();
    inject(&mut h, isn, a, flags::SYN | flags::ACK, &[]);
    assert_eq!(acks(&drain(&mut h)), vec![isn.wrapping_add(1)]);
}

#[test]
fn foreign_frames_are_not_ours() {
    let mut c = Connection::new(Harness::default_config()).unwrap();
    c.connect(0).unwrap();
    let mut buf = [0u8; 64];
    let n = pipeline::wire::ArpRepr::request(
        MacAddr([2; 6]),
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
    )
    .emit_frame(&mut buf)
    .unwrap();
    assert_eq!(
        c.on_frame(0, &buf[..n], |_| {}),
        pipeline::tcp::RxVerdict::NotOurs
    );
    assert!(matches!(
        c.on_frame(0, &buf[..10], |_| {}),
        pipeline::tcp::RxVerdict::Malformed(_)
    ));
}

#[test]
fn sack_blocks_most_recent_first_and_not_without_negotiation() {
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let base = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    inject(&mut h, base.wrapping_add(100), ack, flags::ACK, &[1; 100]);
    inject(&mut h, base.wrapping_add(500), ack, flags::ACK, &[1; 100]);
    inject(&mut h, base.wrapping_add(300), ack, flags::ACK, &[1; 100]);
    let out = drain(&mut h);
    let Transmit::Control(last) = out.last().unwrap().0 else {
        panic!()
    };
    let b = |s: u32, e: u32| (base.wrapping_add(s), base.wrapping_add(e));
    assert_eq!(
        last.options.sack.as_slice(),
        &[b(300, 400), b(100, 200), b(500, 600)]
    );
    // Filling the first hole: the ACK moves and blocks shrink.
    inject(&mut h, base, ack, flags::ACK, &[1; 100]);
    let out = drain(&mut h);
    let Transmit::Control(a) = out.last().unwrap().0 else {
        panic!()
    };
    assert_eq!(a.ack, base.wrapping_add(200));
    assert_eq!(a.options.sack.as_slice(), &[b(300, 400), b(500, 600)]);

    // Peer without SACK-permitted: no blocks.
    let mut h = established(
        PeerConfig {
            sack: false,
            ..PeerConfig::default()
        },
        |_| {},
    );
    drain(&mut h);
    assert!(!h.client.sack_enabled());
    let base = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    inject(&mut h, base.wrapping_add(100), ack, flags::ACK, &[1; 100]);
    let out = drain(&mut h);
    let Transmit::Control(a) = out[0].0 else {
        panic!()
    };
    assert!(a.options.sack.is_empty());
}

/// A crafted peer segment with the raw window field set to `window` (checksum redone).
fn inject_window(h: &mut Harness, seq: u32, ack: u32, fl: u8, payload: &[u8], window: u16) -> Vec<u8> {
    let mut f = h.peer.craft(seq, ack, fl, payload, h.now);
    let cfg = Harness::default_config();
    {
        let mut seg = TcpSegment::new_checked(&mut f[34..]).unwrap();
        seg.set_window(window);
        seg.fill_checksum(*cfg.remote.ip(), *cfg.local.ip());
    }
    let mut got = Vec::new();
    h.client.on_frame(h.now, &f, |d| got.extend_from_slice(d));
    got
}

#[test]
fn challenge_acks_rate_limited_per_connection() {
    // RFC 5961 §7: a flood of segments that each deserve a challenge ACK (any SYN, an
    // in-window RST off RCV.NXT, an ACK too old or for data never sent) must not make us
    // send one ACK per segment.
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let nxt = h.client.rcv_nxt();
    let ack = h.client.snd_nxt();
    let limit = h.client.config().challenge_ack_limit as usize;
    assert_eq!(limit, 10, "default: 10 per second");
    let mut sent = 0;
    for i in 0..100u32 {
        match i % 4 {
            0 => inject(&mut h, nxt.wrapping_add(i), 0, flags::SYN, &[]),
            1 => inject(&mut h, nxt.wrapping_add(1 + i), ack, flags::RST, &[]),
            2 => inject(&mut h, nxt, ack.wrapping_sub(1 << 30), flags::ACK, &[]),
            _ => inject(&mut h, nxt, ack.wrapping_add(1000), flags::ACK, &[]),
        };
        sent += acks(&drain(&mut h)).len();
    }
    assert_eq!(sent, limit, "challenge ACKs in one second");
    assert_eq!(h.client.stats().challenge_acks, limit as u64);
    assert_eq!(h.client.stats().challenge_acks_suppressed, (100 - limit) as u64);
    assert_eq!(h.client.state(), State::Established);
    // A second later the budget is back: a lost handshake ACK (the peer resends its
    // SYN-ACK) is still answered.
    h.now += h.client.config().challenge_ack_interval_us;
    let isn = h.peer.isn();
    inject(&mut h, isn, ack, flags::SYN | flags::ACK, &[]);
    assert_eq!(acks(&drain(&mut h)), vec![isn.wrapping_add(1)]);
    // Ordinary traffic is never limited: in-order data is still ACKed.
    assert_eq!(inject(&mut h, nxt, ack, flags::ACK | flags::PSH, &[7; 10]), vec![7; 10]);
}

#[test]
fn challenge_ack_limit_is_configurable() {
    let mut h = established(PeerConfig::default(), |c| {
        c.challenge_ack_limit = 2;
        c.challenge_ack_interval_us = 5_000;
    });
    drain(&mut h);
    let nxt = h.client.rcv_nxt();
    let count = |h: &mut Harness| {
        let mut n = 0;
        for _ in 0..5 {
            inject(h, nxt, 0, flags::SYN, &[]);
            n += acks(&drain(h)).len();
        }
        n
    };
    assert_eq!(count(&mut h), 2);
    h.now += 5_000;
    assert_eq!(count(&mut h), 2);
    assert_eq!(h.client.stats().challenge_acks_suppressed, 6);
    // u32::MAX: no limit.
    let mut h = established(PeerConfig::default(), |c| c.challenge_ack_limit = u32::MAX);
    drain(&mut h);
    assert_eq!(count(&mut h), 5, "a SYN gets a challenge ACK whatever its SEQ");
    assert_eq!(h.client.stats().challenge_acks_suppressed, 0);
}

#[test]
fn old_ack_does_not_change_peer_window() {
    // RFC 9293 §3.10.7.4: SND.WND is updated only from an acceptable ACK
    // (SND.UNA =< SEG.ACK =< SND.NXT). An ACK below SND.UNA (an old duplicate, or a
    // blind injection) must neither shrink nor grow the peer's window, even when its
    // sequence number is newer than SND.WL1.
    let mut h = established(PeerConfig::default(), |_| {});
    drain(&mut h);
    let mut frames = vec![vec![0u8; 2048]; 4];
    send_segments(&mut h, &mut frames, 4, 1000);
    let nxt = h.client.rcv_nxt();
    let una = h.client.snd_nxt();
    let shift = h.client.peer_window_scale();
    // The peer acknowledges everything with a window of 1000 << shift.
    inject_window(&mut h, nxt, una, flags::ACK, &[], 1000);
    assert_eq!(h.client.snd_una(), una);
    let wnd = 1000u32 << shift;
    assert_eq!(h.client.peer_window(), wnd);
    let old = una.wrapping_sub(2500);
    // A pure ACK with a newer SEQ (in window) but an old ACK: window 0 would close it.
    inject_window(&mut h, nxt.wrapping_add(10), old, flags::ACK, &[], 0);
    assert_eq!(h.client.peer_window(), wnd, "old ACK shrank the window");
    // ... and a large window must not open it either.
    inject_window(&mut h, nxt.wrapping_add(10), old, flags::ACK, &[], 60_000);
    assert_eq!(h.client.peer_window(), wnd, "old ACK grew the window");
    // Data carrying an old ACK: the data is still taken (RFC 9293: the ACK is ignored,
    // the text processed), the window is not.
    assert_eq!(inject_window(&mut h, nxt, una, flags::ACK, &[1; 100], 1000), vec![1; 100]);
    let got = inject_window(&mut h, nxt.wrapping_add(100), old, flags::ACK, &[2; 100], 0);
    assert_eq!(got, vec![2; 100]);
    assert_eq!(h.client.rcv_nxt(), nxt.wrapping_add(200));
    assert_eq!(h.client.peer_window(), wnd, "old ACK on a data segment changed the window");
    assert_eq!(h.client.snd_una(), una);
    // A current ACK still updates it.
    inject_window(&mut h, nxt.wrapping_add(200), una, flags::ACK, &[], 2000);
    assert_eq!(h.client.peer_window(), 2000u32 << shift);
}

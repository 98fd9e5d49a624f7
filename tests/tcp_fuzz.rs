//! Robustness: random and mutated segments from a hostile peer never panic the
//! connection, in any state, and never make it deliver bytes out of order.

use pipeline_testkit::tcp_sim::{emit_frame, peer_repr, Faults, Harness, PeerConfig, Rng};
use pipeline::tcp::{Connection, State, Transmit};
use pipeline::wire::{flags, TcpOptionsRepr};

fn random_frame(rng: &mut Rng, near_seq: u32, near_ack: u32) -> Vec<u8> {
    let pick = |rng: &mut Rng, near: u32| match rng.below(4) {
        0 => rng.next_u64() as u32,
        1 => near,
        _ => near
            .wrapping_add(rng.below(200_000) as u32)
            .wrapping_sub(100_000),
    };
    let fl = match rng.below(6) {
        0 => rng.next_u64() as u8,
        1 => flags::RST,
        2 => flags::SYN | flags::ACK,
        3 => flags::FIN | flags::ACK,
        _ => flags::ACK | flags::PSH,
    };
    let options = TcpOptionsRepr {
        mss: if rng.chance(0.2) {
            Some(rng.next_u64() as u16)
        } else {
            None
        },
        window_scale: if rng.chance(0.2) {
            Some(rng.next_u64() as u8)
        } else {
            None
        },
        sack_permitted: rng.chance(0.1),
        timestamps: if rng.chance(0.2) {
            Some((rng.next_u64() as u32, 0))
        } else {
            None
        },
        ..Default::default()
    };
    let len = match rng.below(3) {
        0 => 0,
        1 => rng.below(64) as usize,
        _ => rng.below(1461) as usize,
    };
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let r = peer_repr(pick(rng, near_seq), pick(rng, near_ack), fl, rng.next_u64() as u16, options);
    let mut b = emit_frame(&r, &payload);
    // Sometimes corrupt raw bytes too (header fields, option bytes, lengths).
    if rng.chance(0.2) {
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] = rng.next_u64() as u8;
        }
    }
    b
}

fn pump(c: &mut Connection, now: u64) {
    let mut buf = [0u8; 256];
    while let Some(t) = c.poll_transmit(now) {
        if let Transmit::Control(seg) = t {
            c.emit_control(&seg, &mut buf).unwrap();
        }
    }
    while c.pop_acked().is_some() {}
    while c.poll_event().is_some() {}
}

#[test]
fn hostile_segments_never_panic() {
    let mut rng = Rng::new(2024);
    for round in 0..100 {
        let mut cc = Harness::default_config();
        cc.verify_checksums = rng.chance(0.5);
        let mut h = Harness::new(
            cc,
            PeerConfig::default(),
            Faults::default(),
            Faults::default(),
            round,
        );
        h.connect(rng.next_u64() as u32);
        if round % 3 != 0 {
            assert!(h.run_until(5_000_000, |h| h.client.is_established()));
        }
        let mut now = h.now;
        let mut delivered = 0u64;
        let mut start_rcv = h.client.rcv_nxt();
        for _ in 0..3000 {
            let was_syn_sent = h.client.state() == State::SynSent;
            now += rng.below(5_000);
            let f = random_frame(&mut rng, h.client.rcv_nxt(), h.client.snd_nxt());
            h.client.on_frame(now, &f, |d| delivered += d.len() as u64);
            if was_syn_sent && h.client.state() != State::SynSent {
                // Handshake completed by a random SYN-ACK: count from here.
                assert_eq!(delivered, 0, "no data delivered from a SYN-ACK");
                start_rcv = h.client.rcv_nxt();
            }
            if rng.chance(0.3) {
                h.client.set_rx_space(rng.below(1 << 22) as usize);
            }
            pump(&mut h.client, now);
        }
        // Whatever happened, delivered bytes match the receive sequence advance
        // (minus SYN/FIN sequence numbers, at most 2).
        let adv = h.client.rcv_nxt().wrapping_sub(start_rcv) as u64;
        assert!(
            adv >= delivered && adv <= delivered + 2,
            "round {round}: adv {adv} delivered {delivered}"
        );
    }
}

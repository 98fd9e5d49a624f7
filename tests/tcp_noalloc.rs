//! The hot path allocates nothing after construction: counted with a global allocator.

use pipeline_testkit::tcp_sim::peer_frame as frame;
use pipeline::tcp::{Connection, Transmit};
use pipeline::wire::{flags, TcpOptionsRepr};
use pipeline_testkit::alloc::{self, CountingAlloc};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;


#[test]
fn no_allocation_on_the_hot_path() {
    let mut c = Connection::new(pipeline_testkit::tcp_sim::peer_pair_config()).unwrap();
    c.connect_with_isn(0, 1000, 0).unwrap();
    while c.poll_transmit(0).is_some() {}
    let peer = 5000u32;
    let o = TcpOptionsRepr {
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        ..Default::default()
    };
    c.on_frame(
        1,
        &frame(peer, 1001, flags::SYN | flags::ACK, &[], o),
        |_| {},
    );
    // Pre-build every input outside the measured region.
    let data = vec![7u8; 1000];
    let mut inputs: Vec<Vec<u8>> = vec![
        frame(peer + 1, 1001, flags::ACK, &data, TcpOptionsRepr::default()), // in order
        frame(
            peer + 3001,
            1001,
            flags::ACK,
            &data,
            TcpOptionsRepr::default(),
        ), // OOO
        frame(
            peer + 2001,
            1001,
            flags::ACK,
            &data,
            TcpOptionsRepr::default(),
        ), // OOO
        frame(peer + 1, 1001, flags::ACK, &data, TcpOptionsRepr::default()), // duplicate
        frame(
            peer + 1001,
            1001,
            flags::ACK,
            &data,
            TcpOptionsRepr::default(),
        ), // fills the gap
        frame(
            peer + 4001 + 100,
            0,
            flags::RST,
            &[],
            TcpOptionsRepr::default(),
        ), // challenge
    ];
    // A SYN flood past the challenge-ACK limit: the suppressed path must not allocate.
    let syn = frame(peer + 4001, 0, flags::SYN, &[], TcpOptionsRepr::default());
    let limit = c.config().challenge_ack_limit as usize;
    inputs.extend(std::iter::repeat_n(syn, limit + 5));
    inputs.extend([
        frame(
            peer + 4001,
            1001 + 3000,
            flags::ACK,
            &[],
            TcpOptionsRepr::default(),
        ), // acks our data
    ]);
    let mut frames = vec![vec![0u8; 2048]; 4];
    let mut ackbuf = vec![0u8; 256];
    let off = c.payload_offset();

    alloc::arm();
    let mut delivered = 0usize;
    for (k, f) in frames.iter_mut().enumerate().take(3) {
        f[off..off + 1000].fill(k as u8);
        c.send_data(2, f, 1000, k as u32).unwrap();
    }
    for (i, f) in inputs.iter().enumerate() {
        c.on_frame(10 + i as u64, f, |d| delivered += d.len());
        c.set_rx_space(1 << 20);
        while let Some(t) = c.poll_transmit(10 + i as u64) {
            match t {
                Transmit::Control(seg) => {
                    c.emit_control(&seg, &mut ackbuf).unwrap();
                }
                Transmit::Retransmit { handle, seq, len } => {
                    c.refresh_data_frame(&mut frames[handle as usize], seq, len)
                        .unwrap();
                }
            }
        }
        while c.pop_acked().is_some() {}
        while c.poll_event().is_some() {}
    }
    // Timers: RTO, delayed ACK.
    c.send_data(20, &mut frames[3], 1000, 3).unwrap();
    let d = c.next_deadline().unwrap();
    while c.poll_transmit(d).is_some() {}
    let allocs = alloc::disarm();

    assert_eq!(delivered, 4000);
    assert_eq!(c.stats().ooo_segments_buffered, 2);
    assert_eq!(c.stats().challenge_acks as usize, limit, "1 RST + limit-1 SYNs");
    assert_eq!(c.stats().challenge_acks_suppressed, 6);
    assert!(c.sack_enabled(), "the SACK-block path was exercised");
    assert_eq!(c.stats().rto_expirations, 1);
    assert_eq!(
        allocs,
        0,
        "allocations on the hot path"
    );
}

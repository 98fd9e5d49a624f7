//! UMEM pool behaviour against a real kernel: TX frames come back only through the
//! completion ring, by address range, none lost; RX frames go back to the fill ring
//! only after the consumer released them.

use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use pipeline_testkit::netns::{Side, TestBed};
use pipeline::config::{ACK_FRAMES, MSG_FRAMES, PONG_FRAMES, RX_FRAMES};
use pipeline::xdp::{Flow, PortReservation, RxDesc, TxKind, XdpConfig, XdpSocket, TX_CAPACITY};
use pipeline_testkit::xdp_frames::*;

/// A 60-byte frame of an unassigned EtherType: the server's kernel drops it quietly.
fn junk(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], n: u32) -> usize {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&[0x88, 0xb5]);
    buf[14..18].copy_from_slice(&n.to_be_bytes());
    buf[18..60].fill(0xab);
    60
}

fn drain_completions(xsk: &mut XdpSocket) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        xsk.poll();
        if TxKind::ALL.iter().all(|k| xsk.ledger().outstanding(*k) == 0) && xsk.tx_pending() == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("TX frames never completed: {:?}", xsk.stats());
}

#[test]
fn ten_thousand_tx_frames_all_return_to_their_pools() {
    let Some(bed) = TestBed::new_or_skip("AF_XDP TX pools") else { return };
    let rx_before = bed.stat(Side::Server, "rx_packets");
    bed.in_client(|| {
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        const TOTAL: u32 = 10_000;
        let kinds = [TxKind::Msg, TxKind::Ack, TxKind::Pong];
        let mut sent = 0u32;
        let mut per_kind = [0u64; 3];
        let t0 = Instant::now();
        while sent < TOTAL {
            let mut batch = 0;
            while batch < 64 && sent < TOTAL {
                let k = kinds[(sent % 7 % 3) as usize]; // mostly MSG, some ACK/PONG
                let Some(a) = xsk.alloc_tx(k) else { break };
                let len = junk(xsk.tx_buffer(a).unwrap(), bed.server_mac, bed.client_mac, sent);
                xsk.send(a, len).unwrap();
                per_kind[k as usize] += 1;
                sent += 1;
                batch += 1;
            }
            xsk.flush_tx();
            xsk.reap_completions();
            if batch == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drain_completions(&mut xsk);
        let el = t0.elapsed();
        let s = xsk.stats();
        eprintln!("10k TX frames in {el:?}: {s:?}");
        assert_eq!(s.tx_packets, TOTAL as u64);
        assert_eq!(s.tx_bytes, TOTAL as u64 * 60);
        assert_eq!(s.pools.completed, per_kind);
        assert_eq!(s.pools.comp_unexpected, 0);
        assert_eq!(xsk.ledger().available(TxKind::Msg), MSG_FRAMES);
        assert_eq!(xsk.ledger().available(TxKind::Ack), ACK_FRAMES);
        assert_eq!(xsk.ledger().available(TxKind::Pong), PONG_FRAMES);
        assert!(s.tx_kicks >= 1, "veth copy mode needs sendto kicks: {s:?}");
        let k = xsk.kernel_stats().unwrap();
        assert_eq!(k.tx_invalid_descs, 0, "{k:?}");
    });
    let delivered = bed.stat(Side::Server, "rx_packets") - rx_before;
    eprintln!("server veth received {delivered} of 10000 frames");
    assert!(delivered >= 9_000, "only {delivered} frames reached the peer");
}

#[test]
fn exhausted_pool_refills_only_through_completions_and_failed_sends_return() {
    let Some(bed) = TestBed::new_or_skip("AF_XDP pool exhaustion") else { return };
    bed.in_client(|| {
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        // Take the whole PONG pool.
        let frames: Vec<u64> = std::iter::from_fn(|| xsk.alloc_tx(TxKind::Pong)).collect();
        assert_eq!(frames.len(), PONG_FRAMES);
        assert_eq!(xsk.stats().pools.exhausted[TxKind::Pong as usize], 1); // the final None
        assert!(xsk.alloc_tx(TxKind::Pong).is_none());
        assert_eq!(xsk.stats().pools.exhausted[TxKind::Pong as usize], 2);
        // Other pools are independent.
        let ack = xsk.alloc_tx(TxKind::Ack).unwrap();
        xsk.free_tx(ack).unwrap();
        // Failed sends give the frame back immediately (the C++ project leaked these).
        assert!(xsk.send(frames[0], 0).is_err());
        assert!(xsk.send(frames[1], TX_CAPACITY + 1).is_err());
        assert_eq!(xsk.ledger().available(TxKind::Pong), 2);
        assert_eq!(xsk.stats().tx_rejected, 2);
        // Send the rest; nothing comes back to the pool before its completion.
        for (i, &a) in frames[2..].iter().enumerate() {
            let len = junk(xsk.tx_buffer(a).unwrap(), bed.server_mac, bed.client_mac, i as u32);
            xsk.send(a, len).unwrap();
        }
        assert_eq!(xsk.ledger().available(TxKind::Pong), 2, "frames returned before completion");
        // A frame in flight cannot be written or freed.
        assert!(xsk.tx_buffer(frames[5]).is_none());
        assert!(xsk.free_tx(frames[5]).is_err());
        drain_completions(&mut xsk);
        assert_eq!(xsk.ledger().available(TxKind::Pong), PONG_FRAMES);
        let s = xsk.stats();
        assert_eq!(s.pools.completed[TxKind::Pong as usize], (PONG_FRAMES - 2) as u64);
        assert_eq!(s.pools.comp_unexpected, 0);
    });
}

#[test]
fn rx_frames_go_back_to_the_fill_ring_only_after_release() {
    let Some(bed) = TestBed::new_or_skip("AF_XDP RX refill") else { return };
    let sport = 40200u16;
    let raw = bed.in_server(RawSender::new);
    bed.in_client(|| {
        let port = PortReservation::new(bed.client_ip, 0).unwrap();
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        xsk.add_flow(Flow { server_ip: bed.server_ip, server_port: sport, local_ip: bed.client_ip, local_port: port.port() }).unwrap();
        assert_eq!(xsk.stats().fill_submitted, RX_FRAMES as u64);
        let me = SocketAddrV4::new(bed.client_ip, port.port());
        let srv = SocketAddrV4::new(bed.server_ip, sport);
        let mut buf = [0u8; 256];
        let mut seq = 0u32;
        let mut send = |n: u32, seq: &mut u32| {
            for _ in 0..n {
                let len = build_tcp(
                    &mut buf,
                    &TcpSpec { src_mac: [0; 6], dst_mac: [0; 6], src: srv, dst: me, seq: *seq, ack: 1, flags: TCP_ACK, window: 100, ip_options: vec![], payload: seq.to_be_bytes().to_vec() },
                );
                raw.send_frame(&buf[..len], bed.client_ip);
                *seq += 1;
            }
        };
        // Receive without releasing anything until the kernel runs out of fill frames.
        let mut held: Vec<(RxDesc, u32)> = Vec::new();
        let mut descs = [RxDesc::default(); 64];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "fill ring never ran dry: held {} {:?}", held.len(), xsk.kernel_stats());
            send(32, &mut seq);
            std::thread::sleep(Duration::from_millis(1));
            loop {
                let n = xsk.rx_burst(&mut descs);
                for d in &descs[..n] {
                    let t = parse_tcp(xsk.rx_frame(d)).expect("tcp");
                    held.push((*d, t.seq));
                }
                xsk.poll(); // nothing released: must not refill anything
                if n == 0 {
                    break;
                }
            }
            let k = xsk.kernel_stats().unwrap();
            if k.rx_dropped + k.rx_fill_ring_empty_descs > 0 && seq as usize > RX_FRAMES + 64 {
                break;
            }
        }
        // Let stragglers arrive.
        std::thread::sleep(Duration::from_millis(50));
        let n = xsk.rx_burst(&mut descs);
        assert_eq!(n, 0, "received more frames than the fill ring was given");
        assert_eq!(held.len(), RX_FRAMES, "every RX frame delivered once, none refilled early");
        assert_eq!(xsk.stats().fill_submitted, RX_FRAMES as u64);
        let addrs: HashSet<u64> = held.iter().map(|(d, _)| d.addr).collect();
        assert_eq!(addrs.len(), RX_FRAMES, "an RX frame was delivered twice while held");
        // Frames we still hold were not overwritten by later packets.
        for (d, s) in &held {
            let t = parse_tcp(xsk.rx_frame(d)).expect("still a tcp frame");
            assert_eq!(t.seq, *s, "held frame was overwritten");
        }
        assert_eq!(xsk.stats().rx_bad_desc, 0);
        eprintln!("fill ring dry after {seq} sent: kernel {:?}", xsk.kernel_stats().unwrap());

        // Release; the frames go back to the kernel at the next refill and traffic flows.
        for (d, _) in &held {
            xsk.release_rx(d.addr).unwrap();
        }
        assert!(xsk.release_rx(held[0].0.addr).is_err(), "double release accepted");
        xsk.poll();
        assert_eq!(xsk.stats().fill_submitted, 2 * RX_FRAMES as u64);
        let first_new = seq;
        send(100, &mut seq);
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while got < 100 && Instant::now() < deadline {
            let _ = xsk.wait_rx(Duration::from_millis(50));
            let n = xsk.rx_burst(&mut descs);
            for d in &descs[..n] {
                let t = parse_tcp(xsk.rx_frame(d)).unwrap();
                assert!(t.seq >= first_new);
                xsk.release_rx(d.addr).unwrap();
                got += 1;
            }
            xsk.poll();
        }
        assert_eq!(got, 100);
    });
}

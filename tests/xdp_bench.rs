//! Rough measurements of the AF_XDP path on the veth test bed (ignored by default):
//! `cargo test --release --test xdp_bench -- --ignored --nocapture --test-threads=1`
//!
//! No busy spinning: the receiver sleeps in poll(2) when idle, so the RTT numbers
//! include a wakeup and are an upper bound for a busy-polling stage.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use pipeline_testkit::netns::{Side, TestBed};
use pipeline::xdp::{Flow, PortReservation, RxDesc, TxKind, XdpConfig, XdpSocket};
use pipeline_testkit::xdp_frames::*;

fn cpu_time() -> Duration {
    // SAFETY: getrusage into a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
#[ignore]
fn bench_tx_rx_rtt() {
    let Some(bed) = TestBed::new_or_skip("AF_XDP bench") else { return };
    let raw = bed.in_server(RawSender::new);
    let closed_port = 9; // nothing listens: the server's kernel answers SYN with RST
    bed.in_client(|| {
        let port = PortReservation::new(bed.client_ip, 0).unwrap();
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        eprintln!("mode: {}", xsk.mode());
        let me = SocketAddrV4::new(bed.client_ip, port.port());

        // --- TX throughput: 60-byte frames, batches of 64.
        let srv_rx0 = bed.stat(Side::Server, "rx_packets");
        let (t0, c0) = (Instant::now(), cpu_time());
        let mut sent = 0u64;
        while t0.elapsed() < Duration::from_secs(2) {
            for _ in 0..64 {
                let Some(a) = xsk.alloc_tx(TxKind::Msg) else { break };
                let b = xsk.tx_buffer(a).unwrap();
                b[0..6].copy_from_slice(&bed.server_mac);
                b[6..12].copy_from_slice(&bed.client_mac);
                b[12..14].copy_from_slice(&[0x88, 0xb5]);
                xsk.send(a, 60).unwrap();
                sent += 1;
            }
            xsk.poll();
        }
        while xsk.ledger().in_flight() > 0 {
            xsk.poll();
            std::thread::sleep(Duration::from_millis(1));
        }
        let (el, cpu) = (t0.elapsed(), cpu_time() - c0);
        let delivered = bed.stat(Side::Server, "rx_packets") - srv_rx0;
        eprintln!(
            "TX: {sent} frames in {el:.2?} = {:.0} kpps, {delivered} delivered, client CPU {:.0} ns/frame, kicks {}",
            sent as f64 / el.as_secs_f64() / 1e3,
            cpu.as_nanos() as f64 / sent as f64,
            xsk.stats().tx_kicks
        );

        // --- RX throughput: the server floods our flow from a raw socket.
        xsk.add_flow(Flow { server_ip: bed.server_ip, server_port: 40500, local_ip: bed.client_ip, local_port: port.port() }).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut got = 0u64;
        let (t0, c0) = (Instant::now(), cpu_time());
        let mut offered = 0u64;
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut buf = [0u8; 256];
                let len = build_tcp(
                    &mut buf,
                    &TcpSpec { src_mac: [0; 6], dst_mac: [0; 6], src: SocketAddrV4::new(bed.server_ip, 40500), dst: me, seq: 1, ack: 1, flags: TCP_ACK, window: 100, ip_options: vec![], payload: vec![0; 64] },
                );
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    raw.send_frame(&buf[..len], bed.client_ip);
                    n += 1;
                }
                n
            });
            let mut descs = [RxDesc::default(); 64];
            while t0.elapsed() < Duration::from_secs(2) {
                let _ = xsk.wait_rx(Duration::from_millis(10));
                let n = xsk.rx_burst(&mut descs);
                for d in &descs[..n] {
                    xsk.release_rx(d.addr).unwrap();
                }
                got += n as u64;
                xsk.refill();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            offered = h.join().unwrap();
        });
        let (el, cpu) = (t0.elapsed(), cpu_time() - c0);
        eprintln!(
            "RX: {got} of {offered} offered in {el:.2?} = {:.0} kpps received; CPU (both threads) {:.0} ns/packet; kernel {:?}",
            got as f64 / el.as_secs_f64() / 1e3,
            cpu.as_nanos() as f64 / got.max(1) as f64,
            xsk.kernel_stats().unwrap()
        );

        // --- RTT: SYN out through the XSK, RST back from the server's kernel.
        xsk.add_flow(Flow { server_ip: bed.server_ip, server_port: closed_port, local_ip: bed.client_ip, local_port: port.port() }).unwrap();
        assert!(ping(bed.server_ip, 3));
        let dst_mac = pipeline::xdp::addr::neighbor_mac(bed.server_ip, &bed.client_if).unwrap().unwrap();
        let mut rtts = Vec::with_capacity(2000);
        let mut descs = [RxDesc::default(); 8];
        for i in 0..2000u32 {
            let a = xsk.alloc_tx(TxKind::Ack).unwrap();
            let len = build_tcp(
                xsk.tx_buffer(a).unwrap(),
                &TcpSpec { src_mac: bed.client_mac, dst_mac, src: me, dst: SocketAddrV4::new(bed.server_ip, closed_port), seq: i, ack: 0, flags: TCP_SYN, window: 1000, ip_options: vec![], payload: vec![] },
            );
            let t = Instant::now();
            xsk.send(a, len).unwrap();
            xsk.flush_tx();
            let mut done = false;
            while !done && t.elapsed() < Duration::from_secs(1) {
                let _ = xsk.wait_rx(Duration::from_millis(100));
                let n = xsk.rx_burst(&mut descs);
                for d in &descs[..n] {
                    done |= parse_tcp(xsk.rx_frame(d)).is_some_and(|s| s.flags & TCP_RST != 0);
                    xsk.release_rx(d.addr).unwrap();
                }
            }
            if done {
                rtts.push(t.elapsed());
            }
            xsk.poll();
        }
        rtts.sort();
        let q = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
        eprintln!(
            "RTT (XSK SYN -> kernel RST -> XSK, poll(2) wakeup): n={} min {:?} p50 {:?} p99 {:?} p99.9 {:?}",
            rtts.len(),
            rtts[0],
            q(0.5),
            q(0.99),
            q(0.999)
        );
    });
}

//! End-to-end tests of the XDP flow filter and the AF_XDP socket over a veth pair in
//! two network namespaces: only our flow reaches the socket, everything else reaches
//! the kernel; frames go out through the socket and the answer comes back.

use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use pipeline_testkit::netns::{Side, TestBed};
use pipeline::xdp::{addr, Flow, PortReservation, TxKind, XdpConfig, XdpSocket};
use pipeline_testkit::xdp_frames::*;

fn so_error(fd: i32) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: valid fd and out buffer.
    unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut _ as *mut _, &mut len) };
    err
}

#[test]
fn only_our_flow_is_redirected_icmp_arp_and_other_tcp_pass() {
    let Some(bed) = TestBed::new_or_skip("AF_XDP flow filter") else { return };
    let server_port = 40001u16;
    bed.in_client(|| {
        let port = PortReservation::new(bed.client_ip, 0).expect("reserve port");
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).expect("open AF_XDP socket");
        eprintln!("AF_XDP mode: {}", xsk.mode());
        assert!(bed.has_xdp(Side::Client), "no XDP program on {}:\n{}", bed.client_if, bed.link_details(Side::Client));
        xsk.add_flow(Flow { server_ip: bed.server_ip, server_port, local_ip: bed.client_ip, local_port: port.port() }).unwrap();

        // ARP + ICMP from the server reach the client's kernel and are answered.
        assert!(bed.in_server(|| ping(bed.client_ip, 3)), "ICMP echo to the client was not answered by its kernel");
        // Other TCP reaches the client's kernel: a kernel listener accepts.
        let other = TcpListener::bind((bed.client_ip, 0)).unwrap();
        let other_addr = other.local_addr().unwrap();
        bed.in_server(|| TcpStream::connect_timeout(&other_addr, Duration::from_secs(3)).expect("kernel TCP to another port"));
        let _ = other.accept().expect("accept");
        // Same server address but a different source port: also not ours.
        let stray = bed.in_server(|| {
            tcp_connect_from(SocketAddrV4::new(bed.server_ip, server_port + 1), SocketAddrV4::new(bed.client_ip, port.port()))
        });

        // Our flow: the kernel's SYN from server:server_port to our port lands in the XSK.
        let conn = bed.in_server(|| {
            tcp_connect_from(SocketAddrV4::new(bed.server_ip, server_port), SocketAddrV4::new(bed.client_ip, port.port()))
        });
        let mut stray_seen = false;
        let f = recv_until(&mut xsk, Duration::from_secs(5), |f| {
            let Some(t) = parse_tcp(f) else { return false };
            if t.src.port() == server_port + 1 {
                stray_seen = true;
            }
            t.src == SocketAddrV4::new(bed.server_ip, server_port) && t.dst.port() == port.port() && t.flags & TCP_SYN != 0
        })
        .expect("SYN of our flow did not arrive in the AF_XDP socket");
        assert!(!stray_seen, "a segment from another source port was redirected");
        let t = parse_tcp(&f).unwrap();
        assert_eq!(t.flags & (TCP_SYN | TCP_ACK), TCP_SYN);
        assert!(t.ip_csum_ok && t.tcp_csum_ok, "checksums incomplete (tx offload on the peer?): {t:?}");
        // The client kernel never saw the SYN: it would have answered RST (refused).
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(so_error(conn.as_raw_fd()), 0, "the kernel answered our flow's SYN");
        // The stray one was answered by the kernel (port not listening -> RST -> refused).
        assert_eq!(so_error(stray.as_raw_fd()), libc::ECONNREFUSED, "the stray SYN did not reach the kernel");
        let c = xsk.filter_counters().unwrap();
        assert!(c.redirected >= 1, "{c:?}");
        let s = xsk.stats();
        assert!(s.rx_packets >= 1 && s.rx_bad_desc == 0, "{s:?}");
        drop(xsk);
        assert!(!bed.has_xdp(Side::Client), "XDP program left after close:\n{}", bed.link_details(Side::Client));
    });
}

#[test]
fn tx_syn_from_xsk_gets_syn_ack_back() {
    let Some(bed) = TestBed::new_or_skip("AF_XDP TX/RX") else { return };
    let listener = bed.in_server(|| TcpListener::bind((bed.server_ip, 0)).unwrap());
    let sport = listener.local_addr().unwrap().port();
    bed.in_client(|| {
        // Address helpers, in the client namespace.
        assert_eq!(addr::ipv4_of(&bed.client_if).unwrap(), bed.client_ip);
        assert_eq!(addr::mac_of(&bed.client_if).unwrap(), bed.client_mac);
        assert_eq!(addr::mtu_of(&bed.client_if).unwrap(), 1500);
        assert_eq!(addr::ifindex(&bed.client_if).unwrap(), addr::ifindex(&bed.client_if).unwrap());
        assert_eq!(addr::driver_name(&bed.client_if).unwrap(), "veth");
        let route = addr::route_to(bed.server_ip).unwrap();
        assert_eq!(route.ifname, bed.client_if);
        assert_eq!(route.next_hop(bed.server_ip), bed.server_ip);
        // Fill the neighbour table through the kernel, then look the MAC up.
        assert!(ping(bed.server_ip, 3), "ping server");
        let dst_mac = addr::neighbor_mac(bed.server_ip, &bed.client_if).unwrap().expect("ARP entry for the server");
        assert_eq!(dst_mac, bed.server_mac);

        let port = PortReservation::new(bed.client_ip, 0).unwrap();
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).expect("open AF_XDP socket");
        xsk.add_flow(Flow { server_ip: bed.server_ip, server_port: sport, local_ip: bed.client_ip, local_port: port.port() }).unwrap();

        let me = SocketAddrV4::new(bed.client_ip, port.port());
        let srv = SocketAddrV4::new(bed.server_ip, sport);
        let a = xsk.alloc_tx(TxKind::Ack).unwrap();
        let len = build_tcp(
            xsk.tx_buffer(a).unwrap(),
            &TcpSpec { src_mac: bed.client_mac, dst_mac, src: me, dst: srv, seq: 1000, ack: 0, flags: TCP_SYN, window: 64240, ip_options: vec![], payload: vec![] },
        );
        xsk.send(a, len).unwrap();
        assert_eq!(xsk.flush_tx(), 1);
        let f = recv_until(&mut xsk, Duration::from_secs(5), |f| {
            parse_tcp(f).is_some_and(|t| t.src == srv && t.dst == me && t.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK)
        })
        .expect("no SYN-ACK came back through the AF_XDP socket");
        let t = parse_tcp(&f).unwrap();
        assert_eq!(t.ack, 1001);
        assert!(t.ip_csum_ok && t.tcp_csum_ok);
        // The TX frame came back to the ACK pool through the completion ring.
        for _ in 0..100 {
            xsk.poll();
            if xsk.ledger().outstanding(TxKind::Ack) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(xsk.ledger().outstanding(TxKind::Ack), 0);
        // Tidy up the half-open connection with a RST.
        let a = xsk.alloc_tx(TxKind::Ack).unwrap();
        let len = build_tcp(
            xsk.tx_buffer(a).unwrap(),
            &TcpSpec { src_mac: bed.client_mac, dst_mac, src: me, dst: srv, seq: 1001, ack: 0, flags: TCP_RST, window: 0, ip_options: vec![], payload: vec![] },
        );
        xsk.send(a, len).unwrap();
        xsk.flush_tx();
        let s = xsk.stats();
        assert!(s.tx_packets == 2 && s.rx_packets >= 1, "{s:?}");
    });
}

#[test]
fn ip_options_are_skipped_and_non_matching_ports_pass() {
    let Some(bed) = TestBed::new_or_skip("AF_XDP IHL>5") else { return };
    let sport = 40100u16;
    bed.in_client(|| {
        let port = PortReservation::new(bed.client_ip, 0).unwrap();
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        xsk.add_flow(Flow { server_ip: bed.server_ip, server_port: sport, local_ip: bed.client_ip, local_port: port.port() }).unwrap();
        let me = SocketAddrV4::new(bed.client_ip, port.port());
        bed.in_server(|| {
            let raw = RawSender::new();
            let mut buf = [0u8; 256];
            for (i, (src_port, opts)) in [(sport + 7, vec![1u8, 1, 1, 0]), (sport, vec![1u8, 1, 1, 1, 1, 1, 1, 0])].into_iter().enumerate() {
                let n = build_tcp(
                    &mut buf,
                    &TcpSpec {
                        src_mac: [0; 6],
                        dst_mac: [0; 6],
                        src: SocketAddrV4::new(bed.server_ip, src_port),
                        dst: me,
                        seq: 77 + i as u32,
                        ack: 1,
                        flags: TCP_ACK | TCP_PSH,
                        window: 1000,
                        ip_options: opts,
                        payload: b"hello".to_vec(),
                    },
                );
                raw.send_frame(&buf[..n], bed.client_ip);
            }
        });
        let mut wrong = 0;
        let f = recv_until(&mut xsk, Duration::from_secs(5), |f| match parse_tcp(f) {
            Some(t) if t.src.port() == sport => true,
            Some(_) => {
                wrong += 1;
                false
            }
            None => false,
        })
        .expect("segment with IP options (IHL=7) not redirected");
        assert_eq!(wrong, 0, "a segment from another port was redirected");
        assert_eq!(f[14] & 0x0f, 7, "IHL");
        let t = parse_tcp(&f).unwrap();
        assert_eq!((t.seq, t.payload_len), (78, 5));
    });
}

/// The filter matches the destination address too (issue 9 item 8): a kernel
/// connection from another local address, with the same server address and port and
/// the same local port as our flow, is the kernel's and completes.
#[test]
fn a_kernel_flow_to_another_local_address_with_the_same_ports_passes() {
    let Some(bed) = TestBed::new_or_skip("AF_XDP 4-tuple filter") else { return };
    let other_ip = std::net::Ipv4Addr::new(10, 200, 1, 12);
    bed.add_addr(Side::Client, other_ip);
    let server_port = 40901u16;
    let listener = bed.in_server(|| TcpListener::bind((bed.server_ip, server_port)).unwrap());
    listener.set_nonblocking(true).unwrap();
    bed.in_client(|| {
        let port = PortReservation::new(bed.client_ip, 0).expect("reserve port");
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).expect("open AF_XDP socket");
        let ours = Flow { server_ip: bed.server_ip, server_port, local_ip: bed.client_ip, local_port: port.port() };
        xsk.add_flow(ours).unwrap();
        // Same ports, other local address: the SYN-ACK must reach this kernel socket.
        let fd = tcp_connect_from(SocketAddrV4::new(other_ip, port.port()), SocketAddrV4::new(bed.server_ip, server_port));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut accepted = None;
        while accepted.is_none() && std::time::Instant::now() < deadline {
            if let Ok((s, peer)) = listener.accept() {
                accepted = Some(peer);
                drop(s);
            }
            let _ = xsk.wait_rx(Duration::from_millis(20));
        }
        let peer = accepted.expect("the server never accepted the kernel connection");
        assert_eq!(peer, std::net::SocketAddr::V4(SocketAddrV4::new(other_ip, port.port())));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(so_error(fd.as_raw_fd()), 0, "the kernel connection did not complete (its SYN-ACK was redirected?)");
        let mut descs = [pipeline::xdp::RxDesc::default(); 8];
        assert_eq!(xsk.rx_burst(&mut descs), 0, "a frame of the kernel's connection reached the AF_XDP socket");
        assert_eq!(xsk.filter_counters().unwrap().redirected, 0, "the program redirected the kernel's packets");
    });
}

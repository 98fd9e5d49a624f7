//! Attach modes, zero-copy refusal on veth, and the two loss injectors (the XDP
//! program's own and the test bed's nftables rule on the server side).

use std::net::SocketAddrV4;
use std::time::Duration;

use pipeline_testkit::netns::{Side, TestBed};
use pipeline::xdp::{AttachMode, AttachRequest, Flow, PortReservation, RxDesc, XdpConfig, XdpSocket, ZeroCopy};
use pipeline_testkit::xdp_frames::*;

fn send_segments(bed: &TestBed, raw: &RawSender, sport: u16, dport: u16, n: u32) {
    let mut buf = [0u8; 256];
    for i in 0..n {
        let len = build_tcp(
            &mut buf,
            &TcpSpec {
                src_mac: [0; 6],
                dst_mac: [0; 6],
                src: SocketAddrV4::new(bed.server_ip, sport),
                dst: SocketAddrV4::new(bed.client_ip, dport),
                seq: i,
                ack: 1,
                flags: TCP_ACK,
                window: 100,
                ip_options: vec![],
                payload: vec![],
            },
        );
        raw.send_frame(&buf[..len], bed.client_ip);
    }
}

/// Receive (and release) for `quiet` of silence; returns the count.
fn count_rx(xsk: &mut XdpSocket, quiet: Duration) -> u32 {
    let mut descs = [RxDesc::default(); 64];
    let mut got = 0;
    loop {
        if !xsk.wait_rx(quiet).unwrap() {
            return got;
        }
        let n = xsk.rx_burst(&mut descs);
        for d in &descs[..n] {
            xsk.release_rx(d.addr).unwrap();
        }
        got += n as u32;
        xsk.poll();
    }
}

#[test]
fn generic_mode_works_and_is_reported() {
    let Some(bed) = TestBed::new_or_skip("generic XDP") else { return };
    let raw = bed.in_server(RawSender::new);
    bed.in_client(|| {
        let port = PortReservation::new(bed.client_ip, 0).unwrap();
        let mut cfg = XdpConfig::new(&bed.client_if);
        cfg.attach = AttachRequest::Generic;
        let mut xsk = XdpSocket::open(&cfg).unwrap();
        assert_eq!(xsk.mode().attach, AttachMode::Generic);
        assert!(!xsk.mode().zero_copy);
        assert_eq!(xsk.mode().to_string(), "copy mode, generic (SKB) XDP (veth)");
        assert!(bed.link_details(Side::Client).contains("xdpgeneric"), "{}", bed.link_details(Side::Client));
        xsk.add_flow(Flow { server_ip: bed.server_ip, server_port: 40300, local_ip: bed.client_ip, local_port: port.port() }).unwrap();
        send_segments(&bed, &raw, 40300, port.port(), 50);
        assert_eq!(count_rx(&mut xsk, Duration::from_millis(300)), 50);
    });
}

#[test]
fn native_mode_on_veth_is_copy_mode_and_zero_copy_required_fails_cleanly() {
    let Some(bed) = TestBed::new_or_skip("native XDP / zero-copy") else { return };
    bed.in_client(|| {
        let xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        assert_eq!(xsk.mode().to_string(), "copy mode, native XDP (veth)");
        assert!(bed.link_details(Side::Client).contains("xdp "), "{}", bed.link_details(Side::Client));
        drop(xsk);
        let mut cfg = XdpConfig::new(&bed.client_if);
        cfg.zero_copy = ZeroCopy::Required;
        let e = XdpSocket::open(&cfg).expect_err("veth has no zero-copy");
        eprintln!("zero-copy required on veth: {e}");
        assert!(e.to_string().contains("zero-copy"), "{e}");
        assert!(!bed.has_xdp(Side::Client), "failed open left the program attached");
        // And a normal open works again right after.
        let xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        assert!(!xsk.mode().zero_copy);
    });
}

#[test]
fn second_program_on_the_same_interface_is_refused_with_a_clear_error() {
    let Some(bed) = TestBed::new_or_skip("XDP busy") else { return };
    bed.in_client(|| {
        let _a = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        let e = XdpSocket::open(&XdpConfig::new(&bed.client_if)).expect_err("second attach must fail");
        eprintln!("second open: {e}");
        assert!(e.to_string().contains("already attached"), "{e}");
    });
}

#[test]
fn loss_injection_in_xdp_and_in_nftables() {
    let Some(bed) = TestBed::new_or_skip("loss injection") else { return };
    let raw = bed.in_server(RawSender::new);
    bed.in_client(|| {
        let port = PortReservation::new(bed.client_ip, 0).unwrap();
        let mut xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).unwrap();
        let flow = Flow { server_ip: bed.server_ip, server_port: 40400, local_ip: bed.client_ip, local_port: port.port() };
        xsk.add_flow(flow).unwrap();
        let q = Duration::from_millis(300);

        // XDP-side loss: 100% drops everything of our flow, counted by the program.
        xsk.set_rx_loss_percent(&flow, 100).unwrap();
        send_segments(&bed, &raw, 40400, port.port(), 20);
        assert_eq!(count_rx(&mut xsk, q), 0);
        assert_eq!(xsk.filter_counters().unwrap().loss_dropped, 20);
        // 50%: some but not all (P(all or none of 200) is negligible).
        xsk.set_rx_loss_percent(&flow, 50).unwrap();
        send_segments(&bed, &raw, 40400, port.port(), 200);
        let got = count_rx(&mut xsk, q);
        assert!(got > 20 && got < 180, "50% loss let {got} of 200 through");
        xsk.set_rx_loss_percent(&flow, 0).unwrap();
        send_segments(&bed, &raw, 40400, port.port(), 20);
        assert_eq!(count_rx(&mut xsk, q), 20);

        // Server-side nftables loss (output hook, towards the client).
        bed.set_server_loss(100);
        send_segments(&bed, &raw, 40400, port.port(), 20);
        assert_eq!(count_rx(&mut xsk, q), 0);
        bed.set_server_loss(0);
        send_segments(&bed, &raw, 40400, port.port(), 20);
        assert_eq!(count_rx(&mut xsk, q), 20);
        // Flows come and go at run time (e.g. a reconnect from a new port).
        xsk.remove_flow(&flow).unwrap();
        xsk.add_flow(Flow { server_ip: bed.server_ip, server_port: 40401, local_ip: bed.client_ip, local_port: port.port() }).unwrap();
        send_segments(&bed, &raw, 40400, port.port(), 5);
        send_segments(&bed, &raw, 40401, port.port(), 7);
        assert_eq!(count_rx(&mut xsk, q), 7);
    });
}

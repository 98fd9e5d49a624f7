//! Our TCP over AF_XDP against the kernel's TCP in the other namespace (no TLS): bulk
//! receive, echo, refused port, ARP failure, server RST, and loss both ways.

mod common;

use common::netns::{Side, TestBed};
use pipeline::transport::xdp::{XdpTcpConfig, XdpTcpTransport};
use pipeline::transport::ByteTransport;
use pipeline::Error;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 11)) as u8
}

/// A kernel listener in the server namespace; `f` serves one connection.
fn listener(bed: &TestBed) -> TcpListener {
    let ip = bed.server_ip;
    bed.in_server(move || TcpListener::bind((ip, 0)).expect("bind in server ns"))
}

fn fast_rto(t: &mut pipeline::tcp::TcpConfig) {
    t.rto_min_us = 20_000;
    t.rto_initial_us = 200_000;
}

fn cfg(bed: &TestBed, port: u16) -> XdpTcpConfig {
    let mut c = XdpTcpConfig::new(SocketAddrV4::new(bed.server_ip, port));
    c.connect_timeout = Duration::from_secs(5);
    c.tcp_tweak = Some(fast_rto);
    c
}

/// Drop `pct`% of the packets the server *receives* from the client (nftables input
/// hook). Loss on the server's output hook is invisible on the wire for the kernel's
/// TCP (a locally dropped segment is re-queued and sent again at once, no gap), so
/// the server-side loss that creates real gaps is on input: our data segments and ACKs.
fn set_server_input_loss(bed: &TestBed, pct: u32) {
    let _ = bed.try_cmd(Side::Server, &["nft", "delete", "table", "inet", "pl_inloss"]);
    if pct == 0 {
        return;
    }
    let matcher = if pct >= 100 { String::new() } else { format!("numgen random mod 100 < {pct} ") };
    let rules = format!(
        "table inet pl_inloss {{\n chain inp {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {} {matcher}drop\n }}\n}}\n",
        bed.client_ip
    );
    let path = std::env::temp_dir().join(format!("{}-inloss.nft", bed.server_ns));
    std::fs::write(&path, rules).unwrap();
    bed.server_cmd(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
}

/// Server: send N pattern bytes; read M pattern bytes from the client and answer "OK".
/// Client: receive the N bytes while uploading the M bytes, then wait for "OK".
fn bulk(loss_server_out: u32, loss_server_in: u32, loss_ours: u32) -> (pipeline::tcp::TcpStats, u64) {
    let Some(bed) = TestBed::new_or_skip("XDP TCP bulk") else { return Default::default() };
    let l = listener(&bed);
    let port = l.local_addr().unwrap().port();
    const N: usize = 8 << 20;
    const M: usize = 1 << 20;
    let srv = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let data: Vec<u8> = (0..N).map(pattern).collect();
            w.write_all(&data).unwrap();
            w
        });
        let mut r = s;
        let mut got = vec![0u8; M];
        r.read_exact(&mut got).unwrap();
        for (i, b) in got.iter().enumerate() {
            assert_eq!(*b, pattern(i), "server: upload byte {i} differs");
        }
        let mut w = writer.join().unwrap();
        w.write_all(b"OK").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    bed.set_server_loss(loss_server_out);
    set_server_input_loss(&bed, loss_server_in);
    let out = bed.in_client(|| {
        let mut c = cfg(&bed, port);
        c.rx_loss_percent = loss_ours;
        let mut t = XdpTcpTransport::connect(&c).expect("connect over XDP");
        let t0 = Instant::now();
        let up: Vec<u8> = (0..M).map(pattern).collect();
        let mut sent = 0usize;
        let mut got = 0usize;
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < N || tail.len() < 2 {
            let mut moved = false;
            if sent < M {
                match t.send(&up[sent..]) {
                    Ok(k) => {
                        sent += k;
                        moved = true;
                    }
                    Err(Error::WouldBlock) => {}
                    Err(e) => panic!("send after {sent}: {e}"),
                }
            }
            match t.recv_into(&mut buf) {
                Ok(k) => {
                    moved = true;
                    for &b in &buf[..k] {
                        if got < N {
                            assert_eq!(b, pattern(got), "byte {got} differs");
                            got += 1;
                        } else {
                            tail.push(b);
                        }
                    }
                }
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("recv after {got} bytes: {e}"),
            }
            if !moved {
                assert!(Instant::now() < deadline, "timed out: got {got}/{N}, sent {sent}/{M}: {:?}", t.tcp_stats());
                t.wait(false, Duration::from_millis(20)).unwrap();
            }
        }
        assert_eq!(&tail[..], b"OK");
        let el = t0.elapsed();
        let s = t.tcp_stats();
        let f = t.socket().filter_counters().unwrap();
        eprintln!(
            "bulk loss server-out {loss_server_out}% server-in {loss_server_in}% ours {loss_ours}%: {N} down + {M} up in {el:?} ({:.0} MB/s down)\n  tcp {s:?}\n  transport {:?}\n  filter {f:?}",
            N as f64 / el.as_secs_f64() / 1e6,
            t.stats(),
        );
        assert_eq!(t.stats().rx_overflow, 0);
        assert_eq!(t.stats().tx_send_errors, 0);
        t.close();
        (s, f.loss_dropped)
    });
    srv.join().unwrap();
    out
}

#[test]
fn bulk_both_ways() {
    bulk(0, 0, 0);
}

#[test]
fn bulk_with_3pct_server_side_loss() {
    // Output-side loss (the TestBed helper) and input-side loss together.
    let (s, _) = bulk(3, 3, 0);
    if s.segs_in > 0 {
        // Our upload lost segments on the server's input: we must have retransmitted.
        assert!(s.retransmits > 0, "no retransmits under 3% input loss: {s:?}");
    }
}

#[test]
fn bulk_with_3pct_loss_in_our_xdp_program() {
    let (s, dropped) = bulk(0, 0, 3);
    if s.segs_in > 0 {
        assert!(dropped > 0);
        assert!(s.dup_acks_sent > 0 && s.ooo_segments_buffered > 0, "loss produced no recovery: {s:?}");
    }
}

#[test]
fn refused_port_is_reported() {
    let Some(bed) = TestBed::new_or_skip("XDP TCP refused") else { return };
    let err = bed.in_client(|| XdpTcpTransport::connect(&cfg(&bed, 9)).unwrap_err());
    let s = err.to_string();
    assert!(s.contains("refused") && s.contains("10.200.1.1:9"), "{s}");
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached");
}

#[test]
fn arp_failure_is_reported() {
    let Some(bed) = TestBed::new_or_skip("XDP TCP ARP failure") else { return };
    // An address on the client's subnet that nobody owns.
    let err = bed.in_client(|| {
        let mut c = cfg(&bed, 443);
        c.server = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 200, 1, 77), 443);
        c.arp_first_wait = Duration::from_millis(20);
        XdpTcpTransport::connect(&c).unwrap_err()
    });
    let s = err.to_string();
    assert!(s.contains("no ARP reply from 10.200.1.77 on") && s.contains("after 5 tries"), "{s}");
}

#[test]
fn server_rst_is_reported() {
    let Some(bed) = TestBed::new_or_skip("XDP TCP RST") else { return };
    let l = listener(&bed);
    let port = l.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let s2 = socket2_linger0(s);
        std::thread::sleep(Duration::from_millis(100));
        drop(s2);
    });
    let err = bed.in_client(|| {
        let mut t = XdpTcpTransport::connect(&cfg(&bed, port)).unwrap();
        let mut b = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match t.recv_into(&mut b) {
                Ok(_) => {}
                Err(Error::WouldBlock) => {
                    assert!(Instant::now() < deadline);
                    t.wait(false, Duration::from_millis(20)).unwrap();
                }
                Err(e) => break e,
            }
        }
    });
    srv.join().unwrap();
    let s = err.to_string();
    assert!(s.contains("reset by 10.200.1.1"), "{s}");
}

/// SO_LINGER {1, 0}: close() sends RST.
fn socket2_linger0(s: std::net::TcpStream) -> std::net::TcpStream {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and a linger struct of the right size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    s
}

#[test]
fn silent_server_times_out_with_a_clear_error() {
    let Some(bed) = TestBed::new_or_skip("XDP TCP connect timeout") else { return };
    // The server drops everything from us: no SYN-ACK ever.
    set_server_input_loss(&bed, 100);
    let t0 = Instant::now();
    let err = bed.in_client(|| {
        let mut c = cfg(&bed, 443);
        c.connect_timeout = Duration::from_millis(1500);
        XdpTcpTransport::connect(&c).unwrap_err()
    });
    let s = err.to_string();
    eprintln!("{s} (after {:?})", t0.elapsed());
    assert!(s.contains("timed out") && s.contains("no SYN-ACK from 10.200.1.1:443"), "{s}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn missing_privileges_are_a_capability_error() {
    let Some(bed) = TestBed::new_or_skip("XDP TCP capabilities") else { return };
    let l = listener(&bed);
    let port = l.local_addr().unwrap().port();
    let err = bed.in_client(|| {
        // Drop root on this thread only (raw syscall: glibc's setresuid would change
        // every thread of the test process). Capabilities are per thread.
        // SAFETY: plain syscalls on the calling thread.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
        }
        XdpTcpTransport::connect(&cfg(&bed, port)).unwrap_err()
    });
    eprintln!("{err}");
    assert!(matches!(err, Error::Capability { .. }), "{err:?}");
    assert!(!bed.has_xdp(Side::Client));
}

#[test]
fn stale_neighbor_entry_is_refreshed_when_syns_go_unanswered() {
    let Some(bed) = TestBed::new_or_skip("XDP TCP neighbour refresh") else { return };
    let l = listener(&bed);
    let port = l.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"hi").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    // A wrong MAC for the server in the client's neighbour table: our first SYNs go
    // nowhere. The entry is removed 500 ms later (as if it had expired).
    let ip = bed.server_ip.to_string();
    bed.client_cmd(&["ip", "neigh", "replace", &ip, "lladdr", "02:00:00:00:00:01", "dev", &bed.client_if, "nud", "permanent"]);
    let (ns, ifn, ip2) = (bed.client_ns.clone(), bed.client_if.clone(), ip.clone());
    let fixer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        common::netns::run(&["ip", "netns", "exec", &ns, "ip", "neigh", "del", &ip2, "dev", &ifn]);
    });
    let (refreshes, mac) = bed.in_client(|| {
        let mut t = XdpTcpTransport::connect(&cfg(&bed, port)).expect("connect after the neighbour refresh");
        let mut b = [0u8; 2];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < 2 {
            match t.recv_into(&mut b[got..]) {
                Ok(k) => got += k,
                Err(Error::WouldBlock) => {
                    assert!(Instant::now() < deadline);
                    t.wait(false, Duration::from_millis(20)).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(&b, b"hi");
        (t.stats().neighbor_refreshes, t.next_hop().1)
    });
    fixer.join().unwrap();
    srv.join().unwrap();
    eprintln!("neighbour refreshes: {refreshes}, MAC now {mac}");
    assert!(refreshes >= 1);
    assert_eq!(mac.0, bed.server_mac);
}

//! End to end over the veth pair: our TCP over AF_XDP -> OpenSSL TLS -> WebSocket,
//! against `tools/exchange_sim.py` (Python `websockets`, kernel TCP, TLS from the test
//! CA) in the server namespace. Each test checks every message's sequence number, size,
//! crc32 and content. Runs as root; with `CI` set, missing privileges fail the test.

mod common;
#[path = "common/certs.rs"]
mod certs;
#[path = "common/exsim.rs"]
mod exsim;
#[path = "common/wsmini.rs"]
mod wsmini;

use common::netns::{Side, TestBed};
use exsim::{json_num, ExSim};
use pipeline::tls::{TlsConfig, TlsContext};
use pipeline::transport::kernel_tls::TlsStream;
use pipeline::transport::xdp::{FaultConfig, XdpTcpConfig, XdpTcpTransport};
use pipeline::Error;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};
use wsmini::{check_message, mixed_size, Kind, WsClient};

const T: Duration = Duration::from_secs(10);
const HOST: &str = "feed.test";

fn fast_rto(t: &mut pipeline::tcp::TcpConfig) {
    t.rto_min_us = 20_000;
    t.rto_initial_us = 200_000;
}

fn server(bed: &TestBed, args: &[&str]) -> ExSim {
    let (c, k) = certs::certs().leaf("server");
    ExSim::start(Some(&bed.server_ns), &bed.server_ip.to_string(), &c, &k, args)
}

/// TCP (XDP) -> TLS -> WebSocket, from a thread inside the client namespace.
fn open(bed: &TestBed, port: u16, tweak: impl FnOnce(&mut XdpTcpConfig)) -> WsClient<XdpTcpTransport> {
    let mut c = XdpTcpConfig::new(SocketAddrV4::new(bed.server_ip, port));
    c.tcp_tweak = Some(fast_rto);
    tweak(&mut c);
    let t = XdpTcpTransport::connect(&c).expect("TCP over XDP");
    let ctx = TlsContext::new(&TlsConfig { ca_file: Some(certs::certs().ca()), ..TlsConfig::default() }).unwrap();
    let mut tls = TlsStream::new(t, ctx.client_session(HOST).unwrap());
    tls.handshake(T).expect("TLS handshake over XDP");
    WsClient::connect(tls, HOST, "/feed", T).expect("WebSocket upgrade")
}

struct Feed {
    messages: u64,
    bytes: u64,
    close: Option<(u16, String)>,
    secs: f64,
}

/// Read the feed until the server's close frame: every message in order and intact.
fn read_feed(ws: &mut WsClient<XdpTcpTransport>, count: u64, timeout: Duration) -> Feed {
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let mut f = Feed { messages: 0, bytes: 0, close: None, secs: 0.0 };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "feed timed out after {} of {count} messages; tcp {:?}", f.messages, ws.tls.transport().tcp_stats());
        match ws.next(left) {
            Ok(Kind::Binary) => {
                let seq = f.messages;
                if let Err(e) = check_message(seq, mixed_size(seq), ws.payload()) {
                    panic!("{e}");
                }
                f.bytes += ws.payload().len() as u64;
                f.messages += 1;
            }
            Ok(Kind::Close { code, reason }) => {
                f.close = Some((code, reason));
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("feed failed after {} messages: {e}", f.messages),
        }
    }
    f.secs = t0.elapsed().as_secs_f64();
    assert_eq!(f.messages, count);
    f
}

/// Stream `count` mixed messages (every 13th fragmented), closed by the server after the
/// last one; returns the TCP counters and the fault-hook counters.
fn feed_test(what: &str, count: u64, setup_bed: impl FnOnce(&TestBed), tweak: impl FnOnce(&mut XdpTcpConfig) + Send) {
    let Some(bed) = TestBed::new_or_skip(what) else { return };
    let n = count.to_string();
    let srv = server(&bed, &["--count", &n, "--fragment-every", "13", "--close-after", &n, "--once"]);
    setup_bed(&bed);
    let port = srv.port;
    bed.in_client(|| {
        let mut ws = open(&bed, port, tweak);
        let f = read_feed(&mut ws, count, Duration::from_secs(240));
        assert_eq!(f.close.as_ref().map(|c| c.0), Some(1000), "close: {:?}", f.close);
        let t = ws.tls.transport();
        let s = t.tcp_stats();
        eprintln!(
            "{what}: {} messages, {:.1} MB in {:.2} s ({:.0} msg/s), close {:?}\n  tcp: retransmits {} (fast {}, rto {}, partial {}), dup acks sent {} recv {}, dup segments {}, ooo buffered {} dropped {}, stitched {} B\n  fault hook {:?}; filter {:?}; transport {:?}",
            f.messages,
            f.bytes as f64 / 1e6,
            f.secs,
            f.messages as f64 / f.secs,
            f.close,
            s.retransmits,
            s.fast_retransmits,
            s.rto_expirations,
            s.partial_ack_retransmits,
            s.dup_acks_sent,
            s.dup_acks_received,
            s.dup_segments_received,
            s.ooo_segments_buffered,
            s.ooo_segments_dropped,
            s.ooo_bytes_stitched,
            t.fault_stats(),
            t.socket().filter_counters().unwrap(),
            t.stats()
        );
        assert_eq!(t.stats().rx_overflow, 0);
        assert_eq!(t.stats().rx_malformed, 0);
        (s, t.fault_stats(), t.socket().filter_counters().unwrap())
    });
    let sum = srv.finish();
    eprintln!("server: {sum}");
    assert_eq!(json_num(&sum, "sent"), Some(count as f64), "{sum}");
}

#[test]
fn feed_100k_mixed_messages() {
    feed_test("feed, clean", 100_000, |_| {}, |_| {});
}

#[test]
fn feed_100k_with_3pct_loss() {
    // Loss both ways: our XDP program drops 3% of the server's segments (real gaps on
    // our receive side) and nftables on the server drops 3% of what we send (our ACKs,
    // the upgrade request) and 3% of its own output (re-queued by the kernel's TCP).
    feed_test(
        "feed, 3% loss",
        100_000,
        |bed| {
            bed.set_server_loss(3);
            let rules = format!(
                "table inet pl_inloss {{\n chain inp {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {} numgen random mod 100 < 3 drop\n }}\n}}\n",
                bed.client_ip
            );
            let path = std::env::temp_dir().join(format!("{}-inloss.nft", bed.server_ns));
            std::fs::write(&path, rules).unwrap();
            bed.server_cmd(&["nft", "-f", path.to_str().unwrap()]);
            let _ = std::fs::remove_file(path);
        },
        |c| c.rx_loss_percent = 3,
    );
}

#[test]
fn feed_100k_with_reordering() {
    feed_test("feed, reordering", 100_000, |_| {}, |c| {
        c.fault = FaultConfig { seed: 7, reorder_permille: 30, reorder_depth: 3, reorder_max_hold_us: 2_000, ..Default::default() }
    });
}

#[test]
fn feed_100k_with_duplication_and_delay() {
    feed_test("feed, duplication", 100_000, |_| {}, |c| {
        c.fault = FaultConfig { seed: 11, duplicate_permille: 30, delay_permille: 5, delay_us: 3_000, ..Default::default() }
    });
}

#[test]
fn client_message_reaches_server_and_ping_is_answered() {
    let Some(bed) = TestBed::new_or_skip("ws echo/ping") else { return };
    let srv = server(&bed, &["--count", "0", "--once"]);
    let port = srv.port;
    bed.in_client(|| {
        let mut ws = open(&bed, port, |_| {});
        // Client -> server (echoed back).
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        ws.send_text("hello exchange").unwrap();
        assert_eq!(ws.next(T).unwrap(), Kind::Text);
        assert_eq!(ws.payload(), b"hello exchange");
        ws.send_binary(&big).unwrap();
        assert_eq!(ws.next(T).unwrap(), Kind::Binary);
        assert!(ws.payload() == &big[..], "70 kB echo differs");
        // Client ping -> pong.
        ws.send_ping(b"are you there").unwrap();
        assert_eq!(ws.next(T).unwrap(), Kind::Pong);
        assert_eq!(ws.payload(), b"are you there");
        // Server ping -> our pong -> the server reports it.
        ws.send_text("cmd:ping").unwrap();
        assert_eq!(ws.next(T).unwrap(), Kind::Ping);
        assert_eq!(ws.next(T).unwrap(), Kind::Text);
        let txt = String::from_utf8_lossy(ws.payload()).to_string();
        assert!(txt.starts_with("pong-ok "), "{txt}");
        assert_eq!(ws.pings_answered, 1);
        ws.send_text("cmd:close").unwrap();
        match ws.next(T).unwrap() {
            Kind::Close { code, reason } => assert_eq!((code, reason.as_str()), (1000, "closing on request")),
            k => panic!("{k:?}"),
        }
    });
    let sum = srv.finish();
    eprintln!("server: {sum}");
    assert_eq!(json_num(&sum, "echoed"), Some(2.0), "{sum}");
    assert_eq!(json_num(&sum, "pongs"), Some(1.0), "{sum}");
}

#[test]
fn server_close_ends_the_connection_cleanly() {
    let Some(bed) = TestBed::new_or_skip("ws server close") else { return };
    let srv = server(&bed, &["--count", "500", "--close-after", "500", "--once"]);
    let port = srv.port;
    bed.in_client(|| {
        let mut ws = open(&bed, port, |_| {});
        let f = read_feed(&mut ws, 500, T);
        assert_eq!(f.close, Some((1000, "closing after 500 messages".to_string())));
        // Then TLS close_notify / TCP FIN: the stream ends with Closed, not an error.
        let deadline = Instant::now() + T;
        let end = loop {
            match ws.poll() {
                Ok(_) => {}
                Err(e) => break e,
            }
            assert!(Instant::now() < deadline, "no TCP/TLS end after the close frame");
            let _ = ws.tls.read_timeout(&mut [0u8; 16], Duration::from_millis(20));
        };
        eprintln!("after close frame: {end}");
        assert!(matches!(end, Error::Closed(_)), "{end}");
        // Answer with our close_notify (Python's asyncio waits for it before its FIN),
        // then our TCP close: FIN both ways, an orderly end.
        ws.tls.close_graceful(T).expect("close_notify");
        let t = ws.tls.transport();
        let r = t.close_reason().expect("TCP closed");
        eprintln!("TCP: {r} (state {:?}, tcp {:?})", t.state(), t.tcp_stats());
        assert!(!r.is_error(), "{r}");
        assert!(r.to_string().contains("10.200.1.1"), "{r}");
    });
    srv.finish();
    assert!(!bed.has_xdp(Side::Client));
}

#[test]
fn server_rst_ends_the_connection_with_the_reason() {
    let Some(bed) = TestBed::new_or_skip("ws server RST") else { return };
    let srv = server(&bed, &["--count", "0", "--once"]);
    let port = srv.port;
    bed.in_client(|| {
        let mut ws = open(&bed, port, |_| {});
        ws.send_text("cmd:rst").unwrap();
        let deadline = Instant::now() + T;
        let err = loop {
            match ws.next(Duration::from_millis(100)) {
                Ok(k) => panic!("unexpected {k:?}"),
                Err(Error::Timeout(_)) => assert!(Instant::now() < deadline, "no RST seen"),
                Err(e) => break e,
            }
        };
        let s = err.to_string();
        eprintln!("after RST: {s}");
        assert!(s.contains("connection reset by 10.200.1.1"), "{s}");
    });
    srv.finish();
}

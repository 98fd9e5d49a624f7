//! The pipeline's kernel TLS glue (`stage::TlsTransport` over a `KernelSocket`) against a
//! Python `ssl` echo server.

use pipeline_testkit::certs::certs;
use pipeline::error::Error;
use pipeline::tls::{ReadBio, TlsConfig, TlsContext, TlsVersion};
use pipeline::stage::TlsTransport;
use pipeline::transport::kernel::{KernelSocket, KernelSocketOptions};
use std::time::{Duration, Instant};
use pipeline_testkit::tls_server::EchoServer;

const T: Duration = Duration::from_secs(10);

fn cfg(v: Option<TlsVersion>) -> TlsConfig {
    let mut c = TlsConfig { ca_file: Some(certs().ca()), ..TlsConfig::default() };
    if let Some(v) = v {
        c.min_version = v;
        c.max_version = v;
    }
    c
}

fn server(leaf: &str, tls: &str) -> EchoServer {
    let (c, k) = certs().leaf(leaf);
    EchoServer::start(&c, &k, tls, &[])
}

fn connect(ctx: &TlsContext, host: &str, port: u16) -> pipeline::Result<TlsTransport> {
    TlsTransport::connect_with(host, port, ctx, &KernelSocketOptions::default(), T)
}

fn echo_roundtrip(s: &mut TlsTransport, msg: &[u8]) {
    s.write_all(msg, T).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < msg.len() {
        let n = s.read_timeout(&mut buf, T).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, msg);
}

fn handshake_and_echo(v: TlsVersion, want: &str) {
    let srv = server("server", if v == TlsVersion::Tls12 { "1.2" } else { "1.3" });
    let ctx = TlsContext::new(&cfg(Some(v))).unwrap();
    let mut s = connect(&ctx, "localhost", srv.port).unwrap();
    assert_eq!(s.session().protocol_version(), want);
    assert_eq!(s.session().alpn_selected().as_deref(), Some(&b"http/1.1"[..]));
    assert!(!s.session().session_reused());
    echo_roundtrip(&mut s, b"hello over TLS");
    s.close();
}

#[test]
fn echo_tls12() {
    handshake_and_echo(TlsVersion::Tls12, "TLSv1.2");
}

#[test]
fn echo_tls13() {
    handshake_and_echo(TlsVersion::Tls13, "TLSv1.3");
}

#[test]
fn ip_literal_is_verified_against_ip_san() {
    let srv = server("server", "any");
    let ctx = TlsContext::new(&cfg(None)).unwrap();
    let mut s = connect(&ctx, "127.0.0.1", srv.port).unwrap();
    echo_roundtrip(&mut s, b"ip");
}

#[test]
fn sni_name_differs_from_connect_address() {
    // Connect to 127.0.0.1 but verify (and send SNI for) feed.test, which is in the SAN.
    let srv = server("server", "any");
    let ctx = TlsContext::new(&cfg(None)).unwrap();
    let sock = KernelSocket::connect("127.0.0.1", srv.port, &KernelSocketOptions::default()).unwrap();
    let mut s = TlsTransport::new(sock, ctx.client_session("feed.test").unwrap());
    s.handshake(T).unwrap();
    echo_roundtrip(&mut s, b"sni");
}

/// Several MB each way, concurrently, non-blocking; every record we send carries at
/// most `max_send_fragment` bytes of plaintext.
fn big_transfer(v: TlsVersion, overhead: usize) {
    big_transfer_with(v, overhead, ReadBio::Slice)
}

fn big_transfer_with(v: TlsVersion, overhead: usize, read_bio: ReadBio) {
    let srv = server("server", if v == TlsVersion::Tls12 { "1.2" } else { "1.3" });
    let c = TlsConfig { read_bio, ..cfg(Some(v)) };
    let limit = c.max_send_fragment;
    let ctx = TlsContext::new(&c).unwrap();
    let mut s = connect(&ctx, "localhost", srv.port).unwrap();
    s.session_mut().enable_record_stats();
    let total = 6 * 1024 * 1024;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::with_capacity(total);
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < total {
        assert!(Instant::now() < deadline, "transfer stalled at sent={sent} got={}", got.len());
        if sent < total {
            let end = (sent + 100_000).min(total);
            match s.write(&data[sent..end]) {
                Ok(n) => sent += n,
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("write: {e}"),
            }
        } else {
            s.flush().unwrap();
        }
        let n = s.poll_read(&mut buf).unwrap();
        if n == 0 && (sent == total || s.unsent() > 0) {
            std::thread::sleep(Duration::from_micros(200));
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data, "echoed bytes differ");
    let st = s.session().record_stats();
    assert!(st.records_sent as usize >= total / limit, "{st:?}");
    assert!(
        st.max_record_sent <= limit + overhead,
        "record of {} ciphertext bytes exceeds limit {limit} + overhead {overhead}",
        st.max_record_sent
    );
    let io = s.stats();
    eprintln!("{v:?}: records {st:?}, recv calls {} for {} bytes", io.recv_calls, io.recv_bytes);
    s.close();
}

#[test]
fn big_transfer_tls13_record_limit() {
    // TLS 1.3 AES-GCM: 1 content-type byte + 16 tag.
    big_transfer(TlsVersion::Tls13, 17);
}

#[test]
fn big_transfer_tls12_record_limit() {
    // TLS 1.2 AES-GCM: 8 explicit nonce + 16 tag (CHACHA20: 16).
    big_transfer(TlsVersion::Tls12, 24);
}

#[test]
fn big_transfer_memory_bio() {
    big_transfer_with(TlsVersion::Tls13, 17, ReadBio::Memory);
}

#[test]
fn version_mismatch_names_the_alert() {
    let srv = server("server", "1.3");
    let ctx = TlsContext::new(&cfg(Some(TlsVersion::Tls12))).unwrap();
    let m = connect(&ctx, "localhost", srv.port).err().expect("must fail").to_string();
    eprintln!("version mismatch: {m}");
    assert!(m.contains("peer sent alert \"protocol version\""), "{m}");
}

fn expect_refusal(leaf: &str, host: &str, needles: &[&str]) {
    let srv = server(leaf, "any");
    let ctx = TlsContext::new(&cfg(None)).unwrap();
    let err = match connect(&ctx, host, srv.port) {
        Ok(_) => panic!("handshake with {leaf} cert must fail"),
        Err(e) => e,
    };
    let msg = err.to_string();
    eprintln!("{leaf}: {msg}");
    assert!(matches!(err, Error::Tls(_)), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

#[test]
fn unknown_ca_is_refused() {
    expect_refusal("untrusted", "localhost", &["certificate verify failed", "unable to get local issuer certificate", "host localhost"]);
}

#[test]
fn wrong_hostname_is_refused() {
    expect_refusal("wronghost", "localhost", &["certificate verify failed", "hostname mismatch", "host localhost"]);
}

#[test]
fn wrong_ip_is_refused() {
    expect_refusal("wronghost", "127.0.0.1", &["certificate verify failed", "IP address mismatch"]);
}

#[test]
fn expired_is_refused() {
    expect_refusal("expired", "localhost", &["certificate verify failed", "certificate has expired", "host localhost"]);
}

#[test]
fn system_store_refuses_test_ca() {
    let srv = server("server", "any");
    let ctx = TlsContext::new(&TlsConfig::default()).unwrap();
    let e = connect(&ctx, "localhost", srv.port).err().expect("must fail").to_string();
    assert!(e.contains("certificate verify failed"), "{e}");
}

#[test]
fn insecure_opt_out_accepts_anything() {
    for leaf in ["untrusted", "expired", "wronghost"] {
        let srv = server(leaf, "any");
        let ctx = TlsContext::new(&TlsConfig { insecure_skip_verify: true, ..TlsConfig::default() }).unwrap();
        let mut s = connect(&ctx, "localhost", srv.port).unwrap();
        echo_roundtrip(&mut s, leaf.as_bytes());
    }
}

fn resumption(v: TlsVersion, tls: &str) {
    let srv = server("server", tls);
    let ctx = TlsContext::new(&cfg(Some(v))).unwrap();
    let mut s1 = connect(&ctx, "localhost", srv.port).unwrap();
    assert!(!s1.session().session_reused());
    // TLS 1.3 tickets arrive after the handshake: reading the echo processes them.
    echo_roundtrip(&mut s1, b"first");
    assert!(ctx.has_saved_session("localhost"), "no session saved after the first connection");
    s1.close();
    let mut s2 = connect(&ctx, "localhost", srv.port).unwrap();
    assert!(s2.session().session_reused(), "second connection did not resume");
    echo_roundtrip(&mut s2, b"second");
    // A session for another host name is not offered.
    assert!(!ctx.has_saved_session("127.0.0.1"));
    let s3 = connect(&ctx, "127.0.0.1", srv.port).unwrap();
    assert!(!s3.session().session_reused());
}

#[test]
fn resumption_tls12() {
    resumption(TlsVersion::Tls12, "1.2");
}

#[test]
fn resumption_tls13() {
    resumption(TlsVersion::Tls13, "1.3");
}

#[test]
fn resumption_can_be_disabled() {
    let srv = server("server", "1.3");
    let ctx = TlsContext::new(&TlsConfig { resumption: false, ..cfg(None) }).unwrap();
    let mut s1 = connect(&ctx, "localhost", srv.port).unwrap();
    echo_roundtrip(&mut s1, b"x");
    assert!(!ctx.has_saved_session("localhost"));
    let s2 = connect(&ctx, "localhost", srv.port).unwrap();
    assert!(!s2.session().session_reused());
}

#[test]
fn refused_connection_is_clear() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = KernelSocket::connect("127.0.0.1", port, &KernelSocketOptions::default()).unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::Net(_)), "{m}");
    assert!(m.contains("connection refused") && m.contains(&port.to_string()), "{m}");
}

#[test]
fn unresolvable_host_is_clear() {
    let e = KernelSocket::connect("no-such-host.invalid", 443, &KernelSocketOptions::default()).unwrap_err();
    assert!(e.to_string().contains("cannot resolve no-such-host.invalid:443"), "{e}");
}

#[test]
fn connect_timeout_is_clear() {
    // A listener with backlog 0 that never accepts: once its accept queue is full the
    // kernel drops further SYNs, so a later connect hangs until our timeout.
    // SAFETY: plain socket calls on a fd this test owns and closes.
    let (fd, port) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as _;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut glen = len;
        libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut glen);
        (fd, u16::from_be(got.sin_port))
    };
    let opts = KernelSocketOptions { connect_timeout: Duration::from_millis(300), ..Default::default() };
    let mut held = Vec::new();
    let mut timed_out = None;
    for _ in 0..8 {
        let t0 = Instant::now();
        match KernelSocket::connect("127.0.0.1", port, &opts) {
            Ok(s) => held.push(s),
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(3));
                timed_out = Some(e);
                break;
            }
        }
    }
    // SAFETY: fd is the listener opened above.
    unsafe { libc::close(fd) };
    let e = timed_out.expect("no connect timed out against a full accept queue");
    let m = e.to_string();
    assert!(matches!(e, Error::Timeout(_)) && m.contains("no answer within"), "{m}");
    assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}");
}

#[test]
fn garbage_peer_is_clear() {
    let (c, k) = certs().leaf("server");
    let srv = EchoServer::start(&c, &k, "any", &["--garbage"]);
    let ctx = TlsContext::new(&cfg(None)).unwrap();
    let e = connect(&ctx, "localhost", srv.port).err().expect("must fail");
    let m = e.to_string();
    eprintln!("garbage: {m}");
    assert!(m.contains("not speaking TLS"), "{m}");
}

#[test]
fn handshake_timeout_when_server_is_silent() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let ctx = TlsContext::new(&cfg(None)).unwrap();
    let e = TlsTransport::connect_with("localhost", port, &ctx, &KernelSocketOptions::default(), Duration::from_millis(300))
        .err()
        .expect("must time out");
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    drop(l);
}

#[test]
fn peer_close_is_reported() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut s = KernelSocket::connect("127.0.0.1", port, &KernelSocketOptions::default()).unwrap();
    let (c, _) = l.accept().unwrap();
    drop(c);
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + T;
    loop {
        match s.recv_into(&mut buf) {
            Err(Error::WouldBlock) => {
                assert!(Instant::now() < deadline);
                s.wait(false, Duration::from_millis(100)).unwrap();
            }
            Err(Error::Closed(m)) => {
                assert!(m.contains("closed the TCP connection"), "{m}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(s.is_open());
    s.close();
    assert!(!s.is_open());
}

#[test]
fn resumption_survives_abrupt_drop() {
    for (v, tls) in [(TlsVersion::Tls12, "1.2"), (TlsVersion::Tls13, "1.3")] {
        let srv = server("server", tls);
        let ctx = TlsContext::new(&cfg(Some(v))).unwrap();
        let mut s1 = connect(&ctx, "localhost", srv.port).unwrap();
        echo_roundtrip(&mut s1, b"first");
        drop(s1); // no close_notify: like a reset connection
        let s2 = connect(&ctx, "localhost", srv.port).unwrap();
        assert!(s2.session().session_reused(), "{v:?}: not resumed after an abrupt drop");
    }
}

//! The TLS core driven purely by bytes: a client `TlsSession` against a server
//! `TlsSession` in memory, ciphertext split at random points. No sockets.

use pipeline_testkit::certs::certs;
use pipeline::error::Error;
use pipeline::tls::{HandshakeStatus, ReadBio, TlsConfig, TlsContext, TlsSession, TlsVersion};

/// xorshift64*: deterministic, seed printed on failure.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn client_ctx(v: Option<TlsVersion>) -> TlsContext {
    client_ctx_with(v, ReadBio::Slice, false)
}

fn client_ctx_with(v: Option<TlsVersion>, read_bio: ReadBio, read_ahead: bool) -> TlsContext {
    let mut c = TlsConfig { ca_file: Some(certs().ca()), read_bio, read_ahead, ..TlsConfig::default() };
    if let Some(v) = v {
        c.min_version = v;
        c.max_version = v;
    }
    TlsContext::new(&c).unwrap()
}

fn server_ctx(leaf: &str) -> TlsContext {
    let (c, k) = certs().leaf(leaf);
    TlsContext::new_server(&c, &k, TlsVersion::Tls12, TlsVersion::Tls13).unwrap()
}

/// Move every pending ciphertext byte from `a` to `b` in random-sized pieces, poking
/// `b` (handshake or a read into a small buffer) after each piece. Returns the bytes
/// moved and appends them to `wire` (for record inspection).
fn pump(a: &mut TlsSession, b: &mut TlsSession, rng: &mut Rng, wire: &mut Vec<u8>, sink: &mut Vec<u8>) -> usize {
    let mut buf = Vec::new();
    a.drain_ciphertext_into(&mut buf);
    wire.extend_from_slice(&buf);
    let mut off = 0;
    while off < buf.len() {
        let n = 1 + rng.below((buf.len() - off).min(3000));
        b.feed_ciphertext(&buf[off..off + n]).unwrap();
        off += n;
        if !b.is_handshake_done() {
            b.handshake().unwrap();
        } else {
            read_all(b, rng, sink);
        }
    }
    buf.len()
}

/// Read everything decryptable into `sink`, with random small destination slices.
fn read_all(s: &mut TlsSession, rng: &mut Rng, sink: &mut Vec<u8>) {
    let mut tmp = [0u8; 20000];
    loop {
        let want = 1 + rng.below(tmp.len());
        let n = s.read_plaintext(&mut tmp[..want]).unwrap();
        if n == 0 {
            break;
        }
        sink.extend_from_slice(&tmp[..n]);
    }
}

fn handshake(c: &mut TlsSession, s: &mut TlsSession, rng: &mut Rng) {
    let (mut w, mut sink) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let cs = c.handshake().unwrap();
        pump(c, s, rng, &mut w, &mut sink);
        let ss = s.handshake().unwrap();
        pump(s, c, rng, &mut w, &mut sink);
        if cs == HandshakeStatus::Done && ss == HandshakeStatus::Done && c.pending_ciphertext() == 0 && s.pending_ciphertext() == 0 {
            return;
        }
    }
    panic!("handshake did not finish");
}

/// Every record header in `wire` (a complete record stream): (type, length).
fn records(wire: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= wire.len() {
        let len = u16::from_be_bytes([wire[i + 3], wire[i + 4]]) as usize;
        out.push((wire[i], len));
        i += 5 + len;
    }
    assert_eq!(i, wire.len(), "record stream not whole");
    out
}

fn transfer(v: TlsVersion, seed: u64, overhead: usize) {
    transfer_with(v, seed, overhead, ReadBio::Slice, false)
}

fn transfer_with(v: TlsVersion, seed: u64, overhead: usize, rb: ReadBio, ra: bool) {
    let mut rng = Rng(seed);
    let cctx = client_ctx_with(Some(v), rb, ra);
    let sctx = server_ctx("server");
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    handshake(&mut c, &mut s, &mut rng);
    assert!(c.is_handshake_done() && s.is_handshake_done());
    let limit = pipeline::config::MAX_TLS_PLAINTEXT;

    // Client -> server, 2 MB in random-sized writes; inspect the client's records.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    let mut wire = Vec::new();
    let mut got = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let n = (1 + rng.below(50_000)).min(data.len() - off);
        let w = c.write_plaintext(&data[off..off + n]).unwrap();
        assert_eq!(w, n, "memory BIO must take the whole write");
        off += w;
        pump(&mut c, &mut s, &mut rng, &mut wire, &mut got);
    }
    read_all(&mut s, &mut rng, &mut got);
    assert!(got == data, "client->server bytes differ");
    let recs = records(&wire);
    let app: Vec<_> = recs.iter().filter(|r| r.0 == 23).collect();
    assert!(app.len() >= data.len() / limit);
    let max = app.iter().map(|r| r.1).max().unwrap();
    assert!(max <= limit + overhead, "record {max} > {limit} + {overhead}");

    // Server -> client, 2 MB with 16 KiB records (the server's default).
    let mut wire = Vec::new();
    let mut got = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let n = (1 + rng.below(70_000)).min(data.len() - off);
        off += s.write_plaintext(&data[off..off + n]).unwrap();
        pump(&mut s, &mut c, &mut rng, &mut wire, &mut got);
    }
    read_all(&mut c, &mut rng, &mut got);
    assert!(got == data, "server->client bytes differ");
}

#[test]
fn random_splits_tls13() {
    for seed in [1u64, 0xdead_beef, 42, 7777] {
        transfer(TlsVersion::Tls13, seed, 17);
    }
}

#[test]
fn random_splits_tls12() {
    for seed in [3u64, 0xfeed, 99] {
        transfer(TlsVersion::Tls12, seed, 24);
    }
}

#[test]
fn memory_bio_and_read_ahead_variants() {
    for (rb, ra) in [(ReadBio::Memory, false), (ReadBio::Memory, true), (ReadBio::Slice, true)] {
        transfer_with(TlsVersion::Tls13, 77, 17, rb, ra);
        transfer_with(TlsVersion::Tls12, 78, 24, rb, ra);
    }
}

#[test]
fn one_byte_at_a_time_handshake() {
    let cctx = client_ctx(None);
    let sctx = server_ctx("server");
    let mut c = cctx.client_session("feed.test").unwrap();
    let mut s = sctx.server_session().unwrap();
    let mut rng = Rng(5);
    // Feed every byte individually.
    for _ in 0..20 {
        c.handshake().unwrap();
        let mut b = Vec::new();
        c.drain_ciphertext_into(&mut b);
        for x in &b {
            s.feed_ciphertext(std::slice::from_ref(x)).unwrap();
            s.handshake().unwrap();
        }
        let mut b = Vec::new();
        s.drain_ciphertext_into(&mut b);
        for x in &b {
            c.feed_ciphertext(std::slice::from_ref(x)).unwrap();
            c.handshake().unwrap();
        }
        if c.is_handshake_done() && s.is_handshake_done() {
            break;
        }
    }
    assert!(c.is_handshake_done());
    assert_eq!(c.protocol_version(), "TLSv1.3");
    assert_eq!(c.cipher(), "TLS_AES_256_GCM_SHA384");
    let _ = rng.next();
}

#[test]
fn resumption_in_memory() {
    for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let mut rng = Rng(11);
        let cctx = client_ctx(Some(v));
        let sctx = server_ctx("server");
        let mut c = cctx.client_session("localhost").unwrap();
        let mut s = sctx.server_session().unwrap();
        handshake(&mut c, &mut s, &mut rng);
        // TLS 1.3: the server's tickets follow the handshake; a read processes them.
        let (mut w, mut sink) = (Vec::new(), Vec::new());
        s.write_plaintext(b"hi").unwrap();
        pump(&mut s, &mut c, &mut rng, &mut w, &mut sink);
        read_all(&mut c, &mut rng, &mut sink);
        assert_eq!(sink, b"hi");
        assert!(cctx.has_saved_session("localhost"), "{v:?}: no ticket saved");
        drop((c, s));
        let mut c = cctx.client_session("localhost").unwrap();
        let mut s = sctx.server_session().unwrap();
        handshake(&mut c, &mut s, &mut rng);
        assert!(c.session_reused(), "{v:?}: not resumed");
    }
}

#[test]
fn verify_failure_in_memory_names_reason() {
    let cctx = client_ctx(None);
    let sctx = server_ctx("untrusted");
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    let mut b = Vec::new();
    let mut err = None;
    for _ in 0..10 {
        match c.handshake() {
            Ok(_) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        b.clear();
        c.drain_ciphertext_into(&mut b);
        s.feed_ciphertext(&b).unwrap();
        let _ = s.handshake();
        b.clear();
        s.drain_ciphertext_into(&mut b);
        c.feed_ciphertext(&b).unwrap();
    }
    let m = err.expect("must fail").to_string();
    assert!(m.contains("certificate verify failed: unable to get local issuer certificate (host localhost)"), "{m}");
    // Our alert is queued for the server; the server names it.
    b.clear();
    c.drain_ciphertext_into(&mut b);
    s.feed_ciphertext(&b).unwrap();
    let sm = s.handshake().unwrap_err().to_string();
    assert!(sm.contains("peer sent alert \"unknown CA\""), "{sm}");
}

/// Leave an unrelated error on this thread's OpenSSL queue.
fn push_stale_error() {
    let bad = std::ffi::CString::new("/nonexistent/stale.pem").unwrap();
    // SAFETY: a throwaway context; loading a missing file only queues errors.
    unsafe {
        let ctx = openssl_sys::SSL_CTX_new(openssl_sys::TLS_client_method());
        assert_eq!(openssl_sys::SSL_CTX_use_certificate_chain_file(ctx, bad.as_ptr()), 0);
        openssl_sys::SSL_CTX_free(ctx);
    }
}

#[test]
fn stale_errors_never_leak() {
    let mut rng = Rng(9);
    let cctx = client_ctx(None);
    let sctx = server_ctx("server");
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    push_stale_error();
    handshake(&mut c, &mut s, &mut rng);
    push_stale_error();
    // No input: must be "need more", not a bogus SSL_ERROR_SSL from the stale entry.
    assert_eq!(c.read_plaintext(&mut [0u8; 64]).unwrap(), 0);
    push_stale_error();
    assert_eq!(c.write_plaintext(b"x").unwrap(), 1);
    // A real failure's message carries only its own errors.
    push_stale_error();
    c.feed_ciphertext(&[23, 3, 3, 0, 40]).unwrap();
    c.feed_ciphertext(&[0xAAu8; 40]).unwrap();
    let m = c.read_plaintext(&mut [0u8; 64]).unwrap_err().to_string();
    assert!(!m.contains("No such file") && !m.contains("stale"), "{m}");
    assert!(m.contains("bad record mac") || m.contains("decryption failed"), "{m}");
    assert!(pipeline::tls::drain_error_queue().is_empty());
}

#[test]
fn garbage_after_handshake_is_an_error_not_a_panic() {
    for seed in 1..50u64 {
        let mut rng = Rng(seed);
        let cctx = client_ctx(None);
        let sctx = server_ctx("server");
        let mut c = cctx.client_session("localhost").unwrap();
        let mut s = sctx.server_session().unwrap();
        handshake(&mut c, &mut s, &mut rng);
        let junk: Vec<u8> = (0..1 + rng.below(3000)).map(|_| rng.next() as u8).collect();
        c.feed_ciphertext(&junk).unwrap();
        let mut buf = [0u8; 4096];
        for _ in 0..4 {
            match c.read_plaintext(&mut buf) {
                Ok(_) => {}
                Err(Error::Tls(m)) => {
                    assert!(m.contains("read failed"), "{m}");
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
}

#[test]
fn garbage_during_handshake_says_not_tls() {
    let cctx = client_ctx(None);
    let mut c = cctx.client_session("localhost").unwrap();
    c.handshake().unwrap();
    c.feed_ciphertext(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    let m = c.handshake().unwrap_err().to_string();
    assert!(m.contains("not speaking TLS"), "{m}");
}

#[test]
fn close_notify_is_closed() {
    let mut rng = Rng(2);
    let cctx = client_ctx(None);
    let sctx = server_ctx("server");
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    handshake(&mut c, &mut s, &mut rng);
    s.write_plaintext(b"last words").unwrap();
    s.close_notify().unwrap();
    let mut b = Vec::new();
    s.drain_ciphertext_into(&mut b);
    c.feed_ciphertext(&b).unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    let closed = loop {
        match c.read_plaintext(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e),
        }
    };
    assert_eq!(got, b"last words");
    assert!(matches!(closed, Some(Error::Closed(_))), "{closed:?}");
    assert!(c.peer_closed());
}

#[test]
fn config_errors() {
    let bad = TlsConfig { max_send_fragment: 100, ..TlsConfig::default() };
    assert!(matches!(TlsContext::new(&bad), Err(Error::Config(_))));
    let bad = TlsConfig { ca_file: Some("/nonexistent/ca.pem".into()), ..TlsConfig::default() };
    let m = TlsContext::new(&bad).err().unwrap().to_string();
    assert!(m.contains("cannot load CA file /nonexistent/ca.pem"), "{m}");
    let bad = TlsConfig { min_version: TlsVersion::Tls13, max_version: TlsVersion::Tls12, ..TlsConfig::default() };
    assert!(TlsContext::new(&bad).is_err());
    let ctx = client_ctx(None);
    assert!(ctx.client_session("").is_err());
}

/// Zero-copy path: ciphertext offered as random slices of a received stream, out buffers
/// of random size; unconsumed bytes re-offered (like a UMEM frame not fully used).
#[test]
fn read_plaintext_from_random_slices() {
    for (v, seed) in [(TlsVersion::Tls13, 21u64), (TlsVersion::Tls12, 22), (TlsVersion::Tls13, 23)] {
        let mut rng = Rng(seed);
        let cctx = client_ctx(Some(v));
        let sctx = server_ctx("server");
        let mut c = cctx.client_session("localhost").unwrap();
        let mut s = sctx.server_session().unwrap();
        handshake(&mut c, &mut s, &mut rng);
        let data: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        let mut wire = Vec::new();
        let mut off = 0;
        while off < data.len() {
            let n = (1 + rng.below(40_000)).min(data.len() - off);
            s.set_max_send_fragment(512 + rng.below(16384 - 512)).unwrap();
            off += s.write_plaintext(&data[off..off + n]).unwrap();
            s.drain_ciphertext_into(&mut wire);
        }
        let mut got = Vec::new();
        let mut out = vec![0u8; 20_000];
        let mut pos = 0;
        let mut stuck = 0;
        while got.len() < data.len() {
            let seg = (1 + rng.below(3000)).min(wire.len() - pos);
            let want = 1 + rng.below(out.len());
            let (c_used, p) = c.read_plaintext_from(&wire[pos..pos + seg], &mut out[..want]).unwrap();
            assert!(c_used <= seg);
            pos += c_used;
            got.extend_from_slice(&out[..p]);
            stuck = if c_used == 0 && p == 0 { stuck + 1 } else { 0 };
            assert!(stuck < 10, "no progress at pos {pos}");
        }
        assert_eq!(pos, wire.len());
        assert!(got == data, "{v:?}: bytes differ");
        assert_eq!(c.buffered_ciphertext(), 0);
    }
}

/// Mixing fed backlog and lent slices keeps stream order.
#[test]
fn backlog_then_slice_keeps_order() {
    let mut rng = Rng(31);
    let cctx = client_ctx(None);
    let sctx = server_ctx("server");
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    handshake(&mut c, &mut s, &mut rng);
    let mut wire = Vec::new();
    for i in 0..200u32 {
        s.write_plaintext(format!("msg{i:04};").as_bytes()).unwrap();
    }
    s.drain_ciphertext_into(&mut wire);
    let mut got = Vec::new();
    let mut out = [0u8; 64];
    let mut pos = 0;
    while pos < wire.len() {
        let seg = (1 + rng.below(200)).min(wire.len() - pos);
        if rng.below(2) == 0 {
            c.feed_ciphertext(&wire[pos..pos + seg]).unwrap();
            pos += seg;
            loop {
                let n = c.read_plaintext(&mut out).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&out[..n]);
            }
        } else {
            let (u, p) = c.read_plaintext_from(&wire[pos..pos + seg], &mut out).unwrap();
            pos += u;
            got.extend_from_slice(&out[..p]);
        }
    }
    loop {
        let n = c.read_plaintext(&mut out).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&out[..n]);
    }
    let want: String = (0..200u32).map(|i| format!("msg{i:04};")).collect();
    assert_eq!(String::from_utf8(got).unwrap(), want);
}

/// Good records then a corrupt one: the good plaintext comes first, the error next call.
#[test]
fn error_after_data_is_deferred() {
    let mut rng = Rng(41);
    let cctx = client_ctx(None);
    let sctx = server_ctx("server");
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    handshake(&mut c, &mut s, &mut rng);
    for _ in 0..3 {
        s.write_plaintext(b"good").unwrap();
    }
    let mut w = Vec::new();
    s.drain_ciphertext_into(&mut w);
    w.extend_from_slice(&[23, 3, 3, 0, 30]);
    w.extend_from_slice(&[0x55; 30]);
    let mut out = [0u8; 1024];
    let (used, n) = c.read_plaintext_from(&w, &mut out).unwrap();
    assert_eq!(&out[..n], b"goodgoodgood");
    assert_eq!(used, w.len());
    let e = c.read_plaintext(&mut out).unwrap_err().to_string();
    eprintln!("corrupt record: {e}");
    assert!(e.contains("read failed"), "{e}");
}

/// A destination smaller than a record (ring space before the wrap point): the record is
/// split across calls, nothing lost, `has_pending_plaintext` says more is waiting.
#[test]
fn record_split_across_small_destinations() {
    let mut rng = Rng(51);
    let cctx = client_ctx(None);
    let sctx = server_ctx("server");
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    handshake(&mut c, &mut s, &mut rng);
    let msg: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    s.write_plaintext(&msg).unwrap();
    let mut w = Vec::new();
    s.drain_ciphertext_into(&mut w);
    let mut tail = [0u8; 300];
    let (used, n) = c.read_plaintext_from(&w, &mut tail).unwrap();
    assert_eq!((used, n), (w.len(), 300));
    assert!(c.has_pending_plaintext());
    let mut head = [0u8; 4096];
    let m = c.read_plaintext(&mut head).unwrap();
    assert_eq!(m, 700);
    assert!(!c.has_pending_plaintext());
    assert_eq!([&tail[..], &head[..m]].concat(), msg);
}

/// Run a handshake between a client for `host` and a server presenting `leaf`; the
/// client's error if it fails.
fn handshake_outcome(leaf: &str, host: &str) -> Result<(), Error> {
    let cctx = client_ctx(None);
    let sctx = server_ctx(leaf);
    let mut c = cctx.client_session(host)?;
    let mut s = sctx.server_session()?;
    let mut b = Vec::new();
    for _ in 0..10 {
        if c.handshake()? == HandshakeStatus::Done {
            return Ok(());
        }
        b.clear();
        c.drain_ciphertext_into(&mut b);
        s.feed_ciphertext(&b)?;
        let _ = s.handshake();
        b.clear();
        s.drain_ciphertext_into(&mut b);
        c.feed_ciphertext(&b)?;
    }
    panic!("handshake for {host} against {leaf} did not finish");
}

#[test]
fn partial_wildcards_refused_full_wildcard_accepted() {
    // A certificate for `f*.example.test` must not vouch for `foo.example.test`
    // (X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS; RFC 9525 §6.3 forbids partial wildcards).
    let e = handshake_outcome("partialwild", "foo.example.test").expect_err("partial wildcard accepted");
    let m = e.to_string();
    assert!(m.contains("certificate verify failed: hostname mismatch (host foo.example.test)"), "{m}");
    // `*.example.test` still covers exactly one label.
    handshake_outcome("wildcard", "foo.example.test").expect("full wildcard must verify");
    for host in ["example.test", "a.foo.example.test"] {
        let m = handshake_outcome("wildcard", host).expect_err(host).to_string();
        assert!(m.contains("hostname mismatch"), "{host}: {m}");
    }
}

#[test]
fn subject_cn_is_never_used_as_the_host_name() {
    // A certificate without subjectAltName, named only in its CN: refused
    // (X509_CHECK_FLAG_NEVER_CHECK_SUBJECT; RFC 9525 §6.3 retires the CN fallback).
    let m = handshake_outcome("cnonly", "localhost").expect_err("CN-only certificate accepted").to_string();
    assert!(m.contains("certificate verify failed: hostname mismatch (host localhost)"), "{m}");
    // The same CA's certificate with a SAN verifies.
    handshake_outcome("server", "localhost").expect("SAN certificate must verify");
}

extern "C" {
    // libssl 3.0; openssl-sys does not declare it. Linked through openssl-sys.
    fn SSL_renegotiate(s: *mut openssl_sys::SSL) -> libc::c_int;
}

/// Record types in a TLS 1.2 stream (visible on the wire even when encrypted).
fn record_types(wire: &[u8]) -> Vec<u8> {
    records(wire).into_iter().map(|r| r.0).collect()
}

#[test]
fn server_renegotiation_request_is_refused() {
    // TLS 1.2 renegotiation (a server's HelloRequest) is off: the client must not send a
    // new ClientHello. OpenSSL answers with a no_renegotiation warning alert; an OpenSSL
    // server then ends the connection, which the client reports as a clean error.
    let mut rng = Rng(61);
    let cctx = client_ctx(Some(TlsVersion::Tls12));
    let sctx = server_ctx("server");
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    handshake(&mut c, &mut s, &mut rng);
    assert_eq!(c.protocol_version(), "TLSv1.2");
    s.write_plaintext(b"before").unwrap();
    // SAFETY: the server's live SSL; these only queue a HelloRequest into its write BIO
    // (a server's SSL_do_handshake returns once it is written; the ClientHello would
    // come through SSL_read).
    unsafe {
        assert_eq!(SSL_renegotiate(s.as_ptr()), 1, "test server must be able to renegotiate");
        assert_eq!(openssl_sys::SSL_do_handshake(s.as_ptr()), 1, "HelloRequest written");
    }
    let mut w = Vec::new();
    s.drain_ciphertext_into(&mut w);
    assert_eq!(record_types(&w), vec![23, 22], "data, then the HelloRequest");
    c.feed_ciphertext(&w).unwrap();
    let mut buf = [0u8; 256];
    let n = c.read_plaintext(&mut buf).expect("a HelloRequest is not an error for the client");
    assert_eq!(&buf[..n], b"before");
    assert_eq!(c.read_plaintext(&mut buf).unwrap(), 0);
    let mut w = Vec::new();
    c.drain_ciphertext_into(&mut w);
    let types = record_types(&w);
    assert!(!types.contains(&22), "client started a renegotiation handshake: records {types:?}");
    assert_eq!(types, vec![21], "one no_renegotiation alert");
    // The server gives up on the connection; the client sees its alert as an error.
    s.feed_ciphertext(&w).unwrap();
    let se = s.read_plaintext(&mut buf).expect_err("OpenSSL server aborts on no_renegotiation");
    assert!(se.to_string().contains("no renegotiation"), "{se}");
    let mut w = Vec::new();
    s.drain_ciphertext_into(&mut w);
    c.feed_ciphertext(&w).unwrap();
    match c.read_plaintext(&mut buf) {
        Err(Error::Tls(m)) => {
            eprintln!("renegotiation refused: server: {se}; client: {m}");
            assert!(m.contains("peer sent alert \"handshake failure\""), "{m}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

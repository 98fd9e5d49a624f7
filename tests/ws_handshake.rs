//! Opening handshake: request contents, header injection, and the response
//! validator (good, wrong accept, missing headers, non-101 with its status line,
//! unoffered extension/subprotocol, size limit), split at every byte, with early
//! frame bytes after the header.

use pipeline::ws::handshake::accept_key;
use pipeline::ws::{ClientHandshake, Delivery, HandshakeConfig, HandshakeStatus, WsUrl};
use pipeline_testkit::ws_frames::*;

const NONCE: [u8; 16] = *b"the sample nonce"; // RFC 6455 §1.3's example key
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn hs(cfg: &HandshakeConfig) -> ClientHandshake {
    ClientHandshake::with_key(
        &WsUrl::parse("wss://feed.example.com:8443/ws?x=1").unwrap(),
        cfg,
        NONCE,
    )
    .unwrap()
}

fn ok_response(extra: &str) -> String {
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n")
}

fn feed_all(h: &mut ClientHandshake, b: &[u8]) -> pipeline::Result<HandshakeStatus> {
    h.feed(b)
}

fn err_of(resp: &str, cfg: &HandshakeConfig) -> String {
    match hs(cfg).feed(resp.as_bytes()) {
        Err(e) => e.to_string(),
        Ok(s) => panic!("accepted: {s:?} for {resp:?}"),
    }
}

#[test]
fn request_contents() {
    let cfg = HandshakeConfig {
        protocols: vec!["chat".into(), "v2.feed".into()],
        headers: vec![
            ("Authorization".into(), "Bearer abc".into()),
            ("Origin".into(), "https://x".into()),
        ],
        ..Default::default()
    };
    let h = hs(&cfg);
    assert_eq!(h.key(), KEY);
    assert_eq!(accept_key(KEY), ACCEPT);
    let req = std::str::from_utf8(h.request()).unwrap();
    assert_eq!(
        req,
        "GET /ws?x=1 HTTP/1.1\r\nHost: feed.example.com:8443\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: chat, v2.feed\r\nAuthorization: Bearer abc\r\nOrigin: https://x\r\n\r\n"
    );
    let u = WsUrl::parse("wss://h/").unwrap();
    let a = ClientHandshake::new(&u, &HandshakeConfig::default()).unwrap();
    let b = ClientHandshake::new(&u, &HandshakeConfig::default()).unwrap();
    assert_ne!(a.key(), b.key(), "keys come from the OS");
    assert_eq!(a.key().len(), 24);
    assert!(std::str::from_utf8(a.request())
        .unwrap()
        .contains("\r\nHost: h\r\n"));
}

#[test]
fn header_injection_and_own_headers_refused() {
    let u = WsUrl::parse("ws://h/").unwrap();
    let bad_headers: Vec<(&str, &str)> = vec![
        ("X-Evil", "a\r\nHost: other"),
        ("X-Evil", "a\nb"),
        ("X-Evil", "a\rb"),
        ("X-Evil", "nul\0"),
        ("Bad Name", "v"),
        ("Bad:Name", "v"),
        ("X\r\nInjected", "v"),
        ("", "v"),
        ("Host", "other"),
        ("sec-websocket-key", "k"),
        ("Connection", "close"),
    ];
    for (n, v) in bad_headers {
        let cfg = HandshakeConfig {
            headers: vec![(n.into(), v.into())],
            ..Default::default()
        };
        assert!(
            matches!(
                ClientHandshake::with_key(&u, &cfg, NONCE),
                Err(pipeline::Error::Config(_))
            ),
            "{n:?}: {v:?}"
        );
    }
    for p in ["", "a b", "a,b", "x\r\n"] {
        let cfg = HandshakeConfig {
            protocols: vec![p.into()],
            ..Default::default()
        };
        assert!(ClientHandshake::with_key(&u, &cfg, NONCE).is_err(), "{p:?}");
    }
}

#[test]
fn good_response_whole_and_split_everywhere_with_early_frames() {
    let cfg = HandshakeConfig {
        protocols: vec!["chat".into(), "v2".into()],
        ..Default::default()
    };
    let head = ok_response("Sec-WebSocket-Protocol: v2\r\nServer: test\r\n");
    let early = [frame(FIN | TEXT, b"first!"), frame(FIN | PING, b"p")].concat();
    let wire = [head.as_bytes(), &early].concat();
    for cut in 0..=wire.len() {
        let mut h = hs(&cfg);
        let mut taken = 0;
        let mut done = None;
        for part in [&wire[..cut], &wire[cut..]] {
            match h.feed(part).unwrap() {
                HandshakeStatus::NeedMore => taken += part.len(),
                HandshakeStatus::Done { consumed, protocol } => {
                    done = Some((taken + consumed, protocol));
                    break;
                }
            }
        }
        assert_eq!(
            done,
            Some((head.len(), Some("v2".to_string()))),
            "cut {cut}"
        );
        // The bytes after the header are the server's first frames.
        let r = run(&wire[head.len()..], &[], cfg_frames());
        assert_eq!(
            r.0,
            vec![
                Ev::Frame(1, b"first!".to_vec(), true, true),
                Ev::Ping(b"p".to_vec())
            ]
        );
    }
    // One byte at a time.
    let mut h = hs(&cfg);
    for (i, b) in wire.iter().enumerate() {
        match h.feed(std::slice::from_ref(b)).unwrap() {
            HandshakeStatus::NeedMore => assert!(i < head.len() - 1),
            HandshakeStatus::Done { consumed, .. } => {
                assert_eq!((i, consumed), (head.len() - 1, 1));
                break;
            }
        }
    }
}

fn cfg_frames() -> pipeline::ws::ParserConfig {
    cfg(Delivery::Frames)
}

#[test]
fn tolerant_where_rfc_allows() {
    let d = HandshakeConfig::default();
    let resp = format!(
        "HTTP/1.1 101 OK\r\nupgrade:WebSocket\r\nCONNECTION: keep-alive, Upgrade\r\nsec-websocket-accept:   {ACCEPT}  \r\n\r\n"
    );
    assert_eq!(
        feed_all(&mut hs(&d), resp.as_bytes()).unwrap(),
        HandshakeStatus::Done {
            consumed: resp.len(),
            protocol: None
        }
    );
    // A protocol offered but not chosen is the server's right.
    let cfg = HandshakeConfig {
        protocols: vec!["chat".into()],
        ..Default::default()
    };
    assert!(matches!(
        hs(&cfg).feed(ok_response("").as_bytes()).unwrap(),
        HandshakeStatus::Done { protocol: None, .. }
    ));
    // An empty extensions header selects nothing.
    assert!(hs(&d)
        .feed(ok_response("Sec-WebSocket-Extensions: \r\n").as_bytes())
        .is_ok());
}

#[test]
fn rejections() {
    let d = HandshakeConfig::default();
    let e = err_of("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", &d);
    assert!(
        e.contains(r#"server answered "HTTP/1.1 403 Forbidden""#),
        "{e}"
    );
    // The C++ project's bug: "101" anywhere was taken for success.
    for status in [
        "HTTP/1.1 200 OK 101",
        "HTTP/1.1 1010 Weird",
        "HTTP/1.0 101 Switching Protocols",
        "HTTP/1.1 101",
        "HTTP/1.1 10 1",
    ] {
        let resp = format!("{status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n");
        let r = hs(&d).feed(resp.as_bytes());
        // "HTTP/1.1 101" without reason phrase is valid HTTP; everything else must fail.
        assert_eq!(r.is_ok(), status == "HTTP/1.1 101", "{status}");
    }
    assert!(err_of("SSH-2.0-OpenSSH\r\n\r\n", &d).contains("not an HTTP response"));
    let wrong = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
    assert!(err_of(wrong, &d).contains("does not match"));
    let lower = ok_response("").replace(ACCEPT, &ACCEPT.to_lowercase());
    assert!(
        err_of(&lower, &d).contains("does not match"),
        "accept compared exactly"
    );
    assert!(
        err_of(&ok_response("").replace("Upgrade: websocket\r\n", ""), &d)
            .contains("Upgrade: websocket")
    );
    assert!(err_of(
        &ok_response("").replace("Upgrade: websocket", "Upgrade: h2c"),
        &d
    )
    .contains("Upgrade: websocket"));
    assert!(
        err_of(&ok_response("").replace("Connection: Upgrade\r\n", ""), &d)
            .contains("Connection: Upgrade")
    );
    assert!(err_of(
        &ok_response("").replace(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"), ""),
        &d
    )
    .contains("lacks Sec-WebSocket-Accept"));
    assert!(err_of(
        &ok_response(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
        &d
    )
    .contains("duplicate"));
    assert!(err_of(
        &ok_response("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        &d
    )
    .contains("did not offer"));
    assert!(err_of(&ok_response("Sec-WebSocket-Protocol: chat\r\n"), &d).contains("did not offer"));
    let cfg = HandshakeConfig {
        protocols: vec!["chat".into()],
        ..Default::default()
    };
    assert!(
        err_of(&ok_response("Sec-WebSocket-Protocol: Chat\r\n"), &cfg).contains("did not offer")
    );
    assert!(
        err_of(&ok_response("Sec-WebSocket-Protocol: chat, v2\r\n"), &cfg)
            .contains("did not offer")
    );
    assert!(err_of(&ok_response("X-Folded: a\r\n b\r\n"), &d).contains("folding"));
    assert!(err_of(&ok_response("X-Bare: a\nb\r\n"), &d).contains("bare LF"));
    assert!(err_of(&ok_response("Bad Header: x\r\n"), &d).contains("malformed"));
    assert!(err_of(&ok_response("NoColon\r\n"), &d).contains("malformed"));
    // Errors are close_code 0: nothing to send, the upgrade never happened.
    assert!(matches!(
        hs(&d).feed(b"HTTP/1.1 500 x\r\n\r\n"),
        Err(pipeline::Error::WebSocket { close_code: 0, .. })
    ));
}

#[test]
fn size_limit() {
    let cfg = HandshakeConfig {
        max_response: 256,
        ..Default::default()
    };
    let big = ok_response(&format!("X-Pad: {}\r\n", "a".repeat(300)));
    let mut h = hs(&cfg);
    let mut failed = false;
    for c in big.as_bytes().chunks(10) {
        match h.feed(c) {
            Ok(HandshakeStatus::NeedMore) => {}
            Ok(s) => panic!("{s:?}"),
            Err(e) => {
                assert!(e.to_string().contains("exceeds 256"), "{e}");
                failed = true;
                break;
            }
        }
    }
    assert!(failed);
    assert!(h.feed(b"more").is_err(), "a failed handshake stays failed");
    // Exactly at the limit is fine.
    let resp = ok_response("");
    let cfg = HandshakeConfig {
        max_response: resp.len(),
        ..Default::default()
    };
    assert!(hs(&cfg).feed(resp.as_bytes()).is_ok());
}

/// A TLS record where the status line should be, on a ws:// URL: the error says the
/// port speaks TLS (try wss://); on wss:// the same bytes are just not HTTP. A ws://
/// upgrade closed before any byte gets the hint too.
#[test]
fn a_tls_answer_to_a_plain_upgrade_says_try_wss() {
    let plain = |secure: bool| {
        let u = WsUrl::parse(if secure { "wss://h:8443/" } else { "ws://h:8443/" }).unwrap();
        ClientHandshake::with_key(&u, &HandshakeConfig::default(), NONCE).unwrap()
    };
    for (rec, what) in [([0x15u8, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46], "alert"), ([0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0x00], "handshake")] {
        let e = plain(false).feed(&rec).unwrap_err().to_string();
        assert!(e.contains("try wss://") && e.contains(what), "{e}");
        assert!(plain(true).feed(&rec).map_or_else(|e| !e.to_string().contains("wss://"), |_| true));
        // The record's first byte alone in one read, the rest in the next.
        let mut h = plain(false);
        assert!(h.feed(&rec[..1]).is_ok());
        let e = h.feed(&rec[1..]).unwrap_err().to_string();
        assert!(e.contains("try wss://") && e.contains(what), "split read: {e}");
    }
    assert!(plain(false).closed_hint().contains("try wss://"));
    assert_eq!(plain(true).closed_hint(), "");
    let mut h = plain(false);
    let _ = h.feed(b"HTTP/1.1 ");
    assert_eq!(h.closed_hint(), "", "an HTTP answer began: not a TLS port");
}

/// After `Done`, `upgrade()` gives the request and response header as they went (no
/// blank line) and the agreed subprotocol; before, nothing.
#[test]
fn the_upgrade_is_kept_for_people() {
    let cfg = HandshakeConfig { protocols: vec!["chat".into(), "v2".into()], ..Default::default() };
    let mut h = hs(&cfg);
    assert!(h.upgrade().is_none());
    let resp = ok_response("Sec-WebSocket-Protocol: chat\r\n");
    assert!(matches!(h.feed(resp.as_bytes()).unwrap(), HandshakeStatus::Done { .. }));
    let u = h.upgrade().unwrap();
    assert!(u.request.starts_with("GET /ws?x=1 HTTP/1.1\r\n") && u.request.ends_with("Sec-WebSocket-Protocol: chat, v2"), "{:?}", u.request);
    assert_eq!(u.response, resp.trim_end_matches("\r\n"));
    assert_eq!(u.protocol.as_deref(), Some("chat"));
}

//! permessage-deflate through the whole pipeline with the synthetic server: compressed
//! messages inflated into MSG_INBOX (one contiguous slice each, in place), fragments,
//! control frames between them, plain messages beside compressed ones, every chunk
//! split, both delivery modes, every layout; our sends compressed; bad data and bombs
//! closed with the right code.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::pipeline::{DisconnectKind, DisconnectReason, Pipeline, PipelineState};
use pipeline::runner::Layout;
use pipeline::stage::{encode_server_frame, encode_server_frame_rsv1, Delivery, SyntheticScript};
use pipeline::stats::Counter;
use pipeline::ws::deflate::{Deflater, Inflater, Negotiated, TAIL};
use pipeline::ws::DeflateConfig;
use pipeline_testkit::synthetic::*;

type Capture = Arc<Mutex<Vec<(u8, bool, Vec<u8>)>>>;

/// The server's compressor: our deflater with the server's window and takeover.
fn server_deflater(bits: u8, no_takeover: bool) -> Deflater {
    let n = Negotiated {
        server_max_window_bits: 15,
        client_max_window_bits: bits,
        server_no_context_takeover: false,
        client_no_context_takeover: no_takeover,
    };
    Deflater::new(&n, &DeflateConfig { threshold: 0, level: 6, ..Default::default() })
}

fn compress(d: &mut Deflater, m: &[u8]) -> Vec<u8> {
    let mut out = vec![0; Deflater::bound(m.len())];
    let n = d.compress(m, &mut out, true).unwrap();
    out.truncate(n);
    out
}

fn text(i: usize) -> String {
    format!(
        "{{\"stream\":\"btcusdt@trade\",\"data\":{{\"e\":\"trade\",\"E\":{},\"p\":\"{}.{:02}\",\"q\":\"{}\",\"pad\":\"{}\"}}}}",
        1_700_000_000_000u64 + i as u64,
        60_000 + i % 977,
        i % 100,
        i % 13,
        "é".repeat(i % 40)
    )
}

/// A feed: compressed text messages, a few plain ones, a fragmented compressed message
/// with a PING inside, a big compressed binary, an empty compressed message.
fn feed(bits: u8, no_takeover: bool) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
    let mut d = server_deflater(bits, no_takeover);
    let mut v = Vec::new();
    let mut want = Vec::new();
    for i in 0..300 {
        let m = text(i);
        if i % 50 == 7 {
            encode_server_frame(&mut v, 0x1, true, m.as_bytes());
        } else {
            encode_server_frame_rsv1(&mut v, 0x1, true, &compress(&mut d, m.as_bytes()));
        }
        want.push((1, m.into_bytes()));
    }
    // Fragmented: the compressed bytes split into three frames, a PING between.
    let m: Vec<u8> = (0..5000).flat_map(|i| text(i).into_bytes()).take(100_000).collect();
    let c = compress(&mut d, &m);
    let (a, b) = c.split_at(c.len() / 3);
    let (b, e) = b.split_at(b.len() / 2);
    encode_server_frame_rsv1(&mut v, 0x2, false, a);
    encode_server_frame(&mut v, 0x9, true, b"mid-ping");
    encode_server_frame(&mut v, 0x0, false, b);
    encode_server_frame(&mut v, 0x0, true, e);
    want.push((2, m));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    encode_server_frame_rsv1(&mut v, 0x2, true, &compress(&mut d, &big));
    want.push((2, big));
    encode_server_frame_rsv1(&mut v, 0x1, true, &compress(&mut d, b""));
    want.push((1, Vec::new()));
    encode_server_frame(&mut v, 0x1, true, b"plain tail");
    want.push((1, b"plain tail".to_vec()));
    (v, want)
}

fn ext(bits: u8, no_takeover: bool) -> String {
    let mut e = format!("permessage-deflate; server_max_window_bits={bits}");
    if no_takeover {
        e.push_str("; server_no_context_takeover");
    }
    e
}

fn reason(p: &Pipeline) -> DisconnectReason {
    match p.state() {
        PipelineState::Disconnected { reason } => reason,
        s => panic!("not disconnected: {s:?}"),
    }
}

#[test]
fn compressed_feed_is_inflated_into_msg_inbox() {
    for (bits, nt, chunk, layout) in [
        (15, false, 0, Layout::Inline),
        (9, false, 1, Layout::Inline),
        (12, true, 7, Layout::Threads),
        (10, false, 1400, Layout::Processes),
    ] {
        let (name, _g) = unique(&format!("defl{bits}{nt}{chunk}"));
        let (data, want) = feed(bits, nt);
        let s = SyntheticScript { extensions: Some(ext(bits, nt)), ..script(data, chunk) };
        let mut c = config(&name, s, layout);
        c.deflate = Some(DeflateConfig::default());
        let mut p = Pipeline::start(c).unwrap();
        assert_eq!(
            Negotiated::from_word(p.stats().get(Counter::Deflate) as u32).map(|n| (n.server_max_window_bits, n.server_no_context_takeover)),
            Some((bits, nt))
        );
        let base = p.inbox().ring().ptr_at(0) as usize;
        let end = base + 2 * p.inbox().capacity();
        let mut rx = p.receiver().unwrap();
        for (i, (op, m)) in want.iter().enumerate() {
            let f = rx.next_frame_timeout(Duration::from_secs(20)).unwrap_or_else(|| panic!("message {i} ({bits} {nt} {chunk})"));
            let a = f.payload().as_ptr() as usize;
            assert!(a >= base && a + f.payload().len() <= end, "message {i} not in MSG_INBOX");
            assert_eq!((f.opcode(), f.is_final()), (*op, true), "message {i}");
            assert!(f.payload() == &m[..], "message {i} differs ({} vs {} bytes)", f.payload().len(), m.len());
        }
        let st = p.stats();
        assert_eq!(st.get(Counter::InflatedMessages), want.len() as u64 - 7);
        assert_eq!(st.get(Counter::PingsReceived), 1);
        p.stop();
    }
}

#[test]
fn frames_delivery_gives_each_frames_inflated_bytes() {
    let (name, _g) = unique("deflframes");
    let (data, want) = feed(15, false);
    let s = SyntheticScript { extensions: Some("permessage-deflate".into()), ..script(data, 333) };
    let mut c = config(&name, s, Layout::Inline);
    c.deflate = Some(DeflateConfig::default());
    c.delivery = Delivery::Frames;
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    for (i, (op, m)) in want.iter().enumerate() {
        let mut got = Vec::new();
        let mut first = true;
        loop {
            let f = rx.next_frame_timeout(Duration::from_secs(20)).unwrap_or_else(|| panic!("message {i}"));
            assert_eq!(f.opcode(), if first { *op } else { 0 }, "message {i}");
            first = false;
            got.extend_from_slice(f.payload());
            if f.is_final() {
                break;
            }
        }
        assert!(got == *m, "message {i} differs");
    }
    p.stop();
}

#[test]
fn declined_offer_and_plain_server_still_work() {
    // The server ignores the offer: everything is plain, copied into MSG_INBOX.
    let (name, _g) = unique("defldecl");
    let s = script(text_frames(500), 100);
    let mut c = config(&name, s, Layout::Inline);
    c.deflate = Some(DeflateConfig::default());
    let mut p = Pipeline::start(c).unwrap();
    assert_eq!(p.stats().get(Counter::Deflate), 1);
    let mut rx = p.receiver().unwrap();
    for i in 0..500 {
        let f = rx.next_frame_timeout(Duration::from_secs(10)).expect("frame");
        assert_eq!(f.text().unwrap(), msg(i));
    }
    p.stop();
    // Not negotiated: RSV1 is a protocol error (1002).
    let (name, _g) = unique("defldecl2");
    let mut v = Vec::new();
    encode_server_frame_rsv1(&mut v, 1, true, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    let mut c = config(&name, SyntheticScript { extensions: Some("permessage-deflate".into()), ..script(v.clone(), 0) }, Layout::Inline);
    let p = Pipeline::start(c.clone()).unwrap();
    p.wait_disconnected(Duration::from_secs(10));
    assert_eq!(reason(&p).kind, DisconnectKind::ProtocolError { close_code: 1002 }, "{}", reason(&p));
    drop(p);
    // Negotiated: the RFC 7692 example inflates to "Hello".
    c.deflate = Some(DeflateConfig::default());
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    assert_eq!(rx.next_frame_timeout(Duration::from_secs(10)).unwrap().text(), Some("Hello"));
}

/// An inline pipeline named after `tag` on `data` (one chunk), deflate negotiated.
fn start_deflate(data: Vec<u8>, max_message: usize, tag: &str) -> (ShmGuard, Pipeline) {
    let (name, g) = unique(tag);
    let s = SyntheticScript { extensions: Some("permessage-deflate".into()), ..script(data, 0) };
    let mut c = config(&name, s, Layout::Inline);
    c.deflate = Some(DeflateConfig::default());
    c.max_message = max_message;
    (g, Pipeline::start(c).unwrap())
}

/// The first message of `data` is delivered with a 64 KiB `max_message`, and is 64 KiB.
fn delivers_64k(data: Vec<u8>, tag: &str) {
    let (_g, mut p) = start_deflate(data, 1 << 16, tag);
    let mut rx = p.receiver().unwrap();
    assert_eq!(rx.next_frame_timeout(Duration::from_secs(10)).unwrap().payload().len(), 1 << 16);
}

fn closes_with(data: Vec<u8>, max_message: usize, code: u16, tag: &str) -> DisconnectReason {
    let (_g, p) = start_deflate(data, max_message, tag);
    p.wait_disconnected(Duration::from_secs(10));
    let r = reason(&p);
    assert_eq!(r.kind, DisconnectKind::ProtocolError { close_code: code }, "{tag}: {r}");
    r
}

#[test]
fn bad_compressed_data_closes() {
    let mut v = Vec::new();
    encode_server_frame_rsv1(&mut v, 2, true, &[0xff; 32]);
    closes_with(v, 1 << 16, 1007, "deflbad");
    // Valid deflate, invalid UTF-8 after inflating (checked on the inflated bytes).
    let mut d = server_deflater(15, false);
    let mut v = Vec::new();
    encode_server_frame_rsv1(&mut v, 1, true, &compress(&mut d, b"ok \xc3\x28 not utf-8"));
    closes_with(v, 1 << 16, 1007, "deflutf8");
    // Ends inside a UTF-8 sequence.
    let mut d = server_deflater(15, false);
    let mut v = Vec::new();
    encode_server_frame_rsv1(&mut v, 1, true, &compress(&mut d, b"cut \xe2\x82"));
    closes_with(v, 1 << 16, 1007, "deflutf8b");
    // RSV1 on a continuation: 1002.
    let mut v = Vec::new();
    encode_server_frame_rsv1(&mut v, 1, false, &[0xf2, 0x48]);
    encode_server_frame_rsv1(&mut v, 0, true, &[0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    closes_with(v, 1 << 16, 1002, "deflcont");
    // RSV1 on a PING: 1002.
    let mut v = Vec::new();
    encode_server_frame_rsv1(&mut v, 9, true, b"x");
    closes_with(v, 1 << 16, 1002, "deflping");
}

#[test]
fn inflated_size_is_bounded_by_max_message() {
    // 64 KiB limit; a 2 KiB compressed message that inflates to 8 MiB.
    let mut d = server_deflater(15, false);
    let zeros = vec![0u8; 8 << 20];
    let c = compress(&mut d, &zeros);
    let mut v = Vec::new();
    encode_server_frame_rsv1(&mut v, 2, true, &c);
    let r = closes_with(v, 1 << 16, 1009, "deflbomb");
    assert!(r.message.contains("inflates to more than"), "{r}");
    // Exactly the limit is fine.
    let mut d = server_deflater(15, false);
    let mut v = Vec::new();
    encode_server_frame_rsv1(&mut v, 2, true, &compress(&mut d, &vec![7u8; 1 << 16]));
    delivers_64k(v, "defllimit");
}

/// With deflate negotiated the parser allows compressed wire bytes some slack past
/// `max_message`; an uncompressed message still gets the exact limit (one byte over:
/// 1009), and one of exactly the limit is delivered.
#[test]
fn uncompressed_message_over_the_limit_closes_with_1009_when_deflate_is_on() {
    let mut v = Vec::new();
    pipeline::pipeline::encode_server_frame(&mut v, 2, true, &vec![1u8; (1 << 16) + 1]);
    let r = closes_with(v, 1 << 16, 1009, "deflplainbig");
    assert!(r.message.contains("65536"), "{r}");
    let mut v = Vec::new();
    pipeline::pipeline::encode_server_frame(&mut v, 2, true, &vec![1u8; 1 << 16]);
    delivers_64k(v, "deflplainok");
}

#[test]
fn slow_reader_stalls_inflation_without_loss() {
    // MSG_INBOX of 1 MiB, 40 messages of 100 KiB inflated: the reader holds each frame a
    // moment, so inflation waits for room again and again.
    let (name, _g) = unique("deflslow");
    let mut d = server_deflater(15, false);
    let mut v = Vec::new();
    let msgs: Vec<Vec<u8>> = (0..40u32)
        .map(|k| (0..100_000u32).map(|i| ((i / 7) ^ k) as u8).collect())
        .collect();
    for m in &msgs {
        encode_server_frame_rsv1(&mut v, 2, true, &compress(&mut d, m));
    }
    let s = SyntheticScript { extensions: Some("permessage-deflate".into()), ..script(v, 4096) };
    let mut c = config(&name, s, Layout::Threads);
    c.deflate = Some(DeflateConfig::default());
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    let t0 = Instant::now();
    for (i, m) in msgs.iter().enumerate() {
        let f = rx.next_frame_timeout(Duration::from_secs(20)).expect("frame");
        std::thread::sleep(Duration::from_millis(2));
        assert!(f.payload() == &m[..], "message {i}");
    }
    assert!(t0.elapsed() < Duration::from_secs(20));
}

/// Inflate what the client sent (its frames as the synthetic server captured them).
fn client_messages(cap: &Capture, bits: u8, no_takeover: bool) -> Vec<(u8, Vec<u8>)> {
    let mut inf = Inflater::new(&Negotiated {
        server_max_window_bits: bits,
        client_max_window_bits: 15,
        server_no_context_takeover: no_takeover,
        client_no_context_takeover: false,
    });
    let mut out = Vec::new();
    let mut cur: Option<(u8, Vec<u8>)> = None;
    for (op, fin, payload) in cap.lock().unwrap().iter() {
        if *op >= 8 {
            continue;
        }
        let c = cur.get_or_insert((*op, Vec::new()));
        c.1.extend_from_slice(payload);
        if *fin {
            let (op, mut raw) = cur.take().unwrap();
            raw.extend_from_slice(&TAIL);
            let mut buf = vec![0u8; 1 << 22];
            let r = inf.inflate(&raw, &mut buf).unwrap();
            inf.end_message();
            out.push((op, buf[..r.produced].to_vec()));
        }
    }
    out
}

#[test]
fn our_messages_are_compressed_with_the_agreed_window() {
    for (ans, bits, nt) in [
        ("permessage-deflate", 15, false),
        ("permessage-deflate; client_max_window_bits=9", 9, false),
        ("permessage-deflate; client_max_window_bits=11; client_no_context_takeover", 11, true),
    ] {
        let (name, _g) = unique(&format!("defltx{bits}"));
        let cap: Capture = Arc::default();
        let s = SyntheticScript { extensions: Some(ans.into()), capture: Some(cap.clone()), ..script(Vec::new(), 0) };
        let mut c = config(&name, s, Layout::Inline);
        c.deflate = Some(DeflateConfig { threshold: 16, ..Default::default() });
        let p = Pipeline::start(c).unwrap();
        let mut sent = Vec::new();
        for i in 0..200 {
            let m = text(i);
            p.send_text(&m).unwrap();
            sent.push((1u8, m.into_bytes()));
        }
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        p.send_binary(&big).unwrap();
        sent.push((2, big));
        let deadline = Instant::now() + Duration::from_secs(10);
        while cap.lock().unwrap().len() < sent.len() {
            assert!(Instant::now() < deadline, "sent {} of {}", cap.lock().unwrap().len(), sent.len());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(p.stats().get(Counter::CompressedSent), sent.len() as u64);
        let got = client_messages(&cap, bits, nt);
        assert_eq!(got.len(), sent.len());
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert!(g == s, "message {i} differs ({ans})");
        }
        // Compressed: the feed's JSON shrank.
        let wire: usize = cap.lock().unwrap().iter().map(|f| f.2.len()).sum();
        assert!(wire * 3 < sent.iter().map(|s| s.1.len()).sum::<usize>(), "{wire}");
    }
}

#[test]
fn small_messages_go_uncompressed_and_window_8_never_compresses() {
    let (name, _g) = unique("defltx8");
    let cap: Capture = Arc::default();
    let s = SyntheticScript {
        extensions: Some("permessage-deflate; client_max_window_bits=8".into()),
        capture: Some(cap.clone()),
        ..script(Vec::new(), 0)
    };
    let mut c = config(&name, s, Layout::Inline);
    c.deflate = Some(DeflateConfig::default());
    let p = Pipeline::start(c).unwrap();
    p.send_text(&"x".repeat(1000)).unwrap();
    p.send_text("hi").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cap.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let v = cap.lock().unwrap();
    assert_eq!(v[0].2, "x".repeat(1000).into_bytes());
    assert_eq!(v[1].2, b"hi");
    assert_eq!(p.stats().get(Counter::CompressedSent), 0);
}

#[test]
fn invalid_answers_fail_the_upgrade_naming_the_parameter() {
    for (ans, want) in [
        ("permessage-deflate; server_max_window_bits=16", "server_max_window_bits=16"),
        ("permessage-deflate; bogus", "unknown parameter \"bogus\""),
        ("x-webkit-deflate-frame", "did not offer"),
    ] {
        let (name, _g) = unique("deflbadans");
        let s = SyntheticScript { extensions: Some(ans.into()), ..script(Vec::new(), 0) };
        let mut c = config(&name, s, Layout::Inline);
        c.deflate = Some(DeflateConfig { server_max_window_bits: 12, ..Default::default() });
        let e = Pipeline::start(c).unwrap_err().to_string();
        assert!(e.contains(want), "{ans}: {e}");
    }
}

/// The client messages one connection's capture holds, inflated with that
/// connection's parameters (a fresh inflater: the client's compressor must be fresh
/// per connection too, or its back-references into the old window break this), or
/// taken as they are when the connection declined.
fn connection_messages(cap: &Capture, client_bits: Option<(u8, bool)>) -> Vec<Vec<u8>> {
    match client_bits {
        Some((bits, nt)) => client_messages(cap, bits, nt).into_iter().map(|m| m.1).collect(),
        None => cap.lock().unwrap().iter().filter(|f| f.0 < 8).map(|f| f.2.clone()).collect(),
    }
}

/// Four connections, each negotiating something else: context takeover with 15-bit
/// windows; 9-bit server window, 10-bit client window, both no-context-takeover; a
/// declined offer; the defaults again. Each connection's messages are compressed with
/// its own fresh server compressor, the first ends inside a compressed fragmented
/// message (cut: dropped) with a reset, the second with close 1001, the third with a
/// FIN. Every message of every connection arrives intact and in order, the first one
/// after each reconnect flagged; what we send on each connection is compressed with
/// that connection's parameters (or not at all when it declined), by a fresh
/// compressor.
#[test]
fn deflate_across_reconnects_with_other_parameters() {
    const N: usize = 30;
    const SENDS: usize = 20;
    // (server answer, server window + no takeover, client window + no takeover)
    let conns: [(Option<&str>, (u8, bool), Option<(u8, bool)>); 4] = [
        (Some("permessage-deflate"), (15, false), Some((15, false))),
        (
            Some("permessage-deflate; server_max_window_bits=9; server_no_context_takeover; client_max_window_bits=10; client_no_context_takeover"),
            (9, true),
            Some((10, true)),
        ),
        (None, (15, false), None),
        (Some("permessage-deflate"), (15, false), Some((15, false))),
    ];
    for layout in [Layout::Inline, Layout::Threads] {
        let (name, _g) = unique(&format!("deflrc{layout:?}"));
        let caps: Vec<Capture> = (0..conns.len()).map(|_| Arc::default()).collect();
        let mut want = Vec::new();
        let mut scripts = Vec::new();
        for (k, (ans, (sbits, snt), _)) in conns.iter().enumerate() {
            // The server's compressor for this connection (its window is the server's).
            let mut d = Deflater::new(
                &Negotiated {
                    server_max_window_bits: 15,
                    client_max_window_bits: *sbits,
                    server_no_context_takeover: false,
                    client_no_context_takeover: *snt,
                },
                &DeflateConfig { threshold: 0, level: 6, ..Default::default() },
            );
            let mut v = Vec::new();
            for i in 0..N {
                let m = format!("conn {k} {}", text(i));
                match ans {
                    Some(_) => encode_server_frame_rsv1(&mut v, 0x1, true, &compress(&mut d, m.as_bytes())),
                    None => encode_server_frame(&mut v, 0x1, true, m.as_bytes()),
                }
                want.push(m);
            }
            let hold = v.len();
            let mut s = SyntheticScript {
                extensions: ans.map(str::to_string),
                capture: Some(caps[k].clone()),
                hold_at: Some((hold, SENDS)),
                ..script(Vec::new(), [0, 7, 333, 0][k])
            };
            match k {
                0 => {
                    // A compressed message cut by the reset: its first fragment only.
                    let big: Vec<u8> = (0..5000).flat_map(|i| text(i).into_bytes()).take(60_000).collect();
                    let c = compress(&mut d, &big);
                    encode_server_frame_rsv1(&mut v, 0x1, false, &c[..c.len() / 2]);
                    s.reset_at_end = true;
                }
                1 => encode_server_frame(&mut v, 0x8, true, &1001u16.to_be_bytes()),
                2 => s.eof_at_end = true,
                _ => {}
            }
            s.data = Arc::new(v);
            scripts.push(s);
        }
        let mut first = scripts.remove(0);
        first.then = scripts;
        let mut c = config(&name, first, layout);
        c.deflate = Some(DeflateConfig { threshold: 16, ..Default::default() });
        c.reconnect = pipeline::pipeline::ReconnectPolicy {
            initial_ns: 2_000_000,
            max_ns: 20_000_000,
            jitter: 0.0,
            storm_attempts: 0,
            ..pipeline::pipeline::ReconnectPolicy::standard()
        };
        let mut p = Pipeline::start(c).unwrap();
        let mut rx = p.receiver().unwrap();
        let sends: Vec<String> = (0..SENDS).map(|i| format!("up {}", text(i))).collect();
        for (k, chunk) in want.chunks(N).enumerate() {
            for (i, m) in chunk.iter().enumerate() {
                let f = rx
                    .next_frame_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|| panic!("{layout:?}: connection {k} message {i}: {:?}", p.state()));
                assert_eq!(f.text(), Some(m.as_str()), "{layout:?}: connection {k} message {i}");
                assert_eq!(f.after_reconnect(), k > 0 && i == 0, "{layout:?}: connection {k} message {i} flag");
            }
            // This connection is live (it holds its end until it has our messages).
            for m in &sends {
                p.send_text(m).unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while caps[3].lock().unwrap().iter().filter(|f| f.0 < 8).count() < SENDS {
            assert!(Instant::now() < deadline, "{layout:?}: the last connection got our messages");
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = p.stats();
        assert_eq!(st.get(Counter::Reconnects), 3);
        assert_eq!(st.get(Counter::Generation), 3);
        assert_eq!(st.get(Counter::InflatedMessages), 3 * N as u64, "{layout:?}");
        assert_eq!(st.get(Counter::CompressedSent), 3 * SENDS as u64, "{layout:?}");
        for (k, (_, _, client)) in conns.iter().enumerate() {
            let got = connection_messages(&caps[k], *client);
            let got: Vec<&[u8]> = got.iter().map(|m| &m[..]).collect();
            let want: Vec<&[u8]> = sends.iter().map(|m| m.as_bytes()).collect();
            assert_eq!(got, want, "{layout:?}: what connection {k} got from us");
        }
        // The negotiated parameters of the last connection.
        assert_eq!(Negotiated::from_word(st.get(Counter::Deflate) as u32).map(|n| n.server_max_window_bits), Some(15));
        p.stop();
    }
}

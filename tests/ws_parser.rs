//! Frame parser: split invariance, every rejection with its close code, UTF-8
//! (Autobahn 6.x style), delivery modes, release/rebasing, zero-copy offsets.

use pipeline::ws::{Delivery, Event, Parser, ParserConfig};
use pipeline_testkit::ws_frames::*;

/// A stream with every feature the parser handles: three length forms (the 64-bit
/// one non-minimal, which we accept), empty frames, a fragmented text message with a
/// 4-byte character split across fragments and a PING and PONG between fragments, a
/// binary message, and a close.
fn rich_stream() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend(frame(FIN | TEXT, b"hello"));
    s.extend(frame(FIN | BINARY, &[7u8; 200])); // 16-bit length
    s.extend(frame_form(FIN | BINARY, b"sixty-four", 8)); // 64-bit length, non-minimal
    s.extend(frame(FIN | TEXT, b""));
    let smile = "\u{1F600}".as_bytes(); // F0 9F 98 80
    let mut a = b"caf\xC3\xA9 ".to_vec();
    a.extend_from_slice(&smile[..2]);
    s.extend(frame(TEXT, &a));
    s.extend(frame(FIN | PING, b"are you there"));
    s.extend(frame(CONT, &smile[2..3]));
    s.extend(frame(FIN | PONG, b""));
    s.extend(frame(CONT, b""));
    let mut c = smile[3..].to_vec();
    c.extend_from_slice(" \u{3BA}\u{1F7}\u{3C3}\u{3BC}\u{3B5}".as_bytes());
    s.extend(frame(FIN | CONT, &c));
    s.extend(frame(BINARY, b"ab"));
    s.extend(frame(FIN | CONT, b"cd"));
    s.extend(close_frame(1000, b"bye"));
    s.extend(frame(FIN | TEXT, b"ignored after close"));
    s
}

#[test]
fn rich_stream_every_split_every_mode() {
    let s = rich_stream();
    let r = run_all_splits(&s, 1 << 20);
    let msg_text = "caf\u{e9} \u{1F600} \u{3BA}\u{1F7}\u{3C3}\u{3BC}\u{3B5}"
        .as_bytes()
        .to_vec();
    let messages = vec![
        Ev::Msg(1, b"hello".to_vec()),
        Ev::Msg(2, vec![7u8; 200]),
        Ev::Msg(2, b"sixty-four".to_vec()),
        Ev::Msg(1, vec![]),
        Ev::Ping(b"are you there".to_vec()),
        Ev::Pong(vec![]),
        Ev::Msg(1, msg_text.clone()),
        Ev::Msg(2, b"abcd".to_vec()),
        Ev::Close(1000, b"bye".to_vec()),
    ];
    assert_eq!(r[1], (messages.clone(), End::Closed), "pieces");
    assert_eq!(r[2], (messages, End::Closed), "messages");
    let frames = &r[0].0;
    assert_eq!(frames.len(), 13);
    assert_eq!(
        frames[4],
        Ev::Frame(1, b"caf\xC3\xA9 \xF0\x9F".to_vec(), true, false)
    );
    assert_eq!(frames[6], Ev::Frame(1, vec![0x98], false, false));
    assert_eq!(frames[8], Ev::Frame(1, vec![], false, false));
    assert_eq!(frames[10], Ev::Frame(2, b"ab".to_vec(), true, false));
    assert_eq!(frames[11], Ev::Frame(2, b"cd".to_vec(), false, true));
    assert_eq!(r[0].1, End::Closed);
}

#[test]
fn big_frames_with_a_few_splits() {
    let big: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut s = frame(FIN | TEXT, &big); // 64-bit length
    s.extend(frame(FIN | BINARY, &big[..65_535])); // largest 16-bit length
    s.extend(frame(TEXT, &big[..30_000]));
    s.extend(frame(FIN | CONT, &big[30_000..]));
    for mode in MODES {
        let c = cfg(mode);
        let whole = run(&s, &[], c);
        for cuts in [
            vec![1],
            vec![9, 10, 11],
            vec![5000, 70_009, 70_013, 140_000],
            (0..s.len()).step_by(1459).collect(),
        ] {
            assert_eq!(run(&s, &cuts, c), whole, "{mode:?} {cuts:?}");
        }
        let msgs = match mode {
            Delivery::Frames => whole
                .0
                .iter()
                .filter(|e| matches!(e, Ev::Frame(_, _, _, true)))
                .count(),
            _ => whole.0.len(),
        };
        assert_eq!(msgs, 3);
    }
    let m = run(&s, &[], cfg(Delivery::Messages)).0;
    assert_eq!(m[0], Ev::Msg(1, big.clone()));
    assert_eq!(m[1], Ev::Msg(2, big[..65_535].to_vec()));
    assert_eq!(m[2], Ev::Msg(1, big));
}

/// (name, stream, close code). Every one is also run at every split.
fn rejections() -> Vec<(&'static str, Vec<u8>, u16)> {
    let mut v: Vec<(&'static str, Vec<u8>, u16)> = vec![
        ("RSV1", frame(FIN | 0x40 | TEXT, b"x"), 1002),
        ("RSV2", frame(FIN | 0x20 | TEXT, b"x"), 1002),
        ("RSV3", frame(FIN | 0x10 | BINARY, b"x"), 1002),
        ("RSV on control", frame(FIN | 0x40 | PING, b""), 1002),
        (
            "masked server frame",
            vec![FIN | TEXT, 0x81, 1, 2, 3, 4, b'x' ^ 1],
            1002,
        ),
        ("ping of 126 bytes", frame(FIN | PING, &[0; 126]), 1002),
        (
            "pong of 126 bytes (16-bit form)",
            frame_form(FIN | PONG, &[0; 126], 2),
            1002,
        ),
        (
            "close of 126 bytes",
            frame(
                FIN | CLOSE,
                &[3, 232]
                    .iter()
                    .copied()
                    .chain([b'a'; 124])
                    .collect::<Vec<_>>(),
            ),
            1002,
        ),
        ("fragmented ping", frame(PING, b"x"), 1002),
        ("fragmented close", frame(CLOSE, &[3, 232]), 1002),
        ("continuation first", frame(FIN | CONT, b"x"), 1002),
        (
            "continuation after a complete message",
            [frame(FIN | TEXT, b"a"), frame(FIN | CONT, b"b")].concat(),
            1002,
        ),
        (
            "text inside fragmented text",
            [frame(TEXT, b"a"), frame(FIN | TEXT, b"b")].concat(),
            1002,
        ),
        (
            "binary inside fragmented text",
            [frame(TEXT, b"a"), frame(FIN | BINARY, b"b")].concat(),
            1002,
        ),
        (
            "64-bit length with top bit",
            vec![FIN | BINARY, 127, 0x80, 0, 0, 0, 0, 0, 0, 1],
            1002,
        ),
        ("close with 1-byte payload", frame(FIN | CLOSE, &[3]), 1002),
        ("close reason not UTF-8", close_frame(1000, b"\xff"), 1007),
        (
            "close reason truncated UTF-8",
            close_frame(1000, b"ab\xe2\x82"),
            1007,
        ),
        ("text not UTF-8", frame(FIN | TEXT, b"ab\xffcd"), 1007),
        (
            "fragmented text ends mid-character",
            [frame(TEXT, b"a"), frame(FIN | CONT, b"\xe2\x82")].concat(),
            1007,
        ),
        (
            "single text ends mid-character",
            frame(FIN | TEXT, b"\xf0\x9f\x98"),
            1007,
        ),
        ("too big, one frame", frame(FIN | BINARY, &[0; 1001]), 1009),
        (
            "too big, fragments",
            [frame(BINARY, &[0; 600]), frame(FIN | CONT, &[0; 401])].concat(),
            1009,
        ),
    ];
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        v.push(("reserved opcode", frame(FIN | op, b""), 1002));
    }
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        v.push(("invalid close code", close_frame(code, b""), 1002));
    }
    v
}

#[test]
fn rejections_with_close_codes_at_every_split() {
    for (name, s, code) in rejections() {
        let c = ParserConfig {
            max_message: 1000,
            ..cfg(Delivery::Frames)
        };
        let whole = run(&s, &[], c);
        assert_eq!(whole.1, End::Failed(code), "{name}");
        let r = run_all_splits(&s, 1000);
        for (mode, res) in MODES.iter().zip(r) {
            assert_eq!(res.1, End::Failed(code), "{name} {mode:?}");
        }
    }
}

#[test]
fn message_at_limit_is_accepted() {
    let s = [frame(BINARY, &[1; 600]), frame(FIN | CONT, &[2; 400])].concat();
    for mode in MODES {
        let r = run(
            &s,
            &[],
            ParserConfig {
                delivery: mode,
                max_message: 1000,
            },
        );
        assert_eq!(r.1, End::Open, "{mode:?}");
    }
}

#[test]
fn valid_close_codes() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ] {
        let r = run(
            &close_frame(code, "ok \u{e9}".as_bytes()),
            &[],
            cfg(Delivery::Frames),
        );
        assert_eq!(
            r,
            (
                vec![Ev::Close(code, "ok \u{e9}".as_bytes().to_vec())],
                End::Closed
            )
        );
    }
    assert_eq!(
        run(&frame(FIN | CLOSE, b""), &[], cfg(Delivery::Frames)).0,
        vec![Ev::Close(1005, vec![])]
    );
}

/// Autobahn 6.x: invalid sequences fail with 1007, valid ones pass, whole and split
/// at every byte, as one frame and fragmented at every position.
#[test]
fn utf8_autobahn_style() {
    let invalid: &[&[u8]] = &[
        b"\xc0\x80",                 // overlong NUL
        b"\xc1\xbf",                 // overlong
        b"\xe0\x80\xaf",             // overlong '/'
        b"\xe0\x9f\xbf",             // overlong
        b"\xf0\x80\x80\xaf",         // overlong
        b"\xf0\x8f\xbf\xbf",         // overlong
        b"\xed\xa0\x80",             // U+D800 surrogate
        b"\xed\xbf\xbf",             // U+DFFF surrogate
        b"\xed\xa0\x80\xed\xb0\x80", // surrogate pair encoded (CESU-8)
        b"\xf4\x90\x80\x80",         // U+110000
        b"\xf5\x80\x80\x80",
        b"\xf8\x88\x80\x80\x80", // 5-byte form
        b"\xfc\x84\x80\x80\x80\x80",
        b"\xfe",
        b"\xff",
        b"\x80", // lone continuation
        b"\xbf",
        b"\xc2", // truncated
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // 6.3.1
        b"a\xc2a",                                                         // missing continuation
        b"\xe2\x28\xa1",
    ];
    let valid: &[&[u8]] = &[
        b"",
        "\u{0}".as_bytes(),
        "\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}".as_bytes(),
        "\u{d7ff}\u{e000}\u{fffd}".as_bytes(),
        "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes(), // κόσμε (6.2.x)
        "Hello-\u{b5}@\u{df}\u{f6}\u{e4}\u{fc}\u{e0}\u{e1}-UTF-8!!".as_bytes(),
    ];
    for (cases, ok) in [(invalid, false), (valid, true)] {
        for p in cases {
            let want = if ok { End::Open } else { End::Failed(1007) };
            let one = frame(FIN | TEXT, p);
            for res in run_all_splits(&one, 1 << 20) {
                assert_eq!(res.1, want, "{p:02x?}");
            }
            // Fragmented at every position, including inside characters.
            for k in 0..=p.len() {
                let s = [frame(TEXT, &p[..k]), frame(FIN | CONT, &p[k..])].concat();
                for mode in MODES {
                    let r = run(&s, &[], cfg(mode));
                    assert_eq!(r.1, want, "{p:02x?} fragmented at {k} {mode:?}");
                    if ok && mode == Delivery::Messages {
                        assert_eq!(r.0, vec![Ev::Msg(1, p.to_vec())]);
                    }
                }
            }
        }
    }
}

/// The bad byte fails the connection as soon as it arrives: the rest of the frame
/// and the rest of the message are never needed (Autobahn 6.4.x).
#[test]
fn utf8_fails_fast() {
    for mode in MODES {
        // Frame announces 1000 bytes; only 6 have arrived, the 4th is bad.
        let mut s = frame(FIN | TEXT, &[b'a'; 1000]);
        s.truncate(4 + 6);
        s[4 + 3] = 0xff;
        assert_eq!(run(&s, &[], cfg(mode)).1, End::Failed(1007), "{mode:?}");
        // Good first fragment, second fragment starts with a byte that cannot
        // continue the first's open character; the final fragment never arrives.
        let mut first = "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes().to_vec();
        first.extend_from_slice(b"\xe2\x82");
        let mut s = frame(TEXT, &first);
        s.extend(frame(CONT, b"A"));
        assert_eq!(run(&s, &[], cfg(mode)).1, End::Failed(1007), "{mode:?}");
        // F4 90 .. is out of range at the second byte: fail with two bytes in hand.
        let mut s = frame(FIN | TEXT, &[b'a'; 50]);
        s.truncate(2 + 10);
        s.extend([0xf4, 0x90]);
        assert_eq!(run(&s, &[], cfg(mode)).1, End::Failed(1007), "{mode:?}");
    }
}

#[test]
fn frames_mode_offsets_point_into_the_buffer_and_keep_partial_frames() {
    let mut s = frame(FIN | TEXT, b"one");
    s.extend(frame(FIN | BINARY, b"two!"));
    s.extend(frame(FIN | TEXT, b"three"));
    let mut p = Parser::new(cfg(Delivery::Frames));
    let avail = &s[..s.len() - 2]; // "three" incomplete
    let Some(Event::Data(d)) = p.next(avail).unwrap() else {
        panic!()
    };
    assert_eq!((d.offset, d.len, &avail[d.range()]), (2, 3, &b"one"[..]));
    let Some(Event::Data(d)) = p.next(avail).unwrap() else {
        panic!()
    };
    assert_eq!(&avail[d.range()], b"two!");
    assert_eq!(p.next(avail).unwrap(), None);
    // Only whole frames are released; the partial one is presented again.
    assert_eq!(p.release(), 11);
    let rest = &s[11..];
    let Some(Event::Data(d)) = p.next(rest).unwrap() else {
        panic!()
    };
    assert_eq!((d.offset, &rest[d.range()]), (2, &b"three"[..]));
    assert_eq!(p.release(), 7);
    // Misuse: handing back fewer bytes than the parser already read.
    let mut p = Parser::new(cfg(Delivery::Frames));
    assert_eq!(p.next(&s[..5]).unwrap().map(|_| ()), Some(()));
    assert_eq!(p.next(&s[..5]).unwrap(), None);
    assert!(matches!(p.next(&s[..2]), Err(pipeline::Error::Config(_))));
}

#[test]
fn pieces_mode_releases_payload_as_it_arrives() {
    let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let s = frame(FIN | BINARY, &payload);
    let mut p = Parser::new(cfg(Delivery::FramePieces));
    let mut ring: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    for chunk in s.chunks(1000) {
        ring.extend_from_slice(chunk);
        while let Some(Event::Data(d)) = p.next(&ring).unwrap() {
            assert_eq!(d.first, got.is_empty());
            got.extend_from_slice(&ring[d.range()]);
            assert_eq!(d.last, got.len() == payload.len());
        }
        let n = p.release();
        ring.drain(..n);
        // Never more than one chunk (plus an incomplete header) held back.
        assert!(ring.len() <= 14, "ring holds {}", ring.len());
    }
    assert_eq!(got, payload);
}

#[test]
fn messages_mode_compacts_in_place_and_holds_the_message() {
    let mut s = frame(TEXT, b"Hello, ");
    s.extend(frame(FIN | PING, b"p1"));
    s.extend(frame(CONT, b"fragmented "));
    s.extend(frame(FIN | CONT, b"world"));
    let mut p = Parser::new(cfg(Delivery::Messages));
    let mut buf = s.clone();
    let cut = s.len() - 3;
    // First everything but the last 3 bytes.
    let mut part = buf[..cut].to_vec();
    assert_eq!(
        p.next_in_place(&mut part)
            .unwrap()
            .map(|e| matches!(e, Event::Ping(_))),
        Some(true)
    );
    assert_eq!(p.next_in_place(&mut part).unwrap(), None);
    assert_eq!(p.release(), 0, "an unfinished message is not released");
    // The payload gathered so far is already contiguous right after the first header.
    assert_eq!(&part[2..2 + 18], b"Hello, fragmented ");
    buf[..cut].copy_from_slice(&part);
    let Some(Event::Data(d)) = p.next_in_place(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(
        (d.offset, std::str::from_utf8(&buf[d.range()]).unwrap()),
        (2, "Hello, fragmented world")
    );
    assert_eq!(p.release(), s.len());
    assert!(
        matches!(p.next(&[]), Err(pipeline::Error::Config(_))),
        "next() refuses message mode"
    );
}

#[test]
fn nothing_after_close_and_errors_are_sticky() {
    let mut s = close_frame(1001, b"");
    s.extend(frame(FIN | TEXT, b"late"));
    let mut p = Parser::new(cfg(Delivery::Frames));
    assert!(matches!(p.next(&s).unwrap(), Some(Event::Close(c)) if c.code == 1001));
    assert!(p.is_closed());
    assert_eq!(p.next(&s).unwrap(), None);

    let s = frame(FIN | 0x40 | TEXT, b"x");
    let mut p = Parser::new(cfg(Delivery::Frames));
    assert!(p.next(&s).is_err());
    let again = p.next(&frame(FIN | TEXT, b"fine"));
    assert!(matches!(
        again,
        Err(pipeline::Error::WebSocket {
            close_code: 1002,
            ..
        })
    ));
}

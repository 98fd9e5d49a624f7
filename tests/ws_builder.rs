//! Frame builder: round trip through an independent decoder and the parser, masking
//! keys (random per frame; zero only when asked), in-place encoding, refusals.

use pipeline::ws::builder::{frame_len, header_len};
use pipeline::ws::frame::MAX_HEADER_LEN;
use pipeline::ws::{Delivery, FrameBuilder, MaskMode, OpCode};
use pipeline_testkit::ws_frames::*;

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn round_trip_all_length_forms() {
    let mut b = FrameBuilder::with_seed(42);
    for n in [
        0usize, 1, 7, 8, 9, 125, 126, 127, 1000, 65_535, 65_536, 100_000,
    ] {
        for op in [OpCode::Text, OpCode::Binary] {
            let p = if op == OpCode::Text {
                vec![b'x'; n]
            } else {
                payload(n)
            };
            let mut out = vec![0u8; frame_len(n)];
            let w = b.encode(op, true, &p, &mut out).unwrap();
            assert_eq!(w, frame_len(n));
            assert_eq!(header_len(n), w - n);
            let (fin, opc, _key, unmasked, total) = decode_client_frame(&out);
            assert_eq!((fin, opc, total), (true, op as u8, w));
            assert_eq!(unmasked, p);
            // ... and the parser reads the server-side version back.
            let server = client_to_server_frame(&out);
            let r = run(&server, &[], cfg(Delivery::Messages));
            assert_eq!(r.0, vec![Ev::Msg(op as u8, p)]);
        }
    }
}

#[test]
fn round_trip_control_and_fragments() {
    let mut b = FrameBuilder::with_seed(7);
    let mut wire = Vec::new();
    let mut push = |b: &mut FrameBuilder, op, fin, p: &[u8]| {
        let mut out = vec![0u8; frame_len(p.len())];
        let n = b.encode(op, fin, p, &mut out).unwrap();
        wire.extend(client_to_server_frame(&out[..n]));
    };
    push(&mut b, OpCode::Text, false, "h\u{e9}".as_bytes());
    push(&mut b, OpCode::Ping, true, b"ping!");
    push(&mut b, OpCode::Continuation, false, b"ll");
    push(&mut b, OpCode::Pong, true, &[9; 125]);
    push(&mut b, OpCode::Continuation, true, b"o");
    let mut out = [0u8; 200];
    let n = b.close(Some(1001), "going away", &mut out).unwrap();
    wire.extend(client_to_server_frame(&out[..n]));
    let r = run_all_splits(&wire, 1 << 20);
    assert_eq!(
        r[2],
        (
            vec![
                Ev::Ping(b"ping!".to_vec()),
                Ev::Pong(vec![9; 125]),
                Ev::Msg(1, "h\u{e9}llo".as_bytes().to_vec()),
                Ev::Close(1001, b"going away".to_vec())
            ],
            End::Closed
        )
    );
    let n = b.close(None, "", &mut out).unwrap();
    assert_eq!(decode_client_frame(&out[..n]).3, Vec::<u8>::new());
}

#[test]
fn keys_are_random_per_frame_and_zero_only_when_asked() {
    let mut b = FrameBuilder::new().unwrap();
    let mut keys = Vec::new();
    let mut out = [0u8; 64];
    for _ in 0..1000 {
        b.encode(OpCode::Binary, true, b"same payload", &mut out)
            .unwrap();
        keys.push(decode_client_frame(&out).2);
    }
    let mut uniq = keys.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert!(
        uniq.len() >= 999,
        "only {} distinct keys in 1000 frames",
        uniq.len()
    );
    assert!(!keys.contains(&[0, 0, 0, 0]));
    // Two builders seeded from the OS do not produce the same key sequence.
    let mut b2 = FrameBuilder::new().unwrap();
    let mut out2 = [0u8; 64];
    b2.encode(OpCode::Binary, true, b"same payload", &mut out2)
        .unwrap();
    b.encode(OpCode::Binary, true, b"same payload", &mut out)
        .unwrap();
    assert_ne!(decode_client_frame(&out).2, decode_client_frame(&out2).2);

    assert_eq!(MaskMode::default(), MaskMode::Random);
    let mut z = FrameBuilder::new().unwrap().mask_mode(MaskMode::Zero);
    let n = z.encode(OpCode::Text, true, b"plain", &mut out).unwrap();
    assert_eq!(&out[..n], b"\x81\x85\0\0\0\0plain");
}

#[test]
fn in_place_matches_copying_encoder() {
    for n in [0usize, 5, 125, 126, 65_535, 65_536] {
        let p = payload(n);
        let mut a = FrameBuilder::with_seed(99);
        let mut b = FrameBuilder::with_seed(99);
        let mut copied = vec![0u8; frame_len(n)];
        a.encode(OpCode::Binary, true, &p, &mut copied).unwrap();
        let mut buf = vec![0xAAu8; MAX_HEADER_LEN + n];
        buf[MAX_HEADER_LEN..].copy_from_slice(&p);
        let start = b
            .encode_in_place(OpCode::Binary, true, &mut buf, MAX_HEADER_LEN)
            .unwrap();
        assert_eq!(&buf[start..], &copied[..], "n={n}");
    }
    let mut b = FrameBuilder::with_seed(1);
    let mut buf = vec![0u8; 5 + 200];
    assert!(
        b.encode_in_place(OpCode::Binary, true, &mut buf, 5)
            .is_err(),
        "not enough headroom"
    );
}

#[test]
fn refusals() {
    let mut b = FrameBuilder::with_seed(3);
    let mut out = vec![0u8; 300];
    assert!(matches!(
        b.encode(OpCode::Ping, true, &[0; 126], &mut out),
        Err(pipeline::Error::Config(_))
    ));
    assert!(matches!(
        b.encode(OpCode::Ping, false, b"", &mut out),
        Err(pipeline::Error::Config(_))
    ));
    assert!(matches!(
        b.encode(OpCode::Binary, true, &[0; 200], &mut out[..100]),
        Err(pipeline::Error::Overrun(_))
    ));
    for bad in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
        assert!(b.close(Some(bad), "", &mut out).is_err(), "{bad}");
    }
    assert!(b.close(Some(1000), &"x".repeat(124), &mut out).is_err());
    assert!(b.close(Some(1000), &"x".repeat(123), &mut out).is_ok());
    assert!(b.close(None, "reason without code", &mut out).is_err());
}

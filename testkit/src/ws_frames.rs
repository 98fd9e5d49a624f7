//! WebSocket test helpers: server-frame encoding, a simulated byte ring that drives the
//! parser, and a client-frame decoder written independently of the library's builder.

use pipeline::ws::{Delivery, Event, Parser, ParserConfig};

/// A server (unmasked) frame with the minimal length encoding.
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let form = if payload.len() < 126 {
        0
    } else if payload.len() <= 0xFFFF {
        2
    } else {
        8
    };
    frame_form(b0, payload, form)
}

/// A server frame with a chosen length form: 0 (7-bit), 2 (16-bit), 8 (64-bit).
pub fn frame_form(b0: u8, payload: &[u8], form: usize) -> Vec<u8> {
    let mut v = vec![b0];
    match form {
        0 => v.push(payload.len() as u8),
        2 => {
            v.push(126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        _ => {
            v.push(127);
            v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    v.extend_from_slice(payload);
    v
}

pub const FIN: u8 = 0x80;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONT: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

pub fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    frame(FIN | CLOSE, &p)
}

/// What a test compares: payload bytes instead of offsets (offsets depend on how
/// much the simulated ring had released).
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Ev {
    Frame(u8, Vec<u8>, bool, bool),
    Msg(u8, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, Vec<u8>),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum End {
    Open,
    Closed,
    Failed(u16),
}

/// Feed `stream` to a parser in chunks ending at `cuts` (then the rest), the way the
/// pipeline's ring does: unreleased bytes are presented again, new bytes appended.
/// In `FramePieces` mode pieces are glued back into messages (`Ev::Msg`).
pub fn run(stream: &[u8], cuts: &[usize], cfg: ParserConfig) -> (Vec<Ev>, End) {
    let mut p = Parser::new(cfg);
    let mut buf: Vec<u8> = Vec::new();
    let mut evs = Vec::new();
    let mut pieces: Vec<u8> = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        if cut < fed {
            continue;
        }
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        loop {
            match p.next_in_place(&mut buf) {
                Ok(Some(Event::Data(d))) => {
                    let bytes = buf[d.range()].to_vec();
                    match cfg.delivery {
                        Delivery::Frames => {
                            evs.push(Ev::Frame(d.kind as u8, bytes, d.first, d.last))
                        }
                        Delivery::FramePieces => {
                            pieces.extend_from_slice(&bytes);
                            if d.last {
                                evs.push(Ev::Msg(d.kind as u8, std::mem::take(&mut pieces)));
                            }
                        }
                        Delivery::Messages => {
                            assert!(d.first && d.last);
                            evs.push(Ev::Msg(d.kind as u8, bytes))
                        }
                    }
                }
                Ok(Some(Event::Ping(c))) => evs.push(Ev::Ping(c.as_bytes().to_vec())),
                Ok(Some(Event::Pong(c))) => evs.push(Ev::Pong(c.as_bytes().to_vec())),
                Ok(Some(Event::Close(c))) => {
                    evs.push(Ev::Close(c.code, c.reason.as_bytes().to_vec()))
                }
                Ok(None) => break,
                Err(e) => {
                    let code = p.failure().expect("error without a failure code");
                    match e {
                        pipeline::Error::WebSocket { close_code, .. } => {
                            assert_eq!(close_code, code)
                        }
                        other => panic!("unexpected error {other}"),
                    }
                    return (evs, End::Failed(code));
                }
            }
        }
        let n = p.release();
        buf.drain(..n);
    }
    (
        evs,
        if p.is_closed() {
            End::Closed
        } else {
            End::Open
        },
    )
}

pub fn cfg(delivery: Delivery) -> ParserConfig {
    ParserConfig {
        delivery,
        ..ParserConfig::default()
    }
}

pub const MODES: [Delivery; 3] = [Delivery::Frames, Delivery::FramePieces, Delivery::Messages];

/// Run `stream` whole, split at every position into two, and in 1-byte pieces, in
/// every mode; assert all give the same result and return the whole-stream result
/// per mode.
pub fn run_all_splits(stream: &[u8], max_message: usize) -> Vec<(Vec<Ev>, End)> {
    let mut out = Vec::new();
    for mode in MODES {
        let c = ParserConfig {
            delivery: mode,
            max_message,
        };
        let whole = run(stream, &[], c);
        for cut in 0..=stream.len() {
            assert_eq!(run(stream, &[cut], c), whole, "{mode:?}: split at {cut}");
        }
        let bytewise: Vec<usize> = (0..stream.len()).collect();
        assert_eq!(run(stream, &bytewise, c), whole, "{mode:?}: 1-byte pieces");
        out.push(whole);
    }
    out
}

/// A client frame decoded independently of the library: (fin, opcode, key, unmasked
/// payload, total length).
pub fn decode_client_frame(b: &[u8]) -> (bool, u8, [u8; 4], Vec<u8>, usize) {
    let fin = b[0] & 0x80 != 0;
    assert_eq!(b[0] & 0x70, 0, "RSV bits set");
    let op = b[0] & 0x0f;
    assert!(b[1] & 0x80 != 0, "client frame not masked");
    let (len, mut i) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    // Minimal length encoding, as RFC 6455 §5.2 requires of senders.
    match i {
        4 => assert!(len >= 126),
        10 => assert!(len > 0xFFFF),
        _ => {}
    }
    let key = [b[i], b[i + 1], b[i + 2], b[i + 3]];
    i += 4;
    let payload: Vec<u8> = b[i..i + len]
        .iter()
        .enumerate()
        .map(|(j, x)| x ^ key[j % 4])
        .collect();
    (fin, op, key, payload, i + len)
}

/// Rewrite a client frame as the server would send it (no mask), for parsing.
pub fn client_to_server_frame(b: &[u8]) -> Vec<u8> {
    let (fin, op, _, payload, _) = decode_client_frame(b);
    frame(if fin { FIN | op } else { op }, &payload)
}

//! Feed arbitrary server bytes to the frame parser, whole and split at
//! fuzzer-chosen points, in every delivery mode. Asserts: no panic; the split run
//! reports exactly what the unsplit run reports (same frames, same payload bytes,
//! same error code); and all three modes agree on the messages and control frames.
//!
//! Input layout: [max_message selector] [n cuts] [n x u16 cut] [stream...]
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::ws::{Delivery, Event, Parser, ParserConfig};

#[derive(Debug, PartialEq, Eq, Clone)]
enum Ev {
    Frame(u8, Vec<u8>, bool, bool),
    Msg(u8, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, Vec<u8>),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum End {
    Open,
    Closed,
    Failed(u16),
}

fn run(stream: &[u8], cuts: &[usize], cfg: ParserConfig) -> (Vec<Ev>, End) {
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
                Err(_) => {
                    return (
                        evs,
                        End::Failed(p.failure().expect("error without failure code")),
                    )
                }
            }
        }
        let n = p.release();
        assert!(n <= buf.len());
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

/// Frames -> messages, to compare modes.
fn to_messages(evs: &[Ev]) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for e in evs {
        match e {
            Ev::Frame(k, b, first, last) => {
                if *first {
                    cur.clear();
                }
                cur.extend_from_slice(b);
                if *last {
                    out.push(Ev::Msg(*k, std::mem::take(&mut cur)));
                }
            }
            other => out.push(other.clone()),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_message = match data[0] % 4 {
        0 => 16 << 20,
        1 => 1000,
        2 => 126,
        _ => 0,
    };
    let ncuts = (data[1] % 16) as usize;
    let rest = &data[2..];
    let (cut_bytes, stream) = rest.split_at((ncuts * 2).min(rest.len()));
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| (c[0] as usize | (*c.get(1).unwrap_or(&0) as usize) << 8) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut by_mode = Vec::new();
    for delivery in [Delivery::Frames, Delivery::FramePieces, Delivery::Messages] {
        let cfg = ParserConfig {
            delivery,
            max_message,
        };
        let whole = run(stream, &[], cfg);
        let split = run(stream, &cuts, cfg);
        if delivery != Delivery::FramePieces {
            assert_eq!(
                whole, split,
                "split changed the result ({delivery:?}, cuts {cuts:?})"
            );
        } else {
            // Pieces differ with the split by design; the messages they add up to must not.
            assert_eq!(whole.1, split.1);
            assert_eq!(to_messages(&whole.0), to_messages(&split.0));
        }
        if stream.len() <= 256 {
            let bytewise: Vec<usize> = (0..stream.len()).collect();
            let b = run(stream, &bytewise, cfg);
            assert_eq!(whole.1, b.1);
            assert_eq!(to_messages(&whole.0), to_messages(&b.0));
        }
        by_mode.push((to_messages(&whole.0), whole.1));
    }
    assert_eq!(by_mode[0], by_mode[1], "frames vs pieces");
    assert_eq!(by_mode[0], by_mode[2], "frames vs messages");
});

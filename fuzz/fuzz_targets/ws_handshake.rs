//! Arbitrary upgrade responses, fed whole and split: no panic, and the split run
//! reaches the same verdict (same consumed count, protocol or error) as the whole one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::ws::{ClientHandshake, HandshakeConfig, HandshakeStatus, WsUrl};

fn verdict(resp: &[u8], cut: usize) -> Result<(usize, Option<String>), String> {
    let url = WsUrl::parse("wss://example.com/ws").expect("static URL");
    let cfg = HandshakeConfig {
        protocols: vec!["chat".into(), "v2".into()],
        max_response: 512,
        ..Default::default()
    };
    let mut h = ClientHandshake::with_key(&url, &cfg, *b"0123456789abcdef").expect("static config");
    let mut offset = 0;
    for part in [&resp[..cut], &resp[cut..]] {
        match h.feed(part) {
            Ok(HandshakeStatus::NeedMore) => offset += part.len(),
            Ok(HandshakeStatus::Done { consumed, protocol }) => {
                return Ok((offset + consumed, protocol))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("incomplete".into())
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // Most inputs would fail on the status line; give the fuzzer a valid prefix to
    // mutate from half the time.
    let mut resp = Vec::new();
    if data[0] & 1 == 1 {
        resp.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
        resp.extend_from_slice(
            pipeline::ws::handshake::accept_key("MDEyMzQ1Njc4OWFiY2RlZg==").as_bytes(),
        );
        resp.extend_from_slice(b"\r\n");
    }
    resp.extend_from_slice(&data[1..]);
    let whole = verdict(&resp, resp.len());
    let cut = data[0] as usize % (resp.len() + 1);
    assert_eq!(whole, verdict(&resp, cut));
});

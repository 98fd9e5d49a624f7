//! Rough receive throughput of `WsClient` over plain ws:// on loopback: an in-process
//! server thread writes N unmasked binary frames of SIZE bytes (pre-built, big writes),
//! the client `recv()`s them in a loop (busy-polling, as a trading loop would).
//!
//! ```text
//! cargo run --release --example ws_client_throughput -- [SIZE] [N]    # default 64 5000000
//! ```
//! Loopback + both ends on a 2-core box: a smoke number for spotting regressions in
//! the client's receive path, not the pipeline's benchmark.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant;

use pipeline::client::{ClientConfig, Message, WsClient};
use pipeline::ws::handshake::accept_key;

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            req.push(b[0]);
        }
        let req = String::from_utf8(req).unwrap();
        let key = req
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim()
            .to_string();
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        );
        s.write_all(resp.as_bytes()).unwrap();
        let mut frame = vec![0x82u8];
        if size < 126 {
            frame.push(size as u8);
        } else {
            frame.push(126);
            frame.extend_from_slice(&(size as u16).to_be_bytes());
        }
        frame.extend(std::iter::repeat(b'x').take(size));
        let per = (1 << 20) / frame.len() + 1;
        let chunk: Vec<u8> = frame.repeat(per);
        let mut left = n;
        while left > 0 {
            let k = left.min(per);
            s.write_all(&chunk[..k * frame.len()]).unwrap();
            left -= k;
        }
        s.write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
        let _ = s.read(&mut b);
    });
    let mut ws = WsClient::connect(&format!("ws://127.0.0.1:{port}/"), &ClientConfig::default())
        .expect("connect");
    let t0 = Instant::now();
    let (mut msgs, mut bytes) = (0usize, 0usize);
    loop {
        match ws.recv() {
            Ok(Some(Message::Binary(b))) => {
                msgs += 1;
                bytes += b.len();
            }
            Ok(Some(Message::Closed { .. })) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(msgs, n);
    println!(
        "{n} messages of {size} B in {dt:.3} s: {:.2} M msg/s, {:.2} GB/s payload",
        msgs as f64 / dt / 1e6,
        bytes as f64 / dt / 1e9
    );
    server.join().unwrap();
}

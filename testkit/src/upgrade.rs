//! The server side of the WebSocket upgrade, for in-process raw-TCP servers.

use std::io::{Read, Write};

/// Reads a client's upgrade request up to its blank line, a byte at a time so that
/// nothing after it is consumed; panics if the stream ends first.
pub fn read_request(s: &mut impl Read) -> String {
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "request cut short");
        req.push(b[0]);
    }
    String::from_utf8(req).unwrap()
}

/// The request's `Sec-WebSocket-Key`.
pub fn request_key(req: &str) -> &str {
    req.lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("Sec-WebSocket-Key")
        .trim()
}

/// The 101 answer to `key`; `extra_headers` (each line ending in CRLF) go before the
/// blank line.
pub fn response(key: &str, extra_headers: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra_headers}\r\n",
        pipeline::ws::handshake::accept_key(key)
    )
}

/// Reads the request and answers 101 (see [`response`]); the request.
pub fn accept(s: &mut (impl Read + Write), extra_headers: &str) -> String {
    let req = read_request(s);
    s.write_all(response(request_key(&req), extra_headers).as_bytes()).unwrap();
    req
}

//! TEMPORARY minimal WebSocket codec, private to the stages, until `src/ws` lands.
//! Delete this file when the real parser is wired in. It knows: the frame header
//! (RFC 6455 §5.2), client frame building with a mask, the upgrade request and the
//! `Sec-WebSocket-Accept` check. No extensions.

use crate::error::{Error, Result};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A parsed server frame header.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub len: u64,
    pub hdr_len: usize,
}

fn proto(code: u16, reason: &str) -> Error {
    Error::WebSocket {
        close_code: code,
        reason: reason.into(),
    }
}

/// Parse a server frame header from `b`; `Ok(None)` if more bytes are needed.
pub fn parse_header(b: &[u8]) -> Result<Option<Header>> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    if b[0] & 0x70 != 0 {
        return Err(proto(1002, "reserved bits set (no extension negotiated)"));
    }
    let opcode = b[0] & 0x0f;
    if b[1] & 0x80 != 0 {
        return Err(proto(1002, "server frame is masked"));
    }
    let (len, hdr_len) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(a), 10)
        }
        n => (n as u64, 2),
    };
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || len > 125 {
                return Err(proto(
                    1002,
                    "control frame fragmented or longer than 125 bytes",
                ));
            }
        }
        _ => return Err(proto(1002, "unknown opcode")),
    }
    Ok(Some(Header {
        fin,
        opcode,
        len,
        hdr_len,
    }))
}

/// Write a masked client frame into `out` (must hold `client_header_len + payload`).
pub fn build_client_frame(
    out: &mut [u8],
    opcode: u8,
    fin: bool,
    payload: &[u8],
    mask: [u8; 4],
) -> usize {
    let len = payload.len();
    out[0] = (fin as u8) << 7 | (opcode & 0x0f);
    let mut h = if len < 126 {
        out[1] = 0x80 | len as u8;
        2
    } else if len < 65536 {
        out[1] = 0x80 | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 0x80 | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    out[h..h + 4].copy_from_slice(&mask);
    h += 4;
    for (i, (o, p)) in out[h..h + len].iter_mut().zip(payload).enumerate() {
        *o = p ^ mask[i & 3];
    }
    h + len
}

/// Standard base64 (padding) of `b`.
pub fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub fn accept_for(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let mut md = [0u8; 20];
    // SAFETY: SHA1 reads `input.len()` bytes and writes 20 into `md`.
    unsafe { openssl_sys::SHA1(input.as_ptr(), input.len(), md.as_mut_ptr()) };
    base64(&md)
}

/// Fill `b` with random bytes from OpenSSL.
pub fn random(b: &mut [u8]) {
    // SAFETY: RAND_bytes writes b.len() bytes into b.
    let ok = unsafe { openssl_sys::RAND_bytes(b.as_mut_ptr(), b.len() as i32) };
    if ok != 1 {
        // Fall back to the clock: never an all-zero key.
        let t = super::now_ns().to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % 8] ^ (i as u8).wrapping_mul(151) | 1;
        }
    }
}

/// The upgrade request and its key.
pub fn request(
    host: &str,
    path: &str,
    headers: &[(String, String)],
    protocols: &[String],
) -> (Vec<u8>, String) {
    let mut k = [0u8; 16];
    random(&mut k);
    let key = base64(&k);
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        r.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    (r.into_bytes(), key)
}

/// Check an upgrade response in `b`: `Ok(None)` until the blank line; `Ok(Some(n))`
/// with the response's length once it is a valid 101 for `key`.
pub fn check_response(b: &[u8], key: &str) -> Result<Option<usize>> {
    let end = match b.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => p + 4,
        None if b.len() > 16384 => {
            return Err(proto(0, "upgrade response headers longer than 16 KiB"))
        }
        None => return Ok(None),
    };
    let text = String::from_utf8_lossy(&b[..end]);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let (ver, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !ver.starts_with("HTTP/1.") || code != "101" {
        return Err(proto(0, &format!("upgrade refused: {status:?}")));
    }
    let (mut upgrade, mut connection, mut accept) = (false, false, None);
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim());
            match n.as_str() {
                "upgrade" => upgrade = v.eq_ignore_ascii_case("websocket"),
                "connection" => {
                    connection = v
                        .split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                }
                "sec-websocket-accept" => accept = Some(v.to_string()),
                _ => {}
            }
        }
    }
    if !upgrade || !connection {
        return Err(proto(
            0,
            "upgrade response lacks Upgrade: websocket / Connection: Upgrade",
        ));
    }
    if accept.as_deref() != Some(accept_for(key).as_str()) {
        return Err(proto(0, "Sec-WebSocket-Accept does not match our key"));
    }
    Ok(Some(end))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rfc_accept_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}

//! The opening handshake, client side (RFC 6455 §4.1-4.2): the HTTP/1.1 Upgrade
//! request and an incremental validator for the server's response.
//!
//! The validator is fed whatever bytes arrive, split anywhere. It answers `NeedMore`
//! (every byte fed was taken) until the blank line that ends the response header,
//! then `Done { consumed }` — `consumed` counts the bytes *of that last call* that
//! belonged to the header; the rest are the server's first frames and belong to the
//! frame parser.

use crate::error::{Error, Result};

use super::rng::os_random;
use super::sha1::{base64, sha1};
use super::url::WsUrl;

/// RFC 6455 §1.3.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Default bound on the response header, so a hostile or broken server cannot make
/// us buffer without limit.
pub const DEFAULT_MAX_RESPONSE: usize = 16 * 1024;

/// `Sec-WebSocket-Accept` for a given `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut s = Vec::with_capacity(key.len() + GUID.len());
    s.extend_from_slice(key.as_bytes());
    s.extend_from_slice(GUID.as_bytes());
    base64(&sha1(&s))
}

#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Subprotocols to offer, in preference order (`Sec-WebSocket-Protocol`).
    pub protocols: Vec<String>,
    /// Extra request headers (Authorization, Origin, User-Agent, ...).
    pub headers: Vec<(String, String)>,
    /// Largest response header accepted.
    pub max_response: usize,
    /// Offer permessage-deflate (RFC 7692) with these parameters; `None`: no extension.
    pub deflate: Option<super::deflate::DeflateConfig>,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            protocols: Vec::new(),
            headers: Vec::new(),
            max_response: DEFAULT_MAX_RESPONSE,
            deflate: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeStatus {
    /// Header not complete; all bytes fed were taken.
    NeedMore,
    /// Upgrade accepted. `consumed` bytes of the last input were the header's end;
    /// `protocol` is the subprotocol the server chose, if any.
    Done {
        consumed: usize,
        protocol: Option<String>,
    },
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Headers the handshake itself writes; letting a caller set them would produce a
/// request with two conflicting values.
const OWN_HEADERS: &[&str] = &[
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
];

fn ws_err(reason: String) -> Error {
    Error::WebSocket {
        close_code: 0,
        reason,
    }
}

/// A completed upgrade as it went over the wire, for people (`pipeline connect -v`):
/// the request we sent, the server's response header and the subprotocol agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The request, CRLF line ends, up to (without) the blank line.
    pub request: String,
    /// The response header (status line and headers), up to (without) the blank line.
    pub response: String,
    /// The subprotocol the server chose among those offered, if any.
    pub protocol: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClientHandshake {
    request: Vec<u8>,
    /// A `ws://` URL: a TLS answer means the user meant `wss://`.
    plain: bool,
    /// After `Done`: the response header and the agreed subprotocol.
    done: Option<(String, Option<String>)>,
    key: String,
    accept: String,
    offered: Vec<String>,
    buf: Vec<u8>,
    max: usize,
    finished: bool,
    deflate_offer: Option<super::deflate::DeflateConfig>,
    deflate: Option<super::deflate::Negotiated>,
}

impl ClientHandshake {
    /// Build the request with a fresh random key from the OS.
    pub fn new(url: &WsUrl, cfg: &HandshakeConfig) -> Result<Self> {
        let mut key = [0u8; 16];
        os_random(&mut key)?;
        Self::with_key(url, cfg, key)
    }

    /// Build the request with a given 16-byte nonce (tests; reproducible traces).
    pub fn with_key(url: &WsUrl, cfg: &HandshakeConfig, nonce: [u8; 16]) -> Result<Self> {
        for p in &cfg.protocols {
            if !is_token(p.as_bytes()) {
                return Err(Error::Config(format!(
                    "subprotocol {p:?} is not an HTTP token"
                )));
            }
        }
        for (name, value) in &cfg.headers {
            if !is_token(name.as_bytes()) {
                return Err(Error::Config(format!(
                    "header name {name:?} is not an HTTP token"
                )));
            }
            if value
                .bytes()
                .any(|b| (b.is_ascii_control() && b != b'\t') || b == 0x7f)
            {
                return Err(Error::Config(format!(
                    "header {name}: value contains a control character (CR/LF injection?)"
                )));
            }
            if OWN_HEADERS.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                return Err(Error::Config(format!(
                    "header {name} is set by the WebSocket handshake itself"
                )));
            }
        }
        if url.resource.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Error::Config(format!(
                "resource {:?} contains spaces or control characters",
                url.resource
            )));
        }
        let key = base64(&nonce);
        let mut r = String::with_capacity(256);
        r.push_str(&format!("GET {} HTTP/1.1\r\n", url.resource));
        r.push_str(&format!("Host: {}\r\n", url.host_header()));
        r.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\n");
        r.push_str(&format!(
            "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        ));
        if !cfg.protocols.is_empty() {
            r.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                cfg.protocols.join(", ")
            ));
        }
        if let Some(d) = &cfg.deflate {
            d.validate()?;
            r.push_str(&format!("Sec-WebSocket-Extensions: {}\r\n", d.offer()));
        }
        for (n, v) in &cfg.headers {
            r.push_str(&format!("{n}: {}\r\n", v.trim_matches([' ', '\t'])));
        }
        r.push_str("\r\n");
        Ok(ClientHandshake {
            request: r.into_bytes(),
            plain: !url.secure,
            done: None,
            accept: accept_key(&key),
            key,
            offered: cfg.protocols.clone(),
            buf: Vec::new(),
            max: cfg.max_response,
            finished: false,
            deflate_offer: cfg.deflate,
            deflate: None,
        })
    }

    /// The request bytes to send.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The permessage-deflate parameters the server agreed to (after `Done`); `None`
    /// when we did not offer it or the server declined.
    pub fn deflate(&self) -> Option<super::deflate::Negotiated> {
        self.deflate
    }

    /// What we offered for permessage-deflate, if anything.
    pub fn deflate_offer(&self) -> Option<super::deflate::DeflateConfig> {
        self.deflate_offer
    }

    /// The upgrade as it went (after `Done`; `None` before).
    pub fn upgrade(&self) -> Option<Upgrade> {
        let (response, protocol) = self.done.clone()?;
        let request = String::from_utf8_lossy(&self.request);
        Some(Upgrade {
            request: request.trim_end_matches("\r\n").to_string(),
            response,
            protocol,
        })
    }

    /// What to add to "connection closed during the upgrade": a TLS server (OpenSSL's
    /// among them) closes without a byte when it gets plain HTTP, so a `ws://` URL that
    /// got nothing back may well be pointing at a TLS port.
    pub fn closed_hint(&self) -> &'static str {
        if self.plain && self.buf.is_empty() && self.done.is_none() {
            " (nothing was received: if this port speaks TLS, try wss://)"
        } else {
            ""
        }
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Feed the next bytes of the server's response.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<HandshakeStatus> {
        if self.finished {
            return Err(Error::Config(
                "handshake response already complete (or failed)".into(),
            ));
        }
        let old = self.buf.len();
        // A TLS record (alert 0x15 or handshake 0x16, version 3.x) where the HTTP
        // status line should be: the server speaks TLS on this port. The first two
        // bytes may come in separate reads.
        if self.plain && old < 2 {
            let first = |i: usize| if i < old { self.buf.get(i).copied() } else { bytes.get(i - old).copied() };
            if let (Some(b0 @ (0x15 | 0x16)), Some(0x03)) = (first(0), first(1)) {
                self.finished = true;
                return Err(ws_err(format!(
                    "the server answered our plain-HTTP upgrade with a TLS record (0x{b0:02x} 0x03 ..., a TLS {}): this port speaks TLS, try wss://",
                    if b0 == 0x15 { "alert" } else { "handshake" }
                )));
            }
        }
        let take = bytes.len().min(self.max - old);
        self.buf.extend_from_slice(&bytes[..take]);
        // The terminator may straddle the previous call: look back 3 bytes.
        let from = old.saturating_sub(3);
        let Some(i) = self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
            if self.buf.len() >= self.max {
                self.finished = true;
                return Err(ws_err(format!(
                    "upgrade response header exceeds {} bytes",
                    self.max
                )));
            }
            return Ok(HandshakeStatus::NeedMore);
        };
        let end = from + i + 4;
        self.buf.truncate(end);
        self.finished = true;
        let (protocol, deflate) = self.validate()?;
        self.deflate = deflate;
        let response = String::from_utf8_lossy(&self.buf[..end - 4]).into_owned();
        self.done = Some((response, protocol.clone()));
        self.buf = Vec::new();
        Ok(HandshakeStatus::Done {
            consumed: end - old,
            protocol,
        })
    }

    #[allow(clippy::type_complexity)]
    fn validate(&self) -> Result<(Option<String>, Option<super::deflate::Negotiated>)> {
        // Split on CRLF; a bare LF is a framing ambiguity we refuse rather than guess.
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut rest = &self.buf[..self.buf.len() - 4];
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let Some(l) = rest[..i].strip_suffix(b"\r") else {
                return Err(ws_err("malformed upgrade response (bare LF)".into()));
            };
            lines.push(l);
            rest = &rest[i + 1..];
        }
        lines.push(rest);
        let status = lines[0];
        let shown: String = String::from_utf8_lossy(status).chars().take(200).collect();
        let mut parts = status.splitn(3, |&b| b == b' ');
        let version = parts.next().unwrap_or(b"");
        let code = parts.next().unwrap_or(b"");
        if !version.starts_with(b"HTTP/1.") {
            return Err(ws_err(format!(
                "server answered {shown:?}, which is not an HTTP response"
            )));
        }
        if code != b"101" || version != b"HTTP/1.1" {
            return Err(ws_err(format!(
                "server answered {shown:?} (expected \"HTTP/1.1 101 Switching Protocols\")"
            )));
        }
        let (mut upgrade, mut connection) = (false, false);
        let mut accept: Option<&[u8]> = None;
        let mut protocol: Option<&[u8]> = None;
        let mut extensions = String::new();
        for &line in &lines[1..] {
            if line.contains(&b'\r') {
                return Err(ws_err("malformed upgrade response (bare CR)".into()));
            }
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                return Err(ws_err(
                    "upgrade response uses obsolete header folding".into(),
                ));
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err(ws_err(format!(
                    "malformed header line {:?}",
                    String::from_utf8_lossy(line)
                )));
            };
            let name = &line[..colon];
            if !is_token(name) {
                return Err(ws_err(format!(
                    "malformed header name {:?}",
                    String::from_utf8_lossy(name)
                )));
            }
            let value = line[colon + 1..].trim_ascii();
            let tokens = || value.split(|&b| b == b',').map(|t| t.trim_ascii());
            if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade |= tokens().any(|t| t.eq_ignore_ascii_case(b"websocket"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                connection |= tokens().any(|t| t.eq_ignore_ascii_case(b"upgrade"));
            } else if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
                if accept.replace(value).is_some() {
                    return Err(ws_err("duplicate Sec-WebSocket-Accept".into()));
                }
            } else if name.eq_ignore_ascii_case(b"sec-websocket-extensions") {
                // Several headers are one comma-separated list (RFC 7230 §3.2.2).
                if !value.is_empty() {
                    if !extensions.is_empty() {
                        extensions.push_str(", ");
                    }
                    extensions.push_str(&String::from_utf8_lossy(value));
                }
            } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol")
                && protocol.replace(value).is_some()
            {
                return Err(ws_err("duplicate Sec-WebSocket-Protocol".into()));
            }
        }
        if !upgrade {
            return Err(ws_err(
                "upgrade response lacks \"Upgrade: websocket\"".into(),
            ));
        }
        if !connection {
            return Err(ws_err(
                "upgrade response lacks \"Connection: Upgrade\"".into(),
            ));
        }
        match accept {
            None => return Err(ws_err("upgrade response lacks Sec-WebSocket-Accept".into())),
            Some(a) if a != self.accept.as_bytes() => {
                return Err(ws_err(format!(
                    "Sec-WebSocket-Accept {:?} does not match our key (expected {:?})",
                    String::from_utf8_lossy(a),
                    self.accept
                )))
            }
            Some(_) => {}
        }
        let deflate = super::deflate::negotiate(&extensions, self.deflate_offer.as_ref())?;
        match protocol {
            None => Ok((None, deflate)),
            Some(p) => match self.offered.iter().find(|o| o.as_bytes() == p) {
                Some(o) => Ok((Some(o.clone()), deflate)),
                None => Err(ws_err(format!(
                    "server selected subprotocol {:?} that we did not offer",
                    String::from_utf8_lossy(p)
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_accept() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}

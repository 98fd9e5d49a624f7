//! `ws://` and `wss://` URLs (RFC 6455 §3): just what the handshake and the
//! connection need — scheme, host, port, resource name.

use std::net::Ipv6Addr;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss`: TLS.
    pub secure: bool,
    /// Host name or IP literal, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Path and query ("resource name"), never empty: "/" by default.
    pub resource: String,
}

fn bad(url: &str, why: &str) -> Error {
    Error::Config(format!("WebSocket URL {url:?}: {why}"))
}

impl WsUrl {
    pub fn parse(url: &str) -> Result<WsUrl> {
        let (secure, rest) = match url.split_once("://") {
            Some((s, r)) if s.eq_ignore_ascii_case("wss") => (true, r),
            Some((s, r)) if s.eq_ignore_ascii_case("ws") => (false, r),
            Some((s, _)) => return Err(bad(url, &format!("scheme {s:?} is not ws or wss"))),
            None => return Err(bad(url, "expected ws://host[:port]/path or wss://...")),
        };
        if let Some(c) = url
            .chars()
            .find(|c| c.is_ascii_control() || *c == ' ' || !c.is_ascii())
        {
            return Err(bad(url, &format!("contains {c:?}; percent-encode it")));
        }
        if url.contains('#') {
            return Err(bad(
                url,
                "fragments (#...) are not allowed in WebSocket URLs (RFC 6455 §3)",
            ));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, resource) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad(
                url,
                "user info in the URL is not supported; send an Authorization header",
            ));
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((lit, after)) = v6.split_once(']') else {
                return Err(bad(url, "unterminated IPv6 literal"));
            };
            if lit.parse::<Ipv6Addr>().is_err() {
                return Err(bad(url, &format!("{lit:?} is not an IPv6 address")));
            }
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return Err(bad(url, "expected :port after the IPv6 literal")),
                },
            };
            (lit, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad(url, "no host"));
        }
        if !authority.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(bad(url, &format!("{host:?} is not a valid host name")));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(bad(url, &format!("port {p:?} is not a number in 1..65535"))),
            },
        };
        let resource = if resource.is_empty() {
            "/".to_string()
        } else if resource.starts_with('?') {
            format!("/{resource}")
        } else {
            resource.to_string()
        };
        Ok(WsUrl {
            secure,
            host: host.to_string(),
            port,
            resource,
        })
    }

    pub fn default_port(&self) -> u16 {
        if self.secure {
            443
        } else {
            80
        }
    }

    /// Is the host an IP literal? (TLS must then not send it as SNI.)
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    /// Value of the `Host` header: brackets for IPv6, port only when not the default.
    pub fn host_header(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WsUrl {
        WsUrl::parse(s).unwrap()
    }

    #[test]
    fn good() {
        let u = p("wss://stream.example.com/ws?streams=btcusdt@trade");
        assert_eq!(
            (u.secure, u.host.as_str(), u.port, u.resource.as_str()),
            (true, "stream.example.com", 443, "/ws?streams=btcusdt@trade")
        );
        assert_eq!(u.host_header(), "stream.example.com");
        let u = p("ws://127.0.0.1:9001");
        assert_eq!((u.secure, u.port, u.resource.as_str()), (false, 9001, "/"));
        assert_eq!(u.host_header(), "127.0.0.1:9001");
        assert!(u.host_is_ip());
        let u = p("WSS://[::1]:8443?x=1");
        assert_eq!(
            (u.host.as_str(), u.port, u.resource.as_str()),
            ("::1", 8443, "/?x=1")
        );
        assert_eq!(u.host_header(), "[::1]:8443");
        assert_eq!(p("ws://[fe80::1]").host_header(), "[fe80::1]");
        assert_eq!(p("ws://h:80/").host_header(), "h");
    }

    #[test]
    fn bad_urls() {
        for s in [
            "http://x/",
            "x",
            "ws://",
            "ws:///path",
            "ws://h:0/",
            "ws://h:65536/",
            "ws://h:/",
            "ws://h:+1/",
            "ws://[::1/",
            "ws://[zz]/",
            "ws://[::1]x/",
            "ws://u:p@h/",
            "ws://h/a b",
            "ws://h/#frag",
            "ws://h/\r\nX: y",
            "ws://ho st/",
            "ws://h\u{e9}/",
        ] {
            assert!(matches!(WsUrl::parse(s), Err(Error::Config(_))), "{s:?}");
        }
    }
}

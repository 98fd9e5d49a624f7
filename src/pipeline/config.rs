//! The runtime [`Config`] of a pipeline.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ring::OverrunPolicy;
use crate::runner::{Layout, WaitKind};
use crate::stage::{Delivery, SyntheticScript};

/// Which byte transport carries the connection.
#[derive(Clone, Default)]
pub enum TransportKind {
    /// A kernel TCP socket + OpenSSL: runs anywhere, no privileges (default).
    #[default]
    Kernel,
    /// AF_XDP + our TCP + OpenSSL (needs root or CAP_NET_ADMIN/NET_RAW/BPF/IPC_LOCK).
    Xdp,
    /// A scripted in-process server (tests, benchmarks, `pipeline demo`); no network.
    Synthetic(SyntheticScript),
}

impl TransportKind {
    pub fn name(&self) -> &'static str {
        match self {
            TransportKind::Kernel => "kernel",
            TransportKind::Xdp => "xdp",
            TransportKind::Synthetic(_) => "synthetic",
        }
    }
}

/// Everything `Pipeline::start` needs. `Config::new(url)` gives working defaults.
#[derive(Clone)]
pub struct Config {
    /// `wss://host[:port]/path` (or `ws://` for plain TCP).
    pub url: String,
    /// Shared-memory name: `/dev/shm/pipeline_<name>/`. Default: `<pid>-<counter>`.
    pub name: Option<String>,
    pub transport: TransportKind,
    /// Interface for the XDP transport (default: the route to the server's).
    pub iface: Option<String>,
    /// Default: chosen from the number of cores (see `runner::choose_defaults`).
    pub layout: Option<Layout>,
    /// Default: chosen with the layout.
    pub wait: Option<WaitKind>,
    /// Core per stage, in stage order (xdp, transport, websocket, app). Empty: no pinning.
    pub cores: Vec<usize>,
    /// CA bundle for verification (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Skip certificate and host name verification. Loud: logged at start.
    pub insecure: bool,
    /// Set-up (TCP + TLS + WebSocket handshakes) deadline.
    pub timeout: Duration,
    /// Largest message (or frame) accepted; larger closes with 1009.
    pub max_message: usize,
    /// MSG_INBOX bytes (power of two, >= 2 * max_message recommended).
    pub inbox_size: usize,
    /// MSG_OUTBOX bytes (power of two; a record holds up to half of it).
    pub outbox_size: usize,
    /// WS_FRAME_INFO entries (power of two).
    pub frame_ring: usize,
    pub overrun: OverrunPolicy,
    pub delivery: Delivery,
    /// Extra upgrade request headers.
    pub headers: Vec<(String, String)>,
    pub subprotocols: Vec<String>,
    /// Leave WS_FRAME_INFO to another process (`include/pipeline_consumer.h`): no
    /// built-in AppClient and no polling receiver compete for the ring.
    pub external_consumer: bool,
    /// Do not print the layout line on stderr.
    pub quiet: bool,
}

impl Config {
    pub fn new(url: &str) -> Config {
        Config {
            url: url.to_string(),
            name: None,
            transport: TransportKind::Kernel,
            iface: None,
            layout: None,
            wait: None,
            cores: Vec::new(),
            ca_file: None,
            insecure: false,
            timeout: Duration::from_secs(10),
            max_message: 1 << 20,
            inbox_size: 4 << 20,
            outbox_size: 1 << 20,
            frame_ring: 1 << 14,
            overrun: OverrunPolicy::Backpressure,
            delivery: Delivery::Messages,
            headers: Vec::new(),
            subprotocols: Vec::new(),
            external_consumer: false,
            quiet: false,
        }
    }
}

/// A parsed `ws://` / `wss://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least "/".
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url> {
        let bad = |why: &str| Error::Config(format!("URL {url:?}: {why}"));
        let (secure, rest) = if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else {
            return Err(bad("must start with wss:// or ws://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| bad("unclosed IPv6 bracket"))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => {
                if secure {
                    443
                } else {
                    80
                }
            }
        };
        Ok(Url {
            secure,
            host,
            port,
            path,
        })
    }

    /// The `Host:` header value.
    pub fn host_header(&self) -> String {
        let default = if self.secure { 443 } else { 80 };
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn urls() {
        let u = Url::parse("wss://example.com/ws?a=1").unwrap();
        assert_eq!(
            (u.secure, u.host.as_str(), u.port, u.path.as_str()),
            (true, "example.com", 443, "/ws?a=1")
        );
        let u = Url::parse("ws://10.0.0.1:9001").unwrap();
        assert_eq!(
            (u.secure, u.port, u.path.as_str(), u.host_header()),
            (false, 9001, "/", "10.0.0.1:9001".to_string())
        );
        assert!(Url::parse("http://x").is_err());
        assert!(Url::parse("wss://:1/").is_err());
    }
}

//! [`ClientConfig`]: everything [`super::WsClient`] needs besides the URL.

use std::path::PathBuf;
use std::time::Duration;

use crate::tls::{TlsConfig, TlsContext};
use crate::transport::kernel::KernelSocketOptions;
use crate::ws::{Delivery, HandshakeConfig, MaskMode};

/// Extra receive-buffer room beyond `max_message`: headers of the fragments of the
/// message being reassembled, control frames between them, and the decrypted bytes of
/// the next frames that arrived in the same read.
pub const RECV_SLACK: usize = 64 * 1024;

/// Above this many bytes of unsent output (frames not yet taken by the socket), a
/// `send_*` call waits (up to `send_timeout`) for the socket to drain.
pub const SEND_HIGH_WATER: usize = 1 << 20;

/// Settings for [`super::WsClient::connect`] / [`super::WsClient::over`].
///
/// `ClientConfig::default()` is the safe production setting: certificate and host-name
/// verification against the system CA store, random masking keys, message delivery,
/// 16 MiB message limit.
#[derive(Clone)]
pub struct ClientConfig {
    /// TLS settings for `wss://` (CA file, verification, versions, ALPN...). Ignored for
    /// `ws://` and when `tls_context` is given.
    pub tls: TlsConfig,
    /// A ready context to use instead of building one from `tls`: share it across
    /// reconnects so TLS session resumption works.
    pub tls_context: Option<TlsContext>,
    /// Kernel socket options (connect timeout, TCP_NODELAY, buffers). Only used by
    /// [`super::WsClient::connect`].
    pub socket: KernelSocketOptions,
    /// Subprotocols to offer and extra request headers for the upgrade.
    pub handshake: HandshakeConfig,
    /// Bound on the TLS handshake, and separately on the WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// [`Delivery::Messages`] (default): whole messages, fragments reassembled in place
    /// in the receive buffer. [`Delivery::Frames`]: one event per frame with `is_final`.
    /// [`Delivery::FramePieces`]: payload as it arrives.
    pub delivery: Delivery,
    /// Largest message accepted (sum of its fragments); a bigger one fails the
    /// connection with close code 1009. The receive buffer is `max_message` +
    /// [`RECV_SLACK`] bytes, allocated once at connect (lazily backed by the kernel).
    pub max_message: usize,
    /// Masking keys. [`MaskMode::Random`] (default); [`MaskMode::Zero`] only as an
    /// explicit, informed choice (see `docs/websocket.md`).
    pub mask: MaskMode,
    /// Answer every PING with a PONG carrying the same payload (default on). The PING
    /// is still reported.
    pub auto_pong: bool,
    /// After sending our close (`close()`), how long to wait for the server's.
    pub close_timeout: Duration,
    /// Once both close frames have crossed (or after a protocol error), how long to wait
    /// for the server to close TCP first (RFC 6455 §7.1.1) before we close it.
    pub close_linger: Duration,
    /// How long a `send_*` may wait for the socket when more than [`SEND_HIGH_WATER`]
    /// bytes are queued.
    pub send_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            tls: TlsConfig::default(),
            tls_context: None,
            socket: KernelSocketOptions::default(),
            handshake: HandshakeConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            delivery: Delivery::Messages,
            max_message: 16 << 20,
            mask: MaskMode::Random,
            auto_pong: true,
            close_timeout: Duration::from_secs(5),
            close_linger: Duration::from_secs(1),
            send_timeout: Duration::from_secs(10),
        }
    }
}

impl ClientConfig {
    /// Trust the CAs in this PEM file instead of the system store.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Turn OFF certificate and host-name verification. Loud on purpose: anyone on the
    /// path can then impersonate the server. Tests and lab use only.
    pub fn insecure_skip_verify(mut self) -> Self {
        self.tls.insecure_skip_verify = true;
        self
    }

    pub fn delivery(mut self, d: Delivery) -> Self {
        self.delivery = d;
        self
    }

    pub fn max_message(mut self, n: usize) -> Self {
        self.max_message = n;
        self
    }

    /// Add a request header to the upgrade (Authorization, Origin, User-Agent...).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.handshake.headers.push((name.into(), value.into()));
        self
    }

    /// Offer a subprotocol (in preference order of the calls).
    pub fn protocol(mut self, p: impl Into<String>) -> Self {
        self.handshake.protocols.push(p.into());
        self
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("tls", &self.tls)
            .field(
                "tls_context",
                &self.tls_context.as_ref().map(|_| "<TlsContext>"),
            )
            .field("socket", &self.socket)
            .field("handshake", &self.handshake)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("delivery", &self.delivery)
            .field("max_message", &self.max_message)
            .field("mask", &self.mask)
            .field("auto_pong", &self.auto_pong)
            .field("close_timeout", &self.close_timeout)
            .field("close_linger", &self.close_linger)
            .field("send_timeout", &self.send_timeout)
            .finish()
    }
}

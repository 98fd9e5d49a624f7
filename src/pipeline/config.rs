//! The runtime [`Config`] of a pipeline.

use std::path::PathBuf;
use std::time::Duration;

use crate::ring::OverrunPolicy;
use crate::runner::{Layout, WaitKind};
use crate::feed::{LivenessConfig, ReconnectPolicy};
use crate::stage::{Delivery, Subscription, SyntheticScript};
use crate::tcp::TcpConfig;
use crate::ws::DeflateConfig;
use crate::xdp::{AttachRequest, FaultConfig, ZeroCopy};

/// Knobs of the AF_XDP transport. The defaults are what production wants; the three
/// marked *testing knob* exist so the fault tests and benchmarks run the shipped path.
#[derive(Clone, Debug, Default)]
pub struct XdpOptions {
    /// Native XDP first, generic (SKB) if the driver refuses (default), or one of them.
    pub attach: AttachRequest,
    /// Zero-copy when the NIC offers it (default), copy mode only, or zero-copy or fail.
    pub zero_copy: ZeroCopy,
    /// *Testing knob*: drop this percent of this connection's incoming packets in the
    /// XDP program (0 = off).
    pub rx_loss_percent: u32,
    /// *Testing knob*: reorder / duplicate / delay this connection's incoming frames in
    /// the XDP poll stage (seeded, deterministic). Off by default.
    pub fault: FaultConfig,
    /// *Testing knob*: adjust the TCP knobs after the defaults are filled in (e.g. a
    /// lower RTO floor so a loss test finishes sooner).
    pub tcp_tweak: Option<fn(&mut TcpConfig)>,
}

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
    /// AF_XDP knobs (attach and zero-copy modes; fault-injection testing knobs).
    pub xdp: XdpOptions,
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
    /// How long the close handshake may take once the pipeline is Closing (our close
    /// sent or queued, a protocol error, or the server's close being answered): then
    /// the transport is closed anyway and the reason says the server did not answer.
    pub close_timeout: Duration,
    /// Largest message (or frame) payload accepted; larger closes with 1009. At most
    /// `inbox_size - 14` (the frame header must fit too). A message whose headers and
    /// interleaved control frames need more than the whole MSG_INBOX also closes with
    /// 1009 (see docs/pipeline.md, "Limits a server cannot get around").
    pub max_message: usize,
    /// MSG_INBOX bytes (power of two, >= 2 * max_message recommended: fragment headers
    /// and control frames inside a message take room too).
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
    /// Reconnect after a lost connection (off by default: `ReconnectPolicy::standard()`
    /// switches it on). See docs/pipeline.md, "Reconnect".
    pub reconnect: ReconnectPolicy,
    /// Messages sent after every (re)connect, before the connection is reported
    /// Connected (subscriptions, log-ins).
    pub subscriptions: Vec<Subscription>,
    /// Client PINGs every `ping_interval_ns`; the connection is dead (and reconnected,
    /// if reconnect is on) when neither data nor a PONG arrived within `timeout_ns`.
    /// Off by default.
    pub liveness: Option<LivenessConfig>,
    /// Offer permessage-deflate (RFC 7692) with these parameters; `None` (the default):
    /// no compression. Off by default because it costs latency per message (inflate
    /// runs on the WebSocket stage's core: ~0.3 µs for a 256 B message, see
    /// `docs/websocket.md`) and a second inbox of `inbox_size` bytes; turn it on for
    /// feeds whose bandwidth matters or servers that expect it.
    /// `Some(DeflateConfig::default())` offers `permessage-deflate; client_max_window_bits`.
    pub deflate: Option<DeflateConfig>,
    /// Where the server stamps its messages (Unix time): the one-way
    /// `server_to_delivered` histogram of the stats region (`pipeline stat`). None: off.
    pub server_stamp: Option<crate::latency::ServerStamp>,
}

impl Config {
    pub fn new(url: &str) -> Config {
        Config {
            url: url.to_string(),
            name: None,
            transport: TransportKind::Kernel,
            iface: None,
            xdp: XdpOptions::default(),
            layout: None,
            wait: None,
            cores: Vec::new(),
            ca_file: None,
            insecure: false,
            timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
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
            reconnect: ReconnectPolicy::default(),
            subscriptions: Vec::new(),
            liveness: None,
            deflate: None,
            server_stamp: None,
        }
    }
}

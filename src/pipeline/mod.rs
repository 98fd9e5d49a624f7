//! [`Pipeline`]: one WebSocket connection as a pipeline of stages over shared memory.
//!
//! ```no_run
//! use pipeline::pipeline::{Config, Pipeline};
//! let mut p = Pipeline::start_with_callback(Config::new("wss://example.com/feed"), Box::new(|payload, opcode, _fin| {
//!     println!("{opcode}: {} bytes", payload.len());
//! }))?;
//! p.send_text("{\"op\":\"subscribe\"}")?;
//! p.close(1000, "bye")?;
//! p.wait_disconnected(std::time::Duration::from_secs(5));
//! p.stop();
//! # Ok::<(), pipeline::Error>(())
//! ```

mod config;
pub(crate) mod feed;
mod feed_callback;
mod feed_publish;
mod first_connect;

pub use crate::ws::WsUrl as Url;
pub use config::{Config, TransportKind, XdpOptions};
pub use first_connect::OnAttempt;
pub use crate::stage::Subscription;
pub use crate::latency::{ServerStamp, Timestamps};

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ring::{
    ElemRing, MsgInbox, MsgOutbox, OutboxKind, OutboxSender, Piece, PongFrame, WsFrameInfo,
};
use crate::runner::{self, Placement, Running};
use crate::shm::{names, ShmDir};
use crate::stage::{
    AppClientStage, Engine, EngineStage, FrameReader, RawFrame, Stage, StreamTransport,
    SyntheticTransport, TlsTransport, TransportStage, WebSocketStage, XdpRings, XdpTransport,
};
use crate::stats::{StatsRegion, COUNTERS};
pub use crate::stats::{DisconnectKind, DisconnectReason, StageExit};
use crate::ws::{ClientHandshake, HandshakeConfig};

pub use crate::stats::State as PipelineState;

// Everything a `Config`, a frame or a state names, so users need only this module (the
// layers behind it are internal; see the crate docs).
pub use crate::feed::{CloseCodePolicy, LivenessConfig, ReconnectPolicy};
// Feeds: K legs, one merged stream (docs/feed.md).
pub use crate::feed::{
    ArbiterMode, BinaryField, Endian, JsonField, Key, KeyExtractor, LagHistogram, LegStats,
    RotationConfig, LAG_BUCKETS,
};
pub use feed::{Feed, FeedConfig, FeedEvent, FeedFrame, FeedItem};
pub use feed_callback::{CallbackFeed, OnFeedItem};
pub use feed_publish::{PublishConfig, EVENT_RECORD_BYTES};
pub use crate::ring::OverrunPolicy;
pub use crate::runner::{Layout, WaitKind};
pub use crate::stage::{
    encode_server_frame, encode_server_frame_rsv1, Delivery, OnMessage, OnMessageFallible, SyntheticScript,
};
pub use crate::ws::{DeflateConfig, DeflateParams, Upgrade};
pub use crate::stats::{Counter, State};
pub use crate::tcp::TcpConfig;
pub use crate::xdp::{AttachRequest, FaultConfig, ZeroCopy};

static COUNTER: AtomicU32 = AtomicU32::new(0);



/// Set up the XDP path: route, MACs, port reservation, this interface's AF_XDP engine
/// (joined if another connection of this process runs on it), our flow in its filter,
/// rings, TCP connection (SYN queued) and TLS session.
fn xdp_setup(
    cfg: &Config,
    url: &Url,
    name: &str,
    dir: &ShmDir,
    stats: &StatsRegion,
) -> Result<(EngineStage, XdpTransport)> {
    use crate::xdp::{addr, Flow, PortReservation, XdpConfig};
    if !url.secure {
        return Err(Error::Config(
            "the XDP transport speaks TLS only: use a wss:// URL".into(),
        ));
    }
    let server_ip = crate::stage::resolve_v4(&url.host, url.port)?;
    let route = addr::route_to(server_ip)?;
    let ifname = cfg.iface.clone().unwrap_or_else(|| route.ifname.clone());
    let local_ip = addr::ipv4_of(&ifname)?;
    let our_mac = addr::mac_of(&ifname)?;
    // The engine first: a missing capability is the most likely failure and the one a
    // user can fix, so report it before spending the timeout on ARP. The program
    // redirects only registered flows, so ARP still reaches the kernel.
    let mut xc = XdpConfig::new(&ifname);
    xc.attach = cfg.xdp.attach;
    xc.zero_copy = cfg.xdp.zero_copy;
    let engine = Engine::for_interface(&xc, name, cfg.quiet)?;
    let hop_mac = crate::xdp::addr::next_hop_mac(route.next_hop(server_ip), &ifname, cfg.timeout)?;
    let port = PortReservation::new(local_ip, 0)?;
    let flow = Flow {
        server_ip,
        server_port: url.port,
        local_ip,
        local_port: port.port(),
    };
    let (eport, tport) = XdpRings::create(dir)?.split();
    let reg = engine.add(flow, eport, stats.clone(), &cfg.xdp.fault, cfg.xdp.rx_loss_percent)?;
    let mut tcfg = crate::tcp::TcpConfig::new(
        crate::wire::MacAddr(our_mac),
        crate::wire::MacAddr(hop_mac),
        port.addr(),
        std::net::SocketAddrV4::new(server_ip, url.port),
    );
    if let Some(f) = cfg.xdp.tcp_tweak {
        f(&mut tcfg);
    }
    let mut conn = crate::tcp::Connection::new(tcfg.clone())?;
    conn.connect(crate::stage::now_ns() / 1000)?;
    let ctx = crate::tls::TlsContext::new(&crate::tls::TlsConfig {
        ca_file: cfg.ca_file.clone(),
        insecure_skip_verify: cfg.insecure,
        ..Default::default()
    })?;
    let tls = ctx.client_session(&url.host)?;
    let t = XdpTransport::new(conn, tls, tport, port, reg).with_dial(crate::stage::XdpDial {
        host: url.host.clone(),
        port: url.port,
        ctx,
        tcp: tcfg,
        rx_loss_percent: cfg.xdp.rx_loss_percent,
        iface_forced: cfg.iface.is_some(),
        timeout: cfg.timeout,
    });
    Ok((EngineStage::new(engine, stats.clone()), t))
}

/// A received frame (or message) borrowed from MSG_INBOX. Dropping it (or
/// [`Frame::release`]) gives its bytes back to the transport.
pub struct Frame<'a> {
    rx: &'a mut FrameReader,
    raw: RawFrame,
}

impl Frame<'_> {
    /// The payload, in place in MSG_INBOX (no copy).
    pub fn payload(&self) -> &[u8] {
        // SAFETY: the frame is released only when it is dropped, and it borrows the
        // reader mutably, so no later frame can be taken (and released) meanwhile.
        unsafe { self.rx.payload(&self.raw) }
    }
    /// 0x1 text, 0x2 binary, 0x0 continuation (Frames delivery only).
    pub fn opcode(&self) -> u8 {
        self.raw.opcode
    }
    pub fn is_final(&self) -> bool {
        self.raw.fin
    }
    /// When the frame arrived, was decrypted, parsed and taken (CLOCK_MONOTONIC ns;
    /// see [`Timestamps`]).
    pub fn timestamps(&self) -> Timestamps {
        self.raw.ts
    }
    /// MSG_INBOX was overrun before this frame (overwrite policy): data was lost.
    pub fn after_overrun(&self) -> bool {
        self.raw.after_overrun
    }
    /// The first frame of a new connection after a reconnect: the stream goes on, but a
    /// message the disconnect cut was not delivered and messages the server sent while
    /// we were away are not replayed (resubscribe, or fetch a snapshot).
    pub fn after_reconnect(&self) -> bool {
        self.raw.after_reconnect
    }
    /// Overwrite policy: is the payload still intact (not overwritten by the transport
    /// while you held it)? Check after reading it. Always true with backpressure.
    pub fn intact(&self) -> bool {
        self.rx.intact(&self.raw)
    }
    /// The payload as text (for text frames).
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(self.payload()).ok()
    }
    /// Give the bytes back now (same as dropping the frame).
    pub fn release(self) {}
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        self.rx.release(&self.raw);
    }
}

/// Polling delivery, detached from the [`Pipeline`] so the pipeline can still send
/// while a frame is borrowed. Get it with [`Pipeline::receiver`].
pub struct Receiver {
    reader: FrameReader,
    stats: StatsRegion,
    taken: u64,
    /// [`Receiver::event_fd`] was asked for: an empty poll arms the wakeup.
    wake: bool,
    /// The end of the stream was reported and the event fd left readable.
    ended: bool,
}

/// One look at the ring for a polling consumer.
pub(crate) enum Polled {
    Frame(RawFrame),
    /// Nothing yet (with the event fd in use: armed, so sleeping on it is safe).
    Empty,
    /// Disconnected and every frame taken.
    Ended,
}

impl Receiver {
    /// The next frame, if one is ready (never blocks). With [`Receiver::event_fd`] in
    /// use, `None` has armed the event fd: sleep on it, then call this again.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        match self.poll_raw() {
            Polled::Frame(raw) => Some(Frame { rx: &mut self.reader, raw }),
            Polled::Empty | Polled::Ended => None,
        }
    }

    /// A file descriptor (an eventfd, owned by the pipeline: do not close or read it)
    /// that becomes readable when frames are ready or the state changed (the end of
    /// the stream among them), for `poll`/`epoll`/an event loop instead of spinning.
    /// From the first call on, every [`Receiver::next_frame`] that finds nothing arms
    /// it (one `write` by the producing stage per sleep, none while you keep up): wait
    /// only after a `None`, and after waking poll until `None` again. Wakeups may be
    /// spurious. Once the stream has ended and been drained it stays readable. Works in
    /// every layout (a forked stage process inherited it).
    pub fn event_fd(&mut self) -> Option<std::os::fd::RawFd> {
        let fd = self.stats.wakeup_fd()?;
        self.wake = true;
        Some(fd)
    }

    /// Wait until the event fd is readable or `timeout` passes (poll(2)).
    fn sleep_on_event_fd(&self, timeout: Duration) {
        let Some(fd) = self.stats.wakeup_fd() else { return };
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd on the stack; EINTR just means look again.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }

    /// One look: a frame, nothing yet (armed, with the event fd in use), or the end.
    pub(crate) fn poll_raw(&mut self) -> Polled {
        // Read before taking: "disconnected and nothing taken" then means drained.
        let ended = self.stats.state_code() == 3;
        if let Some(f) = self.next_raw() {
            return Polled::Frame(f);
        }
        if ended {
            return self.end();
        }
        if !self.wake || !self.stats.arm_consumer() {
            return Polled::Empty;
        }
        // The second look, after arming (ring::wakeup: this is what makes a frame
        // published meanwhile either seen here or signalled on the fd).
        let ended = self.stats.state_code() == 3;
        match self.next_raw() {
            Some(f) => {
                self.stats.disarm_consumer();
                Polled::Frame(f)
            }
            None if ended => {
                self.stats.disarm_consumer();
                self.end()
            }
            None => Polled::Empty,
        }
    }

    fn end(&mut self) -> Polled {
        if self.wake && !self.ended {
            self.ended = true;
            self.stats.wakeup_forever();
        }
        Polled::Ended
    }

    /// The next frame, waiting up to `timeout` (backoff: spin, yield, 50 µs sleeps).
    /// Returns early with `None` once the pipeline is disconnected and drained.
    pub fn next_frame_timeout(&mut self, timeout: Duration) -> Option<Frame<'_>> {
        let deadline = Instant::now() + timeout;
        let mut w = runner::Wait::new(WaitKind::Backoff);
        loop {
            if let Polled::Frame(raw) = self.poll_raw() {
                return Some(Frame {
                    rx: &mut self.reader,
                    raw,
                });
            }
            let now = Instant::now();
            if now >= deadline || (self.stats.state_code() == 3 && self.reader.backlog() == 0) {
                return None;
            }
            if self.wake {
                // Armed by the empty poll above: sleep instead of backing off.
                self.sleep_on_event_fd(deadline - now);
            } else {
                w.idle();
            }
        }
    }

    /// Frames skipped because the transport overwrote them (overwrite policy).
    pub fn skipped(&self) -> u64 {
        self.reader.skipped()
    }

    /// The next frame as positions (also the C API's `pl_poll`).
    pub(crate) fn next_raw(&mut self) -> Option<RawFrame> {
        let r = self.reader.take();
        if let Some(f) = &r {
            crate::latency::Timestamps::set_current(f.ts);
            self.taken += 1;
            if self.taken & 63 == 0 {
                self.stats.set(Counter::PolledFrames, self.taken);
            }
        }
        r
    }

    pub(crate) fn reader(&mut self) -> &mut FrameReader {
        &mut self.reader
    }
}

/// Sends on a pipeline, from any thread: `Clone` it for each one. No lock: senders
/// reserve their record in MSG_OUTBOX with one CAS and publish in order (see
/// `ring::OutboxSender`), so threads never wait on each other beyond a copy.
#[derive(Clone)]
pub struct Sender {
    out: OutboxSender,
    stats: StatsRegion,
    max: usize,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("max", &self.max).finish()
    }
}

impl Sender {
    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.max {
            return Err(Error::Config(format!(
                "message of {len} bytes exceeds the MSG_OUTBOX record limit {}",
                self.max
            )));
        }
        Ok(())
    }

    fn push(&self, kind: OutboxKind, piece: Piece, payload: &[u8]) -> Result<()> {
        match self.stats.state() {
            State::Disconnected { reason } => return Err(Error::Closed(reason.message)),
            State::Closing if kind != OutboxKind::Close => {
                return Err(Error::Closed("close in progress".into()))
            }
            _ => {}
        }
        self.check_len(payload.len())?;
        self.out.push(kind, piece, payload)
    }

    /// Queue a text message. `Err(WouldBlock)` when MSG_OUTBOX is full.
    pub fn send_text(&self, text: &str) -> Result<()> {
        self.push(OutboxKind::Text, Piece::Whole, text.as_bytes())
    }

    /// Queue a binary message. `Err(WouldBlock)` when MSG_OUTBOX is full.
    pub fn send_binary(&self, data: &[u8]) -> Result<()> {
        self.push(OutboxKind::Binary, Piece::Whole, data)
    }

    /// Queue one fragment of a message sent in pieces: the first with `binary` saying
    /// its kind, the same kind for the rest, `is_final` on the last. The server sees
    /// one message (a text message's UTF-8 may be split anywhere across fragments).
    /// PINGs and a close may go in between; another message may not, from any sender
    /// (`Err(Config)` until the last fragment is queued). `Err(WouldBlock)` when
    /// MSG_OUTBOX is full: queue the same fragment again.
    pub fn send_fragment(&self, binary: bool, data: &[u8], is_final: bool) -> Result<()> {
        let kind = if binary { OutboxKind::Binary } else { OutboxKind::Text };
        let piece = if is_final { Piece::Last } else { Piece::More };
        self.push(kind, piece, data)
    }

    /// Queue a PING (payload <= 125 bytes).
    pub fn ping(&self, data: &[u8]) -> Result<()> {
        if data.len() > 125 {
            return Err(Error::Config("PING payload longer than 125 bytes".into()));
        }
        self.push(OutboxKind::Ping, Piece::Whole, data)
    }

    /// Start the close handshake with `code` (1000 normal) and a short reason.
    /// The state goes Closing at once, then Disconnected when the server answers, or
    /// after `Config::close_timeout` if it does not (the reason then says so).
    pub fn close(&self, code: u16, reason: &str) -> Result<()> {
        // The same rule the parser applies to the server's codes (RFC 6455 §7.4):
        // 1004-1006, 1015 and the unassigned 1016-2999 may not be sent.
        if !crate::ws::frame::is_valid_close_code(code) {
            return Err(Error::Config(format!("close code {code} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)")));
        }
        if reason.len() > 123 {
            return Err(Error::Config("close reason longer than 123 bytes".into()));
        }
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        // Before the record: whatever ends the connection from now on does not reconnect.
        self.stats.set(Counter::UserClose, 1);
        self.push(OutboxKind::Close, Piece::Whole, &p)?;
        // Closing from now, not from when the transport gets to the record: its
        // close timeout then also covers a transport stuck behind earlier frames.
        self.stats.advance_state(&State::Closing);
        Ok(())
    }
}

/// A snapshot of the stats counters.
#[derive(Clone, Debug)]
pub struct Stats {
    pub values: [u64; COUNTERS],
}

impl Stats {
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }
    /// `(name, value)` of every counter.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL
            .iter()
            .map(move |c| (c.name(), self.values[*c as usize]))
    }
}

/// One connection: its shared memory, its stages and where they run.
pub struct Pipeline {
    name: String,
    stats: StatsRegion,
    inbox: MsgInbox,
    sender: Sender,
    receiver: Option<Receiver>,
    callback: bool,
    // Behind locks so that `stop` and `on_state_change` take `&self`: the C API hands
    // one handle to many threads (sends, state, stats run concurrently with them), and
    // no call may turn that shared handle into a `&mut Pipeline`.
    running: Mutex<Option<Running>>,
    layout: Layout,
    wait: WaitKind,
    local: Option<std::net::SocketAddrV4>,
    /// The state-change watcher: its stop flag and thread.
    watcher: Mutex<Option<Watcher>>,
    /// The last completed upgrade (see [`Pipeline::upgrade`]).
    upgrade: Arc<Mutex<Option<Upgrade>>>,
    /// Until the first `on_state_change`: the moment `start` returned (Connected, no
    /// reconnect yet), so the first callback also hears what happened in between.
    watch_from_start: AtomicBool,
    /// `reconnects` and `generation` when `start` returned: the first connect's retries
    /// (reconnect on) were reported to `start`'s caller, the watcher starts after them.
    start_counts: (u64, u64),
    // Last: removed when the pipeline goes.
    dir: Mutex<Option<ShmDir>>,
}

type Watcher = (Arc<AtomicBool>, std::thread::JoinHandle<()>);

/// Lock, ignoring poisoning: the guarded values (join handles, the shm directory) stay
/// consistent even if a holder panicked, and stop must still work after a panic.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("layout", &self.layout)
            .field("wait", &self.wait)
            .finish()
    }
}

/// The callback `start_inner` installs.
enum Callback {
    Plain(OnMessage),
    WithSender(Box<dyn FnOnce(Sender) -> OnMessageFallible + Send>),
}

impl Pipeline {
    /// Start with polling delivery ([`Pipeline::receiver`] / [`Pipeline::next_frame`]).
    /// Returns once the WebSocket is open, or fails with the reason.
    ///
    /// With reconnect on (`cfg.reconnect`), a first connect that fails (refused, name
    /// not resolved, TLS, upgrade) is retried with the policy's backoff until
    /// `cfg.timeout`; each failed attempt is a line on stderr (unless `quiet`). Without
    /// reconnect the first failure is the error.
    pub fn start(cfg: Config) -> Result<Pipeline> {
        Self::start_inner(cfg, None, &mut |_, _| {})
    }

    /// [`Pipeline::start`], and `on_attempt` hears every failed first-connect attempt
    /// (reconnect on) as `State::Reconnecting { attempt, cause }` with the attempt's
    /// error, on this thread, before `start` returns.
    pub fn start_reporting(cfg: Config, on_attempt: OnAttempt<'_>) -> Result<Pipeline> {
        Self::start_inner(cfg, None, on_attempt)
    }

    /// Start with callback delivery: `cb(payload, opcode, fin)` runs on the AppClient
    /// stage (its thread, its process, or the inline loop) with the payload in place.
    pub fn start_with_callback(cfg: Config, cb: OnMessage) -> Result<Pipeline> {
        Self::start_inner(cfg, Some(Callback::Plain(cb)), &mut |_, _| {})
    }

    /// Start with a callback that can send and fail: `make` gets this pipeline's
    /// [`Sender`] (valid in every layout) before any frame arrives and returns the
    /// callback; an `Err(reason)` from it ends the connection with
    /// [`DisconnectKind::CallbackError`]. In every layout the callback runs in this
    /// process (in `processes`, on a thread of it), where the caller's state lives.
    pub fn start_with_sender_callback(
        cfg: Config,
        make: Box<dyn FnOnce(Sender) -> OnMessageFallible + Send>,
    ) -> Result<Pipeline> {
        Self::start_inner(cfg, Some(Callback::WithSender(make)), &mut |_, _| {})
    }

    fn start_inner(cfg: Config, cb: Option<Callback>, on_attempt: OnAttempt<'_>) -> Result<Pipeline> {
        let url = Url::parse(&cfg.url)?;
        let name = match &cfg.name {
            Some(n) => n.clone(),
            None => format!(
                "{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        };
        // The WebSocket stage parses in place: a whole frame (Frames delivery) or message
        // (Messages), headers included, must fit in MSG_INBOX or it could never complete.
        let room = cfg.inbox_size.saturating_sub(crate::ws::frame::MAX_HEADER_LEN);
        if cfg.max_message == 0 || cfg.max_message > room {
            return Err(Error::Config(format!(
                "max_message {} must be between 1 and {room}: the MSG_INBOX of {} bytes must also hold the frame header ({} bytes); \
                 a larger inbox_size (2 * max_message or more) leaves room for fragment headers and control frames",
                cfg.max_message,
                cfg.inbox_size,
                crate::ws::frame::MAX_HEADER_LEN
            )));
        }
        if let Some(s) = &cfg.server_stamp {
            s.check()?;
        }
        // Every core must fit a cpu_set_t: checked here, before anything connects or
        // forks (a child must not find out after the fork).
        for &c in &cfg.cores {
            runner::cpu_set_for(c)?;
        }
        // Placement, decided before anything connects: the stages are known from the
        // config (xdp?, transport, websocket, app?); spinning loops that outnumber
        // their cores are refused here (runner::check_spin_fit).
        let mut stage_names: Vec<&str> = Vec::new();
        if matches!(cfg.transport, TransportKind::Xdp) {
            stage_names.push("xdp");
        }
        stage_names.extend(["transport", "websocket"]);
        if cb.is_some() {
            stage_names.push("app");
        }
        let nstages = stage_names.len() + 1; // as before: the stages + the AppClient's thread (a stage, the caller's polling thread, or another process)
        let allowed = runner::allowed_cores();
        let cores = runner::usable_cores(&cfg.cores, &allowed);
        let (dl, dw) = runner::choose_defaults(nstages, cores);
        let layout = cfg.layout.unwrap_or(dl);
        let mut wait = cfg.wait.unwrap_or(dw);
        let mut spin_note = "";
        if cfg.wait.is_none() && runner::check_spin_fit(layout, wait, &stage_names, &cfg.cores, &allowed).is_err() {
            // A chosen (not asked for) spin that would not fit: back off instead.
            wait = WaitKind::Backoff;
            spin_note = " (not spin: the stages would outnumber their cores)";
        }
        runner::check_spin_fit(layout, wait, &stage_names, &cfg.cores, &allowed)?;
        if cfg.insecure {
            eprintln!("pipeline {name}: WARNING: certificate and host name verification are OFF (--insecure)");
        }
        let seed = crate::stage::now_ns() ^ (std::process::id() as u64) << 32;
        let quiet = cfg.quiet;
        let said = name.clone();
        let mut report = |s: &State, why: &str| {
            if !quiet {
                if let State::Reconnecting { attempt, .. } = s {
                    eprintln!("pipeline {said}: first connect, attempt {attempt} failed ({why}); retrying with the reconnect backoff");
                }
            }
            on_attempt(s, why);
        };
        let mut first = first_connect::FirstConnect::new(&cfg, seed, &mut report)?;
        let dir = ShmDir::create(&name)?;
        let stats = StatsRegion::create(&dir)?;
        let inbox = MsgInbox::create(&dir, cfg.inbox_size, cfg.overrun)?;
        let outbox = MsgOutbox::create(&dir, cfg.outbox_size)?;
        let (pongs_tx, pongs_rx) = ElemRing::<PongFrame>::create(&dir, names::PONGS, 256)?.split();
        let (frames_tx, frames_rx) =
            ElemRing::<WsFrameInfo>::create(&dir, names::WS_FRAME_INFO, cfg.frame_ring)?.split();
        if !cfg.external_consumer {
            // The reader is in this process: an outside plc_open is refused, naming it.
            #[cfg(not(pipeline_loom))]
            frames_rx.ring().claim_reader(std::process::id());
        }

        // permessage-deflate offered: the transport writes WIRE_INBOX, and the WebSocket
        // stage inflates (or copies) each message into MSG_INBOX (docs/architecture.md).
        let wire = match cfg.deflate {
            None => None,
            Some(d) => {
                d.validate()?;
                Some(MsgInbox::create_named(
                    &dir,
                    names::WIRE_INBOX,
                    cfg.inbox_size,
                    crate::ring::OverrunPolicy::Backpressure,
                )?)
            }
        };
        let tx_inbox = wire.as_ref().unwrap_or(&inbox);
        let handshake = ClientHandshake::new(
            &url,
            &HandshakeConfig {
                protocols: cfg.subprotocols.clone(),
                headers: cfg.headers.clone(),
                deflate: cfg.deflate,
                ..Default::default()
            },
        )?;
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        let mut local = None;
        let upgrade = Arc::new(Mutex::new(None));
        // Monomorphised per transport: no dynamic dispatch on the hot path.
        let ts = |t: &mut Vec<Box<dyn Stage>>, stage: Box<dyn Stage>| t.push(stage);
        let feed = (cfg.reconnect.enabled || !cfg.subscriptions.is_empty() || cfg.liveness.is_some())
            .then(|| crate::stage::FeedOptions {
                reconnect: cfg.reconnect,
                subscriptions: cfg.subscriptions.clone(),
                liveness: cfg.liveness,
                seed,
                url: url.clone(),
                // Every reconnect offers permessage-deflate again (and may get other
                // parameters, or a decline: the stages take each connection's own).
                handshake: HandshakeConfig {
                    protocols: cfg.subprotocols.clone(),
                    headers: cfg.headers.clone(),
                    deflate: cfg.deflate,
                    ..Default::default()
                },
            });
        macro_rules! transport_stage {
            ($t:expr) => {{
                let t = TransportStage::new(
                    $t,
                    handshake.clone(),
                    tx_inbox.writer(),
                    outbox.reader(),
                    pongs_rx,
                    stats.clone(),
                    outbox.max_payload(),
                    cfg.close_timeout,
                )?
                .with_upgrade_record(upgrade.clone());
                Box::new(match feed.clone() {
                    Some(f) => t.with_feed(f)?,
                    None => t,
                })
            }};
        }
        match &cfg.transport {
            TransportKind::Synthetic(script) => ts(
                &mut stages,
                transport_stage!(SyntheticTransport::new(script.clone())),
            ),
            TransportKind::Kernel if url.secure => ts(
                &mut stages,
                transport_stage!(first.run(|left| TlsTransport::connect(
                    &url.host,
                    url.port,
                    cfg.ca_file.clone(),
                    cfg.insecure,
                    left.max(Duration::from_millis(1))
                ))?),
            ),
            TransportKind::Kernel => ts(
                &mut stages,
                transport_stage!(first.run(|left| StreamTransport::connect(
                    &url.host,
                    url.port,
                    left.max(Duration::from_millis(1))
                ))?),
            ),
            TransportKind::Xdp => {
                let (xdp, t) = xdp_setup(&cfg, &url, &name, &dir, &stats)?;
                local = Some(t.local());
                ts(&mut stages, Box::new(xdp));
                ts(&mut stages, transport_stage!(t));
            }
        }
        stages.push(Box::new(WebSocketStage::with_wire(
            inbox.clone(),
            wire.clone(),
            frames_tx,
            pongs_tx,
            stats.clone(),
            cfg.delivery,
            cfg.max_message,
        )));
        let callback = cb.is_some();
        let outbox_max = outbox.max_payload();
        let sender = Sender { out: outbox.sender(), stats: stats.clone(), max: outbox_max };
        let mut receiver = None;
        if let Some(cb) = cb {
            let mut reader = FrameReader::new(frames_rx, inbox.clone());
            reader.record_latency(stats.clone());
            if let Some(s) = &cfg.server_stamp {
                reader.record_server_stamp(s);
            }
            let handler = match cb {
                Callback::Plain(f) => crate::stage::Handler::Plain(f),
                Callback::WithSender(make) => crate::stage::Handler::Fallible(make(sender.clone())),
            };
            stages.push(Box::new(AppClientStage::new(reader, handler, stats.clone())));
        } else if !cfg.external_consumer {
            let mut reader = FrameReader::new(frames_rx, inbox.clone());
            reader.record_latency(stats.clone());
            if let Some(s) = &cfg.server_stamp {
                reader.record_server_stamp(s);
            }
            // Before the stages are placed: forked stage processes inherit it.
            stats.set_wakeup(crate::ring::wakeup::EventFd::new()?);
            receiver = Some(Receiver {
                reader,
                stats: stats.clone(),
                taken: 0,
                wake: false,
                ended: false,
            });
        }
        debug_assert_eq!(stages.len(), stage_names.len(), "the placement check counted other stages");
        stats.set(Counter::Layout, layout as u64);
        stats.set(Counter::Wait, wait as u64);
        stats.set(Counter::Stages, stages.len() as u64);
        if !cfg.quiet {
            eprintln!(
                "pipeline {name}: layout {}, wait {}{spin_note} ({} stage(s){}, {cores} core(s){}; transport {})",
                layout.name(),
                wait.name(),
                stages.len(),
                if callback {
                    ""
                } else if cfg.external_consumer {
                    " + an external consumer"
                } else {
                    " + your polling thread"
                },
                match (cfg.layout.is_some(), cfg.wait.is_some()) {
                    (true, true) => ", as configured",
                    (false, false) => ", chosen from the core count",
                    _ => ", partly chosen from the core count",
                },
                cfg.transport.name()
            );
        }

        // Set-up: the same stages, inline on this thread, until the WebSocket is open.
        let left = first.remaining();
        let setup = runner::run_setup(&mut stages, &stats, left, &mut |st| first.watch(st));
        setup.map_err(|e| first.setup_error(e))?;
        drop(first);

        let placement = Placement {
            layout,
            wait,
            cores: cfg.cores.clone(),
            name: name.clone(),
        };
        // Before the stages run on their own: a loss after this is the watcher's to report.
        let start_counts = (stats.get(Counter::Reconnects), stats.get(Counter::Generation));
        let running = runner::place(stages, &placement, &stats)?;
        Ok(Pipeline {
            name,
            stats,
            inbox,
            sender,
            receiver,
            callback,
            running: Mutex::new(Some(running)),
            watcher: Mutex::new(None),
            upgrade,
            watch_from_start: AtomicBool::new(true),
            start_counts,
            layout,
            wait,
            local,
            dir: Mutex::new(Some(dir)),
        })
    }

    /// The WebSocket upgrade as it went over the wire: the request sent, the server's
    /// response header, the subprotocol it chose (`pipeline connect -v` prints them).
    /// The first connection's always (set-up runs in this process); a reconnect's too
    /// where the transport stage runs in this process (`inline`, `threads`).
    pub fn upgrade(&self) -> Option<Upgrade> {
        locked(&self.upgrade).clone()
    }

    /// The shared-memory name (`/dev/shm/pipeline_<name>/`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Our address and port on the AF_XDP transport (`None` on the others).
    pub fn local_addr(&self) -> Option<std::net::SocketAddrV4> {
        self.local
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn wait_kind(&self) -> WaitKind {
        self.wait
    }

    /// The connection state (Disconnected carries the reason).
    pub fn state(&self) -> State {
        self.stats.state()
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> Stats {
        let mut values = [0u64; COUNTERS];
        for c in Counter::ALL {
            values[*c as usize] = self.stats.get(*c);
        }
        Stats { values }
    }

    pub fn stats_region(&self) -> &StatsRegion {
        &self.stats
    }

    /// MSG_INBOX (for checking where payloads live).
    pub fn inbox(&self) -> &MsgInbox {
        &self.inbox
    }

    /// A sender for other threads: cheap to clone, no lock (see [`Sender`]).
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Is `len` within the MSG_OUTBOX record limit? (The C API asks before it looks at
    /// the caller's bytes, so a huge `len` is refused without being read.)
    pub(crate) fn check_send_len(&self, len: usize) -> Result<()> {
        self.sender.check_len(len)
    }

    /// Queue a text message. `Err(WouldBlock)` when MSG_OUTBOX is full.
    pub fn send_text(&self, text: &str) -> Result<()> {
        self.sender.send_text(text)
    }

    /// Queue a binary message. `Err(WouldBlock)` when MSG_OUTBOX is full.
    pub fn send_binary(&self, data: &[u8]) -> Result<()> {
        self.sender.send_binary(data)
    }

    /// Queue one fragment of a message sent in pieces (see [`Sender::send_fragment`]).
    pub fn send_fragment(&self, binary: bool, data: &[u8], is_final: bool) -> Result<()> {
        self.sender.send_fragment(binary, data, is_final)
    }

    /// Queue a PING (payload <= 125 bytes).
    pub fn ping(&self, data: &[u8]) -> Result<()> {
        self.sender.ping(data)
    }

    /// Start the close handshake (see [`Sender::close`]).
    pub fn close(&self, code: u16, reason: &str) -> Result<()> {
        self.sender.close(code, reason)
    }

    /// Wait until the state is Disconnected (true) or `timeout` passes (false).
    pub fn wait_disconnected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stats.state_code() == 3 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stats.state_code() == 3
    }

    /// Call `cb` on every later state change (Closing, Disconnected with its reason;
    /// with reconnect on, `Reconnecting { attempt, cause }` after a loss and Connected
    /// again once the new connection is up and resubscribed),
    /// from a watcher thread that looks at the shared state once per millisecond — off
    /// the data path, so it costs the stages nothing. `start` returning is the
    /// Connected event; the first callback installed also hears the changes since then
    /// (a reconnect can happen before it is installed), a replacement only later ones.
    /// Several reconnects between two looks are replayed as events in order, one
    /// Reconnecting per attempt and one Connected per new connection. The last call is
    /// for Disconnected; replacing the callback stops the previous watcher. May be called
    /// from any thread, and from the callback itself.
    pub fn on_state_change(&self, mut cb: Box<dyn FnMut(&State) + Send>) {
        // Never join while holding the lock: the old watcher's callback may itself be
        // calling on_state_change or stop.
        let old = locked(&self.watcher).take();
        Self::stop_watcher(old);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = self.stats.clone();
        let flag = stop.clone();
        // The first callback starts from `start`'s return (Connected, generation 0): a
        // reconnect right after start is then not lost to the race with installing it.
        let (mut last, mut last_reconnects, mut last_generation, mut last_was_reconnecting) =
            if self.watch_from_start.swap(false, Ordering::AcqRel) {
                (State::Connected.code(), self.start_counts.0, self.start_counts.1, false)
            } else {
                (
                    stats.state_code(),
                    stats.get(Counter::Reconnects),
                    stats.get(Counter::Generation),
                    matches!(stats.state(), State::Reconnecting { .. }),
                )
            };
        let handle = std::thread::spawn(move || loop {
            // Read the flag first: a stop publishes Disconnected before raising it, so
            // the state read below always includes the final change.
            let stopping = flag.load(Ordering::Acquire);
            let code = stats.state_code();
            let reconnects = stats.get(Counter::Reconnects);
            let generation = stats.get(Counter::Generation);
            // `reconnects` counts a loss just before the state moves: a look in
            // between (still Connected or Closing, same generation) would report a Connected that
            // never happened. Look again next round.
            // Likewise the generation moves when the new connection's upgrade is done,
            // before its subscriptions go out and the state becomes Connected: a look
            // in between (same reconnects, still code 0) would report a Connected and
            // then the same Reconnecting again.
            let unmoved = !stopping
                && ((reconnects != last_reconnects
                    && generation == last_generation
                    && (code == State::Connected.code() || code == State::Closing.code()))
                    || (reconnects == last_reconnects && generation != last_generation && code == 0));
            if unmoved {
            } else if reconnects != last_reconnects || generation != last_generation {
                // Attempts scheduled (`reconnects`) and new connections (`generation`)
                // since the last look, replayed in a valid order: every attempt is one
                // Reconnecting, every new connection one Connected after an attempt (the
                // first may follow the Reconnecting reported last time); attempts that
                // failed come first; if we are reconnecting now, the last event is that.
                let st = stats.state();
                let dr = reconnects.saturating_sub(last_reconnects);
                let dg = generation.saturating_sub(last_generation);
                let now_reconnecting = matches!(st, State::Reconnecting { .. });
                let end_r = (now_reconnecting && dr > 0) as u64;
                let need = dg.saturating_sub((last_was_reconnecting && dg > 0) as u64);
                let mut for_conns = need.min(dr - end_r);
                let extra = dr - end_r - for_conns;
                let attempt_now = stats.get(Counter::ReconnectAttempt).max(1);
                let cause = stats.state_from_cause();
                let mut left = dr;
                let mut attempt = || {
                    left = left.saturating_sub(1);
                    State::Reconnecting { attempt: attempt_now.saturating_sub(left).max(1) as u32, cause: cause.clone() }
                };
                for _ in 0..extra {
                    cb(&attempt());
                }
                for i in 0..dg {
                    if (i > 0 || !last_was_reconnecting) && for_conns > 0 {
                        for_conns -= 1;
                        cb(&attempt());
                    }
                    cb(&State::Connected);
                }
                if end_r == 1 {
                    cb(&st);
                } else if !now_reconnecting && !matches!(st, State::Connected) {
                    cb(&st); // Closing or Disconnected after the last connection
                }
                last_was_reconnecting = now_reconnecting;
                last_reconnects = reconnects;
                last_generation = generation;
                last = st.code();
            } else if code != last {
                let st = stats.state();
                // A reconnect that began between the reads above and this one is the
                // counter branch's to report (next round), with its events in order;
                // reporting `st` here too would repeat it.
                if stats.get(Counter::Reconnects) == last_reconnects
                    && stats.get(Counter::Generation) == last_generation
                {
                    last = st.code();
                    last_was_reconnecting = matches!(st, State::Reconnecting { .. });
                    cb(&st);
                }
            }
            if code == 3 || stopping {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        });
        let prev = locked(&self.watcher).replace((stop, handle));
        // A concurrent call installed one meanwhile: the last one wins.
        Self::stop_watcher(prev);
    }

    fn stop_watcher(w: Option<Watcher>) {
        if let Some((stop, handle)) = w {
            stop.store(true, Ordering::Release);
            // Called from the watcher's own callback (replacing or stopping from inside
            // it): joining itself would fail; the raised flag ends it after the call.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    /// The polling receiver (once; `None` with callback delivery or if taken).
    pub fn receiver(&mut self) -> Option<Receiver> {
        self.receiver.take()
    }

    /// Polling delivery on the pipeline itself: the next frame, if ready.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        self.receiver.as_mut()?.next_frame()
    }

    /// The polling receiver's event fd ([`Receiver::event_fd`]); `None` with callback
    /// delivery, an external consumer, or the receiver taken (ask it instead).
    pub fn event_fd(&mut self) -> Option<std::os::fd::RawFd> {
        self.receiver.as_mut()?.event_fd()
    }

    /// Why there is no polling receiver to take (callback delivery, an external
    /// consumer, or already taken), for error messages.
    pub(crate) fn no_receiver_reason(&self) -> &'static str {
        if self.callback {
            "this pipeline delivers by callback; polling is not available"
        } else {
            "no polling receiver (external consumer, or taken with receiver())"
        }
    }

    /// Stop every stage, wait for them, and remove the shared memory. Idempotent; a
    /// second concurrent call waits for the first. Not from inside a stage (an
    /// `on_message` callback): it joins the stage threads.
    /// (A close handshake first is [`Pipeline::close`] + [`Pipeline::wait_disconnected`].)
    pub fn stop(&self) {
        {
            let mut running = locked(&self.running);
            if let Some(mut r) = running.take() {
                self.stats.advance_state(&State::Disconnected {
                    reason: DisconnectReason::new(DisconnectKind::Stopped, "stopped by the application"),
                });
                r.stop(&self.stats);
            }
        }
        // After the Disconnected state is published, so the watcher reports it.
        let w = locked(&self.watcher).take();
        Self::stop_watcher(w);
        locked(&self.dir).take();
    }

    /// Stage process ids in the `processes` layout (stage order: transport, websocket,
    /// app), empty otherwise.
    pub fn child_pids(&self) -> Vec<i32> {
        locked(&self.running)
            .as_ref()
            .map(|r| r.child_pids())
            .unwrap_or_default()
    }

    /// Have all stages ended (after a disconnect)?
    pub fn finished(&self) -> bool {
        locked(&self.running).as_ref().map(|r| r.finished()).unwrap_or(true)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Our userspace TCP over AF_XDP as a [`ByteTransport`]: `TlsStream<XdpTcpTransport>`
//! gives TLS over it with no other change.
//!
//! ```text
//! rx ring ─► rx_burst ─► [FaultHook] ─► tcp::Connection::on_frame ─► RxBuf (fixed) ─► recv_into
//! send ─► TxBuf (fixed, seq-indexed) ─► send_data into MSG frames ─► flush_tx (one kick)
//!            └─ Retransmit{seq,len}: copy from TxBuf into a fresh MSG frame, refresh_data_frame
//! poll_transmit Control ─► ACK-pool frame ─► flush_tx
//! ```
//!
//! Everything that moves packets is in [`XdpTcpTransport::poll`] (one bounded step: reap
//! completions, one RX burst, timers, TX, one flush, refill). The `ByteTransport` methods
//! only call `poll` and copy bytes in and out of the two fixed buffers, so splitting into
//! an XDP-poll stage and a transport stage over RAW_INBOX/RAW_OUTBOX rings is mechanical
//! (see `docs/xdp-transport.md`).
//!
//! Set-up ([`XdpTcpTransport::connect`]): interface from the config or the route to the
//! server; local IPv4 from the interface; next hop from the routing table; its MAC from
//! the neighbour table, else by making the kernel resolve it (a UDP datagram to the next
//! hop's discard port from a kernel socket, then polling the neighbour table, with
//! doubling waits, 5 tries); local port held by a [`PortReservation`]; MSS from the
//! interface MTU capped by `config::PATH_MTU`; the XDP socket opened with our flow
//! filter set to (server ip, server port, local port); then the TCP handshake.

use super::ByteTransport;
use crate::config;
use crate::error::{Error, Result};
use crate::tcp::{CloseReason, Connection, Event, RxVerdict, State, TcpConfig, TcpStats, Transmit};
use crate::wire::MacAddr;
use crate::xdp::{
    addr, AttachRequest, Flow, PortReservation, RxDesc, TxKind, XdpConfig, XdpSocket, XdpStats,
    ZeroCopy, BATCH,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

pub use crate::xdp::{FaultConfig, FaultStats};

/// Set-up of an [`XdpTcpTransport`].
#[derive(Clone, Debug)]
pub struct XdpTcpConfig {
    pub server: SocketAddrV4,
    /// Interface to use; `None` = the interface of the route to the server.
    pub ifname: Option<String>,
    /// Local port; 0 = any free port (reserved with a kernel socket either way).
    pub local_port: u16,
    pub queue_id: u32,
    pub attach: AttachRequest,
    pub zero_copy: ZeroCopy,
    /// TCP handshake timeout (the SYN is retransmitted inside it).
    pub connect_timeout: Duration,
    /// Neighbour resolution: tries, first wait (doubles each try).
    pub arp_tries: u32,
    pub arp_first_wait: Duration,
    /// Receive buffer (bytes, allocated once); the advertised window is its free space.
    pub rx_buffer: usize,
    /// Send buffer (bytes, allocated once): unacknowledged + not yet sent data.
    pub tx_buffer: usize,
    /// Injected RX loss in our XDP program (percent, 0 = off).
    pub rx_loss_percent: u32,
    pub fault: FaultConfig,
    /// Adjust the TCP knobs after the defaults are filled in (e.g. a lower RTO floor).
    pub tcp_tweak: Option<fn(&mut TcpConfig)>,
}

impl XdpTcpConfig {
    pub fn new(server: SocketAddrV4) -> Self {
        XdpTcpConfig {
            server,
            ifname: None,
            local_port: 0,
            queue_id: 0,
            attach: AttachRequest::Auto,
            zero_copy: ZeroCopy::Auto,
            connect_timeout: Duration::from_secs(10),
            arp_tries: 5,
            arp_first_wait: Duration::from_millis(50),
            rx_buffer: 4 << 20,
            tx_buffer: 256 << 10,
            rx_loss_percent: 0,
            fault: FaultConfig::default(),
            tcp_tweak: None,
        }
    }
}

/// Transport-level counters (the TCP and XDP layers keep their own).
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpTransportStats {
    pub polls: u64,
    pub rx_frames: u64,
    pub rx_not_ours: u64,
    pub rx_malformed: u64,
    /// Bytes TCP delivered that did not fit the receive buffer (must stay 0).
    pub rx_overflow: u64,
    pub ack_pool_empty: u64,
    pub msg_pool_empty: u64,
    pub tx_send_errors: u64,
    pub retransmits_sent: u64,
    /// Handshakes restarted because the next hop's MAC changed (stale neighbour entry).
    pub neighbor_refreshes: u64,
}

/// A fixed-capacity byte ring.
struct ByteRing {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

impl ByteRing {
    fn new(cap: usize) -> Self {
        ByteRing {
            buf: vec![0u8; cap.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }
    fn cap(&self) -> usize {
        self.buf.len()
    }
    fn free(&self) -> usize {
        self.cap() - self.len
    }
    /// Append as much of `data` as fits; returns bytes taken.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let cap = self.cap();
        let tail = (self.head + self.len) % cap;
        let first = n.min(cap - tail);
        self.buf[tail..tail + first].copy_from_slice(&data[..first]);
        self.buf[..n - first].copy_from_slice(&data[first..n]);
        self.len += n;
        n
    }
    /// Copy `out.len()` bytes starting `off` bytes after the head.
    fn peek_at(&self, off: usize, out: &mut [u8]) {
        let cap = self.cap();
        let start = (self.head + off) % cap;
        let first = out.len().min(cap - start);
        out[..first].copy_from_slice(&self.buf[start..start + first]);
        let rest = out.len() - first;
        out[first..].copy_from_slice(&self.buf[..rest]);
    }
    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = (self.head + n) % self.cap();
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
    }
    fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        self.peek_at(0, &mut out[..n]);
        self.consume(n);
        n
    }
}

const HOOK_SLOTS: usize = 64;
const HOOK_SLOT_BYTES: usize = 2048;

struct Held {
    len: usize,
    /// Deliver after this many more frames have been processed...
    after_frames: u64,
    /// ...or at this time (µs).
    at_us: u64,
    busy: bool,
}

struct FaultHook {
    cfg: FaultConfig,
    rng: u64,
    slots: Vec<Held>,
    data: Box<[u8]>,
    processed: u64,
    stats: FaultStats,
}

impl FaultHook {
    fn new(cfg: FaultConfig) -> Self {
        FaultHook {
            rng: cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
            cfg,
            slots: (0..HOOK_SLOTS)
                .map(|_| Held {
                    len: 0,
                    after_frames: 0,
                    at_us: 0,
                    busy: false,
                })
                .collect(),
            data: vec![0u8; HOOK_SLOTS * HOOK_SLOT_BYTES].into_boxed_slice(),
            processed: 0,
            stats: FaultStats::default(),
        }
    }
    fn roll(&mut self, permille: u32) -> bool {
        if permille == 0 {
            return false;
        }
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33;
        (r % 1000) < permille as u64
    }
    fn hold(&mut self, frame: &[u8], after_frames: u64, at_us: u64) -> bool {
        if frame.len() > HOOK_SLOT_BYTES {
            return false;
        }
        let Some(i) = self.slots.iter().position(|s| !s.busy) else {
            self.stats.slots_full += 1;
            return false;
        };
        self.data[i * HOOK_SLOT_BYTES..][..frame.len()].copy_from_slice(frame);
        self.slots[i] = Held {
            len: frame.len(),
            after_frames,
            at_us,
            busy: true,
        };
        true
    }
    fn next_release(&self) -> Option<u64> {
        self.slots.iter().filter(|s| s.busy).map(|s| s.at_us).min()
    }
}

/// The receive side's state, split from the socket so RX frames can be borrowed from
/// the socket while it is updated.
struct RxSide {
    conn: Connection,
    rxbuf: ByteRing,
    stats: XdpTransportStats,
}

impl RxSide {
    fn process(&mut self, now: u64, frame: &[u8]) {
        let RxSide { conn, rxbuf, stats } = self;
        stats.rx_frames += 1;
        let v = conn.on_frame(now, frame, |bytes| {
            let n = rxbuf.push(bytes);
            stats.rx_overflow += (bytes.len() - n) as u64;
        });
        match v {
            RxVerdict::Accepted => {}
            RxVerdict::NotOurs => stats.rx_not_ours += 1,
            RxVerdict::Malformed(_) => stats.rx_malformed += 1,
        }
    }
}

/// TCP over AF_XDP: see the module docs.
pub struct XdpTcpTransport {
    // Drop order: the socket (program detached) before the port reservation.
    xsk: XdpSocket,
    rx: RxSide,
    txbuf: ByteRing,
    /// Sequence number of `txbuf`'s first byte (= SND.UNA once established).
    tx_base_seq: u32,
    hook: Option<FaultHook>,
    descs: Box<[RxDesc; BATCH]>,
    scratch: Box<[u8]>,
    epoch: Instant,
    peer_fin: bool,
    closed_reported: bool,
    server: SocketAddrV4,
    local: SocketAddrV4,
    ifname: String,
    next_hop: Ipv4Addr,
    next_hop_mac: MacAddr,
    _port: PortReservation,
}

impl std::fmt::Debug for XdpTcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpTcpTransport")
            .field("local", &self.local)
            .field("server", &self.server)
            .field("ifname", &self.ifname)
            .field("state", &self.rx.conn.state())
            .finish()
    }
}

/// Resolve `ip`'s MAC on `ifname`: the neighbour table, else make the kernel ARP for it
/// (a UDP datagram to port 9 of `ip`) and poll the table, waiting `first`, then twice
/// as long each try.
pub fn resolve_neighbor(
    ip: Ipv4Addr,
    ifname: &str,
    tries: u32,
    first: Duration,
) -> Result<MacAddr> {
    if let Some(m) = addr::neighbor_mac(ip, ifname)? {
        return Ok(MacAddr(m));
    }
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .map_err(|e| Error::io("UDP socket for ARP resolution", e))?;
    let mut wait = first;
    for _ in 0..tries.max(1) {
        // An ICMP port-unreachable may come back as an error on a later send: ignore.
        let _ = sock.send_to(b"libpipeline arp", SocketAddrV4::new(ip, 9));
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(m) = addr::neighbor_mac(ip, ifname)? {
                return Ok(MacAddr(m));
            }
            std::thread::sleep(Duration::from_millis(2).min(wait));
        }
        wait *= 2;
    }
    Err(Error::Net(format!(
        "no ARP reply from {ip} on {ifname} after {} tries",
        tries.max(1)
    )))
}

/// Ask the kernel to (re)validate `ip`'s neighbour entry (a UDP datagram to it), wait
/// briefly, and read the table again.
fn refresh_neighbor(ip: Ipv4Addr, ifname: &str) -> Result<MacAddr> {
    if let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") {
        let _ = sock.send_to(b"libpipeline arp", SocketAddrV4::new(ip, 9));
    }
    std::thread::sleep(Duration::from_millis(20));
    match addr::neighbor_mac(ip, ifname)? {
        Some(m) => Ok(MacAddr(m)),
        None => resolve_neighbor(ip, ifname, 3, Duration::from_millis(20)),
    }
}

impl XdpTcpTransport {
    /// Set up and connect (blocking up to `cfg.connect_timeout` for the handshake).
    pub fn connect(cfg: &XdpTcpConfig) -> Result<XdpTcpTransport> {
        let server = cfg.server;
        let route = addr::route_to(*server.ip())?;
        let ifname = cfg.ifname.clone().unwrap_or_else(|| route.ifname.clone());
        let next_hop = if route.ifname == ifname {
            route.next_hop(*server.ip())
        } else {
            *server.ip()
        };
        let local_ip = addr::ipv4_of(&ifname)?;
        let local_mac = MacAddr(addr::mac_of(&ifname)?);
        let mtu = addr::mtu_of(&ifname)? as usize;
        let mss = (mtu.min(config::PATH_MTU) - config::IPV4_HDR_LEN - config::TCP_HDR_LEN)
            .min(u16::MAX as usize) as u16;
        let next_hop_mac = resolve_neighbor(next_hop, &ifname, cfg.arp_tries, cfg.arp_first_wait)?;
        let port = PortReservation::new(local_ip, cfg.local_port)?;
        let local = port.addr();

        let mut xc = XdpConfig::new(&ifname);
        xc.queue = Some(cfg.queue_id);
        xc.attach = cfg.attach;
        xc.zero_copy = cfg.zero_copy;
        let mut xsk = XdpSocket::open(&xc)?;
        let flow = Flow {
            server_ip: *server.ip(),
            server_port: server.port(),
            local_ip,
            local_port: local.port(),
        };
        xsk.add_flow(flow)?;
        if cfg.rx_loss_percent > 0 {
            xsk.set_rx_loss_percent(&flow, cfg.rx_loss_percent)?;
        }

        let mut tc = TcpConfig::new(local_mac, next_hop_mac, local, server);
        tc.mss = mss;
        tc.rcv_buf_max = cfg.rx_buffer.min(1 << 30) as u32;
        tc.max_in_flight_segments = config::MSG_FRAMES;
        if let Some(f) = cfg.tcp_tweak {
            f(&mut tc);
        }
        let tc_keep = tc.clone();
        let mut conn = Connection::new(tc)?;
        let rxbuf = ByteRing::new(cfg.rx_buffer);
        conn.set_rx_space(rxbuf.free());
        let epoch = Instant::now();
        conn.connect(0)?;
        let tx_base_seq = conn.snd_nxt();
        let mut t = XdpTcpTransport {
            xsk,
            rx: RxSide {
                conn,
                rxbuf,
                stats: XdpTransportStats::default(),
            },
            txbuf: ByteRing::new(cfg.tx_buffer),
            tx_base_seq,
            hook: if cfg.fault.is_active() {
                Some(FaultHook::new(cfg.fault.clone()))
            } else {
                None
            },
            descs: Box::new([RxDesc::default(); BATCH]),
            scratch: vec![0u8; HOOK_SLOT_BYTES].into_boxed_slice(),
            epoch,
            peer_fin: false,
            closed_reported: false,
            server,
            local,
            ifname,
            next_hop,
            next_hop_mac,
            _port: port,
        };
        let deadline = Instant::now() + cfg.connect_timeout;
        let mut refreshed_at = 0;
        loop {
            let now = t.now_us();
            t.poll(now);
            // No SYN-ACK after 2 more SYNs: the next hop's MAC may be stale. Nudge the
            // kernel's resolver, re-read the neighbour table, and restart the handshake
            // if the MAC changed.
            let syn_rtx = t.rx.conn.stats().syn_retransmits;
            if t.rx.conn.state() == State::SynSent && syn_rtx >= refreshed_at + 2 {
                refreshed_at = syn_rtx;
                if let Ok(mac) = refresh_neighbor(t.next_hop, &t.ifname) {
                    if mac != t.next_hop_mac {
                        t.rx.stats.neighbor_refreshes += 1;
                        t.next_hop_mac = mac;
                        let mut tc = tc_keep.clone();
                        tc.remote_mac = mac;
                        let mut conn = Connection::new(tc)?;
                        conn.set_rx_space(t.rx.rxbuf.free());
                        conn.connect(t.now_us())?;
                        t.rx.conn = conn;
                        t.tx_base_seq = t.rx.conn.snd_nxt();
                        refreshed_at = 0;
                        continue;
                    }
                }
            }
            if t.rx.conn.is_established() {
                // SYN consumed one sequence number: data starts at SND.NXT.
                t.tx_base_seq = t.rx.conn.snd_nxt();
                return Ok(t);
            }
            if let Some(r) = t.rx.conn.close_reason() {
                return Err(Error::Net(r.to_string()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                t.rx.conn.abort(t.now_us());
                t.poll(t.now_us());
                return Err(Error::Net(format!(
                    "connection timed out (no SYN-ACK from {server} within {:?}, {} SYNs sent, via {} next hop {} {})",
                    cfg.connect_timeout,
                    t.rx.conn.stats().syn_retransmits + 1,
                    t.ifname,
                    t.next_hop,
                    t.next_hop_mac
                )));
            }
            t.sleep_until_work(left.min(Duration::from_millis(100)));
        }
    }

    /// Microseconds since this transport was created (the TCP clock).
    #[inline]
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// One bounded step: reap TX completions, one RX burst through the fault hook into
    /// TCP, timers, control and data segments out, one TX flush, RX refill. Returns
    /// whether anything moved. This is the function an XDP-poll + transport stage pair
    /// would split (see docs/xdp-transport.md).
    pub fn poll(&mut self, now: u64) -> bool {
        self.rx.stats.polls += 1;
        let mut progress = self.xsk.reap_completions() > 0;

        // RX: one burst.
        let k = self.xsk.rx_burst(&mut self.descs[..]);
        for i in 0..k {
            let d = self.descs[i];
            let frame = self.xsk.rx_frame(&d);
            match self.hook.as_mut() {
                None => self.rx.process(now, frame),
                Some(h) => {
                    h.stats.frames_seen += 1;
                    let depth = h.cfg.reorder_depth.max(1) as u64;
                    let dup = h.roll(h.cfg.duplicate_permille);
                    if h.roll(h.cfg.reorder_permille) {
                        let at = now + h.cfg.reorder_max_hold_us.max(1);
                        if h.hold(frame, h.processed + depth, at) {
                            h.stats.reordered += 1;
                        } else {
                            self.rx.process(now, frame);
                            h.processed += 1;
                        }
                    } else if h.roll(h.cfg.delay_permille) {
                        if h.hold(frame, u64::MAX, now + h.cfg.delay_us) {
                            h.stats.delayed += 1;
                        } else {
                            self.rx.process(now, frame);
                            h.processed += 1;
                        }
                    } else {
                        self.rx.process(now, frame);
                        h.processed += 1;
                        if dup {
                            h.stats.duplicated += 1;
                            self.rx.process(now, frame);
                        }
                    }
                }
            }
            let _ = self.xsk.release_rx(d.addr);
        }
        if k > 0 {
            progress = true;
        }
        if let Some(h) = self.hook.as_mut() {
            // Release held frames that are due (by frame count or time).
            loop {
                let due = h
                    .slots
                    .iter()
                    .position(|s| s.busy && (h.processed >= s.after_frames || now >= s.at_us));
                let Some(i) = due else { break };
                let len = h.slots[i].len;
                self.scratch[..len].copy_from_slice(&h.data[i * HOOK_SLOT_BYTES..][..len]);
                h.slots[i].busy = false;
                h.processed += 1;
                self.rx.process(now, &self.scratch[..len]);
                progress = true;
            }
        }

        self.rx.conn.set_rx_space(self.rx.rxbuf.free());
        if self.pump_tx(now) {
            progress = true;
        }
        while let Some(ev) = self.rx.conn.poll_event() {
            if ev == Event::PeerFin {
                self.peer_fin = true;
            }
            if let Event::Closed(_) = ev {
                self.peer_fin = true;
            }
        }
        self.xsk.flush_tx();
        self.xsk.refill();
        progress
    }

    /// Segments out: control (ACK pool), retransmits (copied from the send buffer into a
    /// fresh MSG frame), new data (MSG pool). Returns whether anything was queued.
    fn pump_tx(&mut self, now: u64) -> bool {
        let mut any = false;
        let conn = &mut self.rx.conn;
        let stats = &mut self.rx.stats;
        while let Some(t) = conn.poll_transmit(now) {
            any = true;
            match t {
                Transmit::Control(seg) => {
                    let a = match self.xsk.alloc_tx(TxKind::Ack) {
                        Some(a) => a,
                        None => {
                            // Frames may be done but not reaped yet: push the ring, reap, retry.
                            self.xsk.flush_tx();
                            self.xsk.reap_completions();
                            match self.xsk.alloc_tx(TxKind::Ack) {
                                Some(a) => a,
                                None => {
                                    stats.ack_pool_empty += 1;
                                    continue;
                                }
                            }
                        }
                    };
                    let Some(buf) = self.xsk.tx_buffer(a) else {
                        continue;
                    };
                    match conn.emit_control(&seg, buf) {
                        Ok(n) => {
                            if self.xsk.send(a, n).is_err() {
                                stats.tx_send_errors += 1;
                            }
                        }
                        Err(_) => {
                            let _ = self.xsk.free_tx(a);
                            stats.tx_send_errors += 1;
                        }
                    }
                }
                Transmit::Retransmit { seq, len, .. } => {
                    let off = seq.wrapping_sub(self.tx_base_seq) as usize;
                    if off + len as usize > self.txbuf.len {
                        // Already acknowledged (or FIN only): nothing to resend.
                        continue;
                    }
                    let Some(a) = self.xsk.alloc_tx(TxKind::Msg) else {
                        stats.msg_pool_empty += 1;
                        continue;
                    };
                    let po = conn.payload_offset();
                    let Some(buf) = self.xsk.tx_buffer(a) else {
                        continue;
                    };
                    self.txbuf.peek_at(off, &mut buf[po..po + len as usize]);
                    match conn.refresh_data_frame(buf, seq, len) {
                        Ok(n) => {
                            stats.retransmits_sent += 1;
                            if self.xsk.send(a, n).is_err() {
                                stats.tx_send_errors += 1;
                            }
                        }
                        Err(_) => {
                            let _ = self.xsk.free_tx(a);
                            stats.tx_send_errors += 1;
                        }
                    }
                }
            }
        }
        // Acknowledged data leaves the send buffer.
        while conn.pop_acked().is_some() {}
        if conn.is_established()
            || matches!(
                conn.state(),
                State::CloseWait | State::FinWait1 | State::FinWait2
            )
        {
            let acked = conn.snd_una().wrapping_sub(self.tx_base_seq) as usize;
            let acked = acked.min(self.txbuf.len);
            if acked > 0 {
                self.txbuf.consume(acked);
                self.tx_base_seq = self.tx_base_seq.wrapping_add(acked as u32);
            }
        }
        // New data: what is in the send buffer past SND.NXT, within the peer's window.
        let po = conn.payload_offset();
        let mss = conn.max_segment_payload();
        loop {
            let sent = conn.snd_nxt().wrapping_sub(self.tx_base_seq) as usize;
            if sent >= self.txbuf.len {
                break;
            }
            let n = (self.txbuf.len - sent).min(mss).min(conn.send_capacity());
            if n == 0 {
                break;
            }
            let Some(a) = self.xsk.alloc_tx(TxKind::Msg) else {
                stats.msg_pool_empty += 1;
                break;
            };
            let Some(buf) = self.xsk.tx_buffer(a) else {
                break;
            };
            self.txbuf.peek_at(sent, &mut buf[po..po + n]);
            match conn.send_data(now, buf, n, 0) {
                Ok(len) => {
                    any = true;
                    if self.xsk.send(a, len).is_err() {
                        stats.tx_send_errors += 1;
                    }
                }
                Err(_) => {
                    let _ = self.xsk.free_tx(a);
                    break;
                }
            }
        }
        any
    }

    /// Sleep in poll(2) on the socket until a frame arrives, the next TCP/fault-hook
    /// deadline, or `max` (never busy-spins; 1 ms granularity).
    pub fn sleep_until_work(&mut self, max: Duration) {
        let now = self.now_us();
        let mut until = max.as_micros() as u64;
        if let Some(d) = self.rx.conn.next_deadline() {
            until = until.min(d.saturating_sub(now));
        }
        if let Some(d) = self.hook.as_ref().and_then(|h| h.next_release()) {
            until = until.min(d.saturating_sub(now));
        }
        if self.xsk.tx_pending() > 0 || self.xsk.ledger().in_flight() > 0 {
            // Copy-mode TX needs more kicks / completions: come back soon.
            until = until.min(200);
        }
        if until == 0 {
            return;
        }
        // ppoll(2) with µs precision (the ACK timer is 100 µs; poll(2)'s 1 ms would
        // hold every delayed ACK ten times too long).
        let mut pfd = libc::pollfd {
            fd: self.xsk.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: (until / 1_000_000) as libc::time_t,
            tv_nsec: ((until % 1_000_000) * 1000) as libc::c_long,
        };
        // SAFETY: one valid pollfd and a valid timespec; no signal mask change.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    }

    fn closed_error(&self) -> Error {
        match self.rx.conn.close_reason() {
            Some(r) => r.to_error(),
            None => Error::Closed(format!(
                "connection closed by peer {} (FIN received)",
                self.server
            )),
        }
    }

    // ------------------------------------------------------------------ accessors

    pub fn tcp_stats(&self) -> TcpStats {
        *self.rx.conn.stats()
    }
    pub fn xdp_stats(&self) -> XdpStats {
        self.xsk.stats()
    }
    pub fn stats(&self) -> XdpTransportStats {
        self.rx.stats
    }
    pub fn fault_stats(&self) -> FaultStats {
        self.hook.as_ref().map(|h| h.stats).unwrap_or_default()
    }
    pub fn socket(&self) -> &XdpSocket {
        &self.xsk
    }
    pub fn connection(&self) -> &Connection {
        &self.rx.conn
    }
    pub fn state(&self) -> State {
        self.rx.conn.state()
    }
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.rx.conn.close_reason()
    }
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }
    pub fn server_addr(&self) -> SocketAddrV4 {
        self.server
    }
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    /// The next hop and the MAC we resolved for it.
    pub fn next_hop(&self) -> (Ipv4Addr, MacAddr) {
        (self.next_hop, self.next_hop_mac)
    }
    /// Bytes received and not yet read.
    pub fn rx_buffered(&self) -> usize {
        self.rx.rxbuf.len
    }
    /// Bytes in the send buffer (unacknowledged or unsent).
    pub fn tx_buffered(&self) -> usize {
        self.txbuf.len
    }
    /// Abort with a RST at once.
    pub fn abort(&mut self) {
        let now = self.now_us();
        self.rx.conn.abort(now);
        self.poll(now);
    }
}

impl ByteTransport for XdpTcpTransport {
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        // Always one step: RX keeps flowing (and ACKs go out) while the reader drains.
        let now = self.now_us();
        self.poll(now);
        if self.rx.rxbuf.len > 0 {
            let n = self.rx.rxbuf.pop(buf);
            // Reopen the window (a window update goes out at once if it was nearly shut).
            self.rx.conn.set_rx_space(self.rx.rxbuf.free());
            let now = self.now_us();
            if self.pump_tx(now) {
                self.xsk.flush_tx();
            }
            return Ok(n);
        }
        if self.peer_fin || self.rx.conn.is_closed() {
            self.closed_reported = true;
            return Err(self.closed_error());
        }
        Err(Error::WouldBlock)
    }

    fn send(&mut self, data: &[u8]) -> Result<usize> {
        if let Some(r) = self.rx.conn.close_reason() {
            return Err(r.to_error());
        }
        if !matches!(self.rx.conn.state(), State::Established | State::CloseWait) {
            return Err(Error::Closed(format!(
                "connection to {} is closing",
                self.server
            )));
        }
        let n = self.txbuf.push(data);
        let now = self.now_us();
        self.poll(now);
        if n == 0 {
            return Err(Error::WouldBlock);
        }
        Ok(n)
    }

    fn close(&mut self) {
        if self.rx.conn.is_closed() {
            return;
        }
        let now = self.now_us();
        self.rx.conn.close(now);
        // Linger briefly for the FIN exchange, then abort.
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.rx.conn.is_closed() && Instant::now() < deadline {
            let now = self.now_us();
            self.poll(now);
            if self.rx.conn.is_closed() {
                break;
            }
            self.sleep_until_work(Duration::from_millis(5));
        }
        if !self.rx.conn.is_closed() {
            self.abort();
        }
        // Let the last segments leave the TX ring.
        for _ in 0..4 {
            self.xsk.flush_tx();
            self.xsk.reap_completions();
        }
    }

    fn is_open(&self) -> bool {
        !self.rx.conn.is_closed() && !self.peer_fin
    }

    fn wait(&mut self, _writable: bool, timeout: Duration) -> Result<()> {
        let now = self.now_us();
        if self.poll(now) || self.rx.rxbuf.len > 0 || self.rx.conn.is_closed() || self.peer_fin {
            return Ok(());
        }
        self.sleep_until_work(timeout);
        let now = self.now_us();
        self.poll(now);
        Ok(())
    }
}

impl Drop for XdpTcpTransport {
    fn drop(&mut self) {
        if !self.rx.conn.is_closed() {
            self.abort();
            for _ in 0..4 {
                self.xsk.flush_tx();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ring_wraps() {
        let mut r = ByteRing::new(8);
        assert_eq!(r.push(b"abcdef"), 6);
        let mut o = [0u8; 4];
        assert_eq!(r.pop(&mut o), 4);
        assert_eq!(&o, b"abcd");
        assert_eq!(r.push(b"ghijklmn"), 6); // only 6 free
        let mut p = [0u8; 3];
        r.peek_at(2, &mut p);
        assert_eq!(&p, b"ghi");
        let mut all = [0u8; 8];
        assert_eq!(r.pop(&mut all), 8);
        assert_eq!(&all, b"efghijkl");
        assert_eq!(r.free(), 8);
    }

    #[test]
    fn fault_hook_is_deterministic() {
        let cfg = FaultConfig {
            seed: 5,
            reorder_permille: 100,
            duplicate_permille: 50,
            ..Default::default()
        };
        let mut a = FaultHook::new(cfg.clone());
        let mut b = FaultHook::new(cfg);
        let ra: Vec<bool> = (0..1000).map(|_| a.roll(100)).collect();
        let rb: Vec<bool> = (0..1000).map(|_| b.roll(100)).collect();
        assert_eq!(ra, rb);
        let hits = ra.iter().filter(|x| **x).count();
        assert!((60..=140).contains(&hits), "{hits}");
    }
}

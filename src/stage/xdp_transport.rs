//! The XDP transport: our TCP ([`crate::tcp::Connection`]) and TLS
//! ([`crate::tls::TlsSession`], sans-IO) over the rings of the [`super::XdpPollStage`].
//!
//! RX: RAW_INBOX descriptors -> `Connection::on_frame` on the UMEM frame in place ->
//! in-order bytes fed to TLS -> `read` decrypts into MSG_INBOX. Consuming a descriptor
//! is what lets the XDP stage give the RX frame back to the fill ring.
//! TX: ciphertext is taken straight into a MSG-pool UMEM frame at the TCP payload
//! offset; `send_data` writes the headers around it; the descriptor goes on RAW_OUTBOX.
//! Control segments (SYN, ACK, FIN) use ACK-pool frames and ACK_OUTBOX.
//!
//! MSG frames and retransmission: a data frame stays ours until TCP reports it
//! acknowledged (`pop_acked`), because a retransmission re-sends the same frame. The
//! XDP stage hands a frame back on `tx_free_msg` once its transmission completed; for a
//! frame still held for retransmission that is the completion notice (it may now be
//! refreshed and re-sent), for an acknowledged one it means "free".

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::transport::{Transport, TransportCounters};
use super::xdp_poll::{Registration, TransportPort};
use crate::config::{MSG_BASE, MSG_FRAMES};
use crate::error::{Error, Result};
use crate::ring::{Consumer, FrameType, Producer, UmemFrameDescriptor};
use crate::tcp::{Connection, Event, TcpConfig, Transmit};
use crate::tls::{HandshakeStatus, TlsContext, TlsSession};
use crate::xdp::umem::frame_index;
use crate::xdp::{Flow, PortReservation, UmemView, TX_CAPACITY};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Msg {
    /// Not ours (in the XDP stage's pool or on the free ring).
    Away,
    /// Ours, unused.
    Free,
    /// Sent; `completed`: its transmission finished (may be re-sent); `acked`: TCP is done.
    Sent { completed: bool, acked: bool },
}

/// Plaintext waiting for window beyond this many ciphertext bytes makes `write` refuse.
const TX_HIGH_WATER: usize = 1 << 20;
/// RX descriptors per drive.
const RX_BATCH: usize = 64;
/// Free data frames kept at hand; more go back to the engine (a zero-length descriptor
/// on RAW_OUTBOX), so frames one connection no longer needs serve the others. Above the
/// engine's idle depth for data frames (32), so in steady state nothing goes back and
/// forth.
const LOCAL_CACHE: usize = 64;

/// TCP + TLS over AF_XDP rings.
pub struct XdpTransport {
    conn: Connection,
    tls: TlsSession,
    umem: UmemView,
    raw_inbox: Consumer<UmemFrameDescriptor>,
    raw_outbox: Producer<UmemFrameDescriptor>,
    ack_outbox: Producer<UmemFrameDescriptor>,
    free_ack: Consumer<u64>,
    free_msg: Consumer<u64>,
    msg: Vec<Msg>,
    local_free: Vec<u64>,
    blocked_rtx: Option<(u32, u32, u32)>,
    rx_space: usize,
    tls_done: bool,
    eof: Option<String>,
    /// The peer reset the established connection: reported by `read` once the bytes
    /// that came before it are read.
    reset: Option<String>,
    fatal: Option<Error>,
    now_us: u64,
    /// The newest RX descriptor's timestamp (low 48 bits of CLOCK_MONOTONIC ns, as the
    /// XDP stage stamped it); 0 before any.
    rx_stamp48: u64,
    ack_drops: u64,
    /// Where and how to connect again (None: this transport cannot reconnect).
    dial: Option<XdpDial>,
    /// A reconnect's TCP + TLS handshakes must be done by then (µs).
    connect_deadline_us: Option<u64>,
    /// Counters of the earlier connections (a reconnect starts a new `Connection`).
    base: TransportCounters,
    /// `conn`'s counters are in `base` already (it was aborted for a reconnect).
    conn_counted: bool,
    _port: PortReservation,
    // Last: leaves the engine (giving back every frame held) after everything above is
    // gone; it also keeps the engine, and so the UMEM mapping, alive until then.
    _reg: Registration,
}

impl XdpTransport {
    /// `conn` must be `connect`ed already (its SYN queued).
    pub fn new(conn: Connection, tls: TlsSession, rings: TransportPort, port: PortReservation, reg: Registration) -> Self {
        XdpTransport {
            conn,
            tls,
            umem: reg.engine().umem_view(),
            raw_inbox: rings.raw_inbox,
            raw_outbox: rings.raw_outbox,
            ack_outbox: rings.ack_outbox,
            free_ack: rings.free_ack,
            free_msg: rings.free_msg,
            msg: vec![Msg::Away; MSG_FRAMES],
            local_free: Vec::with_capacity(MSG_FRAMES),
            blocked_rtx: None,
            rx_space: 1 << 20,
            tls_done: false,
            eof: None,
            reset: None,
            fatal: None,
            now_us: 0,
            rx_stamp48: 0,
            ack_drops: 0,
            dial: None,
            connect_deadline_us: None,
            base: TransportCounters::default(),
            conn_counted: false,
            _port: port,
            _reg: reg,
        }
    }

    pub fn local(&self) -> SocketAddrV4 {
        self._port.addr()
    }

    fn slot(addr: u64) -> usize {
        frame_index(addr) - MSG_BASE
    }

    fn reap_free(&mut self) -> bool {
        let mut moved = false;
        while let Some(a) = self.free_msg.pop() {
            moved = true;
            let i = Self::slot(a);
            match self.msg[i] {
                Msg::Sent { acked: false, .. } => {
                    self.msg[i] = Msg::Sent {
                        completed: true,
                        acked: false,
                    }
                }
                _ => {
                    self.msg[i] = Msg::Free;
                    self.local_free.push(a);
                }
            }
        }
        while let Some(h) = self.conn.pop_acked() {
            moved = true;
            let i = h as usize;
            if i >= self.msg.len() {
                continue;
            }
            match self.msg[i] {
                Msg::Sent {
                    completed: true, ..
                } => {
                    self.msg[i] = Msg::Free;
                    self.local_free
                        .push(crate::xdp::umem::frame_addr(MSG_BASE + i));
                }
                Msg::Sent {
                    completed: false, ..
                } => {
                    self.msg[i] = Msg::Sent {
                        completed: false,
                        acked: true,
                    }
                }
                _ => {}
            }
        }
        // Surplus back to the engine (its fair share shrinks as connections join).
        while self.local_free.len() > LOCAL_CACHE && self.raw_outbox.free() > 0 {
            let Some(a) = self.local_free.pop() else { break };
            self.msg[Self::slot(a)] = Msg::Away;
            Self::push(&mut self.raw_outbox, a, 0, FrameType::Msg);
        }
        moved
    }

    fn push(q: &mut Producer<UmemFrameDescriptor>, addr: u64, len: usize, t: FrameType) -> bool {
        let mut d = UmemFrameDescriptor {
            umem_addr: addr,
            frame_len: len as u16,
            ..Default::default()
        };
        d.set_meta(0, 0, t);
        q.push(d).is_ok()
    }

    /// Ciphertext -> MSG frames -> RAW_OUTBOX, as far as window and frames allow.
    fn flush_ciphertext(&mut self) -> Result<bool> {
        let mut moved = false;
        while self.tls.pending_ciphertext() > 0
            && self.conn.send_capacity() > 0
            && self.raw_outbox.free() > 0
        {
            let Some(addr) = self.local_free.pop() else {
                break;
            };
            let off = self.conn.payload_offset();
            let max = self
                .conn
                .max_segment_payload()
                .min(self.conn.send_capacity())
                .min(TX_CAPACITY - off);
            let n = {
                // SAFETY: `addr` is a TX frame this transport holds (see `tx_frame`).
                let f = unsafe { tx_frame(self.umem, addr) };
                self.tls.take_ciphertext(&mut f[off..off + max])
            };
            if n == 0 {
                self.local_free.push(addr);
                break;
            }
            let h = Self::slot(addr) as u32;
            let len = {
                // SAFETY: `addr` is a TX frame this transport holds (see `tx_frame`).
                let f = unsafe { tx_frame(self.umem, addr) };
                self.conn.send_data(self.now_us, f, n, h)?
            };
            self.msg[h as usize] = Msg::Sent {
                completed: false,
                acked: false,
            };
            Self::push(&mut self.raw_outbox, addr, len, FrameType::Msg);
            moved = true;
        }
        Ok(moved)
    }

    fn retransmit(&mut self, handle: u32, seq: u32, len: u32) -> Result<bool> {
        let i = handle as usize;
        match self.msg.get(i) {
            Some(Msg::Sent {
                completed: true, ..
            }) => {}
            Some(Msg::Sent {
                completed: false, ..
            }) => return Ok(false), // wait for its completion
            _ => return Ok(true), // gone: nothing to do
        }
        let addr = crate::xdp::umem::frame_addr(MSG_BASE + i);
        let n = {
            // SAFETY: `addr` is a TX frame this transport holds (see `tx_frame`).
                let f = unsafe { tx_frame(self.umem, addr) };
            self.conn.refresh_data_frame(f, seq, len)?
        };
        self.msg[i] = Msg::Sent {
            completed: false,
            acked: false,
        };
        Self::push(&mut self.raw_outbox, addr, n, FrameType::Msg);
        Ok(true)
    }

    fn transmit(&mut self) -> Result<bool> {
        let mut moved = false;
        if let Some((h, s, l)) = self.blocked_rtx {
            if !self.retransmit(h, s, l)? {
                return Ok(false);
            }
            self.blocked_rtx = None;
            moved = true;
        }
        while let Some(t) = self.conn.poll_transmit(self.now_us) {
            match t {
                Transmit::Control(seg) => {
                    let Some(addr) = self.free_ack.pop() else {
                        if seg.flags == crate::wire::tcp::flags::ACK {
                            // Out of ACK frames (a burst of duplicate ACKs during loss
                            // recovery, completions not back yet): keep the ACK owed
                            // and stop until frames return; TCP sends one up-to-date
                            // ACK then. Dropping them cost the sender its fast
                            // retransmits (3 % loss: 40,952 ACKs lost in 100,000 msgs).
                            self.conn.defer_ack(&seg);
                            break;
                        }
                        self.ack_drops += 1; // TCP repeats SYN, FIN and RST by its timers
                        moved = true;
                        continue;
                    };
                    moved = true;
                    let n = {
                        // SAFETY: `addr` is a TX frame this transport holds (see `tx_frame`).
                        let f = unsafe { tx_frame(self.umem, addr) };
                        self.conn.emit_control(&seg, f)?
                    };
                    Self::push(&mut self.ack_outbox, addr, n, FrameType::Ack);
                }
                Transmit::Retransmit { handle, seq, len } => {
                    moved = true;
                    if !self.retransmit(handle, seq, len)? {
                        self.blocked_rtx = Some((handle, seq, len));
                        break;
                    }
                }
            }
        }
        Ok(moved)
    }

    fn rx(&mut self) -> bool {
        let n = self.raw_inbox.available().min(RX_BATCH);
        for i in 0..n {
            let Some(d) = self.raw_inbox.get(i).copied() else {
                break;
            };
            self.rx_stamp48 = d.timestamp_ns();
            // SAFETY: the frame is ours until we release its descriptor below; the XDP
            // stage returns it to the fill ring only after that.
            let frame = unsafe { self.umem.slice(d.umem_addr, d.frame_len as usize) };
            let tls = &mut self.tls;
            let fatal = &mut self.fatal;
            self.conn.on_frame(self.now_us, frame, |bytes| {
                if let Err(e) = tls.feed_ciphertext(bytes) {
                    fatal.get_or_insert(e);
                }
            });
        }
        if n > 0 {
            self.raw_inbox.advance(n);
            self.raw_inbox.release();
        }
        n > 0
    }

    fn events(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Established => {}
                Event::PeerFin => {
                    self.eof
                        .get_or_insert_with(|| "the server closed the TCP connection".into());
                }
                Event::Closed(r @ crate::tcp::CloseReason::ResetByPeer { .. }) if self.tls_done => {
                    // Like a kernel socket: what arrived before the RST is read first.
                    self.reset.get_or_insert_with(|| r.to_string());
                }
                Event::Closed(r) => {
                    if r.is_error() {
                        self.fatal.get_or_insert(r.to_error());
                    } else {
                        self.eof.get_or_insert_with(|| r.to_string());
                    }
                }
            }
        }
    }
}

impl Transport for XdpTransport {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn drive(&mut self, now_ns: u64) -> Result<bool> {
        self.now_us = now_ns / 1000;
        self.check_connect_deadline()?;
        let mut moved = self.rx();
        moved |= self.reap_free();
        self.events();
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        if self.conn.is_established() && !self.tls_done {
            if self.tls.handshake()? == HandshakeStatus::Done {
                self.tls_done = true;
            }
            moved = true;
        }
        self.conn.set_rx_space(self.rx_space);
        moved |= self.flush_ciphertext()?;
        moved |= self.transmit()?;
        Ok(moved)
    }

    fn is_established(&self) -> bool {
        self.tls_done
    }

    fn rx_space(&mut self, free: usize) {
        self.rx_space = free;
    }

    fn read(&mut self, buf: &mut [u8], _now_ns: u64) -> Result<usize> {
        match self.tls.read_plaintext(buf) {
            Ok(0) if self.tls.buffered_ciphertext() == 0 && self.reset.is_some() => {
                Err(Error::Reset(self.reset.clone().unwrap_or_default()))
            }
            Ok(0) => match &self.eof {
                Some(why) if self.tls.buffered_ciphertext() == 0 => Err(Error::Closed(why.clone())),
                _ => Ok(0),
            },
            r => r,
        }
    }

    fn write(&mut self, data: &[u8], _now_ns: u64) -> Result<usize> {
        if !self.tls_done || self.tls.pending_ciphertext() > TX_HIGH_WATER {
            return Ok(0);
        }
        let n = self.tls.write_plaintext(data)?;
        self.flush_ciphertext()?;
        Ok(n)
    }

    /// The XDP stage's stamp of the newest frame taken (its poll took it off the RX
    /// ring then), rebuilt from 48 bits against the clock now (it is in the past).
    fn arrival_ns(&self) -> Option<u64> {
        if self.rx_stamp48 == 0 {
            return None;
        }
        let now = super::now_ns();
        let mask = (1u64 << 48) - 1;
        let mut t = (now & !mask) | self.rx_stamp48;
        if t > now {
            t = t.wrapping_sub(1 << 48);
        }
        Some(t)
    }

    fn shutdown(&mut self, _now_ns: u64) -> Result<()> {
        let _ = self.tls.close_notify();
        let _ = self.flush_ciphertext();
        self.conn.close(self.now_us);
        let _ = self.transmit();
        Ok(())
    }

    fn counters(&self) -> TransportCounters {
        let s = self.conn.stats();
        let b = self.base;
        if self.conn_counted {
            return b;
        }
        TransportCounters {
            rx_packets: b.rx_packets + s.segs_in,
            rx_bytes: b.rx_bytes + s.bytes_in,
            tx_packets: b.tx_packets + s.segs_out,
            tx_bytes: b.tx_bytes + s.bytes_out,
            retransmits: b.retransmits + s.retransmits,
            dup_acks: b.dup_acks + s.dup_acks_sent,
            drops: b.drops + s.malformed + s.ooo_segments_dropped + self.ack_drops,
        }
    }

    fn reconnect(&mut self, now_ns: u64) -> Result<()> {
        self.reconnect_now(now_ns)
    }

    fn resumed(&self) -> bool {
        self.tls.session_reused()
    }
}

// ------------------------------------------------------------------------- reconnect

/// What an [`XdpTransport`] needs to make its connection again.
#[derive(Clone)]
pub struct XdpDial {
    /// The URL's host (resolved again on every attempt) and port.
    pub host: String,
    pub port: u16,
    /// The context of the first session: its resumption slot holds the session the
    /// server gave us last, which the next handshake offers.
    pub ctx: TlsContext,
    /// The first connection's TCP knobs (MSS, RTO, tweaks); addresses are replaced.
    pub tcp: TcpConfig,
    /// `Config.xdp.rx_loss_percent` (a testing knob), applied to every new flow.
    pub rx_loss_percent: u32,
    /// The interface was chosen by the user (`Config.iface`), not by the route.
    pub iface_forced: bool,
    /// A reconnect's TCP + TLS handshakes (and the next hop's ARP) within this.
    pub timeout: Duration,
}

impl XdpTransport {
    /// Make this transport able to reconnect.
    pub fn with_dial(mut self, dial: XdpDial) -> Self {
        self.dial = Some(dial);
        self
    }

    /// A reconnect's handshakes not done within the dial's timeout: a set-up failure
    /// (the stage backs off and tries again). The SYN's own retransmit timer runs in
    /// `transmit` whatever the state, so a lost SYN is sent again well before this.
    fn check_connect_deadline(&mut self) -> Result<()> {
        match self.connect_deadline_us {
            Some(_) if self.tls_done => self.connect_deadline_us = None,
            Some(d) if self.now_us >= d => {
                self.connect_deadline_us = None;
                let t = self.dial.as_ref().map(|d| d.timeout).unwrap_or_default();
                return Err(Error::Timeout(format!(
                    "reconnect to {}: TCP and TLS handshakes not finished after {:.1} s",
                    self.conn.config().remote,
                    t.as_secs_f64()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// A new connection to the same server (`Transport::reconnect`): resolve the host
    /// again, a new local port, the connection's flow moved to the new 4-tuple in its
    /// engine, a new `tcp::Connection` (SYN queued; `drive` sends it and its
    /// retransmits) and a new TLS session from the same context (resumed when the server
    /// allows). Frames: RX descriptors of the old flow are passed; data frames the old
    /// connection held for retransmission become free; data frames still in flight
    /// become free when their completion comes (they stay this connection's).
    fn reconnect_now(&mut self, now_ns: u64) -> Result<()> {
        use crate::xdp::addr;
        self.now_us = now_ns / 1000;
        let Some(d) = self.dial.clone() else {
            return Err(Error::Config("this XDP transport was built without a dial: it cannot reconnect".into()));
        };
        // The old connection first: an RST if it is still synchronized (the server
        // frees its end; nothing answers on the old port afterwards), and what it still
        // has to hear from the engine (completions, acknowledgements).
        self.blocked_rtx = None;
        self.conn.abort(self.now_us);
        let _ = self.transmit();
        self.reap_free();
        if !self.conn_counted {
            self.base = self.counters();
            self.ack_drops = 0;
            self.conn_counted = true;
        }
        // Where to now.
        let server_ip = resolve_v4(&d.host, d.port)?;
        let ifname = self._reg.engine().ifname().to_string();
        let route = addr::route_to(server_ip)?;
        if !d.iface_forced && route.ifname != ifname {
            return Err(Error::Net(format!(
                "{} ({server_ip}) is now reached through {}, not {ifname}: this AF_XDP connection cannot follow",
                d.host, route.ifname
            )));
        }
        let local_ip = addr::ipv4_of(&ifname)?;
        let local_mac = addr::mac_of(&ifname)?;
        let hop_mac = crate::xdp::addr::next_hop_mac(route.next_hop(server_ip), &ifname, d.timeout)?;
        let port = PortReservation::new(local_ip, 0)?;
        let flow = Flow {
            server_ip,
            server_port: d.port,
            local_ip,
            local_port: port.port(),
        };
        let mut tcfg = d.tcp.clone();
        tcfg.local_mac = crate::wire::MacAddr(local_mac);
        tcfg.remote_mac = crate::wire::MacAddr(hop_mac);
        tcfg.local = port.addr();
        tcfg.remote = SocketAddrV4::new(server_ip, d.port);
        let mut conn = Connection::new(tcfg)?;
        let tls = d.ctx.client_session(&d.host)?;
        // The engine matches the new flow from now on; the old one matches nothing.
        self._reg.set_flow(flow, d.rx_loss_percent)?;
        self.pass_stale_rx();
        self.free_old_data_frames();
        conn.connect(self.now_us)?;
        self.conn = conn;
        self.tls = tls;
        self._port = port; // the old port's reservation goes now
        self.conn_counted = false;
        self.tls_done = false;
        self.eof = None;
        self.reset = None;
        self.fatal = None;
        self.connect_deadline_us = Some(self.now_us + d.timeout.as_micros() as u64);
        Ok(())
    }

    /// RX descriptors the old flow left on the RAW_INBOX: passed unread (the engine
    /// gives their frames back to a fill ring). Nothing of the new flow can be among
    /// them: its SYN has not gone out yet.
    fn pass_stale_rx(&mut self) {
        loop {
            let n = self.raw_inbox.available();
            if n == 0 {
                break;
            }
            self.raw_inbox.advance(n);
        }
        self.raw_inbox.release();
    }

    /// The old connection's data frames: held for retransmission (completed) -> free
    /// at once; in flight -> marked acknowledged, so their completion makes them free
    /// (`reap_free`); they stay this connection's either way (the engine returns
    /// completions to this slot).
    fn free_old_data_frames(&mut self) {
        for i in 0..self.msg.len() {
            match self.msg[i] {
                Msg::Sent { completed: true, .. } => {
                    self.msg[i] = Msg::Free;
                    self.local_free.push(crate::xdp::umem::frame_addr(MSG_BASE + i));
                }
                Msg::Sent { completed: false, .. } => {
                    self.msg[i] = Msg::Sent {
                        completed: false,
                        acked: true,
                    }
                }
                _ => {}
            }
        }
    }
}

/// The packet buffer of a TX frame this transport holds.
///
/// # Safety
/// `addr` must be the data address of a TX frame this transport holds (popped from a
/// free ring and not yet pushed, or handed back by a completion notice while held for
/// retransmission): nobody else touches it while the returned slice is used, and each
/// use must end before the frame is pushed. The engine (and so the UMEM mapping) is kept
/// alive by the transport's registration.
unsafe fn tx_frame<'a>(umem: UmemView, addr: u64) -> &'a mut [u8] {
    // SAFETY: per the contract above; TX_CAPACITY bytes from a data address stay inside
    // its frame.
    unsafe { std::slice::from_raw_parts_mut(umem.base().add(addr as usize), TX_CAPACITY) }
}

/// Resolve `host` to an IPv4 address.
pub fn resolve_v4(host: &str, port: u16) -> Result<Ipv4Addr> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Net(format!("resolve {host}: {e}")))?
        .find_map(|a| match a {
            std::net::SocketAddr::V4(v) => Some(*v.ip()),
            _ => None,
        })
        .ok_or_else(|| {
            Error::Net(format!(
                "{host} has no IPv4 address (the XDP transport is IPv4 only)"
            ))
        })
}

//! A deterministic simulation for testing [`Connection`] without sockets: a small
//! server-side TCP ([`SimPeer`]), a lossy link ([`Link`]) with seeded loss,
//! duplication, reordering and delay, and a [`Harness`] that runs both ends over
//! virtual time (µs). Test infrastructure: it allocates freely and is not used on any
//! production path. It drives the library's `pipeline::tcp::Connection` through its
//! public API only.

use pipeline::tcp::seq::{dist, gt, le, lt};
use pipeline::tcp::{Connection, Event, RxVerdict, TcpConfig, Transmit};
use pipeline::wire::{
    emit_tcp_frame, flags, parse_tcp_frame, MacAddr, TcpFrameRepr, TcpOptionsRepr, TcpRepr,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddrV4;

/// SplitMix64: tiny, seeded, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Fault model for one direction of the link.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    /// Probability a frame is held back by `reorder_delay_us` (others overtake it).
    pub reorder: f64,
    pub reorder_delay_us: u64,
    pub delay_us: u64,
    pub jitter_us: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay_us: 300,
            delay_us: 50,
            jitter_us: 0,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// One direction of a simulated wire.
pub struct Link {
    pub faults: Faults,
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    order: u64,
    pub stats: LinkStats,
    /// Drop the next `n` frames unconditionally (scripted loss).
    pub drop_next: u32,
}

impl Link {
    pub fn new(faults: Faults, seed: u64) -> Self {
        Link {
            faults,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            stats: LinkStats::default(),
            drop_next: 0,
        }
    }
    pub fn push(&mut self, now: u64, frame: &[u8]) {
        self.stats.sent += 1;
        if self.drop_next > 0 {
            self.drop_next -= 1;
            self.stats.dropped += 1;
            return;
        }
        if self.rng.chance(self.faults.loss) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + self.faults.delay_us + self.rng.below(self.faults.jitter_us + 1);
            if self.rng.chance(self.faults.reorder) {
                self.stats.reordered += 1;
                at += self.faults.reorder_delay_us;
            }
            self.order += 1;
            self.queue.push(Reverse((at, self.order, frame.to_vec())));
        }
    }
    pub fn next_time(&self) -> Option<u64> {
        self.queue.peek().map(|q| q.0 .0)
    }
    pub fn pop_due(&mut self, now: u64) -> Option<Vec<u8>> {
        if self.queue.peek()?.0 .0 <= now {
            self.queue.pop().map(|q| q.0 .2)
        } else {
            None
        }
    }
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

/// What the simulated server does with a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynBehaviour {
    Accept,
    Refuse,
    Ignore,
    IgnoreFirst(u32),
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub timestamps: bool,
    /// Receive buffer (bytes) -> the window it advertises.
    pub rcv_buf: u32,
    pub isn: u32,
    pub syn: SynBehaviour,
    pub rto_us: u64,
    /// Bytes the server streams to the client once established.
    pub send_bytes: usize,
    /// Application consumes received data at once (else it accumulates until `app_read`).
    pub app_reads: bool,
    /// Buffer and ACK out-of-order segments instead of dropping them.
    pub ooo_buffer: bool,
    /// Answer SACK-permitted (the peer checks received SACK blocks but does not use them).
    pub sack: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            mss: Some(1460),
            wscale: Some(7),
            timestamps: false,
            rcv_buf: 1 << 20,
            isn: 0x1000_0000,
            syn: SynBehaviour::Accept,
            rto_us: 20_000,
            send_bytes: 0,
            app_reads: true,
            ooo_buffer: false,
            sack: true,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PeerStats {
    pub segs_in: u64,
    pub bad_frames: u64,
    pub syns_seen: u64,
    pub data_segs_in: u64,
    pub dup_segs_in: u64,
    pub ooo_dropped: u64,
    /// Client data beyond the window the peer advertised: must stay 0.
    pub window_violations: u64,
    pub zero_window_probes_seen: u64,
    pub retransmits: u64,
    pub dup_acks_in: u64,
    pub rst_in: u64,
    pub fin_in: u64,
    pub segs_out: u64,
    pub max_client_flight: u64,
    pub sack_blocks_seen: u64,
    /// SACK blocks not inside the data sent beyond the cumulative ACK: must stay 0.
    pub sack_blocks_invalid: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Listen,
    SynRcvd,
    Established,
    Closed,
}

/// Byte `i` of the server -> client stream.
pub fn s2c_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8) ^ (i >> 17)) as u8
}
/// Byte `i` of the client -> server stream.
pub fn c2s_byte(i: u64) -> u8 {
    (i.wrapping_mul(17) ^ (i >> 9) ^ 0x5a) as u8
}

/// A small server-side TCP: accepts one connection, streams `send_bytes`, ACKs every
/// segment, go-back-N retransmission with fast retransmit, zero-window probing, and a
/// strict check that the client never sends beyond the advertised window.
pub struct SimPeer {
    pub cfg: PeerConfig,
    pub mac: MacAddr,
    pub addr: SocketAddrV4,
    pub client_mac: MacAddr,
    pub client: SocketAddrV4,
    pub state: PeerState,
    pub stats: PeerStats,
    syn_ignored: u32,
    // receive
    irs: u32,
    pub rcv_nxt: u32,
    adv_right: u32,
    my_scale: u8,
    pub received: Vec<u8>,
    unread: u32,
    ooo: Vec<(u32, Vec<u8>)>,
    // send
    iss: u32,
    pub snd_una: u32,
    snd_nxt: u32,
    snd_max: u32,
    snd_wnd: u32,
    client_scale: u8,
    client_mss: u16,
    ts: bool,
    ts_recent: u32,
    dupacks: u32,
    rto_deadline: Option<u64>,
    persist_deadline: Option<u64>,
    pub close_when_done: bool,
    fin_sent: bool,
    pub client_fin: bool,
    pub outbox: Vec<Vec<u8>>,
    ident: u16,
}

impl SimPeer {
    pub fn new(cfg: PeerConfig, addr: SocketAddrV4, client: SocketAddrV4) -> Self {
        SimPeer {
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            client_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            addr,
            client,
            state: PeerState::Listen,
            stats: PeerStats::default(),
            syn_ignored: 0,
            irs: 0,
            rcv_nxt: 0,
            adv_right: 0,
            my_scale: 0,
            received: Vec::new(),
            unread: 0,
            ooo: Vec::new(),
            iss: cfg.isn,
            snd_una: cfg.isn,
            snd_nxt: cfg.isn,
            snd_max: cfg.isn,
            snd_wnd: 0,
            client_scale: 0,
            client_mss: 536,
            ts: false,
            ts_recent: 0,
            dupacks: 0,
            rto_deadline: None,
            persist_deadline: None,
            close_when_done: false,
            fin_sent: false,
            client_fin: false,
            outbox: Vec::new(),
            ident: 0,
            cfg,
        }
    }

    /// Stream offset of the next byte the peer would send.
    fn data_off(&self, seq: u32) -> u64 {
        seq.wrapping_sub(self.iss.wrapping_add(1)) as u64
    }
    pub fn bytes_acked_by_client(&self) -> u64 {
        self.data_off(self.snd_una).min(self.cfg.send_bytes as u64)
    }
    pub fn isn(&self) -> u32 {
        self.iss
    }

    /// The application reads `n` buffered bytes (opens the window).
    pub fn app_read(&mut self, n: u32) {
        self.unread = self.unread.saturating_sub(n);
    }

    fn window(&mut self) -> u16 {
        let free = self.cfg.rcv_buf.saturating_sub(self.unread);
        let raw = (free >> self.my_scale).min(65535);
        let right = self.rcv_nxt.wrapping_add(raw << self.my_scale);
        if gt(right, self.adv_right) {
            self.adv_right = right;
        }
        raw as u16
    }

    /// Build a segment (also usable by tests to inject crafted segments).
    pub fn craft(&mut self, seq: u32, ack: u32, fl: u8, payload: &[u8], now: u64) -> Vec<u8> {
        let window = if fl & flags::SYN != 0 {
            self.cfg.rcv_buf.min(65535) as u16
        } else {
            self.window()
        };
        let mut options = TcpOptionsRepr::default();
        if self.ts {
            options.timestamps = Some(((now / 1000) as u32, self.ts_recent));
        }
        let repr = TcpFrameRepr {
            src_mac: self.mac,
            dst_mac: self.client_mac,
            src_ip: *self.addr.ip(),
            dst_ip: *self.client.ip(),
            ip_ident: self.ident,
            ttl: 64,
            tcp: TcpRepr {
                src_port: self.addr.port(),
                dst_port: self.client.port(),
                seq,
                ack,
                flags: fl,
                window,
                options,
            },
        };
        self.ident = self.ident.wrapping_add(1);
        let mut buf = vec![0u8; 128 + payload.len()];
        let n = emit_tcp_frame(&mut buf, &repr, payload).expect("sim frame");
        buf.truncate(n);
        buf
    }

    fn out(&mut self, f: Vec<u8>) {
        self.stats.segs_out += 1;
        self.outbox.push(f);
    }

    fn send_ack(&mut self, now: u64) {
        let f = self.craft(self.snd_nxt, self.rcv_nxt, flags::ACK, &[], now);
        self.out(f);
    }

    /// Process a frame from the client.
    pub fn on_frame(&mut self, now: u64, frame: &[u8]) {
        let f = match parse_tcp_frame(frame, true) {
            Ok(f) => f,
            Err(_) => {
                self.stats.bad_frames += 1;
                return;
            }
        };
        let seg = f.tcp;
        let opts = match TcpOptionsRepr::parse(seg.options()) {
            Ok(o) => o,
            Err(_) => {
                self.stats.bad_frames += 1;
                return;
            }
        };
        self.stats.segs_in += 1;
        if seg.rst() {
            self.stats.rst_in += 1;
            self.state = PeerState::Closed;
            return;
        }
        if self.ts {
            if let Some((v, _)) = opts.timestamps {
                self.ts_recent = v;
            }
        }
        match self.state {
            PeerState::Closed => {}
            PeerState::Listen | PeerState::SynRcvd if seg.syn() => {
                self.stats.syns_seen += 1;
                match self.cfg.syn {
                    SynBehaviour::Ignore => return,
                    SynBehaviour::IgnoreFirst(n) if self.syn_ignored < n => {
                        self.syn_ignored += 1;
                        return;
                    }
                    SynBehaviour::Refuse => {
                        let f = self.craft(
                            0,
                            seg.seq().wrapping_add(1),
                            flags::RST | flags::ACK,
                            &[],
                            now,
                        );
                        self.out(f);
                        return;
                    }
                    _ => {}
                }
                self.irs = seg.seq();
                self.rcv_nxt = self.irs.wrapping_add(1);
                self.client_mss = opts.mss.unwrap_or(536);
                let ws = match (opts.window_scale, self.cfg.wscale) {
                    (Some(c), Some(m)) => Some((c, m)),
                    _ => None,
                };
                self.client_scale = ws.map(|w| w.0).unwrap_or(0);
                self.my_scale = ws.map(|w| w.1).unwrap_or(0);
                self.ts = self.cfg.timestamps && opts.timestamps.is_some();
                if let Some((v, _)) = opts.timestamps {
                    self.ts_recent = v;
                }
                self.snd_wnd = seg.window() as u32;
                self.state = PeerState::SynRcvd;
                self.snd_nxt = self.iss.wrapping_add(1);
                self.snd_max = self.snd_nxt;
                self.snd_una = self.iss;
                let mut o = TcpOptionsRepr {
                    mss: self.cfg.mss,
                    ..Default::default()
                };
                if let Some((_, m)) = ws {
                    o.window_scale = Some(m);
                }
                if self.ts {
                    o.timestamps = Some(((now / 1000) as u32, self.ts_recent));
                }
                o.sack_permitted = self.cfg.sack && opts.sack_permitted;
                let repr = TcpFrameRepr {
                    src_mac: self.mac,
                    dst_mac: self.client_mac,
                    src_ip: *self.addr.ip(),
                    dst_ip: *self.client.ip(),
                    ip_ident: 0,
                    ttl: 64,
                    tcp: TcpRepr {
                        src_port: self.addr.port(),
                        dst_port: self.client.port(),
                        seq: self.iss,
                        ack: self.rcv_nxt,
                        flags: flags::SYN | flags::ACK,
                        window: self.cfg.rcv_buf.min(65535) as u16,
                        options: o,
                    },
                };
                self.adv_right = self.rcv_nxt.wrapping_add(self.cfg.rcv_buf.min(65535));
                let mut buf = vec![0u8; 128];
                let n = emit_tcp_frame(&mut buf, &repr, &[]).expect("synack");
                buf.truncate(n);
                self.out(buf);
            }
            PeerState::Listen => {}
            PeerState::SynRcvd | PeerState::Established => {
                if !seg.has_ack() {
                    return;
                }
                if self.state == PeerState::SynRcvd {
                    if seg.ack() != self.iss.wrapping_add(1) {
                        return;
                    }
                    self.state = PeerState::Established;
                    self.snd_una = seg.ack();
                }
                for &(l, r) in opts.sack.as_slice() {
                    self.stats.sack_blocks_seen += 1;
                    if !(gt(l, seg.ack()) && lt(l, r) && le(r, self.snd_max)) {
                        self.stats.sack_blocks_invalid += 1;
                    }
                }
                self.on_established(now, &seg);
            }
        }
    }

    fn on_established(&mut self, now: u64, seg: &pipeline::wire::TcpSegment<&[u8]>) {
        let ack = seg.ack();
        let wnd = (seg.window() as u32) << self.client_scale;
        let payload = seg.payload();
        let flight = self.snd_max.wrapping_sub(self.snd_una);
        if gt(ack, self.snd_una) && le(ack, self.snd_max) {
            self.snd_una = ack;
            if lt(self.snd_nxt, ack) {
                self.snd_nxt = ack;
            }
            self.dupacks = 0;
            self.rto_deadline = if self.snd_una == self.snd_max {
                None
            } else {
                Some(now + self.cfg.rto_us)
            };
        } else if ack == self.snd_una && payload.is_empty() && !seg.fin() && flight > 0 {
            self.dupacks += 1;
            self.stats.dup_acks_in += 1;
            if self.dupacks == 3 {
                // Fast retransmit one segment.
                self.stats.retransmits += 1;
                let len = (self.client_mss as u64 - if self.ts { 12 } else { 0 })
                    .min(
                        self.cfg.send_bytes as u64
                            - self.data_off(self.snd_una).min(self.cfg.send_bytes as u64),
                    )
                    .min(flight as u64) as usize;
                if len > 0 {
                    let off = self.data_off(self.snd_una);
                    let data: Vec<u8> = (off..off + len as u64).map(s2c_byte).collect();
                    let f = self.craft(
                        self.snd_una,
                        self.rcv_nxt,
                        flags::ACK | flags::PSH,
                        &data,
                        now,
                    );
                    self.out(f);
                }
            }
        }
        self.snd_wnd = wnd;

        // Receive side.
        let seq = seg.seq();
        let len = payload.len() as u32;
        if len > 0 {
            self.stats.data_segs_in += 1;
            if gt(seq.wrapping_add(len), self.adv_right) {
                self.stats.window_violations += 1;
            }
            let cf = self.received.len() as u64;
            let inflight_client = dist(self.rcv_nxt, seq.wrapping_add(len)) as u64;
            let _ = cf;
            self.stats.max_client_flight = self.stats.max_client_flight.max(inflight_client);
            if seq == self.rcv_nxt {
                let room = dist(seq, self.adv_right) as usize;
                let take = payload.len().min(room);
                self.accept(&payload[..take]);
                self.drain_ooo();
            } else if lt(seq, self.rcv_nxt) {
                let skip = self.rcv_nxt.wrapping_sub(seq) as usize;
                if skip >= payload.len() {
                    self.stats.dup_segs_in += 1;
                } else {
                    let room = dist(self.rcv_nxt, self.adv_right) as usize;
                    let take = (payload.len() - skip).min(room);
                    self.accept(&payload[skip..skip + take]);
                    self.drain_ooo();
                }
            } else if self.cfg.ooo_buffer {
                self.ooo.push((seq, payload.to_vec()));
            } else {
                self.stats.ooo_dropped += 1;
            }
            self.send_ack(now);
        } else if seq == self.rcv_nxt.wrapping_sub(1) && !seg.fin() {
            self.stats.zero_window_probes_seen += 1;
            self.send_ack(now);
        }
        if seg.fin() && seq.wrapping_add(len) == self.rcv_nxt {
            self.stats.fin_in += 1;
            self.client_fin = true;
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.send_ack(now);
            self.close_when_done = true;
        } else if seg.fin() && lt(seq.wrapping_add(len), self.rcv_nxt) {
            self.send_ack(now);
        }
    }

    fn accept(&mut self, d: &[u8]) {
        self.received.extend_from_slice(d);
        self.rcv_nxt = self.rcv_nxt.wrapping_add(d.len() as u32);
        if !self.cfg.app_reads {
            self.unread += d.len() as u32;
        }
    }

    fn drain_ooo(&mut self) {
        loop {
            let mut progressed = false;
            let mut i = 0;
            while i < self.ooo.len() {
                let (s, ref d) = self.ooo[i];
                let end = s.wrapping_add(d.len() as u32);
                if le(end, self.rcv_nxt) {
                    self.ooo.swap_remove(i);
                    continue;
                }
                if le(s, self.rcv_nxt) {
                    let skip = self.rcv_nxt.wrapping_sub(s) as usize;
                    let d = self.ooo.swap_remove(i).1;
                    self.accept(&d[skip..]);
                    progressed = true;
                    continue;
                }
                i += 1;
            }
            if !progressed {
                break;
            }
        }
    }

    pub fn next_deadline(&self) -> Option<u64> {
        [self.rto_deadline, self.persist_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Send what the window allows; run timers.
    pub fn poll(&mut self, now: u64) {
        if self.state != PeerState::Established {
            return;
        }
        if let Some(d) = self.rto_deadline {
            if now >= d {
                // Go-back-N.
                self.stats.retransmits += 1;
                self.snd_nxt = self.snd_una;
                self.rto_deadline = Some(now + self.cfg.rto_us);
                if self.fin_sent
                    && self.snd_una == self.snd_max.wrapping_sub(1)
                    && self.data_done(self.snd_una)
                {
                    let f = self.craft(
                        self.snd_una,
                        self.rcv_nxt,
                        flags::FIN | flags::ACK,
                        &[],
                        now,
                    );
                    self.out(f);
                    self.snd_nxt = self.snd_max;
                    return;
                }
            }
        }
        let mss = (self.client_mss as u32 - if self.ts { 12 } else { 0 }).max(1);
        let total = self.cfg.send_bytes as u64;
        loop {
            let off = self.data_off(self.snd_nxt);
            if off >= total {
                break;
            }
            let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
            let room = self.snd_wnd.saturating_sub(in_flight);
            let len = (mss as u64).min(total - off).min(room as u64) as usize;
            if len == 0 {
                break;
            }
            if lt(self.snd_nxt, self.snd_max) {
                self.stats.retransmits += 1;
            }
            let data: Vec<u8> = (off..off + len as u64).map(s2c_byte).collect();
            let f = self.craft(
                self.snd_nxt,
                self.rcv_nxt,
                flags::ACK | flags::PSH,
                &data,
                now,
            );
            self.out(f);
            self.snd_nxt = self.snd_nxt.wrapping_add(len as u32);
            if gt(self.snd_nxt, self.snd_max) {
                self.snd_max = self.snd_nxt;
            }
            if self.rto_deadline.is_none() {
                self.rto_deadline = Some(now + self.cfg.rto_us);
            }
        }
        // Zero-window persist.
        let remaining = self.data_off(self.snd_nxt) < total;
        if self.snd_wnd == 0 && remaining && self.snd_una == self.snd_max {
            match self.persist_deadline {
                None => self.persist_deadline = Some(now + self.cfg.rto_us),
                Some(d) if now >= d => {
                    let f = self.craft(
                        self.snd_una.wrapping_sub(1),
                        self.rcv_nxt,
                        flags::ACK,
                        &[],
                        now,
                    );
                    self.out(f);
                    self.persist_deadline = Some(now + self.cfg.rto_us);
                }
                _ => {}
            }
        } else {
            self.persist_deadline = None;
        }
        // Close once everything is acknowledged.
        if self.close_when_done
            && !self.fin_sent
            && self.data_done(self.snd_una)
            && self.snd_una == self.snd_max
        {
            self.fin_sent = true;
            let f = self.craft(
                self.snd_nxt,
                self.rcv_nxt,
                flags::FIN | flags::ACK,
                &[],
                now,
            );
            self.out(f);
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.snd_max = self.snd_nxt;
            self.rto_deadline = Some(now + self.cfg.rto_us);
        }
    }

    fn data_done(&self, seq: u32) -> bool {
        self.data_off(seq) >= self.cfg.send_bytes as u64
    }
}

/// Client + peer + two links, run over virtual time.
pub struct Harness {
    pub now: u64,
    pub client: Connection,
    pub peer: SimPeer,
    pub c2s: Link,
    pub s2c: Link,
    frames: Vec<Vec<u8>>,
    free: Vec<u32>,
    frame_len: Vec<usize>,
    /// Bytes the client application has received, in order.
    pub client_rx: Vec<u8>,
    /// Bytes the client should send to the server.
    pub client_send_total: usize,
    client_sent: usize,
    /// Consumer buffer size; `client_stalled` keeps it from draining.
    pub client_buf: usize,
    pub client_stalled: bool,
    client_unread: usize,
    pub events: Vec<Event>,
    pub close_when_sent: bool,
    /// Largest number of client bytes in flight beyond the peer's last window (must be 0).
    pub client_window_violations: u64,
    pub rx_verdict_malformed: u64,
    scratch: Vec<u8>,
}

pub const CLIENT: &str = "10.0.0.2:40000";
pub const SERVER: &str = "10.0.0.1:443";

impl Harness {
    pub fn new(
        mut ccfg: TcpConfig,
        pcfg: PeerConfig,
        faults_c2s: Faults,
        faults_s2c: Faults,
        seed: u64,
    ) -> Self {
        let client_addr: SocketAddrV4 = ccfg.local;
        let server_addr: SocketAddrV4 = ccfg.remote;
        ccfg.local_mac = MacAddr([2, 0, 0, 0, 0, 1]);
        ccfg.remote_mac = MacAddr([2, 0, 0, 0, 0, 2]);
        let nframes = ccfg.max_in_flight_segments;
        let client = Connection::new(ccfg).expect("client config");
        Harness {
            now: 1_000_000,
            client,
            peer: SimPeer::new(pcfg, server_addr, client_addr),
            c2s: Link::new(faults_c2s, seed),
            s2c: Link::new(faults_s2c, seed ^ 0xdead_beef),
            frames: (0..nframes).map(|_| vec![0u8; 2048]).collect(),
            free: (0..nframes as u32).rev().collect(),
            frame_len: vec![0; nframes],
            client_rx: Vec::new(),
            client_send_total: 0,
            client_sent: 0,
            client_buf: 4 << 20,
            client_stalled: false,
            client_unread: 0,
            events: Vec::new(),
            close_when_sent: false,
            client_window_violations: 0,
            rx_verdict_malformed: 0,
            scratch: vec![0u8; 2048],
        }
    }

    pub fn default_config() -> TcpConfig {
        TcpConfig::new(
            MacAddr::ZERO,
            MacAddr::ZERO,
            CLIENT.parse().unwrap(),
            SERVER.parse().unwrap(),
        )
    }

    pub fn connect(&mut self, isn: u32) {
        self.client
            .connect_with_isn(self.now, isn, 7)
            .expect("connect");
    }

    /// Frames the client application has not consumed yet.
    pub fn consume(&mut self) {
        self.client_unread = 0;
    }

    /// One iteration at the current time. Returns true if anything moved.
    pub fn step(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        while let Some(f) = self.s2c.pop_due(now) {
            moved = true;
            let rx = &mut self.client_rx;
            let mut got = 0usize;
            let v = self.client.on_frame(now, &f, |d| {
                got += d.len();
                rx.extend_from_slice(d)
            });
            if let RxVerdict::Malformed(_) = v {
                self.rx_verdict_malformed += 1;
            }
            self.client_unread += got;
        }
        while let Some(f) = self.c2s.pop_due(now) {
            moved = true;
            self.peer.on_frame(now, &f);
        }
        if !self.client_stalled {
            self.client_unread = 0;
        }
        self.client
            .set_rx_space(self.client_buf.saturating_sub(self.client_unread));

        // New data from the client application.
        let mss = self.client.max_segment_payload();
        let off = self.client.payload_offset();
        while self.client_sent < self.client_send_total {
            let len = mss.min(self.client_send_total - self.client_sent);
            if self.client.send_capacity() < len {
                break;
            }
            let Some(h) = self.free.pop() else { break };
            let fr = &mut self.frames[h as usize];
            for i in 0..len {
                fr[off + i] = c2s_byte((self.client_sent + i) as u64);
            }
            let n = self.client.send_data(now, fr, len, h).expect("send_data");
            self.frame_len[h as usize] = n;
            self.c2s.push(now, &self.frames[h as usize][..n]);
            self.client_sent += len;
            moved = true;
        }
        if self.close_when_sent && self.client_sent >= self.client_send_total {
            self.client.close(now);
        }
        while let Some(t) = self.client.poll_transmit(now) {
            moved = true;
            match t {
                Transmit::Control(seg) => {
                    let n = self
                        .client
                        .emit_control(&seg, &mut self.scratch)
                        .expect("emit");
                    self.c2s.push(now, &self.scratch[..n]);
                }
                Transmit::Retransmit { handle, seq, len } => {
                    let fr = &mut self.frames[handle as usize];
                    let n = self
                        .client
                        .refresh_data_frame(fr, seq, len)
                        .expect("refresh");
                    self.c2s.push(now, &self.frames[handle as usize][..n]);
                }
            }
        }
        while let Some(h) = self.client.pop_acked() {
            self.free.push(h);
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
        self.peer.poll(now);
        for f in std::mem::take(&mut self.peer.outbox) {
            moved = true;
            self.s2c.push(now, &f);
        }
        moved
    }

    /// Advance virtual time to the next thing that can happen.
    pub fn advance(&mut self) -> bool {
        let next = [
            self.c2s.next_time(),
            self.s2c.next_time(),
            self.client.next_deadline(),
            self.peer.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) => {
                self.now = t.max(self.now + 1);
                true
            }
            None => false,
        }
    }

    /// Run until `done` or until `limit_us` of virtual time passed / nothing can happen.
    pub fn run_until<F: FnMut(&Harness) -> bool>(&mut self, limit_us: u64, mut done: F) -> bool {
        let end = self.now + limit_us;
        loop {
            while self.step() {
                if done(self) {
                    return true;
                }
            }
            if done(self) {
                return true;
            }
            if !self.advance() || self.now > end {
                return done(self);
            }
        }
    }

    pub fn client_sent(&self) -> usize {
        self.client_sent
    }
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }
}

/// The client's config of the fixed pair [`peer_frame`] talks to: 10.0.0.2:40000 (MAC
/// 02::01) -> 10.0.0.1:443 (MAC 02::02), defaults otherwise.
pub fn peer_pair_config() -> TcpConfig {
    TcpConfig::new(
        MacAddr([2, 0, 0, 0, 0, 1]),
        MacAddr([2, 0, 0, 0, 0, 2]),
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, 2), 40000),
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, 1), 443),
    )
}

/// A segment from the server 10.0.0.1:443 (MAC 02::02) to a client at 10.0.0.2:40000
/// (MAC 02::01): the fixed pair the TCP unit tests and benchmarks use.
pub fn peer_frame(seq: u32, ack: u32, fl: u8, payload: &[u8], opts: TcpOptionsRepr) -> Vec<u8> {
    emit_frame(&TcpFrameRepr { ip_ident: 1, ..peer_repr(seq, ack, fl, 65535, opts) }, payload)
}

/// The headers of a [`peer_frame`] segment, IP ident 0.
pub fn peer_repr(seq: u32, ack: u32, fl: u8, window: u16, options: TcpOptionsRepr) -> TcpFrameRepr {
    TcpFrameRepr {
        src_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        src_ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
        dst_ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
        ip_ident: 0,
        ttl: 64,
        tcp: TcpRepr { src_port: 443, dst_port: 40000, seq, ack, flags: fl, window, options },
    }
}

/// `r` and `payload` as an Ethernet frame (up to 2048 bytes).
pub fn emit_frame(r: &TcpFrameRepr, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    let n = emit_tcp_frame(&mut b, r, payload).expect("frame fits 2048 bytes");
    b.truncate(n);
    b
}

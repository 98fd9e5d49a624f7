//! The XDP poll stage (design §5.1), grown into the per-interface engine: one UMEM, one
//! XDP program, one AF_XDP socket per RX queue and one poll step serving every AF_XDP
//! connection of the process on that interface.
//!
//! Each poll: (1) every connection's outboxes (RAW, ACK, PONG) -> TX, one flush and at
//! most one `sendto` kick; (2) rx rings -> demultiplexed by the full 4-tuple ->
//! (through the optional fault hook) each connection's RAW_INBOX; frames stay the
//! transport's until it has consumed their descriptors. When nothing moved: (3) RX
//! frames whose descriptors a transport has passed go back to the fill rings, (4)
//! completions return TX frames (ACK/PONG frames to their pools, data frames to the
//! connection holding them for retransmission), (5) each connection's TX free lists are
//! topped up within its fair share.
//!
//! TX frame allocation across stages: the ledger that knows which frames are free
//! belongs to the XdpSocket (the completion ring says when a frame is free again), so
//! this stage publishes free frame addresses on three small rings per connection
//! (`tx_free_{ack,pong,msg}`); the transport pops one, writes its packet through a
//! [`UmemView`], and pushes the descriptor on an outbox. A descriptor of length 0 gives a
//! frame back unsent. Works the same across threads and forked processes.
//!
//! Fairness: every TX frame handed out is recorded with its owner; a connection holds at
//! most `pool / connections` frames of each pool, so one that stalls (a peer with a
//! closed window, a transport that stopped) cannot starve the others' ACKs and PONGs.
//! A frame sent by one connection can only be sent by its owner: a transport pushing an
//! address it does not hold is refused and counted.
//!
//! Who polls: the engine sits behind a mutex, and every connection's runner has an
//! [`EngineStage`] that polls it with `try_lock` — whoever gets it does the work for
//! everyone, and nobody waits. Opening and closing connections takes the lock between
//! two polls.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::{Progress, Stage};
use crate::config::{ACK_FRAMES, MSG_FRAMES, PONG_FRAMES, RX_FRAMES, TOTAL_UMEM_FRAMES};
use crate::error::{Error, Result};
use crate::ring::{Consumer, ElemRing, FrameType, Producer, UmemFrameDescriptor};
use crate::shm::{names, ShmDir};
use crate::stats::{Counter, DisconnectKind, DisconnectReason, StatsRegion};
use crate::xdp::fault::{FaultConfig, FaultHook, Verdict};
use crate::xdp::umem::frame_index;
use crate::xdp::{Flow, RxDesc, TxKind, UmemView, XdpConfig, XdpMode, XdpSocket, BATCH};

/// Capacity of the descriptor rings between XDP poll and transport. At most
/// `RX_FRAMES` RX frames exist and the fault hook adds at most one duplicate per frame,
/// so a connection's RAW_INBOX can never be full.
pub const DESC_RING: usize = 4096;
static_assertions::const_assert!(DESC_RING >= 2 * RX_FRAMES);
/// Capacity of the ACK and PONG free-frame rings.
pub const FREE_RING: usize = 256;
/// Capacity of the data-frame free ring: it also carries completion notices of frames
/// the connection holds, so it must fit every data frame.
pub const FREE_RING_MSG: usize = if MSG_FRAMES.is_power_of_two() { MSG_FRAMES } else { MSG_FRAMES.next_power_of_two() };

/// Free frames kept waiting on a connection's free rings (ACK, PONG, data): enough for
/// a burst between two top-ups, few enough that idle connections do not sit on the
/// pools (frames on a ring are the connection's until it uses them).
/// For data frames the depth counts every frame the connection holds idle (on the ring,
/// in its local cache, or completed and kept for retransmission), not only the ring.
/// With these depths, 16 connections can sit idle on a full ring each and the pools
/// (512 / 512 / 1024 frames by default) still have frames for a newcomer; frames on a
/// busy connection's rings come back through completions and are re-dealt within the
/// (smaller) share.
const FREE_DEPTH: [usize; 3] = [32, 16, 32];
/// Under sustained traffic the "idle" work (returning frames, topping up) still runs
/// every this many busy polls, so the pools never drain because nobody is ever idle.
const HOUSEKEEPING_EVERY: u32 = 4;

/// `reserved1` flag on a RAW_INBOX descriptor: the fault hook delivers this frame again
/// right after, so passing this copy must not give the frame back yet.
const NO_RELEASE: u16 = 1;

/// The rings between the XDP poll stage and one XDP transport (our TCP + TLS).
pub struct XdpRings {
    raw_inbox: ElemRing<UmemFrameDescriptor>,
    raw_outbox: ElemRing<UmemFrameDescriptor>,
    ack_outbox: ElemRing<UmemFrameDescriptor>,
    pong_outbox: ElemRing<UmemFrameDescriptor>,
    /// Free TX frame data addresses, indexed by `TxKind as usize` (Ack, Pong, Msg).
    tx_free: [ElemRing<u64>; 3],
}

/// The engine's ends of one connection's rings.
pub struct EnginePort {
    raw_inbox: Producer<UmemFrameDescriptor>,
    outboxes: [Consumer<UmemFrameDescriptor>; 3],
    tx_free: [Producer<u64>; 3],
}

/// The transport's ends of one connection's rings.
pub struct TransportPort {
    pub(crate) raw_inbox: Consumer<UmemFrameDescriptor>,
    pub(crate) raw_outbox: Producer<UmemFrameDescriptor>,
    pub(crate) ack_outbox: Producer<UmemFrameDescriptor>,
    pub(crate) free_ack: Consumer<u64>,
    pub(crate) free_msg: Consumer<u64>,
}

impl XdpRings {
    pub fn create(dir: &ShmDir) -> Result<XdpRings> {
        Ok(XdpRings {
            raw_inbox: ElemRing::create(dir, names::RAW_INBOX, DESC_RING)?,
            raw_outbox: ElemRing::create(dir, names::RAW_OUTBOX, DESC_RING)?,
            ack_outbox: ElemRing::create(dir, names::ACK_OUTBOX, DESC_RING)?,
            pong_outbox: ElemRing::create(dir, names::PONG_OUTBOX, DESC_RING)?,
            tx_free: [
                ElemRing::create(dir, "tx_free_ack.shm", FREE_RING)?,
                ElemRing::create(dir, "tx_free_pong.shm", FREE_RING)?,
                ElemRing::create(dir, "tx_free_msg.shm", FREE_RING_MSG)?,
            ],
        })
    }

    /// The only pair of ends: consuming the rings means nobody can make a second
    /// producer or consumer of them by accident.
    pub fn split(self) -> (EnginePort, TransportPort) {
        let (inbox_tx, inbox_rx) = self.raw_inbox.split();
        let (raw_tx, raw_rx) = self.raw_outbox.split();
        let (ack_tx, ack_rx) = self.ack_outbox.split();
        let [free_ack, free_pong, free_msg] = self.tx_free;
        let (free_ack_tx, free_ack_rx) = free_ack.split();
        let (free_msg_tx, free_msg_rx) = free_msg.split();
        // Nobody on the transport side uses the PONG outbox or free ring yet (encrypted
        // PONGs travel as data), so only the engine holds those ends.
        let e = EnginePort {
            raw_inbox: inbox_tx,
            outboxes: [raw_rx, ack_rx, self.pong_outbox.into_consumer()],
            tx_free: [free_ack_tx, free_pong.into_producer(), free_msg_tx],
        };
        let t = TransportPort { raw_inbox: inbox_rx, raw_outbox: raw_tx, ack_outbox: ack_tx, free_ack: free_ack_rx, free_msg: free_msg_rx };
        (e, t)
    }
}

/// One connection as the engine sees it.
struct Slot {
    id: u32,
    flow: Flow,
    port: EnginePort,
    /// RAW_INBOX position up to which RX frames went back to the socket.
    released: u64,
    /// TX frames of each pool this connection holds (on its free ring, in its hands,
    /// or in flight).
    held: [usize; 3],
    /// Data frames of this connection in flight (sent, completion not yet seen).
    msg_in_flight: usize,
    hook: Option<FaultHook>,
    stats: StatsRegion,
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    tx_refused: u64,
}

/// Counters of the engine as a whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub connections: usize,
    /// Frames that matched no connection (a flow removed while its packets were on the
    /// rx ring), returned at once.
    pub rx_unmatched: u64,
    /// Descriptors refused because the connection does not hold that frame.
    pub tx_refused: u64,
    /// Frames of a replaced flow (a reconnect) still held by the fault hook, returned
    /// by [`Registration::set_flow`].
    pub stale_rx_released: u64,
    /// Flows replaced by [`Registration::set_flow`] (reconnects).
    pub flows_replaced: u64,
    /// Frame accounting, for leak checks: free TX frames in each pool (ACK, PONG, MSG),
    /// TX frames every connection holds together (on free rings, in its hands, in
    /// flight), TX frames in flight, RX frames handed to connections and not yet
    /// released, RX frames released and waiting for a fill ring.
    pub tx_free: [usize; 3],
    pub tx_held: [usize; 3],
    pub tx_in_flight: usize,
    pub rx_held: usize,
    pub rx_refill_pending: usize,
    pub xdp: crate::xdp::XdpStats,
}

struct Core {
    xsk: XdpSocket,
    slots: Vec<Slot>,
    next_id: u32,
    /// Owner (slot id, 0 = none) of every TX frame, by frame index.
    owner: Box<[u32]>,
    rx: [RxDesc; BATCH],
    /// Round-robin start, so no connection is always served last.
    turn: usize,
    rx_unmatched: u64,
    tx_refused: u64,
    busy_polls: u32,
    stale_rx_released: u64,
    flows_replaced: u64,
}

/// One interface's AF_XDP engine. Shared (`Arc`) by every connection on it in this
/// process; the last one to go closes the sockets and detaches the program.
pub struct Engine {
    core: Mutex<Core>,
    umem: UmemView,
    mode: XdpMode,
    ifname: String,
    key: (u64, u32),
    queues: Vec<u32>,
    _owner: OwnerNote,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("ifname", &self.ifname).field("queues", &self.queues).finish()
    }
}

fn flow_of(frame: &[u8]) -> Option<Flow> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ihl = (frame[14] & 0x0f) as usize * 4;
    let t = 14 + ihl;
    if ihl < 20 || frame.len() < t + 4 {
        return None;
    }
    let ip = |o: usize| std::net::Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
    Some(Flow {
        server_ip: ip(26),
        local_ip: ip(30),
        server_port: u16::from_be_bytes([frame[t], frame[t + 1]]),
        local_port: u16::from_be_bytes([frame[t + 2], frame[t + 3]]),
    })
}

fn pool_size(k: usize) -> usize {
    [ACK_FRAMES, PONG_FRAMES, MSG_FRAMES][k]
}

impl Core {
    fn quota(&self, k: usize) -> usize {
        (pool_size(k) / self.slots.len().max(1)).max(1)
    }

    fn tx(&mut self) -> usize {
        let mut n = 0;
        let ns = self.slots.len();
        let Core { xsk, slots, owner, turn, tx_refused, .. } = self;
        for j in 0..ns {
            let slot = &mut slots[(*turn + j) % ns];
            for q in 0..3 {
                let mut k = 0;
                while k < BATCH {
                    let Some(d) = slot.port.outboxes[q].pop() else { break };
                    k += 1;
                    let i = frame_index(d.umem_addr);
                    let kind = crate::xdp::umem::kind_of(d.umem_addr);
                    let pool = match kind {
                        Some(crate::xdp::FrameKind::Ack) => 0,
                        Some(crate::xdp::FrameKind::Pong) => 1,
                        Some(crate::xdp::FrameKind::Msg) => 2,
                        _ => usize::MAX,
                    };
                    if pool == usize::MAX || owner.get(i) != Some(&slot.id) || !xsk.ledger().is_user_held(d.umem_addr) {
                        // Not a frame this connection holds: never send another
                        // connection's frame (or one in flight).
                        slot.tx_refused += 1;
                        *tx_refused += 1;
                        slot.stats.add(Counter::TxDrops, 1);
                        continue;
                    }
                    if d.frame_len == 0 {
                        // Given back unsent.
                        let _ = xsk.free_tx(d.umem_addr);
                        owner[i] = 0;
                        slot.held[pool] -= 1;
                        continue;
                    }
                    if xsk.send(d.umem_addr, d.frame_len as usize).is_err() {
                        // Rejected: the frame is already back in its pool.
                        owner[i] = 0;
                        slot.held[pool] -= 1;
                        slot.stats.add(Counter::TxDrops, 1);
                        continue;
                    }
                    if pool == 2 {
                        slot.msg_in_flight += 1;
                    }
                    slot.tx_packets += 1;
                    slot.tx_bytes += d.frame_len as u64;
                }
                n += k;
            }
        }
        self.turn = self.turn.wrapping_add(1);
        self.xsk.flush_tx();
        n
    }

    fn deliver(slot: &mut Slot, d: RxDesc, flags: u16, now: u64) {
        let mut desc = UmemFrameDescriptor { umem_addr: d.addr, frame_len: d.len as u16, reserved1: flags, ..Default::default() };
        desc.set_meta(now, 0, FrameType::Rx);
        // Cannot fail: DESC_RING >= 2 * RX_FRAMES (see the assertion above).
        let _ = slot.port.raw_inbox.stage(desc);
        if let Some(h) = slot.hook.as_mut() {
            h.delivered();
        }
    }

    fn rx(&mut self, now: u64) -> usize {
        let k = self.xsk.rx_burst(&mut self.rx[..]);
        let now_us = now / 1000;
        // The arrival stamp of this burst: veth offers no hardware RX timestamp (XDP RX
        // metadata), so the time we took it off the RX ring, one clock read per burst
        // (the loop's `now` may be a whole loop older).
        let now = if k > 0 { super::now_ns() } else { now };
        for i in 0..k {
            let d = self.rx[i];
            let flow = flow_of(self.xsk.rx_frame(&d));
            let Some(slot) = flow.and_then(|f| self.slots.iter_mut().find(|s| s.flow == f)) else {
                self.rx_unmatched += 1;
                let _ = self.xsk.release_rx(d.addr);
                continue;
            };
            slot.rx_packets += 1;
            slot.rx_bytes += d.len as u64;
            match slot.hook.as_mut().map(|h| h.on_frame(now_us, d)) {
                None | Some(Verdict::Deliver) => Self::deliver(slot, d, 0, now),
                Some(Verdict::DeliverTwice) => {
                    Self::deliver(slot, d, NO_RELEASE, now);
                    Self::deliver(slot, d, 0, now);
                }
                Some(Verdict::Held) => {}
            }
        }
        let mut due = 0;
        for slot in self.slots.iter_mut() {
            while let Some(d) = slot.hook.as_mut().and_then(|h| h.pop_due(now_us)) {
                Self::deliver(slot, d, 0, now);
                due += 1;
            }
            slot.port.raw_inbox.publish();
        }
        k + due
    }

    fn reclaim_rx(&mut self) -> usize {
        let mut n = 0;
        let Core { xsk, slots, .. } = self;
        for slot in slots.iter_mut() {
            let upto = slot.port.raw_inbox.consumer_pos();
            while slot.released < upto {
                if let Some(d) = slot.port.raw_inbox.peek_at(slot.released) {
                    if d.reserved1 & NO_RELEASE == 0 {
                        let _ = xsk.release_rx(d.umem_addr);
                    }
                }
                slot.released += 1;
                n += 1;
            }
        }
        n + self.xsk.refill()
    }

    fn reap(&mut self) -> usize {
        let Core { xsk, slots, owner, .. } = self;
        xsk.reap_completions_with(|addr, kind| {
            let i = frame_index(addr);
            let id = owner.get(i).copied().unwrap_or(0);
            let Some(slot) = slots.iter_mut().find(|s| s.id == id && id != 0) else {
                // Its connection is gone: back to the pool.
                if let Some(o) = owner.get_mut(i) {
                    *o = 0;
                }
                return false;
            };
            if kind == TxKind::Msg {
                slot.msg_in_flight = slot.msg_in_flight.saturating_sub(1);
                // A data frame stays its connection's (held for retransmission until
                // TCP says it is acknowledged): tell it the transmission completed.
                // Cannot fail: the ring fits every data frame (FREE_RING_MSG).
                if slot.port.tx_free[2].stage(addr).is_ok() {
                    return true;
                }
            }
            slot.held[kind as usize] -= 1;
            owner[i] = 0;
            false
        })
    }

    fn top_up(&mut self) -> usize {
        let mut n = 0;
        let quotas = [self.quota(0), self.quota(1), self.quota(2)];
        let Core { xsk, slots, owner, .. } = self;
        for slot in slots.iter_mut() {
            for (k, kind) in TxKind::ALL.iter().enumerate() {
                let ring = &mut slot.port.tx_free[k];
                let waiting = (ring.position() - ring.consumer_pos()) as usize;
                // Data frames: the transport keeps what it pops (and gives surplus back
                // past its cache), so count all it holds idle, or the two would pass
                // frames back and forth forever.
                let idle = if k == 2 { slot.held[2].saturating_sub(slot.msg_in_flight) } else { waiting };
                let depth = FREE_DEPTH[k].min(quotas[k]);
                let mut room = depth.saturating_sub(idle).min(quotas[k].saturating_sub(slot.held[k]));
                while room > 0 {
                    let Some(a) = xsk.alloc_tx(*kind) else { break };
                    owner[frame_index(a)] = slot.id;
                    slot.held[k] += 1;
                    let _ = slot.port.tx_free[k].stage(a);
                    room -= 1;
                    n += 1;
                }
                slot.port.tx_free[k].publish();
            }
        }
        n
    }

    fn export_stats(&self) {
        let s = self.xsk.stats();
        for slot in &self.slots {
            slot.stats.set(Counter::RxPackets, slot.rx_packets);
            slot.stats.set(Counter::RxBytes, slot.rx_bytes);
            slot.stats.set(Counter::TxPackets, slot.tx_packets);
            slot.stats.set(Counter::TxBytes, slot.tx_bytes);
            // Engine-wide: one kick and one refill serve every connection.
            slot.stats.set(Counter::TxKicks, s.tx_kicks);
            slot.stats.set(Counter::RxRefilled, s.fill_submitted);
        }
    }

    fn poll(&mut self, now: u64) -> Progress {
        let moved = self.tx() + self.rx(now);
        if moved > 0 {
            self.busy_polls += 1;
            if self.busy_polls % HOUSEKEEPING_EVERY != 0 {
                return Progress::Busy;
            }
            self.reclaim_rx();
            self.reap();
            self.top_up();
            return Progress::Busy;
        }
        // Idle: give frames back (design §5.1 steps 4 and 5).
        let back = self.reclaim_rx() + self.reap() + self.top_up();
        self.export_stats();
        Progress::from_bool(back > 0)
    }

    /// Take a connection out: stop redirecting its flow, give back every frame it held.
    /// Its stages have stopped (the registration is dropped with its transport).
    fn remove(&mut self, id: u32) {
        let Some(k) = self.slots.iter().position(|s| s.id == id) else { return };
        let mut slot = self.slots.swap_remove(k);
        let _ = self.xsk.remove_flow(&slot.flow);
        // RX: descriptors the transport never consumed, and frames the hook holds.
        let end = slot.port.raw_inbox.position();
        while slot.released < end {
            if let Some(d) = slot.port.raw_inbox.peek_at(slot.released) {
                if d.reserved1 & NO_RELEASE == 0 {
                    let _ = self.xsk.release_rx(d.umem_addr);
                }
            }
            slot.released += 1;
        }
        if let Some(h) = slot.hook.as_mut() {
            for d in h.take_all() {
                let _ = self.xsk.release_rx(d.addr);
            }
        }
        // TX: frames it holds go back to their pools now; frames in flight when their
        // completion comes (their owner is cleared).
        for (i, o) in self.owner.iter_mut().enumerate() {
            if *o == id {
                *o = 0;
                let addr = crate::xdp::umem::frame_addr(i);
                if self.xsk.ledger().is_user_held(addr) {
                    let _ = self.xsk.free_tx(addr);
                }
            }
        }
        let _ = self.xsk.refill();
    }
}

// ---------------------------------------------------------------- reconnect: a new flow

impl Core {
    /// Replace connection `id`'s 4-tuple (a reconnect from a new local port, maybe to a
    /// new server address). Under the engine lock, so no poll runs in between: the new
    /// flow goes into the XDP program's map first, then the slot matches it, then the
    /// old flow leaves the map. Nothing of the new flow can be unmatched (its SYN has
    /// not gone out yet, and the map has it before the slot does); frames of the old
    /// flow still on an rx ring match no connection any more and go back at once
    /// (`rx_unmatched`). Frames of the old flow the fault hook holds go back here;
    /// those already on the RAW_INBOX are the transport's to pass (it does, before its
    /// new connection reads anything). TX frames stay the connection's: the transport
    /// reuses them (data frames in flight come back to this slot on completion).
    fn set_flow(&mut self, id: u32, flow: Flow, rx_loss_percent: u32) -> Result<()> {
        let Some(k) = self.slots.iter().position(|s| s.id == id) else {
            return Err(Error::Closed("the connection left its AF_XDP engine".into()));
        };
        let old = self.slots[k].flow;
        if old == flow {
            return Ok(());
        }
        if self.slots.iter().any(|s| s.flow == flow) {
            return Err(Error::Config(format!("flow {flow:?} is already another connection's")));
        }
        self.xsk.add_flow(flow)?;
        if rx_loss_percent > 0 {
            if let Err(e) = self.xsk.set_rx_loss_percent(&flow, rx_loss_percent) {
                let _ = self.xsk.remove_flow(&flow);
                return Err(e);
            }
        }
        let slot = &mut self.slots[k];
        slot.flow = flow;
        let _ = self.xsk.remove_flow(&old);
        if let Some(h) = slot.hook.as_mut() {
            for d in h.take_all() {
                let _ = self.xsk.release_rx(d.addr);
                self.stale_rx_released += 1;
            }
        }
        self.flows_replaced += 1;
        let _ = self.xsk.refill();
        Ok(())
    }

    fn engine_stats(&self) -> EngineStats {
        let l = self.xsk.ledger();
        let mut tx_held = [0usize; 3];
        for s in &self.slots {
            for (k, h) in tx_held.iter_mut().enumerate() {
                *h += s.held[k];
            }
        }
        EngineStats {
            connections: self.slots.len(),
            rx_unmatched: self.rx_unmatched,
            tx_refused: self.tx_refused,
            stale_rx_released: self.stale_rx_released,
            flows_replaced: self.flows_replaced,
            tx_free: [l.available(TxKind::Ack), l.available(TxKind::Pong), l.available(TxKind::Msg)],
            tx_held,
            tx_in_flight: l.in_flight(),
            rx_held: l.rx_held(),
            rx_refill_pending: l.refill_pending(),
            xdp: self.xsk.stats(),
        }
    }
}

/// The registry of engines of this process, by (network namespace, ifindex).
static ENGINES: Mutex<Vec<Weak<Engine>>> = Mutex::new(Vec::new());

/// The network namespace of the calling thread (tests run threads in other namespaces).
fn netns_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

impl Engine {
    /// The engine for `xc.ifname` in this thread's network namespace: the running one
    /// (a second connection joins it), or a new one. `name` is the pipeline asking, for
    /// the note that tells another process who holds the interface.
    pub fn for_interface(xc: &XdpConfig, name: &str, quiet: bool) -> Result<Arc<Engine>> {
        let ifindex = crate::xdp::addr::ifindex(&xc.ifname)?;
        let key = (netns_id(), ifindex);
        let mut reg = ENGINES.lock().map_err(|_| Error::Config("XDP engine registry poisoned".into()))?;
        reg.retain(|w| w.strong_count() > 0);
        if let Some(e) = reg.iter().filter_map(|w| w.upgrade()).find(|e| e.key == key) {
            return Ok(e);
        }
        if let Some((pid, holder)) = OwnerNote::holder(key) {
            return Err(Error::Config(format!(
                "{} is held by pipeline \"{holder}\" (pid {pid}): one process drives an interface's AF_XDP engine, \
                 and every connection of that process on {} shares it. Open this connection from that process, \
                 or use another interface or the kernel transport (--transport kernel)",
                xc.ifname, xc.ifname
            )));
        }
        let xsk = XdpSocket::open(xc)?;
        if !quiet {
            eprintln!("pipeline: AF_XDP on {}: {}, {} RX queue(s)", xc.ifname, xsk.mode(), xsk.queue_ids().len());
        }
        let e = Arc::new(Engine {
            umem: xsk.umem_view(),
            mode: xsk.mode().clone(),
            queues: xsk.queue_ids(),
            ifname: xc.ifname.clone(),
            key,
            _owner: OwnerNote::write(key, name),
            core: Mutex::new(Core {
                xsk,
                slots: Vec::new(),
                next_id: 1,
                owner: vec![0u32; TOTAL_UMEM_FRAMES].into_boxed_slice(),
                rx: [RxDesc::default(); BATCH],
                turn: 0,
                rx_unmatched: 0,
                tx_refused: 0,
                busy_polls: 0,
                stale_rx_released: 0,
                flows_replaced: 0,
            }),
        });
        reg.push(Arc::downgrade(&e));
        Ok(e)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Core>> {
        self.core.lock().map_err(|_| Error::Closed(format!("the AF_XDP engine on {} failed (a poll panicked)", self.ifname)))
    }

    /// Add a connection: its flow is redirected from now on.
    pub fn add(
        self: &Arc<Self>,
        flow: Flow,
        port: EnginePort,
        stats: StatsRegion,
        fault: &FaultConfig,
        rx_loss_percent: u32,
    ) -> Result<Registration> {
        let mut c = self.lock()?;
        c.xsk.add_flow(flow)?;
        if rx_loss_percent > 0 {
            c.xsk.set_rx_loss_percent(&flow, rx_loss_percent)?;
        }
        let id = c.next_id;
        c.next_id += 1;
        let released = port.raw_inbox.position();
        c.slots.push(Slot {
            id,
            flow,
            port,
            released,
            held: [0; 3],
            msg_in_flight: 0,
            hook: fault.is_active().then(|| FaultHook::new(fault.clone())),
            stats,
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            tx_refused: 0,
        });
        // Hand the newcomer its first frames (the SYN goes out on the next poll).
        c.top_up();
        Ok(Registration { engine: self.clone(), id })
    }

    /// One poll, if nobody else is polling right now.
    pub fn poll(&self, now: u64) -> Result<Progress> {
        match self.core.try_lock() {
            Ok(mut c) => Ok(c.poll(now)),
            Err(std::sync::TryLockError::WouldBlock) => Ok(Progress::Idle),
            Err(std::sync::TryLockError::Poisoned(_)) => {
                Err(Error::Closed(format!("the AF_XDP engine on {} failed (a poll panicked)", self.ifname)))
            }
        }
    }

    pub fn umem_view(&self) -> UmemView {
        self.umem
    }
    pub fn mode(&self) -> &XdpMode {
        &self.mode
    }
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    /// The RX queues with a socket bound.
    pub fn queues(&self) -> &[u32] {
        &self.queues
    }

    pub fn stats(&self) -> EngineStats {
        match self.core.lock() {
            Ok(c) => c.engine_stats(),
            Err(_) => EngineStats::default(),
        }
    }

    /// The stats of this process's running engine on `ifname` in the calling thread's
    /// network namespace, if there is one (tests and tools: frame accounting across
    /// reconnects).
    pub fn stats_for(ifname: &str) -> Option<EngineStats> {
        let key = (netns_id(), crate::xdp::addr::ifindex(ifname).ok()?);
        let e = ENGINES.lock().ok()?.iter().filter_map(|w| w.upgrade()).find(|e| e.key == key)?;
        Some(e.stats())
    }
}

/// A connection's place in its engine; dropping it takes the connection out (after
/// its transport, which owns it, has stopped touching frames).
pub struct Registration {
    engine: Arc<Engine>,
    id: u32,
}

impl Registration {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Move this connection to a new 4-tuple (a reconnect); see `Core::set_flow`.
    pub fn set_flow(&self, flow: Flow, rx_loss_percent: u32) -> Result<()> {
        self.engine.lock()?.set_flow(self.id, flow, rx_loss_percent)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut c) = self.engine.core.lock() {
            c.remove(self.id);
        }
    }
}

/// A connection's handle on its engine, placed like any other stage: its `poll` polls
/// the shared engine when nobody else is.
pub struct EngineStage {
    engine: Arc<Engine>,
    stats: StatsRegion,
}

impl EngineStage {
    pub fn new(engine: Arc<Engine>, stats: StatsRegion) -> Self {
        EngineStage { engine, stats }
    }
}

impl Stage for EngineStage {
    fn name(&self) -> &'static str {
        "xdp"
    }
    fn poll(&mut self, now: u64) -> Result<Progress> {
        let r = self.engine.poll(now);
        if let Err(e) = &r {
            // The engine's only failure: a poll (maybe another connection's) panicked
            // while holding it. Say so before the runner records the error (first wins).
            let mut reason = DisconnectReason::stage_error(self.name(), e);
            reason.kind = DisconnectKind::StagePanicked { stage: self.name().into() };
            self.stats.note_reason(&reason);
        }
        r
    }
    fn stays_in_process(&self) -> bool {
        // The engine's UMEM ledger and sockets live in this process's memory, shared
        // by every connection of it: a forked copy would drift from it.
        true
    }
}

/// `/dev/shm/pipeline-xdp-<netns>-<ifindex>`: "pid name" of the process that holds an
/// interface's engine, so another process asking for it gets a useful error instead of
/// EBUSY. Informational only: exclusion is the kernel's (one XDP program per
/// interface). Created O_EXCL|O_NOFOLLOW; a note of a dead process is replaced; a note
/// we cannot replace (another user's) is left alone and not trusted for anything but
/// the message.
struct OwnerNote {
    path: Option<std::path::PathBuf>,
}

impl OwnerNote {
    fn path(key: (u64, u32)) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/dev/shm/pipeline-xdp-{}-{}", key.0, key.1))
    }

    fn read(p: &std::path::Path) -> Option<(i32, String)> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(p).ok()?;
        let mut buf = [0u8; 256];
        let n = f.read(&mut buf).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let (pid, name) = text.trim_end().split_once(' ')?;
        let name: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
        Some((pid.parse().ok()?, name))
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: kill with signal 0 only checks for existence.
        pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
    }

    /// Another live process holding this interface, if its note says so.
    fn holder(key: (u64, u32)) -> Option<(i32, String)> {
        let (pid, name) = Self::read(&Self::path(key))?;
        (pid != std::process::id() as i32 && Self::alive(pid)).then_some((pid, name))
    }

    fn write(key: (u64, u32), name: &str) -> OwnerNote {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = Self::path(key);
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{} {}", std::process::id(), name);
                    return OwnerNote { path: Some(p) };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A dead holder's (or our own earlier) note: replace it.
                    match Self::read(&p) {
                        Some((pid, _)) if Self::alive(pid) && pid != std::process::id() as i32 => break,
                        _ => {
                            let _ = std::fs::remove_file(&p);
                        }
                    }
                }
                Err(_) => break,
            }
        }
        OwnerNote { path: None }
    }
}

impl Drop for OwnerNote {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            if matches!(Self::read(p), Some((pid, _)) if pid == std::process::id() as i32) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_of_reads_the_4_tuple_and_refuses_short_frames() {
        let mut f = vec![0u8; 54];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&443u16.to_be_bytes());
        f[36..38].copy_from_slice(&50000u16.to_be_bytes());
        let fl = flow_of(&f).unwrap();
        assert_eq!(fl.server_ip, std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(fl.local_ip, std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!((fl.server_port, fl.local_port), (443, 50000));
        assert!(flow_of(&f[..37]).is_none());
        f[14] = 0x44; // IHL 4: invalid
        assert!(flow_of(&f).is_none());
    }
}

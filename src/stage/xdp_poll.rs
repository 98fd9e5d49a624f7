//! The XDP poll stage (design §5.1): the only code that touches the AF_XDP socket.
//!
//! Each poll: (1) every outbox (RAW, ACK, PONG) -> TX, one flush and at most one
//! `sendto` kick; (2) rx ring -> RAW_INBOX (frames stay the transport's until it has
//! consumed their descriptors); when nothing moved, (3) RX frames whose RAW_INBOX
//! descriptors the transport has passed (`Producer::consumer_pos`, read back with
//! `Producer::peek_at`) go back to the fill ring, and (4) completions return TX frames
//! to their pools by address range, and (5) the TX free lists the transport allocates
//! from are topped up.
//!
//! TX frame allocation across stages: the seed's transport allocates TX frames from
//! "its" ACK/PONG/MSG pools, but the ledger that knows which frames are free belongs
//! to the XdpSocket (the completion ring says when a frame is free again). So this
//! stage publishes free frame addresses on three small rings (`tx_free_{ack,pong,msg}`)
//! and the transport pops one, writes its packet through a [`UmemView`], and pushes the
//! descriptor on an outbox. Works the same across threads and forked processes.

use super::{Progress, Stage};
use crate::error::Result;
use crate::ring::{Consumer, ElemRing, FrameType, Producer, UmemFrameDescriptor};
use crate::shm::{names, ShmDir};
use crate::stats::{Counter, StatsRegion};
use crate::xdp::{RxDesc, TxKind, UmemView, XdpSocket, BATCH};

/// Capacity of the descriptor rings between XDP poll and transport.
pub const DESC_RING: usize = 4096;
/// Capacity of each TX free-frame ring.
pub const FREE_RING: usize = 256;

/// The rings between the XDP poll stage and an XDP transport (our TCP + TLS).
#[derive(Clone)]
pub struct XdpRings {
    pub raw_inbox: ElemRing<UmemFrameDescriptor>,
    pub raw_outbox: ElemRing<UmemFrameDescriptor>,
    pub ack_outbox: ElemRing<UmemFrameDescriptor>,
    pub pong_outbox: ElemRing<UmemFrameDescriptor>,
    /// Free TX frame data addresses, indexed by `TxKind as usize` (Ack, Pong, Msg).
    pub tx_free: [ElemRing<u64>; 3],
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
                ElemRing::create(dir, "tx_free_msg.shm", FREE_RING)?,
            ],
        })
    }
}

/// AF_XDP socket <-> rings.
pub struct XdpPollStage {
    xsk: XdpSocket,
    raw_inbox: Producer<UmemFrameDescriptor>,
    outboxes: [Consumer<UmemFrameDescriptor>; 3],
    tx_free: [Producer<u64>; 3],
    /// RAW_INBOX position up to which RX frames went back to the socket.
    released: u64,
    rx: [RxDesc; BATCH],
    stats: StatsRegion,
}

impl XdpPollStage {
    pub fn new(xsk: XdpSocket, rings: &XdpRings, stats: StatsRegion) -> Self {
        let raw_inbox = rings.raw_inbox.producer();
        let released = raw_inbox.position();
        XdpPollStage {
            xsk,
            raw_inbox,
            outboxes: [
                rings.raw_outbox.consumer(),
                rings.ack_outbox.consumer(),
                rings.pong_outbox.consumer(),
            ],
            tx_free: [
                rings.tx_free[0].producer(),
                rings.tx_free[1].producer(),
                rings.tx_free[2].producer(),
            ],
            released,
            rx: [RxDesc::default(); BATCH],
            stats,
        }
    }

    /// The UMEM, for the transport to write TX frames and read RX frames.
    pub fn umem_view(&self) -> UmemView {
        self.xsk.umem_view()
    }

    pub fn socket(&self) -> &XdpSocket {
        &self.xsk
    }

    fn tx(&mut self) -> usize {
        let mut n = 0;
        for q in 0..3 {
            while n < BATCH {
                let Some(d) = self.outboxes[q].pop() else {
                    break;
                };
                if self.xsk.send(d.umem_addr, d.frame_len as usize).is_err() {
                    // Rejected: the frame is already back in its pool (counted by the socket).
                    self.stats.add(Counter::TxDrops, 1);
                }
                n += 1;
            }
        }
        self.xsk.flush_tx();
        n
    }

    fn rx(&mut self, now: u64) -> usize {
        let room = self.raw_inbox.free().min(BATCH);
        if room == 0 {
            return 0;
        }
        let k = self.xsk.rx_burst(&mut self.rx[..room]);
        for d in &self.rx[..k] {
            let mut desc = UmemFrameDescriptor {
                umem_addr: d.addr,
                frame_len: d.len as u16,
                ..Default::default()
            };
            desc.set_meta(now, 0, FrameType::Rx);
            // Cannot fail: at most `free()` descriptors are staged.
            let _ = self.raw_inbox.stage(desc);
        }
        if k > 0 {
            self.raw_inbox.publish();
        }
        k
    }

    fn reclaim_rx(&mut self) -> usize {
        let upto = self.raw_inbox.consumer_pos();
        let mut n = 0;
        while self.released < upto {
            if let Some(d) = self.raw_inbox.peek_at(self.released) {
                let _ = self.xsk.release_rx(d.umem_addr);
            }
            self.released += 1;
            n += 1;
        }
        n + self.xsk.refill()
    }

    fn top_up_free(&mut self) -> usize {
        let mut n = 0;
        for (i, kind) in TxKind::ALL.iter().enumerate() {
            let mut room = self.tx_free[i].free();
            while room > 0 {
                let Some(a) = self.xsk.alloc_tx(*kind) else {
                    break;
                };
                let _ = self.tx_free[i].stage(a);
                room -= 1;
                n += 1;
            }
            if n > 0 {
                self.tx_free[i].publish();
            }
        }
        n
    }

    fn export_stats(&self) {
        let s = self.xsk.stats();
        self.stats.set(Counter::RxPackets, s.rx_packets);
        self.stats.set(Counter::RxBytes, s.rx_bytes);
        self.stats.set(Counter::TxPackets, s.tx_packets);
        self.stats.set(Counter::TxBytes, s.tx_bytes);
        self.stats.set(Counter::TxKicks, s.tx_kicks);
        self.stats.set(Counter::RxRefilled, s.fill_submitted);
    }
}

impl Stage for XdpPollStage {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn poll(&mut self, now: u64) -> Result<Progress> {
        let moved = self.tx() + self.rx(now);
        if moved > 0 {
            return Ok(Progress::Busy);
        }
        // Idle: give frames back (design §5.1 steps 4 and 5).
        let back = self.reclaim_rx() + self.xsk.reap_completions() + self.top_up_free();
        self.export_stats();
        Ok(Progress::from_bool(back > 0))
    }
}

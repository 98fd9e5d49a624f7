//! UMEM layout and frame ownership.
//!
//! One UMEM of [`TOTAL_UMEM_FRAMES`] x [`FRAME_SIZE`] bytes, split by frame index into
//! four ranges exactly as [`crate::config`] says:
//!
//! ```text
//! [RX_BASE, +RX_FRAMES)  [ACK_BASE, +ACK_FRAMES)  [PONG_BASE, +PONG_FRAMES)  [MSG_BASE, +MSG_FRAMES)
//!  fill ring <-> rx ring   TCP ACK/control TX       encrypted PONG TX          data TX
//! ```
//!
//! Every frame has exactly one owner at a time, tracked in [`FrameLedger`]:
//!
//! - RX frame: `Kernel` (on the fill ring / being written) -> `RxHeld` (handed to the
//!   consumer by the rx ring) -> `RxReleased` (consumer called `release_rx`, waiting for
//!   the next fill-ring batch) -> `Kernel`. An RX frame never goes back to the fill
//!   ring before the consumer released it.
//! - TX frame: `Free` (in its pool) -> `User` (allocated, being written) -> `InFlight`
//!   (descriptor on the TX ring) -> `Free` only when the completion ring returns its
//!   address; the pool is found from the address range, not from the order of
//!   completions. A frame whose submit failed goes `User` -> `Free` through `cancel_tx`.
//!
//! Free lists are fixed-capacity stacks allocated once at start; nothing allocates
//! afterwards. LIFO reuse keeps recently used frames hot in cache.

use crate::config::{
    ACK_BASE, ACK_FRAMES, FRAME_SIZE, MSG_BASE, MSG_FRAMES, PONG_BASE, PONG_FRAMES, RX_BASE, RX_FRAMES, TOTAL_UMEM_FRAMES,
};

/// Bytes the kernel reserves before packet data in every frame (`XDP_PACKET_HEADROOM`).
/// RX packets start here; we use the same offset for TX so every frame has one
/// "data address" (`frame_index * FRAME_SIZE + DATA_OFFSET`).
pub const DATA_OFFSET: usize = 256;

/// Largest packet (Ethernet frame without FCS) a TX frame can hold.
pub const TX_CAPACITY: usize = FRAME_SIZE - DATA_OFFSET;

/// Which partition a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Rx,
    Ack,
    Pong,
    Msg,
}

/// The three TX pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxKind {
    /// Pure ACKs and other TCP control segments (SYN, FIN, RST, window updates).
    Ack = 0,
    /// Encrypted WebSocket PONGs.
    Pong = 1,
    /// Data segments (TLS records carrying WebSocket messages); also the frames the
    /// TCP layer holds for retransmission.
    Msg = 2,
}

impl TxKind {
    pub const ALL: [TxKind; 3] = [TxKind::Ack, TxKind::Pong, TxKind::Msg];
    fn range(self) -> (usize, usize) {
        match self {
            TxKind::Ack => (ACK_BASE, ACK_FRAMES),
            TxKind::Pong => (PONG_BASE, PONG_FRAMES),
            TxKind::Msg => (MSG_BASE, MSG_FRAMES),
        }
    }
}

/// Frame index of a UMEM address (any address inside the frame).
#[inline]
pub fn frame_index(addr: u64) -> usize {
    addr as usize / FRAME_SIZE
}

/// Data address of frame `index`.
#[inline]
pub fn frame_addr(index: usize) -> u64 {
    (index * FRAME_SIZE + DATA_OFFSET) as u64
}

/// Partition of an address, by range; `None` when outside the UMEM.
#[inline]
pub fn kind_of(addr: u64) -> Option<FrameKind> {
    let i = frame_index(addr);
    if i < RX_BASE + RX_FRAMES {
        Some(FrameKind::Rx)
    } else if i < ACK_BASE + ACK_FRAMES {
        Some(FrameKind::Ack)
    } else if i < PONG_BASE + PONG_FRAMES {
        Some(FrameKind::Pong)
    } else if i < MSG_BASE + MSG_FRAMES {
        Some(FrameKind::Msg)
    } else {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// TX frame in its pool.
    Free,
    /// TX frame allocated by the user, not yet submitted.
    User,
    /// TX frame on the TX ring / in the kernel until its completion.
    InFlight,
    /// RX frame owned by the kernel (fill ring, or written into, or on the rx ring).
    Kernel,
    /// RX frame handed to the consumer.
    RxHeld,
    /// RX frame released by the consumer, queued for the fill ring.
    RxReleased,
}

/// Misuse reported by the ledger. The frame's state is left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerError {
    /// Address outside the UMEM or in the wrong partition for the call.
    BadAddress(u64),
    /// The frame is not in the state the call needs (double free, release of a frame
    /// never received, completion of a frame never sent ...).
    WrongState(u64),
}

/// Pool and ring counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Allocations refused because the pool was empty, per [`TxKind`].
    pub exhausted: [u64; 3],
    /// Frames returned by the completion ring, per [`TxKind`].
    pub completed: [u64; 3],
    /// Frames returned without being sent (submit failed / cancelled), per [`TxKind`].
    pub cancelled: [u64; 3],
    /// Completion-ring addresses that did not belong to an in-flight TX frame.
    pub comp_unexpected: u64,
    /// RX frames released by the consumer.
    pub rx_released: u64,
    /// Invalid `release_rx` calls (double release, not an RX frame).
    pub rx_bad_release: u64,
}

/// Ownership of every UMEM frame, the three TX free lists and the RX refill queue.
/// Pure bookkeeping: no syscalls, fully testable without a kernel.
#[derive(Debug)]
pub struct FrameLedger {
    state: Box<[State]>,
    free: [Vec<u32>; 3],
    /// RX frames released by the consumer, waiting for the fill ring.
    refill: Vec<u32>,
    /// TX frames in state `InFlight`.
    in_flight: usize,
    stats: PoolStats,
}

impl Default for FrameLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameLedger {
    /// All TX frames free; all RX frames queued for the first fill-ring batch
    /// (state `RxReleased`).
    pub fn new() -> Self {
        let mut state = vec![State::Free; TOTAL_UMEM_FRAMES].into_boxed_slice();
        let mut refill = Vec::with_capacity(RX_FRAMES);
        for i in RX_BASE..RX_BASE + RX_FRAMES {
            state[i] = State::RxReleased;
            refill.push(i as u32);
        }
        let mk = |k: TxKind| {
            let (base, n) = k.range();
            let mut v = Vec::with_capacity(n);
            // Reverse so the first allocations come out in ascending order.
            v.extend((base..base + n).rev().map(|i| i as u32));
            v
        };
        FrameLedger { state, free: [mk(TxKind::Ack), mk(TxKind::Pong), mk(TxKind::Msg)], refill, in_flight: 0, stats: PoolStats::default() }
    }

    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Free frames in a pool.
    pub fn available(&self, kind: TxKind) -> usize {
        self.free[kind as usize].len()
    }

    /// Frames of a pool not in the pool (user-held or in flight).
    pub fn outstanding(&self, kind: TxKind) -> usize {
        kind.range().1 - self.available(kind)
    }

    /// Take a TX frame; returns its data address. `None` (and a counted exhaustion) when
    /// the pool is empty.
    #[inline]
    pub fn alloc_tx(&mut self, kind: TxKind) -> Option<u64> {
        match self.free[kind as usize].pop() {
            Some(i) => {
                self.state[i as usize] = State::User;
                Some(frame_addr(i as usize))
            }
            None => {
                self.stats.exhausted[kind as usize] += 1;
                None
            }
        }
    }

    fn tx_kind(addr: u64) -> Option<TxKind> {
        match kind_of(addr)? {
            FrameKind::Ack => Some(TxKind::Ack),
            FrameKind::Pong => Some(TxKind::Pong),
            FrameKind::Msg => Some(TxKind::Msg),
            FrameKind::Rx => None,
        }
    }

    /// A user-held TX frame's descriptor went onto the TX ring.
    #[inline]
    pub fn mark_in_flight(&mut self, addr: u64) -> Result<(), LedgerError> {
        Self::tx_kind(addr).ok_or(LedgerError::BadAddress(addr))?;
        let s = &mut self.state[frame_index(addr)];
        if *s != State::User {
            return Err(LedgerError::WrongState(addr));
        }
        *s = State::InFlight;
        self.in_flight += 1;
        Ok(())
    }

    /// TX frames submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether a TX frame is user-held (may be written / submitted).
    pub fn is_user_held(&self, addr: u64) -> bool {
        Self::tx_kind(addr).is_some() && self.state[frame_index(addr)] == State::User
    }

    /// Give back a user-held TX frame that was never submitted (or whose submit failed).
    #[inline]
    pub fn cancel_tx(&mut self, addr: u64) -> Result<TxKind, LedgerError> {
        let k = Self::tx_kind(addr).ok_or(LedgerError::BadAddress(addr))?;
        let i = frame_index(addr);
        if self.state[i] != State::User {
            return Err(LedgerError::WrongState(addr));
        }
        self.state[i] = State::Free;
        self.free[k as usize].push(i as u32);
        self.stats.cancelled[k as usize] += 1;
        Ok(k)
    }

    /// The completion ring returned `addr`: the kernel is done with it; back to its pool
    /// (found by address range).
    #[inline]
    pub fn complete(&mut self, addr: u64) -> Result<TxKind, LedgerError> {
        self.completed(addr, false)
    }

    /// The completion ring returned `addr`, and its owner keeps it (a data frame held for
    /// retransmission): the frame goes back to `User`, not to its pool.
    #[inline]
    pub fn complete_keep(&mut self, addr: u64) -> Result<TxKind, LedgerError> {
        self.completed(addr, true)
    }

    fn completed(&mut self, addr: u64, keep: bool) -> Result<TxKind, LedgerError> {
        let Some(k) = Self::tx_kind(addr) else {
            self.stats.comp_unexpected += 1;
            return Err(LedgerError::BadAddress(addr));
        };
        let i = frame_index(addr);
        if self.state[i] != State::InFlight {
            self.stats.comp_unexpected += 1;
            return Err(LedgerError::WrongState(addr));
        }
        self.in_flight -= 1;
        self.stats.completed[k as usize] += 1;
        if keep {
            self.state[i] = State::User;
        } else {
            self.state[i] = State::Free;
            self.free[k as usize].push(i as u32);
        }
        Ok(k)
    }

    /// Whether a TX frame is in flight (on the TX ring or in the kernel).
    pub fn is_in_flight(&self, addr: u64) -> bool {
        Self::tx_kind(addr).is_some() && self.state[frame_index(addr)] == State::InFlight
    }

    /// The rx ring handed us `addr`.
    #[inline]
    pub fn rx_received(&mut self, addr: u64) -> Result<(), LedgerError> {
        if kind_of(addr) != Some(FrameKind::Rx) {
            return Err(LedgerError::BadAddress(addr));
        }
        let s = &mut self.state[frame_index(addr)];
        if *s != State::Kernel {
            return Err(LedgerError::WrongState(addr));
        }
        *s = State::RxHeld;
        Ok(())
    }

    /// The consumer is done with an RX frame; it is queued for the fill ring.
    #[inline]
    pub fn release_rx(&mut self, addr: u64) -> Result<(), LedgerError> {
        if kind_of(addr) != Some(FrameKind::Rx) {
            self.stats.rx_bad_release += 1;
            return Err(LedgerError::BadAddress(addr));
        }
        let i = frame_index(addr);
        if self.state[i] != State::RxHeld {
            self.stats.rx_bad_release += 1;
            return Err(LedgerError::WrongState(addr));
        }
        self.state[i] = State::RxReleased;
        self.refill.push(i as u32);
        self.stats.rx_released += 1;
        Ok(())
    }

    /// Whether an RX frame is currently held by the consumer.
    pub fn is_rx_held(&self, addr: u64) -> bool {
        kind_of(addr) == Some(FrameKind::Rx) && self.state[frame_index(addr)] == State::RxHeld
    }

    /// RX frames waiting for the fill ring.
    pub fn refill_pending(&self) -> usize {
        self.refill.len()
    }

    /// RX frames currently held by the consumer.
    pub fn rx_held(&self) -> usize {
        self.state[RX_BASE..RX_BASE + RX_FRAMES].iter().filter(|s| **s == State::RxHeld).count()
    }

    /// Hand up to `max` released RX frames to `push` (which puts them on the fill ring
    /// and returns how many it took); those become kernel-owned.
    pub fn drain_refill(&mut self, max: usize, push: impl FnOnce(&[u32]) -> usize) -> usize {
        let n = self.refill.len().min(max);
        if n == 0 {
            return 0;
        }
        let start = self.refill.len() - n;
        let taken = push(&self.refill[start..]).min(n);
        // The first `taken` of the slice went to the kernel; drop exactly those.
        for k in 0..taken {
            let i = self.refill[start + k] as usize;
            self.state[i] = State::Kernel;
        }
        self.refill.drain(start..start + taken);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_config() {
        assert_eq!(kind_of(frame_addr(RX_BASE)), Some(FrameKind::Rx));
        assert_eq!(kind_of(frame_addr(ACK_BASE - 1)), Some(FrameKind::Rx));
        assert_eq!(kind_of(frame_addr(ACK_BASE)), Some(FrameKind::Ack));
        assert_eq!(kind_of(frame_addr(PONG_BASE)), Some(FrameKind::Pong));
        assert_eq!(kind_of(frame_addr(MSG_BASE)), Some(FrameKind::Msg));
        assert_eq!(kind_of(frame_addr(TOTAL_UMEM_FRAMES - 1)), Some(FrameKind::Msg));
        assert_eq!(kind_of(frame_addr(TOTAL_UMEM_FRAMES)), None);
        // Any offset inside a frame maps to the frame.
        assert_eq!(frame_index(frame_addr(ACK_BASE) + 100), ACK_BASE);
    }

    #[test]
    fn tx_frames_return_by_address_not_order() {
        let mut l = FrameLedger::new();
        let a: Vec<u64> = (0..5).map(|_| l.alloc_tx(TxKind::Msg).unwrap()).collect();
        let b = l.alloc_tx(TxKind::Ack).unwrap();
        for &x in a.iter().chain([b].iter()) {
            l.mark_in_flight(x).unwrap();
        }
        // Not reusable before completion.
        assert_eq!(l.available(TxKind::Msg), MSG_FRAMES - 5);
        // Complete in reverse, interleaved.
        l.complete(b).unwrap();
        for &x in a.iter().rev() {
            assert_eq!(l.complete(x), Ok(TxKind::Msg));
        }
        assert_eq!(l.available(TxKind::Msg), MSG_FRAMES);
        assert_eq!(l.available(TxKind::Ack), ACK_FRAMES);
        // Double completion is refused and counted.
        assert_eq!(l.complete(b), Err(LedgerError::WrongState(b)));
        assert_eq!(l.stats().comp_unexpected, 1);
    }

    #[test]
    fn a_kept_completion_stays_with_its_owner() {
        let mut l = FrameLedger::new();
        let a = l.alloc_tx(TxKind::Msg).unwrap();
        let free = l.available(TxKind::Msg);
        l.mark_in_flight(a).unwrap();
        assert!(l.is_in_flight(a));
        assert_eq!(l.complete_keep(a), Ok(TxKind::Msg));
        assert!(l.is_user_held(a), "held for retransmission, not in the pool");
        assert_eq!(l.available(TxKind::Msg), free);
        assert_eq!(l.in_flight(), 0);
        // It can be sent again, and given back when done.
        l.mark_in_flight(a).unwrap();
        assert_eq!(l.complete(a), Ok(TxKind::Msg));
        assert_eq!(l.available(TxKind::Msg), free + 1);
        assert_eq!(l.complete_keep(a), Err(LedgerError::WrongState(a)), "not in flight");
    }

    #[test]
    fn exhaustion_and_cancel() {
        let mut l = FrameLedger::new();
        let v: Vec<u64> = (0..PONG_FRAMES).map(|_| l.alloc_tx(TxKind::Pong).unwrap()).collect();
        assert_eq!(l.alloc_tx(TxKind::Pong), None);
        assert_eq!(l.stats().exhausted[TxKind::Pong as usize], 1);
        // The other pools are unaffected (the C++ project's single FIFO drained all).
        assert!(l.alloc_tx(TxKind::Ack).is_some());
        l.cancel_tx(v[3]).unwrap();
        assert_eq!(l.alloc_tx(TxKind::Pong), Some(v[3]));
        // Cancel of an in-flight frame is refused.
        l.mark_in_flight(v[0]).unwrap();
        assert_eq!(l.cancel_tx(v[0]), Err(LedgerError::WrongState(v[0])));
    }

    #[test]
    fn rx_frames_refill_only_after_release() {
        let mut l = FrameLedger::new();
        assert_eq!(l.refill_pending(), RX_FRAMES);
        let got = l.drain_refill(usize::MAX, |s| s.len());
        assert_eq!(got, RX_FRAMES);
        let a = frame_addr(RX_BASE + 7);
        l.rx_received(a).unwrap();
        assert_eq!(l.refill_pending(), 0);
        assert!(l.is_rx_held(a));
        l.release_rx(a).unwrap();
        assert_eq!(l.refill_pending(), 1);
        assert_eq!(l.release_rx(a), Err(LedgerError::WrongState(a)));
        assert_eq!(l.release_rx(frame_addr(MSG_BASE)), Err(LedgerError::BadAddress(frame_addr(MSG_BASE))));
        // A partially accepting fill ring keeps the rest queued.
        l.rx_received(frame_addr(RX_BASE + 8)).unwrap();
        l.release_rx(frame_addr(RX_BASE + 8)).unwrap();
        assert_eq!(l.drain_refill(10, |_| 1), 1);
        assert_eq!(l.refill_pending(), 1);
    }
}

//! MSG_INBOX: decrypted bytes from the transport to the WebSocket stage and the
//! AppClient, who read them in place.
//!
//! Three positions, all stream offsets that only grow:
//! `read_pos` (released by the AppClient) <= `aux_pos` (parsed by the WebSocket stage)
//! <= `write_pos` (written by the transport).
//!
//! Two policies for a consumer that falls behind:
//! - **backpressure** (default): the transport only writes into free space; when the
//!   ring is full it stops reading from TLS/TCP, and our TCP window closes. Nothing is
//!   lost.
//! - **overwrite** (the seed's §12.3, opt-in): the transport never waits. Writing over
//!   unreleased bytes sets the dirty flag and counts the overrun; readers notice with
//!   [`MsgInbox::check_and_clear_dirty`] / [`MsgInbox::overrun_since`] and resynchronise.

use std::sync::atomic::Ordering;

use super::bytes::{ByteRing, AUX_OFF, DIRTY_OFF, EXT_OFF, MODE_OFF, OVERRUN_OFF, READ_OFF, STAMPS, STAMPS_OFF, STAMP_OFF};
use crate::error::Result;
use crate::shm::{names, ShmDir};

/// What the transport does when the consumer is behind.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverrunPolicy {
    Backpressure = 0,
    Overwrite = 1,
}

/// The shared MSG_INBOX (cloneable; one writer, readers as described above).
#[derive(Clone)]
pub struct MsgInbox {
    ring: ByteRing,
}

impl MsgInbox {
    pub fn create(dir: &ShmDir, capacity: usize, policy: OverrunPolicy) -> Result<Self> {
        Self::create_named(dir, names::MSG_INBOX, capacity, policy)
    }

    /// A byte ring of the same kind under another file name (WIRE_INBOX: the wire
    /// bytes the WebSocket stage inflates from when permessage-deflate is offered).
    pub fn create_named(dir: &ShmDir, file: &str, capacity: usize, policy: OverrunPolicy) -> Result<Self> {
        let ring = ByteRing::create(dir, file, capacity)?;
        ring.ctl32(MODE_OFF).store(policy as u32, Ordering::Release);
        Ok(MsgInbox { ring })
    }

    pub fn attach(dir: &ShmDir) -> Result<Self> {
        Ok(MsgInbox { ring: ByteRing::attach(dir, names::MSG_INBOX)? })
    }

    pub fn ring(&self) -> &ByteRing {
        &self.ring
    }

    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    pub fn policy(&self) -> OverrunPolicy {
        if self.ring.ctl32(MODE_OFF).load(Ordering::Acquire) == 1 {
            OverrunPolicy::Overwrite
        } else {
            OverrunPolicy::Backpressure
        }
    }

    /// The single writer (transport stage).
    pub fn writer(&self) -> InboxWriter {
        let w = self.ring.write_pos();
        InboxWriter { ring: self.ring.clone(), write: w, cached_read: self.ring.read_pos(), overwrite: self.policy() == OverrunPolicy::Overwrite }
    }

    pub fn write_pos(&self) -> u64 {
        self.ring.write_pos()
    }

    /// Bytes released by the AppClient.
    pub fn read_pos(&self) -> u64 {
        self.ring.read_pos()
    }

    /// The WebSocket stage's parse position (observability and restart).
    pub fn parsed_pos(&self) -> u64 {
        self.ring.ctl64(AUX_OFF).load(Ordering::Acquire)
    }

    pub fn set_parsed_pos(&self, pos: u64) {
        self.ring.ctl64(AUX_OFF).store(pos, Ordering::Release);
    }

    /// The AppClient is done with everything before `pos`.
    #[inline]
    pub fn release_to(&self, pos: u64) {
        self.ring.set_read_pos(pos);
    }

    /// Bytes readable from `pos` (up to the writer's published position).
    #[inline]
    pub fn readable_from(&self, pos: u64) -> usize {
        self.ring.write_pos().saturating_sub(pos) as usize
    }

    /// Written bytes `[pos, pos + len)`.
    ///
    /// # Safety
    /// See [`ByteRing::slice`].
    #[inline]
    pub unsafe fn slice(&self, pos: u64, len: usize) -> &[u8] {
        self.ring.slice(pos, len)
    }

    /// Mutable written bytes (the WebSocket stage compacting a fragmented message).
    ///
    /// # Safety
    /// See [`ByteRing::slice_mut`].
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, pos: u64, len: usize) -> &mut [u8] {
        self.ring.slice_mut(pos, len)
    }

    /// Turn the low 32 bits carried in a `WsFrameInfo` back into a stream position,
    /// given any position `near` within 2^31 bytes of it (e.g. the reader's own).
    #[inline]
    pub fn expand_pos(low32: u32, near: u64) -> u64 {
        near.wrapping_add((low32.wrapping_sub(near as u32) as i32) as i64 as u64)
    }

    /// Has the writer overwritten data at or after `pos`? (Overwrite mode readers call
    /// this after reading to know whether what they read is intact.)
    #[inline]
    pub fn overrun_since(&self, pos: u64) -> bool {
        self.ring.write_pos().saturating_sub(pos) > self.ring.capacity() as u64
    }

    /// The negotiated extension word the transport stored at the upgrade of connection
    /// `generation` (0: not yet; see `ws::deflate::Negotiated::from_word`). One slot per
    /// generation parity: a reconnect's word never overwrites the one of the connection
    /// whose bytes are still being parsed.
    pub fn extension(&self, generation: u64) -> u32 {
        self.ring.ctl32(EXT_OFF + 4 * (generation & 1) as usize).load(Ordering::Acquire)
    }

    /// Read and clear the dirty flag set by an overwriting writer.
    pub fn check_and_clear_dirty(&self) -> bool {
        self.ring.ctl32(DIRTY_OFF).swap(0, Ordering::AcqRel) != 0
    }

    /// Total bytes overwritten before they were released.
    pub fn overrun_bytes(&self) -> u64 {
        self.ring.ctl64(OVERRUN_OFF).load(Ordering::Acquire)
    }
}

/// The transport's handle: hands out free space to decrypt into, then publishes it.
pub struct InboxWriter {
    ring: ByteRing,
    write: u64,
    cached_read: u64,
    overwrite: bool,
}

impl InboxWriter {
    /// Contiguous free bytes (reloading the reader's position only when the cached one
    /// does not leave `want` bytes).
    #[inline]
    pub fn free(&mut self, want: usize) -> usize {
        let cap = self.ring.capacity() as u64;
        let mut free = cap - (self.write - self.cached_read).min(cap);
        if free < want as u64 {
            self.cached_read = self.ring.ctl64(READ_OFF).load(Ordering::Acquire);
            free = cap - (self.write - self.cached_read).min(cap);
        }
        free as usize
    }

    /// Space to write up to `max` bytes into, contiguous. In backpressure mode it is
    /// at most the free space (possibly empty); in overwrite mode it is `max` (capped at
    /// the capacity) and overwriting unreleased bytes marks the ring dirty.
    #[inline]
    pub fn buf(&mut self, max: usize) -> &mut [u8] {
        let cap = self.ring.capacity();
        let free = self.free(max);
        let len = if self.overwrite { max.min(cap) } else { max.min(free) };
        if len > free {
            self.ring.ctl32(DIRTY_OFF).store(1, Ordering::Release);
            self.ring.ctl64(OVERRUN_OFF).fetch_add((len - free) as u64, Ordering::AcqRel);
        }
        // SAFETY: [write, write + len) is free space owned by this single writer
        // (or, in overwrite mode, deliberately reclaimed and flagged above).
        unsafe { self.ring.slice_mut(self.write, len) }
    }

    /// Publish `n` bytes written into the last `buf`.
    #[inline]
    pub fn commit(&mut self, n: usize) {
        self.write += n as u64;
        self.ring.set_write_pos(self.write);
    }

    /// Publish `n` bytes written into the last `buf`, stamped: they (and any earlier
    /// unstamped bytes) arrived at `arrival_ns` and were decrypted at `decrypted_ns`.
    /// The stamp is stored before the bytes are published, so a reader that sees the
    /// bytes finds their stamp ([`StampCursor`]).
    #[inline]
    pub fn commit_stamped(&mut self, n: usize, arrival_ns: u64, decrypted_ns: u64) {
        let k = self.ring.ctl64(STAMPS_OFF).load(Ordering::Relaxed);
        let e = STAMP_OFF + ((k & (STAMPS - 1)) as usize) * 24;
        self.ring.ctl64(e).store(self.write + n as u64, Ordering::Relaxed);
        self.ring.ctl64(e + 8).store(arrival_ns, Ordering::Relaxed);
        self.ring.ctl64(e + 16).store(decrypted_ns, Ordering::Relaxed);
        self.ring.ctl64(STAMPS_OFF).store(k + 1, Ordering::Release);
        self.commit(n);
    }

    /// Copy `data` in (tests and the kernel path's plain `ws://`); returns bytes taken.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let b = self.buf(data.len());
        let n = b.len();
        b.copy_from_slice(&data[..n]);
        self.commit(n);
        n
    }

    /// [`InboxWriter::write`], stamped like [`InboxWriter::commit_stamped`].
    pub fn write_stamped(&mut self, data: &[u8], arrival_ns: u64, decrypted_ns: u64) -> usize {
        let b = self.buf(data.len());
        let n = b.len();
        b.copy_from_slice(&data[..n]);
        self.commit_stamped(n, arrival_ns, decrypted_ns);
        n
    }

    pub fn position(&self) -> u64 {
        self.write
    }

    /// Store the negotiated extension word of connection `generation` (before
    /// committing the bytes that follow its upgrade, and before publishing the
    /// generation: a reader that sees either sees the word).
    pub fn set_extension(&mut self, generation: u64, word: u32) {
        self.ring.ctl32(EXT_OFF + 4 * (generation & 1) as usize).store(word, Ordering::Release);
    }

    pub fn inbox(&self) -> MsgInbox {
        MsgInbox { ring: self.ring.clone() }
    }
}

/// The WebSocket stage's reader of the transport's stamp entries: which arrival and
/// decrypt stamps belong to the bytes up to a position.
///
/// Entries are looked up in stream order, so the cursor only moves forward. A reader
/// more than 16 entries behind (the transport committed many small reads while the
/// WebSocket stage was busy) takes the oldest entry still kept: its stamps are later
/// than the bytes' true ones, never earlier, so the stages stay in order.
pub struct StampCursor {
    ring: ByteRing,
    next: u64,
    cur: (u64, u64, u64),
}

impl StampCursor {
    pub fn new(inbox: &MsgInbox) -> StampCursor {
        StampCursor { ring: inbox.ring.clone(), next: 0, cur: (0, 0, 0) }
    }

    /// (arrival_ns, decrypted_ns) of the bytes ending at `end` (0, 0 if no entry covers
    /// them: a writer that does not stamp).
    #[inline]
    pub fn stamps_for(&mut self, end: u64) -> (u64, u64) {
        if self.cur.0 >= end && self.cur.2 != 0 {
            return (self.cur.1, self.cur.2);
        }
        let count = self.ring.ctl64(STAMPS_OFF).load(Ordering::Acquire);
        if count.saturating_sub(self.next) > STAMPS {
            self.next = count - STAMPS;
        }
        while self.next < count {
            let e = STAMP_OFF + ((self.next & (STAMPS - 1)) as usize) * 24;
            let entry = (
                self.ring.ctl64(e).load(Ordering::Relaxed),
                self.ring.ctl64(e + 8).load(Ordering::Relaxed),
                self.ring.ctl64(e + 16).load(Ordering::Relaxed),
            );
            // The entry was intact if the writer had not yet come round to reuse it.
            let now = self.ring.ctl64(STAMPS_OFF).load(Ordering::Acquire);
            if now.saturating_sub(self.next) > STAMPS {
                self.next = now - STAMPS;
                continue;
            }
            self.next += 1;
            self.cur = entry;
            if entry.0 >= end {
                return (entry.1, entry.2);
            }
        }
        (0, 0)
    }
}

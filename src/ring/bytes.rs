//! The byte-stream rings (MSG_INBOX, MSG_OUTBOX): positions in the header page's
//! control area, data in a mirror-mapped payload.
//!
//! The seed keeps each decrypted TLS record contiguous with a "wrap flag": when fewer
//! bytes than a record remain before the end, the producer skips to the start and the
//! consumer follows. That still splits any WebSocket frame that spans two records
//! around the skip (the C++ project shipped exactly that bug). Mapping the payload
//! twice back to back makes *every* range of up to `capacity` bytes contiguous, so
//! records, frames and reassembled messages are all handed out as one slice with no
//! skip, no gap and no copy. The wrap-around is still there — positions are taken
//! modulo the capacity — it just never shows in a slice.
//!
//! Control area (each index on its own 128-byte block):
//! ```text
//!   ctl + 0     write_pos   producer: bytes ever written
//!   ctl + 128   read_pos    consumer: bytes released (may be overwritten)
//!   ctl + 256   aux_pos     MSG_INBOX: the WebSocket stage's parse position
//!   ctl + 384   dirty (u32) MSG_INBOX: set by an overwriting producer, cleared by the reader
//!   ctl + 388   mode  (u32) MSG_INBOX: 0 backpressure, 1 overwrite
//!   ctl + 392   overrun_bytes (u64) MSG_INBOX: total bytes overwritten unread
//!   ctl + 400   extension[2] (u32 each) the inbox the transport writes: the negotiated
//!               permessage-deflate parameters (`ws::deflate::Negotiated::to_word`,
//!               1 = none) of connection generation g in slot g % 2, stored before the
//!               first byte after that connection's upgrade (and before the generation
//!               is published), so a reader still parsing generation g - 1 keeps its word
//!   ctl + 512   stamps (u64) MSG_INBOX: stamp entries ever written by the transport
//!   ctl + 520   stamp[16]    {end_pos, arrival_ns, decrypted_ns} (u64 each): entry n % 16
//!               says the bytes before end_pos arrived and were decrypted then; written
//!               before the commit that publishes those bytes (see `msg_inbox::StampCursor`)
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::shm::{page_size, Region, RegionKind, RegionSpec, ShmDir};

pub(crate) const WRITE_OFF: usize = 0;
pub(crate) const READ_OFF: usize = 128;
pub(crate) const AUX_OFF: usize = 256;
pub(crate) const DIRTY_OFF: usize = 384;
pub(crate) const MODE_OFF: usize = 388;
pub(crate) const OVERRUN_OFF: usize = 392;
pub(crate) const EXT_OFF: usize = 400;
pub(crate) const STAMPS_OFF: usize = 512;
pub(crate) const STAMP_OFF: usize = 520;
/// Stamp entries kept (a power of two).
pub(crate) const STAMPS: u64 = 16;
static_assertions::const_assert!(STAMP_OFF + STAMPS as usize * 24 <= crate::shm::CTL_BYTES);

/// A mapped byte ring. Cloning shares the mapping.
#[derive(Clone)]
pub struct ByteRing {
    region: Arc<Region>,
    cap: u64,
}

fn spec(capacity: usize) -> RegionSpec {
    RegionSpec { kind: RegionKind::ByteRing, elem_size: 1, capacity: capacity as u64, payload_bytes: capacity, mirrored: true }
}

impl ByteRing {
    pub fn create(dir: &ShmDir, file: &str, capacity: usize) -> Result<Self> {
        if !capacity.is_power_of_two() || capacity < page_size() {
            return Err(Error::Config(format!(
                "byte ring {file}: capacity {capacity} must be a power of two of at least one page ({})",
                page_size()
            )));
        }
        let region = dir.create_region(file, spec(capacity))?;
        Ok(ByteRing { region: Arc::new(region), cap: capacity as u64 })
    }

    pub fn attach(dir: &ShmDir, file: &str) -> Result<Self> {
        let region = dir.attach_region(file, spec(0))?;
        let cap = region.header().capacity;
        if !cap.is_power_of_two() || cap as usize != region.payload_len() {
            return Err(Error::Shm(format!("{}: capacity {cap} does not match the file", region.path().display())));
        }
        Ok(ByteRing { region: Arc::new(region), cap })
    }

    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    pub(crate) fn ctl64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: every offset used is inside the control area and 8-aligned.
        unsafe { &*(self.region.ctl_ptr().add(off) as *const AtomicU64) }
    }

    pub(crate) fn ctl32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: every offset used is inside the control area and 4-aligned.
        unsafe { &*(self.region.ctl_ptr().add(off) as *const AtomicU32) }
    }

    pub fn write_pos(&self) -> u64 {
        self.ctl64(WRITE_OFF).load(Ordering::Acquire)
    }

    pub fn read_pos(&self) -> u64 {
        self.ctl64(READ_OFF).load(Ordering::Acquire)
    }

    /// Pointer to stream position `pos`. Up to `capacity` bytes from it are contiguous
    /// (mirror mapping).
    #[inline]
    pub fn ptr_at(&self, pos: u64) -> *mut u8 {
        // SAFETY: (pos mod cap) < cap and the mirrored mapping is 2 * cap bytes long.
        unsafe { self.region.payload_ptr().add((pos & (self.cap - 1)) as usize) }
    }

    /// The bytes `[pos, pos + len)` of the stream, `len <= capacity`.
    ///
    /// # Safety
    /// The range must be written (below `write_pos`) and not yet released for
    /// overwriting (at or above `read_pos`), or the caller must tolerate concurrent
    /// overwrite (an overwrite-mode reader checks [`MsgInbox::overrun_since`] after
    /// reading).
    #[inline]
    pub unsafe fn slice(&self, pos: u64, len: usize) -> &[u8] {
        debug_assert!(len as u64 <= self.cap);
        std::slice::from_raw_parts(self.ptr_at(pos), len)
    }

    /// Mutable view of `[pos, pos + len)`.
    ///
    /// # Safety
    /// As [`ByteRing::slice`], and no other live reference may overlap the range (the
    /// SPSC protocol gives the producer exclusive use of free space and the stage that
    /// currently owns a written range exclusive use of it).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, pos: u64, len: usize) -> &mut [u8] {
        debug_assert!(len as u64 <= self.cap);
        std::slice::from_raw_parts_mut(self.ptr_at(pos), len)
    }

    /// Publish the producer position.
    #[inline]
    pub(crate) fn set_write_pos(&self, pos: u64) {
        self.ctl64(WRITE_OFF).store(pos, Ordering::Release);
    }

    /// Publish the consumer (release) position.
    #[inline]
    pub(crate) fn set_read_pos(&self, pos: u64) {
        self.ctl64(READ_OFF).store(pos, Ordering::Release);
    }
}

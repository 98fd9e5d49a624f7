//! A single-producer single-consumer ring of fixed-size elements in a shared-memory
//! region. Works the same between threads, between forked processes, and between a
//! Rust stage and the header-only C consumer (`include/pipeline_consumer.h`).
//!
//! Layout: in the header page's control area (`Region::ctl_ptr`)
//! ```text
//!   ctl + 0     head: next position the producer writes (u64, producer-owned)
//!   ctl + 128   tail: next position the consumer reads  (u64, consumer-owned)
//!   ctl + 256   reader claim: pid of the process that reads the ring (u32, 0 free;
//!               WS_FRAME_INFO only, see `include/pipeline_consumer.h`)
//! ```
//! and in the page-aligned payload `capacity` slots of T; position p lives in slot
//! `p & (capacity - 1)`.
//! Positions are 64-bit and only grow, so full (`head - tail == capacity`) and empty
//! (`head == tail`) never look alike and a consumer that attaches later continues
//! from the stored `tail` rather than replaying from zero.
//!
//! Ordering: the producer writes a slot, then stores `head` with Release; the consumer
//! loads `head` with Acquire before reading slots, so it sees the slot contents. The
//! consumer reads slots, then stores `tail` with Release; the producer loads `tail` with
//! Acquire before overwriting, so it never overwrites an unread slot. Each side keeps a
//! private copy of the other's index and reloads it only when the copy says
//! full/empty, so the shared cache lines bounce once per batch, not per element.
//! The two indices sit 128 bytes apart (adjacent-line prefetch pairs 64-byte lines).

use std::marker::PhantomData;
#[cfg(not(pipeline_loom))]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::types::RingElement;
#[cfg(not(pipeline_loom))]
use crate::error::{Error, Result};
#[cfg(not(pipeline_loom))]
use crate::shm::{Region, RegionKind, RegionSpec, ShmDir};

const HEAD_OFF: usize = 0;
const TAIL_OFF: usize = 128;
/// The header-only reader's claim (u32 pid, 0 free): `include/pipeline_consumer.h`.
#[cfg(not(pipeline_loom))]
const CLAIM_OFF: usize = 256;

/// A mapped element ring; hand out one [`Producer`] and one [`Consumer`].
pub struct ElemRing<T: RingElement> {
    backing: Arc<Backing<T>>,
    capacity: u64,
    _t: PhantomData<T>,
}

// Not `Clone`: a ring handle turns into its ends (`split`, `into_producer`,
// `into_consumer`) by value, so a second producer or consumer cannot be made by
// accident (rtrb's `RingBuffer::new` does the same). The ends share the mapping.
impl<T: RingElement> ElemRing<T> {
    fn dup(&self) -> Self {
        ElemRing { backing: self.backing.clone(), capacity: self.capacity, _t: PhantomData }
    }
}

/// Where the indices and slots live: a shared-memory region normally; under
/// `--cfg pipeline_loom`, heap memory built from loom's atomics and cells so the model checker
/// explores every interleaving of the very same index protocol below.
#[cfg(not(pipeline_loom))]
struct Backing<T> {
    region: Region,
    _t: PhantomData<T>,
}

#[cfg(pipeline_loom)]
struct Backing<T> {
    head: loom::sync::atomic::AtomicU64,
    tail: loom::sync::atomic::AtomicU64,
    slots: Box<[loom::cell::UnsafeCell<std::mem::MaybeUninit<T>>]>,
}

// SAFETY: slots are handed between exactly one producer and one consumer by the index
// protocol below (which loom checks); the indices are atomics.
#[cfg(pipeline_loom)]
unsafe impl<T: Send> Send for Backing<T> {}
// SAFETY: as above.
#[cfg(pipeline_loom)]
unsafe impl<T: Send> Sync for Backing<T> {}

#[cfg(not(pipeline_loom))]
type Atomic = AtomicU64;
#[cfg(pipeline_loom)]
type Atomic = loom::sync::atomic::AtomicU64;

#[cfg(pipeline_loom)]
impl<T: RingElement> ElemRing<T> {
    /// Under loom the rest of the crate still compiles against the normal API; rings are
    /// heap rings there (only the ring model runs under loom).
    pub fn create(_dir: &crate::shm::ShmDir, _file: &str, capacity: usize) -> crate::Result<Self> {
        Ok(Self::new_heap(capacity))
    }

    pub fn attach(_dir: &crate::shm::ShmDir, file: &str) -> crate::Result<Self> {
        Err(crate::Error::Shm(format!("{file}: shared-memory rings are not available under loom")))
    }

    /// A heap ring for the loom model (no shared memory under loom).
    pub fn new_heap(capacity: usize) -> Self {
        let slots = (0..capacity).map(|_| loom::cell::UnsafeCell::new(std::mem::MaybeUninit::uninit())).collect();
        let backing = Backing { head: Atomic::new(0), tail: Atomic::new(0), slots };
        ElemRing { backing: Arc::new(backing), capacity: capacity as u64, _t: PhantomData }
    }

    fn idx(&self, off: usize) -> &Atomic {
        if off == HEAD_OFF {
            &self.backing.head
        } else {
            &self.backing.tail
        }
    }

    unsafe fn write_slot(&self, pos: u64, v: T) {
        self.backing.slots[(pos & (self.capacity - 1)) as usize].with_mut(|p| (*p).write(v));
    }

    unsafe fn read_slot(&self, pos: u64) -> T {
        self.backing.slots[(pos & (self.capacity - 1)) as usize].with(|p| (*p).assume_init_read())
    }

    unsafe fn slot_ref(&self, pos: u64) -> &T {
        self.backing.slots[(pos & (self.capacity - 1)) as usize].with(|p| (*p).assume_init_ref())
    }
}

/// Bytes of `capacity` slots of T, or None when that does not fit a usize (a capacity
/// read from a file is anybody's number: never let it wrap around).
#[cfg(not(pipeline_loom))]
fn slots_bytes<T>(capacity: u64) -> Option<usize> {
    usize::try_from(capacity).ok()?.checked_mul(std::mem::size_of::<T>())
}

#[cfg(not(pipeline_loom))]
fn spec<T>(capacity: u64, payload_bytes: usize) -> RegionSpec {
    RegionSpec {
        kind: RegionKind::ElemRing,
        elem_size: std::mem::size_of::<T>() as u32,
        capacity,
        payload_bytes,
        mirrored: false,
    }
}

#[cfg(not(pipeline_loom))]
impl<T: RingElement> ElemRing<T> {
    /// Create the ring file `file` in an owned directory. `capacity` is a power of two.
    pub fn create(dir: &ShmDir, file: &str, capacity: usize) -> Result<Self> {
        if !capacity.is_power_of_two() || capacity < 2 {
            return Err(Error::Config(format!("ring {file}: capacity {capacity} must be a power of two >= 2")));
        }
        if std::mem::align_of::<T>() > 4096 {
            return Err(Error::Config(format!("ring {file}: element alignment too large")));
        }
        let bytes = slots_bytes::<T>(capacity as u64)
            .ok_or_else(|| Error::Config(format!("ring {file}: capacity {capacity} is too large")))?;
        let region = dir.create_region(file, spec::<T>(capacity as u64, bytes))?;
        Ok(Self::from_region(region))
    }

    /// Attach to an existing ring, checking element size (and layout version).
    pub fn attach(dir: &ShmDir, file: &str) -> Result<Self> {
        let region = dir.attach_region(file, spec::<T>(0, 0))?;
        let cap = region.header().capacity;
        // Every slot index is `pos & (cap - 1)`: the slots must be exactly the payload
        // the file holds (Region::attach checked payload_bytes against the file size).
        if !cap.is_power_of_two() || slots_bytes::<T>(cap) != Some(region.payload_len()) {
            return Err(Error::Shm(format!(
                "{}: capacity {cap} of {}-byte slots does not match the file's {}-byte payload",
                region.path().display(),
                std::mem::size_of::<T>(),
                region.payload_len()
            )));
        }
        Ok(Self::from_region(region))
    }

    fn from_region(region: Region) -> Self {
        let capacity = region.header().capacity;
        ElemRing { backing: Arc::new(Backing { region, _t: PhantomData }), capacity, _t: PhantomData }
    }

    fn idx(&self, off: usize) -> &Atomic {
        // SAFETY: offsets 0 and 128 lie in the header page's control area, which is
        // 256-byte aligned within a page-aligned mapping; AtomicU64 needs 8.
        unsafe { &*(self.backing.region.ctl_ptr().add(off) as *const AtomicU64) }
    }

    fn slot(&self, pos: u64) -> *mut T {
        let i = (pos & (self.capacity - 1)) as usize;
        // SAFETY: i < capacity and the payload holds exactly capacity slots; the payload
        // is page aligned so every T (align <= 4096, size a multiple of align) is aligned.
        unsafe { (self.backing.region.payload_ptr() as *mut T).add(i) }
    }

    /// Mark the ring as read by process `pid`: the claim word of the header-only reader
    /// (`plc_open`), so that an outside reader is refused while an in-process consumer
    /// reads this ring.
    pub fn claim_reader(&self, pid: u32) {
        // SAFETY: CLAIM_OFF (256) is inside the header page's control area, 4-aligned.
        let w = unsafe { &*(self.backing.region.ctl_ptr().add(CLAIM_OFF) as *const std::sync::atomic::AtomicU32) };
        w.store(pid, Ordering::Release);
    }

    /// # Safety
    /// Producer only, on a slot the consumer has released.
    unsafe fn write_slot(&self, pos: u64, v: T) {
        self.slot(pos).write(v)
    }

    /// # Safety
    /// On a published, unreleased slot (consumer), or the producer's own recent slot.
    unsafe fn read_slot(&self, pos: u64) -> T {
        self.slot(pos).read()
    }

    /// # Safety
    /// As `read_slot`; the reference must not outlive the slot's release.
    unsafe fn slot_ref(&self, pos: u64) -> &T {
        &*self.slot(pos)
    }
}

impl<T: RingElement> ElemRing<T> {
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The producer's published position (elements ever pushed).
    pub fn head(&self) -> u64 {
        self.idx(HEAD_OFF).load(Ordering::Acquire)
    }

    /// The consumer's published position (elements ever popped).
    pub fn tail(&self) -> u64 {
        self.idx(TAIL_OFF).load(Ordering::Acquire)
    }

    /// Elements waiting (a snapshot).
    pub fn len(&self) -> usize {
        self.head().wrapping_sub(self.tail()) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The only pair of ends of a ring this process created (or attached and owns
    /// both sides of). Across processes, exactly one producer and one consumer may exist;
    /// the type makes that true within one process, and the runner places the ends.
    pub fn split(self) -> (Producer<T>, Consumer<T>) {
        let p = Producer { ring: self.dup(), head: self.head(), cached_tail: self.tail() };
        (p, self.into_consumer())
    }

    /// The producer side alone (the consumer lives in another process).
    pub fn into_producer(self) -> Producer<T> {
        let head = self.head();
        let cached_tail = self.tail();
        Producer { ring: self, head, cached_tail }
    }

    /// The consumer side alone (an attacher), continuing from the stored tail (never
    /// replaying).
    pub fn into_consumer(self) -> Consumer<T> {
        let tail = self.tail();
        let cached_head = self.head();
        Consumer { ring: self, tail, cached_head }
    }
}

/// Writes elements; publishes with one Release store per [`Producer::publish`].
pub struct Producer<T: RingElement> {
    ring: ElemRing<T>,
    head: u64,
    cached_tail: u64,
}

impl<T: RingElement> Producer<T> {
    /// Free slots, reloading the consumer's index only if the cached one says full.
    pub fn free(&mut self) -> usize {
        let cap = self.ring.capacity;
        if self.head - self.cached_tail == cap {
            self.cached_tail = self.ring.idx(TAIL_OFF).load(Ordering::Acquire);
        }
        (cap - (self.head - self.cached_tail)) as usize
    }

    /// Write `v` without publishing it; returns it back when the ring is full.
    #[inline]
    pub fn stage(&mut self, v: T) -> std::result::Result<(), T> {
        if self.head - self.cached_tail == self.ring.capacity {
            self.cached_tail = self.ring.idx(TAIL_OFF).load(Ordering::Acquire);
            if self.head - self.cached_tail == self.ring.capacity {
                return Err(v);
            }
        }
        // SAFETY: the slot at `head` is free (head - tail < capacity) and only this
        // producer writes slots; the consumer will not read it before `head` is published.
        unsafe { self.ring.write_slot(self.head, v) };
        self.head += 1;
        Ok(())
    }

    /// Make every staged element visible to the consumer.
    #[inline]
    pub fn publish(&mut self) {
        self.ring.idx(HEAD_OFF).store(self.head, Ordering::Release);
    }

    /// Stage and publish one element.
    #[inline]
    pub fn push(&mut self, v: T) -> std::result::Result<(), T> {
        self.stage(v)?;
        self.publish();
        Ok(())
    }

    /// Position of the next element this producer will write.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// How far the consumer has read (Acquire): elements before it are done with.
    pub fn consumer_pos(&mut self) -> u64 {
        self.cached_tail = self.ring.idx(TAIL_OFF).load(Ordering::Acquire);
        self.cached_tail
    }

    /// Read back an element this producer wrote, for `pos` in
    /// `[position() - capacity, position())` — e.g. the XDP stage returning UMEM frames
    /// once the consumer has passed them. Such a slot cannot have been overwritten: only
    /// this producer writes, and it has not written `pos + capacity` yet.
    pub fn peek_at(&self, pos: u64) -> Option<T> {
        if pos >= self.head || self.head - pos > self.ring.capacity {
            return None;
        }
        // SAFETY: bounds checked above; only this producer ever writes the slot.
        Some(unsafe { self.ring.read_slot(pos) })
    }

    pub fn ring(&self) -> &ElemRing<T> {
        &self.ring
    }
}

/// Reads elements; releases slots with one Release store per [`Consumer::release`].
pub struct Consumer<T: RingElement> {
    ring: ElemRing<T>,
    tail: u64,
    cached_head: u64,
}

impl<T: RingElement> Consumer<T> {
    /// Elements ready, reloading the producer's index only when the cache says empty.
    #[inline]
    pub fn available(&mut self) -> usize {
        if self.tail == self.cached_head {
            self.cached_head = self.ring.idx(HEAD_OFF).load(Ordering::Acquire);
        }
        (self.cached_head - self.tail) as usize
    }

    /// Borrow the `i`-th ready element without consuming it (`i < available()`).
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        let pos = self.tail + i as u64;
        if pos >= self.cached_head {
            return None;
        }
        // SAFETY: pos is published (< head loaded with Acquire) and not yet released,
        // so the producer will not overwrite it while this borrow lives (the borrow
        // ends before `advance`/`release`, which take &mut self).
        Some(unsafe { self.ring.slot_ref(pos) })
    }

    /// Consume `n` elements locally (not yet visible to the producer).
    #[inline]
    pub fn advance(&mut self, n: usize) {
        let n = (n as u64).min(self.cached_head - self.tail);
        self.tail += n;
    }

    /// Tell the producer the consumed slots are free.
    #[inline]
    pub fn release(&mut self) {
        self.ring.idx(TAIL_OFF).store(self.tail, Ordering::Release);
    }

    /// Pop one element and release it at once.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.available() == 0 {
            return None;
        }
        // SAFETY: as in `get`: the slot is published and unreleased.
        let v = unsafe { self.ring.read_slot(self.tail) };
        self.tail += 1;
        self.release();
        Some(v)
    }

    /// Position of the next element this consumer reads.
    pub fn position(&self) -> u64 {
        self.tail
    }

    pub fn ring(&self) -> &ElemRing<T> {
        &self.ring
    }
}

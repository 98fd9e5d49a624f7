//! Need-wakeup for the polling consumer of WS_FRAME_INFO: an eventfd that becomes
//! readable when frames, or a state change (the end of the stream among them), are
//! there, written by the producing side only when the consumer has *armed* it.
//!
//! The armed word lives in shared memory (the stats region's control area), so a stage
//! in another process sees it; the eventfd is created before the stages are placed, so
//! a forked stage process inherits the same descriptor.
//!
//! The protocol is Dekker's: each side stores its own word, then loads the other's.
//! ```text
//!   consumer (nothing to take)              producer (after publishing head)
//!   drain the eventfd                       fence(SeqCst)
//!   armed = 1                               if armed != 0 && swap(armed, 0) != 0:
//!   fence(SeqCst)                               write(eventfd, 1)
//!   look at the ring and the state again
//!   found something: armed = 0, return it
//!   else: sleep on the eventfd (poll/epoll/asyncio)
//! ```
//! The lost wakeup is the interleaving where the producer's look at `armed` happens
//! before the consumer's store, and the consumer's second look at the ring happens
//! before the producer's publish: each would miss the other and the consumer would
//! sleep on a frame. The two SeqCst fences forbid exactly that: in the single total
//! order of SeqCst operations one fence comes first, and whatever preceded it (the
//! publish, or `armed = 1`) is visible to the other side after its fence. So either the
//! consumer's second look sees the frame, or the producer sees `armed` and writes. Both
//! may happen: the eventfd is then readable with nothing new, a spurious wakeup the
//! consumer handles by polling once more (and arming again).
//!
//! Cost on the hot path: the producer's fence and one load of a line the consumer
//! writes only when it goes to sleep: no syscall while the consumer is busy (it never
//! arms then), one `write` per sleep otherwise (the swap lets one producer write, not
//! one per batch). A pipeline nobody waits on never arms.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
// Under `--cfg pipeline_loom` the same protocol runs on loom's atomics
// (tests/loom_ring.rs models it).
#[cfg(pipeline_loom)]
use loom::sync::atomic::{fence, AtomicU32};
#[cfg(not(pipeline_loom))]
use std::sync::atomic::{fence, AtomicU32};

use crate::error::{Error, Result};

/// What wakes the consumer: the eventfd (a counter in the model checker).
pub trait Signal {
    /// Make it readable.
    fn signal(&self);
    /// Make it not readable until the next `signal`.
    fn drain(&self);
}

/// A non-blocking eventfd (counter semantics: readable while the counter is non-zero).
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> Result<EventFd> {
        // SAFETY: eventfd takes no pointers; the result is checked before it is owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::last_os("eventfd for the consumer's wakeup"));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Signal for EventFd {
    /// Async-signal-safe (a forked stage process may call it).
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local. EAGAIN (counter at its maximum)
        // means it is readable already, which is all a signal is for.
        unsafe { libc::write(self.raw(), &one as *const u64 as *const libc::c_void, 8) };
    }

    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live local; EAGAIN (already zero) is fine.
        unsafe { libc::read(self.raw(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

/// The producer's side, after every publish and every state change: wake the consumer
/// if (and only if) it armed.
#[inline]
pub fn notify(armed: &AtomicU32, fd: &impl Signal) {
    fence(Ordering::SeqCst);
    if armed.load(Ordering::Relaxed) != 0 && armed.swap(0, Ordering::AcqRel) != 0 {
        fd.signal();
    }
}

/// The consumer's side, having found nothing: reset the eventfd and arm. The caller
/// must look at the ring and the state once more afterwards and [`disarm`] if it
/// found something; only if not may it sleep on the eventfd.
pub fn arm(armed: &AtomicU32, fd: &impl Signal) {
    fd.drain();
    armed.store(1, Ordering::Relaxed);
    fence(Ordering::SeqCst);
}

/// The consumer found something after [`arm`]: no write is needed any more (one may
/// still come; the next wait then returns at once, and the poll after it re-arms).
pub fn disarm(armed: &AtomicU32) {
    armed.store(0, Ordering::Relaxed);
}

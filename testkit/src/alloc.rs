//! A counting global allocator for "nothing allocates on the hot path" tests. Each test
//! binary declares it (`#[global_allocator] static A: CountingAlloc = CountingAlloc;`),
//! arms it around the code under test and reads the count.
//!
//! Only the arming thread's allocations count: the test harness's own threads allocate
//! now and then (a loaded machine made one in five runs see 4 foreign allocations).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` initialisation: reading it never allocates (no lazy init inside `alloc`).
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Forwards to the system allocator, counting allocations while armed.
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`; counting has no effect on the
// memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // `try_with`: during thread teardown the slot may be gone; that thread is not
        // the one under test.
        if ARMED.try_with(|a| a.get()).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

/// Start counting this thread's allocations (from zero).
pub fn arm() {
    ALLOCS.store(0, Ordering::SeqCst);
    ARMED.with(|a| a.set(true));
}

/// Stop counting; this thread's allocations since [`arm`].
pub fn disarm() -> usize {
    ARMED.with(|a| a.set(false));
    ALLOCS.load(Ordering::SeqCst)
}

//! Ctrl-C and friends end a run through the normal path (a close handshake, the
//! guards' `Drop`), so the handlers only raise a flag the loops poll.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Install the flag-raising handler for each of `signals`.
pub fn install(signals: &[libc::c_int]) {
    for &s in signals {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether one of the signals arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

//! Ctrl-C and friends end a run through the normal path (a close handshake, the
//! guards' `Drop`), so the handlers only record the signal the loops poll.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal that arrived (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(s: libc::c_int) {
    // The first one wins: a second Ctrl-C during the close does not change the status.
    let _ = SIGNAL.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed);
}

/// Install the recording handler for each of `signals`.
pub fn install(signals: &[libc::c_int]) {
    for &s in signals {
        // SAFETY: the handler only does an atomic compare-exchange (async-signal-safe).
        unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether one of the signals arrived.
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::Relaxed) != 0
}

/// The exit status a shell gives a command that signal ended: 128 + the signal
/// (SIGINT 130, SIGTERM 143, SIGHUP 129), or 1 if none arrived.
pub fn exit_status() -> u8 {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => 1,
        s => (128 + s) as u8,
    }
}

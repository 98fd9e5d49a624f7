//! Helpers for the tests that drive the C API (`pipeline::ffi`) from Rust.

use pipeline::ffi::pl_last_error;

pub use crate::synthetic::ShmGuard;

/// `n` unmasked final text frames "msg 0", "msg 1", ... back to back: a synthetic feed.
pub fn numbered_frames(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        pipeline::stage::encode_server_frame(&mut v, 1, true, format!("msg {i}").as_bytes());
    }
    v
}

/// This thread's `pl_last_error` message (up to 511 bytes).
pub fn last_error() -> String {
    let mut b = vec![0u8; 512];
    // SAFETY: 512 writable bytes.
    let n = unsafe { pl_last_error(b.as_mut_ptr() as *mut _, b.len()) };
    String::from_utf8_lossy(&b[..n.min(511)]).into_owned()
}

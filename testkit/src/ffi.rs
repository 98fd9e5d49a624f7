//! Helpers for the tests that drive the C API (`pipeline::ffi`) from Rust.

use std::ffi::CString;

use pipeline::ffi::{pl_config_init, pl_last_error, PlConfig, PlLayout, PlResult, PlTransport, PlWait};

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

/// A `PlConfig` for the synthetic transport serving `data` after the upgrade (inline,
/// backoff, 1 MiB inbox, quiet).
///
/// # Safety
/// `url`, `name` and `data` must outlive every use of `cfg` (it points into them).
pub unsafe fn synthetic_config(cfg: &mut PlConfig, url: &CString, name: &CString, data: &[u8]) {
    assert_eq!(pl_config_init(cfg), PlResult::PL_OK);
    cfg.url = url.as_ptr();
    cfg.name = name.as_ptr();
    cfg.transport = PlTransport::PL_TRANSPORT_SYNTHETIC as u32;
    cfg.layout = PlLayout::PL_LAYOUT_INLINE as u32;
    cfg.wait = PlWait::PL_WAIT_BACKOFF as u32;
    cfg.synthetic_data = data.as_ptr();
    cfg.synthetic_len = data.len();
    cfg.synthetic_chunk = 333;
    cfg.inbox_size = 1 << 20;
    cfg.max_message = 1 << 16;
    cfg.quiet = true;
}

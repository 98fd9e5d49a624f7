//! The callback that can send and fail: `pl_on_message_ex` and the `pl_sender` it gets.
//!
//! `pl_on_message` (the plain callback) cannot report an error and has no handle to
//! send with (the handle does not exist yet when the first frames arrive). This one gets
//! a `pl_sender` valid in every layout (the callback always runs in the process that
//! called `pl_start`) and returns `PL_CALLBACK_CONTINUE` (0) or anything else to end
//! the connection: the pipeline disconnects with `PL_DISCONNECT_CALLBACK_ERROR` and the
//! reason given with `pl_sender_set_error`. The C++ wrapper (`wspipe/pipeline.hpp`)
//! catches every exception in its trampoline and returns it this way: nothing unwinds
//! into Rust.

use std::ffi::CStr;
use std::os::raw::{c_char, c_void};

use super::boundary::boundary;
use super::PlResult;
use crate::error::{Error, Result};
use crate::ffi_nonnull;
use crate::pipeline::{Config, OnMessageFallible, Pipeline, Sender};

/// `pl_on_message_ex`'s return value: keep going. Any other value ends the connection
/// (`PL_DISCONNECT_CALLBACK_ERROR`).
pub const PL_CALLBACK_CONTINUE: i32 = 0;
/// A conventional non-zero return: end the connection.
pub const PL_CALLBACK_ABORT: i32 = 1;

/// Sends from inside a message callback (opaque). Valid only during the callback call
/// that received it; thread-safe as the pipeline's own sends.
#[allow(non_camel_case_types)]
pub struct pl_sender {
    sender: Sender,
    /// The reason for a non-zero return (`pl_sender_set_error`).
    error: Option<String>,
}

/// Message callback that can send and fail: runs in the process that called
/// `pl_start` in every layout (in `processes`, on a thread of it), so the caller's state
/// is the one it changes. `payload` points into the shared MSG_INBOX and is valid only
/// during the call; `opcode` as for `pl_on_message`. `sender` sends replies (valid
/// during the call). Return `PL_CALLBACK_CONTINUE` (0), or non-zero to end the
/// connection with `PL_DISCONNECT_CALLBACK_ERROR` (reason: `pl_sender_set_error`).
/// Must not unwind: catch C++ exceptions (the C++ wrapper does).
#[allow(non_camel_case_types)]
pub type pl_on_message_ex = Option<
    unsafe extern "C" fn(user: *mut c_void, sender: *mut pl_sender, payload: *const u8, len: usize, opcode: u32) -> i32,
>;

struct ExCallback {
    f: unsafe extern "C" fn(*mut c_void, *mut pl_sender, *const u8, usize, u32) -> i32,
    user: *mut c_void,
}
// SAFETY: the C caller promises the callback and its user pointer may be used from the
// AppClient stage's thread (documented on `pl_on_message_ex`).
unsafe impl Send for ExCallback {}

pub(crate) fn start_ex(
    config: Config,
    f: unsafe extern "C" fn(*mut c_void, *mut pl_sender, *const u8, usize, u32) -> i32,
    user: *mut c_void,
) -> Result<Pipeline> {
    let cb = ExCallback { f, user };
    Pipeline::start_with_sender_callback(
        config,
        Box::new(move |sender: Sender| -> OnMessageFallible {
            let mut s = pl_sender { sender, error: None };
            Box::new(move |payload: &[u8], opcode: u8, fin: bool| {
                let op = opcode as u32 | if fin { 0 } else { super::api::PL_OPCODE_MORE };
                let cb = &cb;
                // SAFETY: the C callback's contract (see pl_on_message_ex); `s` outlives
                // the call and is not otherwise touched during it.
                let r = unsafe { (cb.f)(cb.user, &mut s, payload.as_ptr(), payload.len(), op) };
                if r == PL_CALLBACK_CONTINUE {
                    Ok(())
                } else {
                    Err(s.error.take().unwrap_or_else(|| format!("the callback returned {r}")))
                }
            })
        }),
    )
}

fn sender_ref<'a>(s: *mut pl_sender) -> &'a pl_sender {
    // SAFETY: callers null-check; the pointer is the one the callback received, valid
    // during the call.
    unsafe { &*s }
}

/// Queue a text message from inside the callback. As `pl_send_text`.
///
/// # Safety
/// `s` from the running callback; `text` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_sender_send_text(s: *mut pl_sender, text: *const c_char, len: usize) -> PlResult {
    boundary(|| {
        ffi_nonnull!(s);
        if text.is_null() && len > 0 {
            return Err(Error::NullArg("text"));
        }
        // SAFETY: `len` readable bytes at text (or none).
        let b = if len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(text as *const u8, len) } };
        let t = std::str::from_utf8(b).map_err(|e| Error::Config(format!("text is not UTF-8: {e}")))?;
        sender_ref(s).sender.send_text(t)
    })
}

/// Queue a binary message from inside the callback. As `pl_send_binary`.
///
/// # Safety
/// `s` from the running callback; `data` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_sender_send_binary(s: *mut pl_sender, data: *const u8, len: usize) -> PlResult {
    boundary(|| {
        ffi_nonnull!(s);
        if data.is_null() && len > 0 {
            return Err(Error::NullArg("data"));
        }
        // SAFETY: `len` readable bytes at data (or none).
        let b = if len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(data, len) } };
        sender_ref(s).sender.send_binary(b)
    })
}

/// Start the close handshake from inside the callback. As `pl_close`.
///
/// # Safety
/// `s` from the running callback; `reason` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn pl_sender_close(s: *mut pl_sender, code: u16, reason: *const c_char) -> PlResult {
    boundary(|| {
        ffi_nonnull!(s);
        let r = if reason.is_null() {
            String::new()
        } else {
            // SAFETY: NUL-terminated per the contract.
            unsafe { CStr::from_ptr(reason) }.to_string_lossy().into_owned()
        };
        sender_ref(s).sender.close(code, &r)
    })
}

/// The reason the callback is about to return non-zero (copied; the last call wins):
/// it becomes the disconnect message ("message callback failed: <reason>").
///
/// # Safety
/// `s` from the running callback; `reason` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn pl_sender_set_error(s: *mut pl_sender, reason: *const c_char) -> PlResult {
    boundary(|| {
        ffi_nonnull!(s, reason);
        // SAFETY: NUL-terminated per the contract; `s` is the callback's, used only by
        // the thread running it.
        let r = unsafe { CStr::from_ptr(reason) }.to_string_lossy().into_owned();
        unsafe { (*s).error = Some(r) };
        Ok(())
    })
}

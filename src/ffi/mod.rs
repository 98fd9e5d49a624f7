//! The C ABI: thin wrappers, no logic of their own.
//!
//! Conventions (as in rustls-ffi):
//! - every exported function runs inside [`boundary`]: a panic becomes
//!   `PL_ERR_PANIC`, never an unwind across the C frame;
//! - a null pointer argument returns `PL_ERR_NULL_ARG` instead of crashing;
//! - results are [`PlResult`] codes; the message of the last failure on this thread is
//!   available from [`pl_last_error`];
//! - out parameters are written only on success;
//! - handles are opaque pointers created and freed by the library;
//! - enums coming from C are integers at the ABI (`uint32_t` fields, `int` codes),
//!   converted with `TryFrom` (an unknown value is `PL_ERR_CONFIG` / "unknown"):
//!   reading a Rust enum from a value no variant names would be UB;
//! - no `&mut` is made from a handle while another thread may use it: every call but
//!   `pl_free` takes it shared, with locks inside (docs/c-api.md, "Threads").
//!
//! The header `include/pipeline.h` is generated from this module by cbindgen
//! (`tools/gen-header.sh`, which parses only `src/ffi`); CI fails when the
//! committed header differs from a fresh one.

mod api;
mod feed;
mod boundary;

pub use api::*;
pub use feed::*;

pub use boundary::{boundary, set_last_error};

use std::os::raw::{c_char, c_int};

use crate::error::Error;

/// Result codes of every `pl_*` function. 0 is success.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum PlResult {
    PL_OK = 0,
    /// A required pointer argument was NULL.
    PL_ERR_NULL_ARG = 1,
    /// Bad option, URL or size.
    PL_ERR_CONFIG = 2,
    /// A system call failed.
    PL_ERR_IO = 3,
    /// Shared memory: wrong layout version, in use, missing.
    PL_ERR_SHM = 4,
    /// A privilege is missing; the message names it and how to grant it.
    PL_ERR_CAPABILITY = 5,
    /// TCP/IP: refused, reset, unreachable.
    PL_ERR_NET = 6,
    /// TLS handshake or certificate failure.
    PL_ERR_TLS = 7,
    /// The peer broke the WebSocket protocol or refused the upgrade.
    PL_ERR_WEBSOCKET = 8,
    /// The connection is closed.
    PL_ERR_CLOSED = 9,
    /// A consumer fell behind and data was overwritten.
    PL_ERR_OVERRUN = 10,
    /// Nothing to do now; try again (non-blocking calls).
    PL_ERR_WOULD_BLOCK = 11,
    /// A timeout expired.
    PL_ERR_TIMEOUT = 12,
    /// A bug: the library panicked. The message has the panic text.
    PL_ERR_PANIC = 13,
}

impl From<&Error> for PlResult {
    fn from(e: &Error) -> Self {
        match e {
            Error::Config(_) => PlResult::PL_ERR_CONFIG,
            Error::Io { .. } => PlResult::PL_ERR_IO,
            Error::Shm(_) => PlResult::PL_ERR_SHM,
            Error::Capability { .. } => PlResult::PL_ERR_CAPABILITY,
            Error::Net(_) | Error::Reset(_) => PlResult::PL_ERR_NET,
            Error::Tls(_) => PlResult::PL_ERR_TLS,
            Error::WebSocket { .. } => PlResult::PL_ERR_WEBSOCKET,
            Error::Closed(_) => PlResult::PL_ERR_CLOSED,
            Error::Overrun(_) => PlResult::PL_ERR_OVERRUN,
            Error::WouldBlock => PlResult::PL_ERR_WOULD_BLOCK,
            Error::Timeout(_) => PlResult::PL_ERR_TIMEOUT,
            Error::NullArg(_) => PlResult::PL_ERR_NULL_ARG,
        }
    }
}

/// The library version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn pl_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

impl PlResult {
    const ALL: [PlResult; 14] = [
        PlResult::PL_OK,
        PlResult::PL_ERR_NULL_ARG,
        PlResult::PL_ERR_CONFIG,
        PlResult::PL_ERR_IO,
        PlResult::PL_ERR_SHM,
        PlResult::PL_ERR_CAPABILITY,
        PlResult::PL_ERR_NET,
        PlResult::PL_ERR_TLS,
        PlResult::PL_ERR_WEBSOCKET,
        PlResult::PL_ERR_CLOSED,
        PlResult::PL_ERR_OVERRUN,
        PlResult::PL_ERR_WOULD_BLOCK,
        PlResult::PL_ERR_TIMEOUT,
        PlResult::PL_ERR_PANIC,
    ];

    /// The name as a NUL-terminated static string.
    fn name(self) -> &'static str {
        match self {
            PlResult::PL_OK => "PL_OK\0",
            PlResult::PL_ERR_NULL_ARG => "PL_ERR_NULL_ARG\0",
            PlResult::PL_ERR_CONFIG => "PL_ERR_CONFIG\0",
            PlResult::PL_ERR_IO => "PL_ERR_IO\0",
            PlResult::PL_ERR_SHM => "PL_ERR_SHM\0",
            PlResult::PL_ERR_CAPABILITY => "PL_ERR_CAPABILITY\0",
            PlResult::PL_ERR_NET => "PL_ERR_NET\0",
            PlResult::PL_ERR_TLS => "PL_ERR_TLS\0",
            PlResult::PL_ERR_WEBSOCKET => "PL_ERR_WEBSOCKET\0",
            PlResult::PL_ERR_CLOSED => "PL_ERR_CLOSED\0",
            PlResult::PL_ERR_OVERRUN => "PL_ERR_OVERRUN\0",
            PlResult::PL_ERR_WOULD_BLOCK => "PL_ERR_WOULD_BLOCK\0",
            PlResult::PL_ERR_TIMEOUT => "PL_ERR_TIMEOUT\0",
            PlResult::PL_ERR_PANIC => "PL_ERR_PANIC\0",
        }
    }
}

/// A result code coming from C is an integer: any `int` may arrive, and a Rust enum
/// holding a value no variant names is undefined behaviour, so codes are compared as
/// integers and converted only when they match.
impl TryFrom<c_int> for PlResult {
    type Error = c_int;
    fn try_from(v: c_int) -> std::result::Result<Self, c_int> {
        PlResult::ALL.iter().copied().find(|r| *r as c_int == v).ok_or(v)
    }
}

/// The name of a result code (e.g. "PL_ERR_TLS"), a static NUL-terminated string;
/// "unknown" for a value that is not a `PlResult`.
#[no_mangle]
pub extern "C" fn pl_result_name(code: c_int) -> *const c_char {
    // No panic boundary needed: a comparison loop over a constant array and static
    // strings cannot panic (no allocation, no indexing).
    let s = PlResult::try_from(code).map(PlResult::name).unwrap_or("unknown\0");
    s.as_ptr() as *const c_char
}

/// Copy the message of this thread's last failure into `buf` (NUL-terminated,
/// truncated to `len - 1` bytes). Returns the full message length without the NUL, so
/// a caller can retry with a bigger buffer; 0 if there was no failure. `buf` may be
/// NULL when `len` is 0 (to ask for the length).
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_last_error(buf: *mut c_char, len: usize) -> usize {
    boundary::with_last_error(|msg| {
        if !buf.is_null() && len > 0 {
            let n = msg.len().min(len - 1);
            // SAFETY: the caller promises `len` writable bytes at `buf`; n + 1 <= len.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr(), buf as *mut u8, n);
                *buf.add(n) = 0;
            }
        }
        msg.len()
    })
}

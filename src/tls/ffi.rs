//! OpenSSL 3.0 functions that `openssl-sys` 0.9 does not declare (or declares only as
//! macros over `SSL_ctrl`). All of them are real exported functions of libssl/libcrypto
//! 3.0, which `openssl-sys` already links.

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_long, c_ulong, c_void, size_t};
use openssl_sys::{BIO, SSL, SSL_SESSION};

/// `SSL_set_msg_callback`'s callback: `(write_p, version, content_type, buf, len, ssl, arg)`.
pub type MsgCallback =
    unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, size_t, *mut SSL, *mut c_void);
/// `SSL_set_info_callback`'s callback: `(ssl, where, ret)`.
pub type InfoCallback = unsafe extern "C" fn(*const SSL, c_int, c_int);

extern "C" {
    pub fn SSL_set1_host(s: *mut SSL, hostname: *const c_char) -> c_int;
    pub fn SSL_set_read_ahead(s: *mut SSL, yes: c_int);
    pub fn SSL_has_pending(s: *const SSL) -> c_int;
    pub fn SSL_set_info_callback(ssl: *mut SSL, cb: Option<InfoCallback>);
    pub fn SSL_set_msg_callback(ssl: *mut SSL, cb: Option<MsgCallback>);
    pub fn SSL_SESSION_is_resumable(s: *const SSL_SESSION) -> c_int;
    pub fn ERR_error_string_n(e: c_ulong, buf: *mut c_char, len: size_t);
    pub fn ERR_peek_error() -> c_ulong;
    pub fn BIO_ctrl_pending(b: *mut BIO) -> size_t;
    pub fn BIO_get_new_index() -> c_int;
}

/// `BIO_TYPE_SOURCE_SINK` (bio.h).
pub const BIO_TYPE_SOURCE_SINK: c_int = 0x0400;
/// `SSL_CTRL_SET_MAX_SEND_FRAGMENT` (ssl.h).
pub const SSL_CTRL_SET_MAX_SEND_FRAGMENT: c_int = 52;
/// `SSL_CB_READ` / `SSL_CB_WRITE` / `SSL_CB_ALERT` (ssl.h).
pub const SSL_CB_READ: c_int = 0x04;
pub const SSL_CB_WRITE: c_int = 0x08;
pub const SSL_CB_ALERT: c_int = 0x4000;
/// `SSL3_RT_HEADER`: pseudo content type under which the msg callback reports record headers.
pub const SSL3_RT_HEADER: c_int = 0x100;

/// `SSL_set_max_send_fragment(ssl, n)` is a macro over `SSL_ctrl`.
///
/// # Safety
/// `ssl` must be a valid `SSL*`.
pub unsafe fn ssl_set_max_send_fragment(ssl: *mut SSL, n: c_long) -> c_long {
    openssl_sys::SSL_ctrl(ssl, SSL_CTRL_SET_MAX_SEND_FRAGMENT, n, std::ptr::null_mut())
}

//! The read-side BIO: a custom `BIO_METHOD` that serves ciphertext to OpenSSL from
//! (1) a backlog `Vec` filled by `feed_ciphertext`, then (2) a caller's slice lent for
//! the duration of one `read_plaintext_from` call.
//!
//! Why not `BIO_s_mem`: with a memory BIO every ciphertext byte is copied twice before
//! decryption (caller -> BIO buffer -> OpenSSL's record buffer). Lending the slice makes
//! it once (caller -> record buffer), and the caller's slice can be a received TCP
//! payload in place (a UMEM frame, or the kernel transport's recv buffer).

use libc::{c_char, c_int, c_long, c_void};
use openssl_sys as sys;
use std::sync::OnceLock;

/// The BIO's state; owned (boxed) by the `TlsSession`, which outlives the BIO's use.
pub(crate) struct InBuf {
    backlog: Vec<u8>,
    off: usize,
    cur: *const u8,
    cur_len: usize,
    cur_off: usize,
}

impl InBuf {
    pub(crate) fn new() -> InBuf {
        InBuf { backlog: Vec::new(), off: 0, cur: std::ptr::null(), cur_len: 0, cur_off: 0 }
    }

    /// Append to the backlog (a copy), compacting consumed bytes first.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.off == self.backlog.len() {
            self.backlog.clear();
            self.off = 0;
        } else if self.off > 0 && self.off >= self.backlog.len() / 2 {
            self.backlog.drain(..self.off);
            self.off = 0;
        }
        self.backlog.extend_from_slice(data);
    }

    pub(crate) fn pending(&self) -> usize {
        self.backlog.len() - self.off + (self.cur_len - self.cur_off)
    }

    /// Lend `data` until [`Self::unlend`]; the caller guarantees it stays valid.
    pub(crate) fn lend(&mut self, data: &[u8]) {
        self.cur = data.as_ptr();
        self.cur_len = data.len();
        self.cur_off = 0;
    }

    /// End the loan; returns how many bytes of it OpenSSL consumed.
    pub(crate) fn unlend(&mut self) -> usize {
        let used = self.cur_off;
        self.cur = std::ptr::null();
        self.cur_len = 0;
        self.cur_off = 0;
        used
    }

    fn read(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        let have = self.backlog.len() - self.off;
        if have > 0 {
            let k = have.min(out.len());
            out[..k].copy_from_slice(&self.backlog[self.off..self.off + k]);
            self.off += k;
            n = k;
            if self.off == self.backlog.len() {
                self.backlog.clear();
                self.off = 0;
            }
        }
        let lent = self.cur_len - self.cur_off;
        if n < out.len() && lent > 0 {
            let k = lent.min(out.len() - n);
            // SAFETY: `cur` points at `cur_len` readable bytes for the duration of the
            // loan (lend/unlend bracket the SSL call that reaches here), and
            // cur_off + k <= cur_len.
            let src = unsafe { std::slice::from_raw_parts(self.cur.add(self.cur_off), k) };
            out[n..n + k].copy_from_slice(src);
            self.cur_off += k;
            n += k;
        }
        n
    }
}

const BIO_CTRL_PENDING: c_int = 10;
const BIO_CTRL_FLUSH: c_int = 11;

unsafe extern "C" fn bread(b: *mut sys::BIO, buf: *mut c_char, len: c_int) -> c_int {
    // SAFETY: b is our BIO; clearing its retry flags is always allowed.
    unsafe { sys::BIO_clear_retry_flags(b) };
    // SAFETY: data was set to a live InBuf by TlsSession before the BIO was used.
    let ib = unsafe { sys::BIO_get_data(b) } as *mut InBuf;
    if ib.is_null() || buf.is_null() || len <= 0 {
        return 0;
    }
    // SAFETY: OpenSSL hands us `len` writable bytes at buf.
    let out = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, len as usize) };
    // SAFETY: ib is live and only reached from inside an SSL call on the owning session.
    let n = unsafe { (*ib).read(out) };
    if n == 0 {
        // Empty: "try again later", not end of stream.
        // SAFETY: b is our BIO.
        unsafe { sys::BIO_set_retry_read(b) };
        return -1;
    }
    n as c_int
}

unsafe extern "C" fn bwrite(_b: *mut sys::BIO, _buf: *const c_char, _len: c_int) -> c_int {
    -1 // read-only BIO
}

unsafe extern "C" fn bctrl(b: *mut sys::BIO, cmd: c_int, _larg: c_long, _parg: *mut c_void) -> c_long {
    match cmd {
        BIO_CTRL_PENDING => {
            // SAFETY: as in bread.
            let ib = unsafe { sys::BIO_get_data(b) } as *const InBuf;
            if ib.is_null() {
                0
            } else {
                // SAFETY: ib live (see bread).
                unsafe { (*ib).pending() as c_long }
            }
        }
        BIO_CTRL_FLUSH => 1,
        _ => 0,
    }
}

unsafe extern "C" fn bcreate(b: *mut sys::BIO) -> c_int {
    // SAFETY: b is the BIO being created.
    unsafe {
        sys::BIO_set_data(b, std::ptr::null_mut());
        sys::BIO_set_init(b, 1);
    }
    1
}

unsafe extern "C" fn bdestroy(b: *mut sys::BIO) -> c_int {
    // The InBuf is owned by the TlsSession; just forget it.
    if !b.is_null() {
        // SAFETY: b is the BIO being destroyed.
        unsafe { sys::BIO_set_data(b, std::ptr::null_mut()) };
    }
    1
}

fn method() -> *const sys::BIO_METHOD {
    static M: OnceLock<usize> = OnceLock::new();
    *M.get_or_init(|| {
        // SAFETY: building a BIO_METHOD table once; it lives for the whole process.
        unsafe {
            let idx = super::ffi::BIO_get_new_index();
            let m = sys::BIO_meth_new(idx | super::ffi::BIO_TYPE_SOURCE_SINK, c"libpipeline-in".as_ptr());
            if m.is_null() {
                return 0;
            }
            sys::BIO_meth_set_read__fixed_rust(m, Some(bread));
            sys::BIO_meth_set_write__fixed_rust(m, Some(bwrite));
            sys::BIO_meth_set_ctrl__fixed_rust(m, Some(bctrl));
            sys::BIO_meth_set_create__fixed_rust(m, Some(bcreate));
            sys::BIO_meth_set_destroy__fixed_rust(m, Some(bdestroy));
            m as usize
        }
    }) as *const sys::BIO_METHOD
}

/// A new read BIO serving from `ib`, or null on allocation failure.
pub(crate) fn new_in_bio(ib: *mut InBuf) -> *mut sys::BIO {
    let m = method();
    if m.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: m is a valid method table; ib outlives the BIO (TlsSession frees it after
    // SSL_free).
    unsafe {
        let b = sys::BIO_new(m);
        if !b.is_null() {
            sys::BIO_set_data(b, ib as *mut c_void);
        }
        b
    }
}

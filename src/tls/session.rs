//! One TLS connection (`SSL*`) over two memory BIOs, driven by bytes.

use super::bio::{new_in_bio, InBuf};
use super::error::{clear_error_queue, drain_error_queue};
use super::{ffi, ContextInner, ReadBio, TlsContext};
use crate::error::{Error, Result};
use libc::{c_int, c_void, size_t};
use openssl_sys as sys;
use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// Result of one [`TlsSession::handshake`] step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeStatus {
    /// The handshake is complete; application data can flow.
    Done,
    /// Send whatever [`TlsSession::pending_ciphertext`] holds, feed the peer's bytes when
    /// they arrive, and call again.
    NeedMore,
}

/// Record counters, filled only after [`TlsSession::enable_record_stats`] (they cost one
/// callback per record). Lengths are the record header's length field (ciphertext).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    pub records_sent: u64,
    pub max_record_sent: usize,
    pub records_received: u64,
    pub max_record_received: usize,
}

/// Per-`SSL` state that OpenSSL callbacks reach through the SSL's ex_data slot.
struct SessState {
    ctx: Arc<ContextInner>,
    host: String,
    alert_received: Option<c_int>,
    alert_sent: Option<c_int>,
    stats: RecordStats,
}

fn ex_index() -> c_int {
    static IDX: OnceLock<c_int> = OnceLock::new();
    *IDX.get_or_init(|| {
        // SAFETY: registers a new ex_data index with no callbacks; thread-safe in OpenSSL 3.
        unsafe { sys::SSL_get_ex_new_index(0, std::ptr::null_mut(), None, None, None) }
    })
}

/// # Safety
/// `ssl` must be a valid SSL whose ex_data (if set) points at a live `SessState`.
unsafe fn state_of(ssl: *const sys::SSL) -> *mut SessState {
    sys::SSL_get_ex_data(ssl, ex_index()) as *mut SessState
}

/// New-session callback (`SSL_CTX_sess_set_new_cb`): keep the newest resumable session in
/// the context's slot. Returning 1 means we took ownership of the reference.
pub(crate) unsafe extern "C" fn new_session_cb(ssl: *mut sys::SSL, sess: *mut sys::SSL_SESSION) -> c_int {
    // SAFETY: OpenSSL passes the live SSL; its ex_data is our SessState or null.
    let st = unsafe { state_of(ssl) };
    if st.is_null() || sess.is_null() {
        return 0;
    }
    // SAFETY: sess is valid for the duration of the callback.
    if unsafe { ffi::SSL_SESSION_is_resumable(sess) } != 1 {
        return 0;
    }
    // SAFETY: st points at the SessState owned by the TlsSession that is inside an SSL_*
    // call right now; nothing else touches it concurrently.
    let st = unsafe { &*st };
    if !st.ctx.resumption {
        return 0;
    }
    st.ctx.store_session(&st.host, sess);
    1
}

/// Info callback: remember the last alert sent and received (their names go into errors).
unsafe extern "C" fn info_cb(ssl: *const sys::SSL, where_: c_int, ret: c_int) {
    if where_ & ffi::SSL_CB_ALERT == 0 {
        return;
    }
    // SAFETY: ssl is live during the callback; ex_data is our SessState or null.
    let st = unsafe { state_of(ssl) };
    if st.is_null() {
        return;
    }
    let desc = ret & 0xff;
    // SAFETY: see new_session_cb: the owning TlsSession is inside an SSL_* call.
    let st = unsafe { &mut *st };
    if where_ & ffi::SSL_CB_READ != 0 {
        st.alert_received = Some(desc);
    } else if where_ & ffi::SSL_CB_WRITE != 0 {
        st.alert_sent = Some(desc);
    }
}

/// Message callback (only with record stats on): count record headers per direction.
unsafe extern "C" fn msg_cb(
    write_p: c_int,
    _version: c_int,
    content_type: c_int,
    buf: *const c_void,
    len: size_t,
    ssl: *mut sys::SSL,
    _arg: *mut c_void,
) {
    if content_type != ffi::SSL3_RT_HEADER || len < 5 || buf.is_null() {
        return;
    }
    // SAFETY: OpenSSL passes `len` readable bytes at `buf` (a 5-byte record header).
    let h = unsafe { std::slice::from_raw_parts(buf as *const u8, 5) };
    let rec_len = u16::from_be_bytes([h[3], h[4]]) as usize;
    // SAFETY: ssl is live; ex_data is our SessState or null.
    let st = unsafe { state_of(ssl) };
    if st.is_null() {
        return;
    }
    // SAFETY: owning TlsSession is inside an SSL_* call; no concurrent access.
    let s = unsafe { &mut (*st).stats };
    if write_p != 0 {
        s.records_sent += 1;
        s.max_record_sent = s.max_record_sent.max(rec_len);
    } else {
        s.records_received += 1;
        s.max_record_received = s.max_record_received.max(rec_len);
    }
}

fn alert_name(desc: c_int) -> String {
    // SAFETY: returns a pointer to a static string for any value.
    let p = unsafe { sys::SSL_alert_desc_string_long(desc) };
    if p.is_null() {
        return format!("alert {desc}");
    }
    // SAFETY: static NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn verify_reason(code: libc::c_long) -> String {
    // SAFETY: returns a static string for any code.
    let p = unsafe { sys::X509_verify_cert_error_string(code) };
    if p.is_null() {
        return format!("verify error {code}");
    }
    // SAFETY: static NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// One TLS connection driven by bytes (sans-IO). See the module docs of [`crate::tls`].
///
/// Not `Sync`: one thread drives it at a time. `Send`: it may move to the stage's thread.
pub struct TlsSession {
    ssl: *mut sys::SSL,
    /// Network -> OpenSSL: our custom BIO's state (the BIO itself is owned by `ssl`).
    inbuf: *mut InBuf,
    /// With [`ReadBio::Memory`]: the `BIO_s_mem` read BIO (owned by `ssl`); else null.
    rbio_mem: *mut sys::BIO,
    /// OpenSSL -> network (owned by `ssl`).
    wbio: *mut sys::BIO,
    state: *mut SessState,
    ctx: TlsContext,
    done: bool,
    peer_closed: bool,
    /// A fatal read error met after some plaintext was returned; reported next call.
    pending_err: Option<Error>,
}

// SAFETY: an SSL object may be used from any thread as long as one thread at a time does
// (`&mut self` on every operation guarantees that); the error queue is per-thread and we
// clear it before each operation.
unsafe impl Send for TlsSession {}

impl TlsSession {
    fn new_raw(ctx: TlsContext, host: &str) -> Result<TlsSession> {
        clear_error_queue();
        // SAFETY: ctx.inner.ctx is a valid SSL_CTX kept alive by `ctx`.
        let ssl = unsafe { sys::SSL_new(ctx.inner.ctx) };
        if ssl.is_null() {
            return Err(Error::Tls(format!("SSL_new failed: {}", drain_error_queue())));
        }
        let inbuf = Box::into_raw(Box::new(InBuf::new()));
        let mem = ctx.inner.read_bio == ReadBio::Memory;
        let rbio = if mem {
            // SAFETY: BIO_s_mem returns a static method table.
            unsafe { sys::BIO_new(sys::BIO_s_mem()) }
        } else {
            new_in_bio(inbuf)
        };
        // SAFETY: BIO_s_mem returns a static method table.
        let wbio = unsafe { sys::BIO_new(sys::BIO_s_mem()) };
        let state = Box::into_raw(Box::new(SessState {
            ctx: ctx.inner.clone(),
            host: host.to_string(),
            alert_received: None,
            alert_sent: None,
            stats: RecordStats::default(),
        }));
        let rbio_mem = if mem { rbio } else { std::ptr::null_mut() };
        let s = TlsSession { ssl, inbuf, rbio_mem, wbio, state, ctx, done: false, peer_closed: false, pending_err: None };
        if rbio.is_null() || wbio.is_null() {
            // SAFETY: free whichever BIO was made; SSL not yet owning them. `s`'s Drop
            // frees ssl, inbuf and state.
            unsafe {
                if !rbio.is_null() {
                    sys::BIO_free_all(rbio);
                }
                if !wbio.is_null() {
                    sys::BIO_free_all(wbio);
                }
            }
            return Err(Error::Tls(format!("BIO_new failed: {}", drain_error_queue())));
        }
        // SAFETY: ssl, rbio, wbio valid; SSL_set_bio takes ownership of both BIOs. Both
        // report an empty buffer as "retry" (WANT_READ), never as end of stream, which is
        // what a sans-IO engine needs.
        unsafe {
            sys::SSL_set_bio(ssl, rbio, wbio);
            sys::SSL_set_ex_data(ssl, ex_index(), state as *mut c_void);
            ffi::SSL_set_info_callback(ssl, Some(info_cb));
            ffi::SSL_set_read_ahead(ssl, s.ctx.inner.read_ahead as c_int);
            ffi::ssl_set_max_send_fragment(ssl, s.ctx.inner.max_send_fragment as _);
        }
        Ok(s)
    }

    pub(crate) fn new_client(ctx: TlsContext, host: &str) -> Result<TlsSession> {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        if h.is_empty() {
            return Err(Error::Config("TLS host name is empty".into()));
        }
        let s = Self::new_raw(ctx, h)?;
        let ssl = s.ssl;
        let inner = s.ctx.inner.clone();
        let ip: Option<IpAddr> = h.parse().ok();
        match ip {
            Some(ip) => {
                // No SNI for IP literals (RFC 6066 §3); verify the IP SAN instead.
                if inner.verify {
                    let bytes: Vec<u8> = match ip {
                        IpAddr::V4(a) => a.octets().to_vec(),
                        IpAddr::V6(a) => a.octets().to_vec(),
                    };
                    // SAFETY: ssl valid; SSL_get0_param returns its verify params; bytes
                    // alive across the call (copied by OpenSSL).
                    let ok = unsafe {
                        sys::X509_VERIFY_PARAM_set1_ip(sys::SSL_get0_param(ssl), bytes.as_ptr(), bytes.len())
                    };
                    if ok != 1 {
                        return Err(Error::Tls(format!("cannot set IP {h} for verification: {}", drain_error_queue())));
                    }
                }
            }
            None => {
                let c = CString::new(h).map_err(|_| Error::Config(format!("host name contains NUL: {h:?}")))?;
                // SAFETY: ssl valid; c NUL-terminated, alive across the calls; OpenSSL
                // copies the name.
                unsafe {
                    if sys::SSL_set_tlsext_host_name(ssl, c.as_ptr() as *mut _) != 1 {
                        return Err(Error::Tls(format!("cannot set SNI {h}: {}", drain_error_queue())));
                    }
                    if inner.verify && ffi::SSL_set1_host(ssl, c.as_ptr()) != 1 {
                        return Err(Error::Tls(format!("cannot set host {h} for verification: {}", drain_error_queue())));
                    }
                }
                if inner.verify {
                    // RFC 9525 §6.3 rules that OpenSSL's defaults do not apply:
                    // - no partial wildcards: `f*.example.com` does not match
                    //   `foo.example.com` (only a whole leftmost `*` label does);
                    // - never the subject CN: only subjectAltName names a server. The CN
                    //   fallback (used when a certificate has no DNS SAN) reads free text
                    //   that a CA need not have validated as a DNS name. Public CAs have
                    //   put the name in the SAN for years; browsers, Go and rustls already
                    //   ignore the CN. A private test server with a CN-only certificate
                    //   now fails with "hostname mismatch": reissue it with a SAN.
                    // IP literals (above) never fall back to the CN in OpenSSL anyway.
                    // SAFETY: ssl valid; SSL_get0_param returns its own verify params.
                    unsafe {
                        sys::X509_VERIFY_PARAM_set_hostflags(
                            sys::SSL_get0_param(ssl),
                            sys::X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | sys::X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
                        )
                    };
                }
            }
        }
        if !inner.alpn_wire.is_empty() {
            // SAFETY: ssl valid; alpn_wire alive across the call (copied). Returns 0 on success.
            let r = unsafe { sys::SSL_set_alpn_protos(ssl, inner.alpn_wire.as_ptr(), inner.alpn_wire.len() as _) };
            if r != 0 {
                return Err(Error::Tls(format!("cannot set ALPN: {}", drain_error_queue())));
            }
        }
        if inner.resumption {
            if let Some(sess) = s.ctx.saved_session_for(h) {
                // SAFETY: ssl valid; sess is a reference we own; SSL_set_session takes its
                // own, so we release ours right after.
                unsafe {
                    sys::SSL_set_session(ssl, sess);
                    sys::SSL_SESSION_free(sess);
                }
            }
        }
        // SAFETY: ssl valid.
        unsafe { sys::SSL_set_connect_state(ssl) };
        Ok(s)
    }

    pub(crate) fn new_server(ctx: TlsContext) -> Result<TlsSession> {
        let s = Self::new_raw(ctx, "")?;
        // SAFETY: ssl valid.
        unsafe { sys::SSL_set_accept_state(s.ssl) };
        Ok(s)
    }

    fn state(&self) -> &SessState {
        // SAFETY: state is a live Box (freed only in Drop); no callback runs while we hold
        // this shared reference because we are not inside an SSL_* call.
        unsafe { &*self.state }
    }

    /// The host name (or IP) this session verifies and sends as SNI.
    pub fn host(&self) -> &str {
        &self.state().host
    }

    // ---- network side ----

    fn inbuf(&mut self) -> &mut InBuf {
        // SAFETY: inbuf is a live Box freed only in Drop; we are not inside an SSL call,
        // so the BIO callbacks are not using it.
        unsafe { &mut *self.inbuf }
    }

    /// Hand ciphertext received from the network to OpenSSL (copied into our read
    /// backlog; consumed before any slice lent by [`Self::read_plaintext_from`]).
    pub fn feed_ciphertext(&mut self, data: &[u8]) -> Result<()> {
        if self.rbio_mem.is_null() {
            self.inbuf().push(data);
            return Ok(());
        }
        clear_error_queue();
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = rest.len().min(1 << 30);
            // SAFETY: rbio_mem valid (owned by ssl); `chunk` readable bytes at rest.
            let n = unsafe { sys::BIO_write(self.rbio_mem, rest.as_ptr() as *const c_void, chunk as c_int) };
            if n <= 0 {
                return Err(Error::Tls(format!("BIO_write to the read BIO failed: {}", drain_error_queue())));
            }
            rest = &rest[n as usize..];
        }
        Ok(())
    }

    /// Ciphertext fed but not yet pulled by OpenSSL (a partial record OpenSSL already
    /// pulled sits in its own record buffer and is not counted).
    pub fn buffered_ciphertext(&self) -> usize {
        if !self.rbio_mem.is_null() {
            // SAFETY: rbio_mem valid.
            return unsafe { ffi::BIO_ctrl_pending(self.rbio_mem) };
        }
        // SAFETY: see inbuf(); shared read only.
        unsafe { (*self.inbuf).pending() }
    }

    /// Bytes OpenSSL produced for the network that nobody took yet.
    pub fn pending_ciphertext(&self) -> usize {
        // SAFETY: wbio valid.
        unsafe { ffi::BIO_ctrl_pending(self.wbio) }
    }

    /// Move up to `out.len()` bytes of outgoing ciphertext into `out`; returns the count.
    pub fn take_ciphertext(&mut self, out: &mut [u8]) -> usize {
        if out.is_empty() {
            return 0;
        }
        let len = out.len().min(i32::MAX as usize) as c_int;
        // SAFETY: wbio valid; `len` writable bytes at out.
        let n = unsafe { sys::BIO_read(self.wbio, out.as_mut_ptr() as *mut c_void, len) };
        n.max(0) as usize
    }

    /// Append all outgoing ciphertext to `out`; returns the count. Reuses `out`'s
    /// capacity (no zero-fill, no allocation once it is large enough).
    pub fn drain_ciphertext_into(&mut self, out: &mut Vec<u8>) -> usize {
        let p = self.pending_ciphertext();
        if p == 0 {
            return 0;
        }
        out.reserve(p);
        let spare = out.spare_capacity_mut();
        let len = spare.len().min(p).min(i32::MAX as usize) as c_int;
        // SAFETY: wbio valid; `spare` has at least `len` writable (uninitialised) bytes,
        // and BIO_read only writes into them.
        let n = unsafe { sys::BIO_read(self.wbio, spare.as_mut_ptr() as *mut c_void, len) };
        let n = n.max(0) as usize;
        // SAFETY: BIO_read initialised exactly `n` bytes after the old length.
        unsafe { out.set_len(out.len() + n) };
        n
    }

    // ---- handshake ----

    /// Advance the handshake with what has been fed so far.
    pub fn handshake(&mut self) -> Result<HandshakeStatus> {
        if self.done {
            return Ok(HandshakeStatus::Done);
        }
        clear_error_queue();
        // SAFETY: ssl valid; BIOs attached.
        let r = unsafe { sys::SSL_do_handshake(self.ssl) };
        if r == 1 {
            self.done = true;
            return Ok(HandshakeStatus::Done);
        }
        // SAFETY: ssl valid; r is the return of the last SSL call on this thread.
        let e = unsafe { sys::SSL_get_error(self.ssl, r) };
        match e {
            sys::SSL_ERROR_WANT_READ | sys::SSL_ERROR_WANT_WRITE => Ok(HandshakeStatus::NeedMore),
            _ => Err(self.failure("handshake", e)),
        }
    }

    pub fn is_handshake_done(&self) -> bool {
        self.done
    }

    // ---- application data ----

    /// Decrypt into `out` (e.g. the linear free space of the MSG_INBOX ring) with no
    /// intermediate buffer, as many complete records as fit: one call can return many
    /// records, and the error queue is cleared once per call, not per record. Returns the
    /// bytes written; `Ok(0)` = feed more ciphertext (or send pending output first).
    /// `Err(Closed)` after the peer's close_notify (any plaintext before it is returned
    /// first). A fatal error after some records were decrypted is returned by the next
    /// call, after that plaintext.
    #[inline]
    pub fn read_plaintext(&mut self, out: &mut [u8]) -> Result<usize> {
        if let Some(e) = self.pending_err.take() {
            return Err(e);
        }
        if self.peer_closed {
            return Err(Error::Closed("peer sent TLS close_notify".into()));
        }
        // Nothing new to decrypt (no ciphertext waiting in our read BIO, nothing
        // buffered inside OpenSSL): SSL_read could only say WANT_READ. The stage asks on
        // every poll, so skip the call (and its error-queue work) in that common case.
        if self.done && self.buffered_ciphertext() == 0 && !self.has_pending_plaintext() {
            return Ok(0);
        }
        clear_error_queue();
        let mut filled = 0;
        while filled < out.len() {
            let rest = &mut out[filled..];
            let mut n: usize = 0;
            // SAFETY: ssl valid; `rest.len()` writable bytes at rest; n a valid out pointer.
            let r = unsafe { sys::SSL_read_ex(self.ssl, rest.as_mut_ptr() as *mut c_void, rest.len(), &mut n) };
            if r == 1 {
                filled += n;
                continue;
            }
            // SAFETY: ssl valid; r from the last SSL call on this thread (queue was clean
            // before the loop and every failure below ends the loop).
            let e = unsafe { sys::SSL_get_error(self.ssl, r) };
            match e {
                sys::SSL_ERROR_WANT_READ | sys::SSL_ERROR_WANT_WRITE => {
                    if !self.done {
                        // SAFETY: ssl valid.
                        if unsafe { sys::SSL_is_init_finished(self.ssl) } == 1 {
                            self.done = true;
                        }
                    }
                    break;
                }
                sys::SSL_ERROR_ZERO_RETURN => {
                    self.peer_closed = true;
                    if filled == 0 {
                        return Err(Error::Closed("peer sent TLS close_notify".into()));
                    }
                    break;
                }
                _ => {
                    let err = self.failure("read", e);
                    if filled == 0 {
                        return Err(err);
                    }
                    self.pending_err = Some(err);
                    break;
                }
            }
        }
        Ok(filled)
    }

    /// Zero-copy receive: decrypt from `ciphertext` (e.g. a TCP payload in place)
    /// straight into `out`, as many records as fit. Returns `(consumed, produced)`. Any
    /// backlog from [`Self::feed_ciphertext`] is used first. OpenSSL pulls only what each
    /// record needs (a partial record is kept inside OpenSSL, so consumed bytes are
    /// gone); bytes not consumed (because `out` filled up) must be offered again or fed.
    #[inline]
    pub fn read_plaintext_from(&mut self, ciphertext: &[u8], out: &mut [u8]) -> Result<(usize, usize)> {
        if !self.rbio_mem.is_null() {
            self.feed_ciphertext(ciphertext)?;
            return self.read_plaintext(out).map(|n| (ciphertext.len(), n));
        }
        self.inbuf().lend(ciphertext);
        let r = self.read_plaintext(out);
        let used = self.inbuf().unlend();
        r.map(|n| (used, n))
    }

    /// Plaintext already decrypted or decryptable from what was fed (`SSL_has_pending`).
    #[inline]
    pub fn has_pending_plaintext(&self) -> bool {
        // SAFETY: ssl valid.
        unsafe { ffi::SSL_has_pending(self.ssl) == 1 }
    }

    /// Encrypt `data` into records of at most `max_send_fragment` bytes each. Returns the
    /// bytes consumed; the records are then in [`Self::pending_ciphertext`].
    ///
    /// With SSL_MODE_ENABLE_PARTIAL_WRITE, OpenSSL's `SSL_write` returns after every
    /// record; we loop, so with memory BIOs (which never refuse) all of `data` is consumed.
    /// If OpenSSL reports WANT_WRITE/WANT_READ after some records we return the count so
    /// far; if before any, `Err(WouldBlock)` — the caller then retries with the same
    /// bytes, which may live at a different address (ACCEPT_MOVING_WRITE_BUFFER).
    pub fn write_plaintext(&mut self, data: &[u8]) -> Result<usize> {
        let mut done = 0;
        while done < data.len() {
            clear_error_queue();
            let rest = &data[done..];
            let mut n: usize = 0;
            // SAFETY: ssl valid; rest.len() readable bytes; n valid out pointer.
            let r = unsafe { sys::SSL_write_ex(self.ssl, rest.as_ptr() as *const c_void, rest.len(), &mut n) };
            if r == 1 {
                done += n;
                continue;
            }
            // SAFETY: ssl valid; r from the last SSL call on this thread.
            let e = unsafe { sys::SSL_get_error(self.ssl, r) };
            return match e {
                sys::SSL_ERROR_WANT_READ | sys::SSL_ERROR_WANT_WRITE if done > 0 => Ok(done),
                sys::SSL_ERROR_WANT_READ | sys::SSL_ERROR_WANT_WRITE => Err(Error::WouldBlock),
                sys::SSL_ERROR_ZERO_RETURN => Err(Error::Closed("peer sent TLS close_notify".into())),
                _ => Err(self.failure("write", e)),
            };
        }
        Ok(done)
    }

    /// Queue our close_notify (then send [`Self::pending_ciphertext`]).
    pub fn close_notify(&mut self) -> Result<()> {
        clear_error_queue();
        // SAFETY: ssl valid.
        let r = unsafe { sys::SSL_shutdown(self.ssl) };
        if r < 0 {
            // SAFETY: as above.
            let e = unsafe { sys::SSL_get_error(self.ssl, r) };
            if e != sys::SSL_ERROR_WANT_READ && e != sys::SSL_ERROR_WANT_WRITE {
                return Err(self.failure("shutdown", e));
            }
        }
        Ok(())
    }

    /// Whether the peer's close_notify was seen.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    // ---- facts about the connection ----

    /// True if this connection resumed the saved session (abbreviated handshake).
    pub fn session_reused(&self) -> bool {
        // SAFETY: ssl valid.
        unsafe { sys::SSL_session_reused(self.ssl) == 1 }
    }

    /// "TLSv1.3", "TLSv1.2", ...
    pub fn protocol_version(&self) -> String {
        // SAFETY: ssl valid; returns a static string.
        let p = unsafe { sys::SSL_get_version(self.ssl) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Negotiated cipher name, e.g. "TLS_AES_128_GCM_SHA256".
    pub fn cipher(&self) -> String {
        // SAFETY: ssl valid; the cipher (if any) is static.
        let c = unsafe { sys::SSL_get_current_cipher(self.ssl) };
        if c.is_null() {
            return String::new();
        }
        // SAFETY: c valid; returns a static string.
        let p = unsafe { sys::SSL_CIPHER_get_name(c) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// The ALPN protocol the server selected, if any.
    pub fn alpn_selected(&self) -> Option<Vec<u8>> {
        let mut p: *const u8 = std::ptr::null();
        let mut len: libc::c_uint = 0;
        // SAFETY: ssl valid; out pointers valid.
        unsafe { sys::SSL_get0_alpn_selected(self.ssl, &mut p, &mut len) };
        if p.is_null() || len == 0 {
            return None;
        }
        // SAFETY: OpenSSL guarantees `len` bytes at p, owned by the SSL.
        Some(unsafe { std::slice::from_raw_parts(p, len as usize) }.to_vec())
    }

    /// Change the largest plaintext per sent record (512..=16384).
    pub fn set_max_send_fragment(&mut self, n: usize) -> Result<()> {
        if !(512..=16384).contains(&n) {
            return Err(Error::Config(format!("max_send_fragment {n} is outside 512..=16384")));
        }
        // SAFETY: ssl valid.
        unsafe { ffi::ssl_set_max_send_fragment(self.ssl, n as _) };
        Ok(())
    }

    /// Count records per direction from now on (one callback per record; diagnostics).
    pub fn enable_record_stats(&mut self) {
        // SAFETY: ssl valid; msg_cb is a plain extern "C" fn reading ex_data.
        unsafe { ffi::SSL_set_msg_callback(self.ssl, Some(msg_cb)) };
    }

    pub fn record_stats(&self) -> RecordStats {
        self.state().stats
    }

    /// The raw `SSL*` for diagnostics. Do not free it or change its BIOs.
    pub fn as_ptr(&self) -> *mut sys::SSL {
        self.ssl
    }

    /// Build the error for a failed `op`, naming the reason as precisely as we can.
    fn failure(&mut self, op: &str, ssl_error: c_int) -> Error {
        let queue = drain_error_queue();
        let st = self.state();
        let host = st.host.clone();
        let q = if queue.is_empty() { String::new() } else { format!("; openssl: {queue}") };
        if self.ctx.inner.verify && !self.ctx.inner.server {
            // SAFETY: ssl valid.
            let v = unsafe { sys::SSL_get_verify_result(self.ssl) };
            if v != sys::X509_V_OK as libc::c_long {
                return Error::Tls(format!(
                    "certificate verify failed: {} (host {host}){q}",
                    verify_reason(v)
                ));
            }
        }
        if let Some(a) = st.alert_received.filter(|&a| a != 0) {
            return Error::Tls(format!("{op} failed: peer sent alert \"{}\" (host {host}){q}", alert_name(a)));
        }
        if ssl_error == sys::SSL_ERROR_ZERO_RETURN {
            self.peer_closed = true;
            return Error::Closed(format!("peer sent TLS close_notify during {op}"));
        }
        let not_tls = ["wrong version number", "packet length too long", "record layer failure", "http request", "unknown protocol"];
        let hint = if not_tls.iter().any(|p| queue.contains(p)) {
            "peer is not speaking TLS (received non-TLS bytes): "
        } else {
            ""
        };
        let sent = match st.alert_sent.filter(|&a| a != 0) {
            Some(a) => format!(" (we sent alert \"{}\")", alert_name(a)),
            None => String::new(),
        };
        if queue.is_empty() {
            return Error::Tls(format!("{op} failed: {hint}SSL_get_error={ssl_error}{sent} (host {host})"));
        }
        Error::Tls(format!("{op} failed: {hint}{queue}{sent} (host {host})"))
    }
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        // SAFETY: ssl came from SSL_new and is freed once here (this also frees both BIOs
        // and drops the SSL's references to its session and context). The inbuf and
        // state Boxes are freed after, so no callback can see them dangling.
        unsafe {
            sys::SSL_set_ex_data(self.ssl, ex_index(), std::ptr::null_mut());
            // A connection dropped without close_notify (TCP reset, reconnect after a
            // stall) would make SSL_free mark a TLS 1.2 session unresumable
            // (ssl_clear_bad_session). Since TLS 1.1 that is not required (RFC 5246
            // §7.2.1), and reconnecting after a drop is exactly when resumption pays, so
            // mark the shutdown as done. Fatal alerts still discard the session: OpenSSL
            // removes it when the alert is sent or received, before we get here.
            if self.done {
                sys::SSL_set_shutdown(self.ssl, sys::SSL_SENT_SHUTDOWN | sys::SSL_RECEIVED_SHUTDOWN);
            }
            sys::SSL_free(self.ssl);
            drop(Box::from_raw(self.inbuf));
            drop(Box::from_raw(self.state));
        }
    }
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("host", &self.host())
            .field("handshake_done", &self.done)
            .finish()
    }
}

//! Sans-IO TLS over OpenSSL (raw `openssl-sys` FFI) with memory BIOs.
//!
//! - [`TlsConfig`]: what to verify and offer (CA store, versions, ALPN, record size).
//! - [`TlsContext`]: one `SSL_CTX` plus the resumption slot; cheap to clone, shared
//!   across reconnects.
//! - [`TlsSession`]: one `SSL` driven by bytes: [`TlsSession::feed_ciphertext`] (network
//!   in), [`TlsSession::take_ciphertext`] (network out), [`TlsSession::handshake`],
//!   [`TlsSession::read_plaintext`] (decrypt straight into the caller's slice) and
//!   [`TlsSession::write_plaintext`].
//!
//! Verification (chain + host name) is on by default; see `docs/tls.md`.

mod bio;
mod error;
mod ffi;
mod session;

pub use error::drain_error_queue;
pub use session::{HandshakeStatus, RecordStats, TlsSession};

use crate::error::{Error, Result};
use libc::c_int;
use openssl_sys as sys;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

/// A TLS protocol version we speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn raw(self) -> c_int {
        match self {
            TlsVersion::Tls12 => sys::TLS1_2_VERSION,
            TlsVersion::Tls13 => sys::TLS1_3_VERSION,
        }
    }
}

/// Where OpenSSL reads ciphertext from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBio {
    /// Our custom BIO: a backlog for `feed_ciphertext` plus slices lent by
    /// `read_plaintext_from` (zero-copy). The default.
    Slice,
    /// OpenSSL's `BIO_s_mem`: every byte copied into the BIO first. Kept for comparison
    /// (benchmarks) and as a fallback; `read_plaintext_from` then feeds the whole slice.
    Memory,
}

/// Client TLS settings. `TlsConfig::default()` is the safe production setting.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// PEM file of trusted CAs. `None` = the system store (`SSL_CTX_set_default_verify_paths`).
    pub ca_file: Option<PathBuf>,
    /// Turn OFF certificate chain and host-name verification. Never in production: anyone
    /// on the path can read and forge the feed. Logs a warning on every context built.
    pub insecure_skip_verify: bool,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// ALPN protocols to offer, in preference order. Default `["http/1.1"]`.
    pub alpn: Vec<String>,
    /// Largest plaintext per record we send (`SSL_set_max_send_fragment`), so one record
    /// fits one TCP segment. Default [`crate::config::MAX_TLS_PLAINTEXT`]. 512..=16384.
    pub max_send_fragment: usize,
    /// Keep the last session (ticket) per context and offer it on the next connection.
    pub resumption: bool,
    /// OpenSSL read-ahead: pull as much buffered ciphertext as fits OpenSSL's record
    /// buffer per BIO read instead of two reads (header, body) per record. Default OFF:
    /// our BIO reads are cheap memcpys, while OpenSSL 3.0 with read-ahead memmoves the
    /// rest of its buffer for every record (1.3-2.4x slower with a 64 KiB buffer; docs/tls.md).
    pub read_ahead: bool,
    /// Read-side BIO. Default [`ReadBio::Slice`].
    pub read_bio: ReadBio,
    /// TLS 1.3 ciphersuites (`SSL_CTX_set_ciphersuites` syntax); `None` = OpenSSL's default.
    pub ciphersuites: Option<String>,
    /// TLS 1.2 cipher list (`SSL_CTX_set_cipher_list` syntax); `None` = OpenSSL's default.
    pub cipher_list: Option<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_file: None,
            insecure_skip_verify: false,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            alpn: vec!["http/1.1".to_string()],
            max_send_fragment: crate::config::MAX_TLS_PLAINTEXT,
            resumption: true,
            read_ahead: false,
            read_bio: ReadBio::Slice,
            ciphersuites: None,
            cipher_list: None,
        }
    }
}

/// Remembered session for resumption: the host it belongs to and one owned reference.
pub(crate) struct SavedSession {
    host: String,
    sess: *mut sys::SSL_SESSION,
}

// SAFETY: an SSL_SESSION is reference counted with atomic counts in OpenSSL 3; we only
// hand it to SSL_set_session (which takes its own reference) under the mutex.
unsafe impl Send for SavedSession {}

impl Drop for SavedSession {
    fn drop(&mut self) {
        // SAFETY: `sess` is one reference we own (from the new-session callback).
        unsafe { sys::SSL_SESSION_free(self.sess) };
    }
}

pub(crate) struct ContextInner {
    pub(crate) ctx: *mut sys::SSL_CTX,
    pub(crate) server: bool,
    pub(crate) verify: bool,
    pub(crate) max_send_fragment: usize,
    pub(crate) read_ahead: bool,
    pub(crate) read_bio: ReadBio,
    pub(crate) resumption: bool,
    /// ALPN in wire format (length-prefixed), empty = none.
    pub(crate) alpn_wire: Vec<u8>,
    pub(crate) saved: Mutex<Option<SavedSession>>,
}

// SAFETY: SSL_CTX is safe to share between threads once configured (OpenSSL locks its
// internal state); we never mutate it after construction except through the Mutex-guarded
// resumption slot, which is ours.
unsafe impl Send for ContextInner {}
// SAFETY: see above.
unsafe impl Sync for ContextInner {}

impl Drop for ContextInner {
    fn drop(&mut self) {
        // Drop the saved session before the context.
        if let Ok(mut s) = self.saved.lock() {
            s.take();
        }
        // SAFETY: `ctx` came from SSL_CTX_new and this is our only reference; sessions
        // hold their own reference (SSL_new up-refs the context).
        unsafe { sys::SSL_CTX_free(self.ctx) };
    }
}

impl ContextInner {
    pub(crate) fn store_session(&self, host: &str, sess: *mut sys::SSL_SESSION) {
        let new = SavedSession { host: host.to_string(), sess };
        let mut slot = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(new); // frees the previous one
    }
}

/// An `SSL_CTX` configured from a [`TlsConfig`]. Clone it freely; every clone shares the
/// context and the resumption slot.
#[derive(Clone)]
pub struct TlsContext {
    pub(crate) inner: Arc<ContextInner>,
}

fn init_openssl() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        openssl_sys::init();
    });
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Config(format!("{what} contains a NUL byte: {s:?}")))
}

fn path_cstring(what: &str, p: &Path) -> Result<CString> {
    let s = p
        .to_str()
        .ok_or_else(|| Error::Config(format!("{what} is not valid UTF-8: {}", p.display())))?;
    cstring(what, s)
}

impl TlsContext {
    /// A client context. Loads the CA store now, so a bad `ca_file` fails here.
    pub fn new(cfg: &TlsConfig) -> Result<TlsContext> {
        init_openssl();
        if !(512..=16384).contains(&cfg.max_send_fragment) {
            return Err(Error::Config(format!(
                "max_send_fragment {} is outside 512..=16384",
                cfg.max_send_fragment
            )));
        }
        if cfg.min_version.raw() > cfg.max_version.raw() {
            return Err(Error::Config(format!(
                "min_version {:?} is above max_version {:?}",
                cfg.min_version, cfg.max_version
            )));
        }
        let mut alpn_wire = Vec::new();
        for p in &cfg.alpn {
            if p.is_empty() || p.len() > 255 {
                return Err(Error::Config(format!("ALPN protocol {p:?} must be 1..=255 bytes")));
            }
            alpn_wire.push(p.len() as u8);
            alpn_wire.extend_from_slice(p.as_bytes());
        }
        error::clear_error_queue();
        // SAFETY: TLS_client_method returns a static method table.
        let ctx = unsafe { sys::SSL_CTX_new(sys::TLS_client_method()) };
        if ctx.is_null() {
            return Err(Error::Tls(format!("SSL_CTX_new failed: {}", drain_error_queue())));
        }
        let inner = ContextInner {
            ctx,
            server: false,
            verify: !cfg.insecure_skip_verify,
            max_send_fragment: cfg.max_send_fragment,
            read_ahead: cfg.read_ahead,
            read_bio: cfg.read_bio,
            resumption: cfg.resumption,
            alpn_wire,
            saved: Mutex::new(None),
        };
        // From here `inner`'s Drop frees ctx on every error path.
        set_versions(ctx, cfg.min_version, cfg.max_version)?;
        set_ciphers(ctx, cfg)?;
        set_common_options(ctx);
        // No TLS 1.2 renegotiation. A server's HelloRequest is answered with a
        // no_renegotiation warning alert instead of a new handshake in the middle of the
        // feed: renegotiation has a history of attacks (the prefix injection RFC 5746
        // patched, handshake CPU exhaustion), it can bring a different certificate
        // mid-stream, and it would stall market data behind a handshake. The session
        // carries on if the server accepts the refusal; an OpenSSL server ends the
        // connection, which the caller sees as a TLS error naming the server's alert.
        // TLS 1.3 has no renegotiation (KeyUpdate is unaffected). The test-only server
        // context keeps it, so a test can ask for one.
        // SAFETY: ctx valid; plain option setter.
        unsafe { sys::SSL_CTX_set_options(ctx, sys::SSL_OP_NO_RENEGOTIATION as _) };
        if cfg.insecure_skip_verify {
            eprintln!(
                "libpipeline WARNING: TLS certificate and host-name verification is DISABLED \
                 (insecure_skip_verify). Anyone on the network path can impersonate the server. \
                 Never use this in production."
            );
            // SAFETY: ctx is valid; no callback.
            unsafe { sys::SSL_CTX_set_verify(ctx, sys::SSL_VERIFY_NONE, None) };
        } else {
            // SAFETY: ctx is valid; no callback: OpenSSL's verdict stands.
            unsafe { sys::SSL_CTX_set_verify(ctx, sys::SSL_VERIFY_PEER, None) };
            let ok = match &cfg.ca_file {
                Some(p) => {
                    let c = path_cstring("ca_file", p)?;
                    // SAFETY: ctx valid; c is a NUL-terminated path that outlives the call.
                    unsafe { sys::SSL_CTX_load_verify_locations(ctx, c.as_ptr(), std::ptr::null()) }
                }
                // SAFETY: ctx valid.
                None => unsafe { sys::SSL_CTX_set_default_verify_paths(ctx) },
            };
            if ok != 1 {
                let what = match &cfg.ca_file {
                    Some(p) => format!("cannot load CA file {}", p.display()),
                    None => "cannot load the system CA store".to_string(),
                };
                return Err(Error::Tls(format!("{what}: {}", drain_error_queue())));
            }
        }
        if cfg.resumption {
            // Client cache on (so the new-session callback fires), internal store off: we
            // keep exactly one session per context, ourselves.
            // SAFETY: ctx valid; the callback is a plain extern "C" fn.
            unsafe {
                sys::SSL_CTX_set_session_cache_mode(
                    ctx,
                    sys::SSL_SESS_CACHE_CLIENT | sys::SSL_SESS_CACHE_NO_INTERNAL_STORE,
                );
                sys::SSL_CTX_sess_set_new_cb(ctx, Some(session::new_session_cb));
            }
        }
        Ok(TlsContext { inner: Arc::new(inner) })
    }

    /// A server context for tests and benchmarks (in-memory peers): certificate chain and
    /// key from PEM files, versions pinned to `min..=max`. Not used by the client pipeline.
    pub fn new_server(
        cert_chain: &Path,
        key: &Path,
        min: TlsVersion,
        max: TlsVersion,
    ) -> Result<TlsContext> {
        init_openssl();
        error::clear_error_queue();
        // SAFETY: TLS_server_method returns a static method table.
        let ctx = unsafe { sys::SSL_CTX_new(sys::TLS_server_method()) };
        if ctx.is_null() {
            return Err(Error::Tls(format!("SSL_CTX_new failed: {}", drain_error_queue())));
        }
        let inner = ContextInner {
            ctx,
            server: true,
            verify: false,
            max_send_fragment: 16384,
            read_ahead: false,
            read_bio: ReadBio::Slice,
            resumption: true,
            alpn_wire: Vec::new(),
            saved: Mutex::new(None),
        };
        set_versions(ctx, min, max)?;
        set_common_options(ctx);
        let c = path_cstring("certificate chain", cert_chain)?;
        let k = path_cstring("private key", key)?;
        // SAFETY: ctx valid, paths NUL-terminated and alive across the calls.
        let ok = unsafe {
            sys::SSL_CTX_use_certificate_chain_file(ctx, c.as_ptr()) == 1
                && sys::SSL_CTX_use_PrivateKey_file(ctx, k.as_ptr(), sys::SSL_FILETYPE_PEM) == 1
                && sys::SSL_CTX_check_private_key(ctx) == 1
        };
        if !ok {
            return Err(Error::Tls(format!(
                "cannot load server certificate {} / key {}: {}",
                cert_chain.display(),
                key.display(),
                drain_error_queue()
            )));
        }
        // Server-side session cache + tickets are on by default; give it an id context.
        let sid = b"libpipeline-test";
        // SAFETY: ctx valid; sid is 16 bytes (<= SSL_MAX_SID_CTX_LENGTH).
        unsafe { sys::SSL_CTX_set_session_id_context(ctx, sid.as_ptr(), sid.len() as _) };
        Ok(TlsContext { inner: Arc::new(inner) })
    }

    /// A new client session for `host` (a DNS name or an IP literal). Offers the saved
    /// session if it was made for the same host.
    pub fn client_session(&self, host: &str) -> Result<TlsSession> {
        if self.inner.server {
            return Err(Error::Config("client_session on a server context".into()));
        }
        TlsSession::new_client(self.clone(), host)
    }

    /// A new server session (tests/benchmarks only).
    pub fn server_session(&self) -> Result<TlsSession> {
        if !self.inner.server {
            return Err(Error::Config("server_session on a client context".into()));
        }
        TlsSession::new_server(self.clone())
    }

    /// Whether a session is saved for `host` (will be offered on the next connection).
    pub fn has_saved_session(&self, host: &str) -> bool {
        let slot = self.inner.saved.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY (in the closure): s.sess is a live session we hold a reference to.
        slot.as_ref()
            .is_some_and(|s| s.host == host && unsafe { ffi::SSL_SESSION_is_resumable(s.sess) } == 1)
    }

    /// Forget the saved session (e.g. after the server rejected it).
    pub fn clear_saved_session(&self) {
        let mut slot = self.inner.saved.lock().unwrap_or_else(|p| p.into_inner());
        slot.take();
    }

    /// Take a new reference to the saved session for `host`, if any.
    pub(crate) fn saved_session_for(&self, host: &str) -> Option<*mut sys::SSL_SESSION> {
        let slot = self.inner.saved.lock().unwrap_or_else(|p| p.into_inner());
        let s = slot.as_ref()?;
        // SAFETY: s.sess is a live session we hold a reference to.
        if s.host != host || unsafe { ffi::SSL_SESSION_is_resumable(s.sess) } != 1 {
            return None;
        }
        // SAFETY: s.sess is a live session we hold a reference to; up_ref takes another.
        unsafe { sys::SSL_SESSION_up_ref(s.sess) };
        Some(s.sess)
    }
}

fn set_versions(ctx: *mut sys::SSL_CTX, min: TlsVersion, max: TlsVersion) -> Result<()> {
    // SAFETY: ctx valid; these are SSL_CTX_ctrl wrappers.
    let ok = unsafe {
        sys::SSL_CTX_set_min_proto_version(ctx, min.raw()) == 1
            && sys::SSL_CTX_set_max_proto_version(ctx, max.raw()) == 1
    };
    if !ok {
        return Err(Error::Tls(format!("cannot set TLS versions: {}", drain_error_queue())));
    }
    Ok(())
}

fn set_ciphers(ctx: *mut sys::SSL_CTX, cfg: &TlsConfig) -> Result<()> {
    if let Some(cs) = &cfg.ciphersuites {
        let c = cstring("ciphersuites", cs)?;
        // SAFETY: ctx valid; c alive across the call (OpenSSL copies it).
        if unsafe { sys::SSL_CTX_set_ciphersuites(ctx, c.as_ptr()) } != 1 {
            return Err(Error::Config(format!("bad TLS 1.3 ciphersuites {cs:?}: {}", drain_error_queue())));
        }
    }
    if let Some(cl) = &cfg.cipher_list {
        let c = cstring("cipher_list", cl)?;
        // SAFETY: as above.
        if unsafe { sys::SSL_CTX_set_cipher_list(ctx, c.as_ptr()) } != 1 {
            return Err(Error::Config(format!("bad TLS 1.2 cipher list {cl:?}: {}", drain_error_queue())));
        }
    }
    Ok(())
}

fn set_common_options(ctx: *mut sys::SSL_CTX) {
    // SAFETY: ctx valid; plain option/mode setters.
    unsafe {
        sys::SSL_CTX_set_options(ctx, sys::SSL_OP_NO_COMPRESSION as _);
        // Partial writes: SSL_write returns after each record it could hand to the BIO, so
        // we never block on one huge write; moving buffer: a retried write may come from a
        // different address (ring slots move) as long as the bytes are the same.
        // RELEASE_BUFFERS stays off: re-allocating the record buffers per record costs
        // malloc/free on the hot path.
        sys::SSL_CTX_set_mode(
            ctx,
            sys::SSL_MODE_ENABLE_PARTIAL_WRITE | sys::SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER,
        );
    }
}


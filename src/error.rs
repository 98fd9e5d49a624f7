//! The crate's one error type. Every layer reports through it so the FFI can map any
//! failure to a result code plus a one-line message.

use std::fmt;
use std::io;

/// What went wrong, by layer. The `String`s carry the detail a user needs to act
/// (a path, a host name, the capability to grant), not a debug dump.
#[derive(Debug)]
pub enum Error {
    /// Bad argument or configuration from the user (URL, option, size).
    Config(String),
    /// A system call failed; `context` says what we were doing.
    Io { context: String, source: io::Error },
    /// Shared memory: missing, wrong layout/version, owned by a live process, etc.
    Shm(String),
    /// A privilege or kernel feature is missing; `how` tells how to grant it.
    Capability { what: String, how: String },
    /// TCP/IP: refused, timed out, ARP failed ...
    Net(String),
    /// The peer reset the TCP connection (RST). Shown as a network error; its own
    /// variant so the disconnect reason can say `TcpReset` without reading text.
    Reset(String),
    /// TLS: handshake failure, certificate refused, alert received.
    Tls(String),
    /// The peer broke the WebSocket protocol (or the upgrade); `close_code` is what we
    /// send (RFC 6455 §7.4), 0 during the upgrade.
    WebSocket { close_code: u16, reason: String },
    /// The connection ended (orderly close or reset) and the operation cannot proceed.
    Closed(String),
    /// A ring or buffer is full / a consumer fell behind.
    Overrun(String),
    /// The operation would block; try again (non-blocking APIs only).
    WouldBlock,
    /// A timeout expired.
    Timeout(String),
    /// A required pointer argument was NULL (C ABI only).
    NullArg(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
    /// `errno` of the last failed libc call, with context.
    pub fn last_os(context: impl Into<String>) -> Self {
        Error::io(context, io::Error::last_os_error())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "configuration: {m}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Shm(m) => write!(f, "shared memory: {m}"),
            Error::Capability { what, how } => write!(f, "missing capability: {what} ({how})"),
            Error::Net(m) | Error::Reset(m) => write!(f, "network: {m}"),
            Error::Tls(m) => write!(f, "tls: {m}"),
            Error::WebSocket { close_code, reason } => {
                if *close_code == 0 {
                    write!(f, "websocket: {reason}")
                } else {
                    write!(f, "websocket: {reason} (close code {close_code})")
                }
            }
            Error::Closed(m) => write!(f, "connection closed: {m}"),
            Error::Overrun(m) => write!(f, "overrun: {m}"),
            Error::WouldBlock => write!(f, "operation would block"),
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::NullArg(name) => write!(f, "argument `{name}` is NULL"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

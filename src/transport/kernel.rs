//! A non-blocking kernel TCP socket client: what the pipeline's kernel transports
//! (`stage::StreamTransport`, `stage::TlsTransport`) read from and write to.

use crate::error::{Error, Result};
use libc::{c_int, c_void, socklen_t};
use std::io;
use std::mem;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Socket options for [`KernelSocket::connect`].
#[derive(Clone, Debug)]
pub struct KernelSocketOptions {
    /// Total time for DNS-resolved addresses to connect (tried in order).
    pub connect_timeout: Duration,
    /// TCP_NODELAY (default on: a trading client never wants Nagle).
    pub nodelay: bool,
    /// SO_BUSY_POLL in microseconds (needs CAP_NET_ADMIN to raise above the sysctl).
    pub busy_poll_us: Option<u32>,
    /// SO_RCVBUF bytes, set before connect so the window scale can account for it.
    pub rcvbuf: Option<usize>,
    /// SO_SNDBUF bytes.
    pub sndbuf: Option<usize>,
}

impl Default for KernelSocketOptions {
    fn default() -> Self {
        KernelSocketOptions {
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
            busy_poll_us: None,
            rcvbuf: None,
            sndbuf: None,
        }
    }
}

/// A connected, non-blocking TCP socket.
#[derive(Debug)]
pub struct KernelSocket {
    fd: RawFd,
    peer: SocketAddr,
    open: bool,
    /// CLOCK_MONOTONIC ns of the newest segment the last `recv_into` read (the kernel's
    /// receive timestamp, `SO_TIMESTAMPNS`); 0 when the kernel gave none.
    rx_stamp_ns: u64,
}

/// Ask for the kernel's receive timestamp with every read (`SO_TIMESTAMPNS`): the time
/// the segment's skb was stamped, before it waited in the socket buffer. Best effort: a
/// socket without it still works, its messages are stamped at the read instead.
fn enable_rx_timestamps(fd: RawFd) {
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS");
}

fn setsockopt_int(fd: RawFd, level: c_int, name: c_int, val: c_int, what: &str) -> Result<()> {
    // SAFETY: fd is a socket we own; `val` is a live c_int of the stated size.
    let r = unsafe {
        libc::setsockopt(fd, level, name, &val as *const c_int as *const c_void, mem::size_of::<c_int>() as socklen_t)
    };
    if r != 0 {
        return Err(Error::last_os(format!("setsockopt({what}={val})")));
    }
    Ok(())
}

fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as _;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as _;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as socklen_t)
}

/// The SCM_TIMESTAMPNS of a received message (CLOCK_REALTIME) as CLOCK_MONOTONIC ns.
fn rx_timestamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: msg was filled by recvmsg; the CMSG_* macros walk its control buffer
    // within msg_controllen, and a SCM_TIMESTAMPNS payload is one timespec.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                let real = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                if real == 0 {
                    return None;
                }
                // The offset between the two clocks now (two vDSO reads per recv, not
                // per message): exact unless the wall clock steps in between.
                return Some(real.wrapping_sub(crate::latency::realtime_offset_ns()));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

fn poll_fd(fd: RawFd, events: i16, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
    loop {
        // SAFETY: pfd is one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

fn describe_connect_error(e: &io::Error, host: &str, port: u16, addr: &SocketAddr) -> Error {
    let what = match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "connection refused (nothing listening on that port?)",
        Some(libc::ENETUNREACH) => "network unreachable (no route to that network)",
        Some(libc::EHOSTUNREACH) => "host unreachable",
        Some(libc::ETIMEDOUT) => "connection timed out",
        Some(libc::EADDRNOTAVAIL) => "address not available",
        _ => "connect failed",
    };
    Error::Net(format!("connecting to {host}:{port} ({addr}): {what}: {e}"))
}

impl KernelSocket {
    /// Resolve `host` (std `ToSocketAddrs`, i.e. getaddrinfo — set-up only) and connect to
    /// each address in turn within `opts.connect_timeout` in total.
    pub fn connect(host: &str, port: u16, opts: &KernelSocketOptions) -> Result<KernelSocket> {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (h, port)
            .to_socket_addrs()
            .map_err(|e| Error::Net(format!("cannot resolve {host}:{port}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::Net(format!("{host}:{port} resolved to no address")));
        }
        let deadline = Instant::now() + opts.connect_timeout;
        let mut last = None;
        for addr in &addrs {
            match Self::connect_addr(host, port, addr, deadline, opts) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(last.unwrap_or_else(|| Error::Net(format!("connecting to {host}:{port} failed"))))
    }

    fn connect_addr(
        host: &str,
        port: u16,
        addr: &SocketAddr,
        deadline: Instant,
        opts: &KernelSocketOptions,
    ) -> Result<KernelSocket> {
        let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::last_os("socket(SOCK_STREAM)"));
        }
        // Owns fd from here; closes it on every error path.
        let mut s = KernelSocket { fd, peer: *addr, open: true, rx_stamp_ns: 0 };
        enable_rx_timestamps(fd);
        if let Some(n) = opts.rcvbuf {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n.min(i32::MAX as usize) as c_int, "SO_RCVBUF")?;
        }
        if let Some(n) = opts.sndbuf {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n.min(i32::MAX as usize) as c_int, "SO_SNDBUF")?;
        }
        if opts.nodelay {
            setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1, "TCP_NODELAY")?;
        }
        if let Some(us) = opts.busy_poll_us {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, us.min(i32::MAX as u32) as c_int, "SO_BUSY_POLL")?;
        }
        let (ss, len) = sockaddr_of(addr);
        // SAFETY: fd valid; ss holds a sockaddr of `len` bytes.
        let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(describe_connect_error(&e, host, port, addr));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = poll_fd(fd, libc::POLLOUT, left).map_err(|e| Error::io("poll(connect)", e))?;
            if !ready {
                s.close();
                return Err(Error::Timeout(format!(
                    "connecting to {host}:{port} ({addr}): no answer within {:?}",
                    left
                )));
            }
            let mut err: c_int = 0;
            let mut elen = mem::size_of::<c_int>() as socklen_t;
            // SAFETY: fd valid; err/elen valid out pointers of the right size.
            let r = unsafe {
                libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut c_int as *mut c_void, &mut elen)
            };
            if r != 0 {
                return Err(Error::last_os("getsockopt(SO_ERROR)"));
            }
            if err != 0 {
                return Err(describe_connect_error(&io::Error::from_raw_os_error(err), host, port, addr));
            }
        }
        Ok(s)
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Adopt a connected std socket (made non-blocking), e.g. one a test or benchmark
    /// server accepted: the TLS glue then serves either role.
    pub fn from_std(s: std::net::TcpStream) -> Result<KernelSocket> {
        use std::os::fd::IntoRawFd;
        let peer = s.peer_addr().map_err(|e| Error::io("peer_addr", e))?;
        s.set_nonblocking(true).map_err(|e| Error::io("set_nonblocking", e))?;
        let fd = s.into_raw_fd();
        enable_rx_timestamps(fd);
        Ok(KernelSocket { fd, peer, open: true, rx_stamp_ns: 0 })
    }

    /// Read up to `buf.len()` bytes: `Ok(n > 0)`, `Err(WouldBlock)` nothing now,
    /// `Err(Closed(reason))` the stream is over (FIN, reset); anything else is fatal.
    #[inline]
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        if !self.open {
            return Err(Error::Closed("socket already closed".into()));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // Room for one SCM_TIMESTAMPNS control message (a timespec), 8-aligned.
        let mut cbuf = [0u64; 8];
        loop {
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut c_void, iov_len: buf.len() };
            // SAFETY: msghdr is plain old data; all-zero is a valid value.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr() as *mut c_void;
            msg.msg_controllen = mem::size_of_val(&cbuf) as _;
            // SAFETY: fd valid; msg points at one iovec over buf.len() writable bytes and
            // a control buffer of msg_controllen bytes, all live for the call.
            let n = unsafe { libc::recvmsg(self.fd, &mut msg, 0) };
            if n > 0 {
                self.rx_stamp_ns = rx_timestamp(&msg).unwrap_or(0);
                return Ok(n as usize);
            }
            if n == 0 {
                return Err(Error::Closed(format!("peer {} closed the TCP connection (FIN)", self.peer)));
            }
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Err(Error::WouldBlock),
                Some(libc::EINTR) => continue,
                Some(libc::ECONNRESET) => Err(Error::Reset(format!("connection reset by peer {}", self.peer))),
                Some(libc::ETIMEDOUT) => Err(Error::Net(format!("connection to {} timed out", self.peer))),
                _ => Err(Error::io(format!("recv from {}", self.peer), e)),
            };
        }
    }

    /// CLOCK_MONOTONIC ns when the newest bytes of the last successful `recv_into`
    /// reached the kernel (`SO_TIMESTAMPNS`), 0 if it gave no timestamp.
    pub fn rx_stamp_ns(&self) -> u64 {
        self.rx_stamp_ns
    }

    /// Write up to `data.len()` bytes (may be partial); `Err(WouldBlock)` when the
    /// socket buffer is full.
    #[inline]
    pub fn send(&mut self, data: &[u8]) -> Result<usize> {
        if !self.open {
            return Err(Error::Closed("socket already closed".into()));
        }
        if data.is_empty() {
            return Ok(0);
        }
        loop {
            // SAFETY: fd valid; data.len() readable bytes. MSG_NOSIGNAL: EPIPE, not SIGPIPE.
            let n = unsafe { libc::send(self.fd, data.as_ptr() as *const c_void, data.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return if n == 0 { Err(Error::WouldBlock) } else { Ok(n as usize) };
            }
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Err(Error::WouldBlock),
                Some(libc::EINTR) => continue,
                Some(libc::EPIPE) | Some(libc::ECONNRESET) => {
                    Err(Error::Closed(format!("connection to {} reset or closed while sending", self.peer)))
                }
                _ => Err(Error::io(format!("send to {}", self.peer), e)),
            };
        }
    }

    /// Close the socket (idempotent).
    pub fn close(&mut self) {
        if self.open {
            self.open = false;
            // SAFETY: fd is ours and closed exactly once (guarded by `open`).
            unsafe { libc::close(self.fd) };
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Block until readable (or writable too, if `writable`) or `timeout` passes: for
    /// the blocking set-up steps (TLS handshake) and blocking helpers only.
    pub fn wait(&mut self, writable: bool, timeout: Duration) -> Result<()> {
        let ev = if writable { libc::POLLIN | libc::POLLOUT } else { libc::POLLIN };
        poll_fd(self.fd, ev, timeout).map_err(|e| Error::io("poll", e))?;
        Ok(())
    }
}

impl AsRawFd for KernelSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for KernelSocket {
    fn drop(&mut self) {
        self.close();
    }
}

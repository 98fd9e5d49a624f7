//! Hand-made frames for the AF_XDP tests (deliberately independent of `src/wire`),
//! and raw-socket helpers to send them.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{FromRawFd, OwnedFd, AsRawFd};
use std::time::{Duration, Instant};

use pipeline::xdp::{RxDesc, XdpSocket};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// RFC 1071 one's-complement sum folded, not inverted.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [b] = chunks.remainder() {
        acc += (*b as u32) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

pub fn ip_checksum(hdr: &[u8]) -> u16 {
    fold(sum16(hdr, 0))
}

pub fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> u16 {
    let mut acc = sum16(&src.octets(), 0);
    acc = sum16(&dst.octets(), acc);
    acc += 6;
    acc += seg.len() as u32;
    fold(sum16(seg, acc))
}

pub struct TcpSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Extra IPv4 option bytes (multiple of 4) to exercise IHL > 5.
    pub ip_options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Ethernet + IPv4 + TCP (with MSS option on SYN) into `buf`; returns the length.
pub fn build_tcp(buf: &mut [u8], s: &TcpSpec) -> usize {
    let ihl = 20 + s.ip_options.len();
    assert!(ihl % 4 == 0 && ihl <= 60);
    let opts: Vec<u8> = if s.flags & TCP_SYN != 0 { vec![2, 4, 0x05, 0xb4] } else { vec![] };
    let thl = 20 + opts.len();
    let total = ihl + thl + s.payload.len();
    let f = &mut buf[..14 + total];
    f[0..6].copy_from_slice(&s.dst_mac);
    f[6..12].copy_from_slice(&s.src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..14 + ihl];
    ip[0] = 0x40 | (ihl / 4) as u8;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&s.src.ip().octets());
    ip[16..20].copy_from_slice(&s.dst.ip().octets());
    ip[20..].copy_from_slice(&s.ip_options);
    let c = ip_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut f[14 + ihl..];
    t[0..2].copy_from_slice(&s.src.port().to_be_bytes());
    t[2..4].copy_from_slice(&s.dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&s.seq.to_be_bytes());
    t[8..12].copy_from_slice(&s.ack.to_be_bytes());
    t[12] = ((thl / 4) as u8) << 4;
    t[13] = s.flags;
    t[14..16].copy_from_slice(&s.window.to_be_bytes());
    t[16..18].copy_from_slice(&[0, 0]);
    t[18..20].copy_from_slice(&[0, 0]);
    t[20..thl].copy_from_slice(&opts);
    t[thl..].copy_from_slice(&s.payload);
    let c = tcp_checksum(*s.src.ip(), *s.dst.ip(), t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    14 + total
}

/// The interesting fields of a received Ethernet/IPv4/TCP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSeen {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload_len: usize,
    pub ip_csum_ok: bool,
    pub tcp_csum_ok: bool,
}

/// Parse Ethernet/IPv4/TCP by hand; `None` if it is not that.
pub fn parse_tcp(f: &[u8]) -> Option<TcpSeen> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 {
        return None;
    }
    let ihl = ((f[14] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    if f[23] != 6 || ihl < 20 || f.len() < 14 + total || total < ihl + 20 {
        return None;
    }
    let ip = &f[14..14 + ihl];
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let t = &f[14 + ihl..14 + total];
    let thl = ((t[12] >> 4) as usize) * 4;
    Some(TcpSeen {
        src: SocketAddrV4::new(src_ip, u16::from_be_bytes([t[0], t[1]])),
        dst: SocketAddrV4::new(dst_ip, u16::from_be_bytes([t[2], t[3]])),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags: t[13],
        payload_len: t.len().saturating_sub(thl),
        ip_csum_ok: ip_checksum(ip) == 0,
        tcp_csum_ok: tcp_checksum(src_ip, dst_ip, t) == 0,
    })
}

/// Receive from the socket until `pred` accepts a frame or `timeout`; every frame seen
/// is released. Returns the accepted frame's parse.
pub fn recv_until(xsk: &mut XdpSocket, timeout: Duration, mut pred: impl FnMut(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut descs = [RxDesc::default(); 32];
    while Instant::now() < deadline {
        let _ = xsk.wait_rx(Duration::from_millis(50));
        let n = xsk.rx_burst(&mut descs);
        let mut found = None;
        for d in &descs[..n] {
            let bytes = xsk.rx_frame(d).to_vec();
            xsk.release_rx(d.addr).expect("release");
            if found.is_none() && pred(&bytes) {
                found = Some(bytes);
            }
        }
        xsk.poll();
        if found.is_some() {
            return found;
        }
    }
    None
}

/// A non-blocking kernel TCP connect from a fixed source address (so its SYN matches
/// our filter's flow key). Returns the socket; dropping it closes the attempt.
pub fn tcp_connect_from(src: SocketAddrV4, dst: SocketAddrV4) -> OwnedFd {
    // SAFETY: plain socket calls on a fresh fd; sockaddr_in values are fully set.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &one as *const _ as *const _, 4);
        let sa = sockaddr(src);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd.as_raw_fd(), &sa as *const _ as *const _, len), 0, "bind {src}: {}", std::io::Error::last_os_error());
        let da = sockaddr(dst);
        let r = libc::connect(fd.as_raw_fd(), &da as *const _ as *const _, len);
        let e = std::io::Error::last_os_error();
        assert!(r == 0 || e.raw_os_error() == Some(libc::EINPROGRESS), "connect {dst}: {e}");
        fd
    }
}

pub fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: POD.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

/// A raw IPv4 socket (IPPROTO_RAW: we supply the IP header) for injecting crafted
/// segments from the server namespace.
pub struct RawSender {
    fd: OwnedFd,
}

impl RawSender {
    pub fn new() -> RawSender {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fd.
        RawSender { fd: unsafe { OwnedFd::from_raw_fd(fd) } }
    }
    /// Send the IPv4 packet inside an Ethernet frame built by [`build_tcp`]. Returns
    /// false when a local netfilter rule dropped it (EPERM).
    pub fn send_frame(&self, frame: &[u8], dst: Ipv4Addr) -> bool {
        let ip = &frame[14..];
        let sa = sockaddr(SocketAddrV4::new(dst, 0));
        // SAFETY: ip is a valid buffer; sa a valid sockaddr_in.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ip.as_ptr() as *const _,
                ip.len(),
                0,
                &sa as *const _ as *const _,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            return false;
        }
        assert_eq!(r as usize, ip.len(), "raw sendto: {}", std::io::Error::last_os_error());
        true
    }
}

/// ICMP echo from the calling thread's namespace (no `ping` binary needed): sends up
/// to `tries` echo requests, returns true on the first reply from `dst`.
pub fn ping(dst: Ipv4Addr, tries: u32) -> bool {
    // SAFETY: plain socket calls on fds we own; buffers are valid for their lengths.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP);
        assert!(fd >= 0, "raw ICMP socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let id = (std::process::id() & 0xffff) as u16;
        for seq in 0..tries {
            let mut req = [8u8, 0, 0, 0, 0, 0, 0, 0, b'p', b'l', b'x', b'd', b'p', 0, 0, 0];
            req[4..6].copy_from_slice(&id.to_be_bytes());
            req[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
            let c = ip_checksum(&req);
            req[2..4].copy_from_slice(&c.to_be_bytes());
            let sa = sockaddr(SocketAddrV4::new(dst, 0));
            libc::sendto(fd.as_raw_fd(), req.as_ptr() as *const _, req.len(), 0, &sa as *const _ as *const _, 16);
            let deadline = Instant::now() + Duration::from_millis(700);
            while Instant::now() < deadline {
                let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                if libc::poll(&mut p, 1, 100) <= 0 {
                    continue;
                }
                let mut buf = [0u8; 1500];
                let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len(), libc::MSG_DONTWAIT);
                if n < 28 {
                    continue;
                }
                let ihl = ((buf[0] & 0x0f) as usize) * 4;
                let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                let icmp = &buf[ihl..n as usize];
                if src == dst && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
                    return true;
                }
            }
        }
        false
    }
}

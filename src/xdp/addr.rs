//! Interface, route and neighbour look-ups, and the local port reservation.
//!
//! Everything here asks the kernel through a socket ioctl or `/proc/thread-self/net`,
//! so it answers for the network namespace of the *calling thread* (a thread that did
//! `setns(CLONE_NEWNET)` sees its namespace; `/sys/class/net` and `/proc/self/net`
//! would show the mount's or the main thread's namespace instead).

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// A MAC address.
pub type Mac = [u8; 6];

/// `if_nametoindex`.
pub fn ifindex(ifname: &str) -> Result<u32> {
    let c = CString::new(ifname).map_err(|_| Error::Config(format!("bad interface name {ifname:?}")))?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(Error::last_os(format!("interface {ifname}")))
    } else {
        Ok(i)
    }
}

fn ioctl_sock() -> Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os("socket(AF_INET) for interface ioctls"));
    }
    // SAFETY: fresh fd, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(ifname: &str) -> Result<libc::ifreq> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(Error::Config(format!("bad interface name {ifname:?}")));
    }
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

fn do_ioctl(ifname: &str, req: libc::c_ulong, what: &str) -> Result<libc::ifreq> {
    let s = ioctl_sock()?;
    let mut r = ifreq(ifname)?;
    // SAFETY: `r` is a valid ifreq for these SIOCGIF* requests.
    if unsafe { libc::ioctl(s.as_raw_fd(), req as _, &mut r) } < 0 {
        return Err(Error::last_os(format!("{what} of {ifname}")));
    }
    Ok(r)
}

/// The interface's primary IPv4 address (`SIOCGIFADDR`).
pub fn ipv4_of(ifname: &str) -> Result<Ipv4Addr> {
    let r = do_ioctl(ifname, libc::SIOCGIFADDR, "IPv4 address")?;
    // SAFETY: for SIOCGIFADDR the union holds a sockaddr_in.
    let sin: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(&r.ifr_ifru.ifru_addr as *const _ as *const libc::sockaddr_in) };
    Ok(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

/// The interface's MAC address (`SIOCGIFHWADDR`).
pub fn mac_of(ifname: &str) -> Result<Mac> {
    let r = do_ioctl(ifname, libc::SIOCGIFHWADDR, "MAC address")?;
    // SAFETY: for SIOCGIFHWADDR the union holds a sockaddr with the MAC in sa_data.
    let sa = unsafe { r.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(m)
}

/// The interface MTU (`SIOCGIFMTU`).
pub fn mtu_of(ifname: &str) -> Result<u32> {
    let r = do_ioctl(ifname, libc::SIOCGIFMTU, "MTU")?;
    // SAFETY: for SIOCGIFMTU the union holds an int.
    Ok(unsafe { r.ifr_ifru.ifru_mtu } as u32)
}

/// The interface's kernel driver name (`ETHTOOL_GDRVINFO`), e.g. "veth".
pub fn driver_name(ifname: &str) -> Result<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    // SAFETY: POD.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let s = ioctl_sock()?;
    let mut r = ifreq(ifname)?;
    r.ifr_ifru.ifru_data = &mut info as *mut DrvInfo as *mut libc::c_char;
    // SAFETY: ifr_data points at a DrvInfo that outlives the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), SIOCETHTOOL as _, &mut r) } < 0 {
        return Err(Error::last_os(format!("ETHTOOL_GDRVINFO of {ifname}")));
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Number of RX queues in use (`ETHTOOL_GCHANNELS` current rx + combined; 1 when the
/// driver does not say).
pub fn rx_queue_count(ifname: &str) -> u32 {
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut ch = Channels { cmd: ETHTOOL_GCHANNELS, ..Default::default() };
    let (Ok(s), Ok(mut r)) = (ioctl_sock(), ifreq(ifname)) else { return 1 };
    r.ifr_ifru.ifru_data = &mut ch as *mut Channels as *mut libc::c_char;
    // SAFETY: ifr_data points at a Channels that outlives the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), SIOCETHTOOL as _, &mut r) } < 0 {
        return 1;
    }
    // The queues in use now (not the driver's maximum): those are the ones a flow can
    // land on, and the only ones a socket can bind.
    (ch.rx_count + ch.combined_count).max(1)
}

/// A route chosen for a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub ifname: String,
    /// The gateway, or `None` when the destination is on-link.
    pub gateway: Option<Ipv4Addr>,
}

impl Route {
    /// The address whose MAC we need: the gateway, or the destination itself.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        self.gateway.unwrap_or(dst)
    }
}

fn hex_le_ip(s: &str) -> Option<Ipv4Addr> {
    // /proc/net/route prints the in-memory (network order) u32 as host-order hex.
    let v = u32::from_str_radix(s, 16).ok()?;
    Some(Ipv4Addr::from(v.to_le_bytes()))
}

/// Longest-prefix match of `dst` in the main routing table (`/proc/thread-self/net/route`).
pub fn route_to(dst: Ipv4Addr) -> Result<Route> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route").map_err(|e| Error::io("read /proc/thread-self/net/route", e))?;
    parse_route(&text, dst).ok_or_else(|| Error::Net(format!("no route to {dst}")))
}

/// The parser behind [`route_to`] (public for tests).
pub fn parse_route(text: &str, dst: Ipv4Addr) -> Option<Route> {
    let d = u32::from(dst);
    let mut best: Option<(u32, u32, Route)> = None; // (prefix len, metric, route)
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(net), Some(gw), Some(mask)) = (hex_le_ip(f[1]), hex_le_ip(f[2]), hex_le_ip(f[7])) else { continue };
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        if flags & 0x1 == 0 {
            continue; // RTF_UP
        }
        let metric: u32 = f[6].parse().unwrap_or(0);
        let m = u32::from(mask);
        if d & m != u32::from(net) & m {
            continue;
        }
        let plen = m.count_ones();
        let gateway = if flags & 0x2 != 0 && !gw.is_unspecified() { Some(gw) } else { None };
        let better = match &best {
            None => true,
            Some((bp, bm, _)) => plen > *bp || (plen == *bp && metric < *bm),
        };
        if better {
            best = Some((plen, metric, Route { ifname: f[0].to_string(), gateway }));
        }
    }
    best.map(|b| b.2)
}

/// The MAC of `ip` on `ifname` from the neighbour table (`/proc/thread-self/net/arp`),
/// if the kernel has a complete entry.
pub fn neighbor_mac(ip: Ipv4Addr, ifname: &str) -> Result<Option<Mac>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/arp").map_err(|e| Error::io("read /proc/thread-self/net/arp", e))?;
    Ok(parse_arp(&text, ip, ifname))
}

/// The parser behind [`neighbor_mac`] (public for tests).
pub fn parse_arp(text: &str, ip: Ipv4Addr, ifname: &str) -> Option<Mac> {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != ifname || f[0].parse::<Ipv4Addr>().ok() != Some(ip) {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & 0x2 == 0 {
            continue; // ATF_COM: incomplete
        }
        return parse_mac(f[3]);
    }
    None
}

/// "aa:bb:cc:dd:ee:ff" -> bytes.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut it = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(it.next()?, 16).ok()?;
    }
    if it.next().is_some() || m == [0; 6] {
        return None;
    }
    Some(m)
}

/// A local TCP port held by a kernel socket for as long as this value lives, so the
/// kernel never hands the port to anyone else. The socket is bound, never listening
/// or connected; our flow's packets are redirected by XDP before the kernel's TCP sees
/// them, so the kernel does not answer them with RSTs.
#[derive(Debug)]
pub struct PortReservation {
    fd: OwnedFd,
    addr: SocketAddrV4,
}

impl PortReservation {
    /// Bind a TCP socket (no SO_REUSEADDR) to `ip:port`; `port` 0 picks a free
    /// ephemeral port.
    pub fn new(ip: Ipv4Addr, port: u16) -> Result<PortReservation> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::last_os("socket(AF_INET, SOCK_STREAM) for port reservation"));
        }
        // SAFETY: fresh fd, owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: POD.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = port.to_be();
        sin.sin_addr.s_addr = u32::from(ip).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: sin is a valid sockaddr_in of `len` bytes.
        if unsafe { libc::bind(fd.as_raw_fd(), &sin as *const _ as *const libc::sockaddr, len) } < 0 {
            return Err(Error::io(format!("reserve local port {ip}:{port}"), io::Error::last_os_error()));
        }
        let mut out: libc::sockaddr_in = sin;
        let mut olen = len;
        // SAFETY: out is a writable sockaddr_in of `olen` bytes.
        if unsafe { libc::getsockname(fd.as_raw_fd(), &mut out as *mut _ as *mut libc::sockaddr, &mut olen) } < 0 {
            return Err(Error::last_os("getsockname of port reservation"));
        }
        Ok(PortReservation { fd, addr: SocketAddrV4::new(ip, u16::from_be(out.sin_port)) })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// The next hop's MAC: from the neighbour table, asking the kernel to resolve it (a
/// UDP datagram to the discard port makes it ARP) when it is not there yet.
pub(crate) fn next_hop_mac(hop: std::net::Ipv4Addr, ifname: &str, timeout: std::time::Duration) -> crate::Result<[u8; 6]> {
    let deadline = std::time::Instant::now() + timeout;
    let mut poked = false;
    loop {
        if let Some(m) = neighbor_mac(hop, ifname)? {
            return Ok(m);
        }
        if !poked {
            poked = true;
            if let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") {
                let _ = s.send_to(&[0], (hop, 9));
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(crate::Error::Net(format!(
                "no ARP answer from {hop} on {ifname} within {timeout:?}"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_lpm_and_gateway() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
                 veth1\t00C8000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse_route(t, Ipv4Addr::new(10, 0, 200, 7)).unwrap();
        assert_eq!(r, Route { ifname: "veth1".into(), gateway: None });
        let r = parse_route(t, Ipv4Addr::new(8, 8, 8, 8)).unwrap();
        assert_eq!(r, Route { ifname: "eth0".into(), gateway: Some(Ipv4Addr::new(192, 168, 2, 1)) });
        assert_eq!(r.next_hop(Ipv4Addr::new(8, 8, 8, 8)), Ipv4Addr::new(192, 168, 2, 1));
        let r = parse_route(t, Ipv4Addr::new(192, 168, 2, 9)).unwrap();
        assert_eq!(r.gateway, None);
    }

    #[test]
    fn arp_table() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.200.1.2       0x1         0x2         66:77:88:99:aa:bb     *        v1\n\
                 10.200.1.3       0x1         0x0         00:00:00:00:00:00     *        v1\n";
        assert_eq!(parse_arp(t, Ipv4Addr::new(10, 200, 1, 2), "v1"), Some([0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]));
        assert_eq!(parse_arp(t, Ipv4Addr::new(10, 200, 1, 2), "v2"), None);
        assert_eq!(parse_arp(t, Ipv4Addr::new(10, 200, 1, 3), "v1"), None);
    }

    #[test]
    fn port_reservation_holds_the_port() {
        let r = PortReservation::new(Ipv4Addr::LOCALHOST, 0).unwrap();
        assert_ne!(r.port(), 0);
        // A second bind to the same port fails while the reservation lives.
        assert!(PortReservation::new(Ipv4Addr::LOCALHOST, r.port()).is_err());
    }
}

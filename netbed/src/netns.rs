//! Network-namespace bed: two namespaces joined by a veth pair. The tests, the veth
//! benchmark and `pipeline demo` all use this one.
//!
//! ```text
//!   netns <base>c  (client: our AF_XDP socket)          netns <base>s  (server: kernel peer)
//!   <veth>c  10.200.1.2/24  <------- veth ------->  <veth>s  10.200.1.1/24
//! ```
//!
//! Names are unique per process and bed (`pl<pid>_<n>c` / `...s` for tests,
//! `pld<pid>c` / `...s` for the demo), so tests run in parallel and alongside other
//! users of the machine. Addresses live inside our own namespaces, so every bed can use
//! the same private subnet.
//!
//! Dropping the bed (also while a test panics) deletes both namespaces, which destroys
//! the veth pair and detaches any XDP program on it. Namespaces whose creator died
//! before that (SIGKILL) are removed by the next bed.
//!
//! Usage:
//! ```ignore
//! let Some(bed) = TestBed::new_or_skip("AF_XDP test") else { return };
//! bed.in_client(|| { /* runs on a thread inside the client namespace */ });
//! bed.server_cmd(&["ping", "-c1", &bed.client_ip.to_string()]);
//! ```

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub use crate::process::{run, try_run};
use crate::process::run_checked;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Which end of the veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

pub struct TestBed {
    pub client_ns: String,
    pub server_ns: String,
    pub client_if: String,
    pub server_if: String,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub client_mac: [u8; 6],
    pub server_mac: [u8; 6],
}

/// Whether privileged tests can run. When they cannot: with `CI` set, panic (the test
/// fails with the reason); otherwise print "skipped: needs root (reason)" and return
/// `false` so the test returns early.
pub fn require_root(what: &str) -> bool {
    match missing_privileges() {
        None => true,
        Some(r) => {
            if std::env::var_os("CI").is_some() {
                panic!("{what} needs root with CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF, CAP_NET_RAW, CAP_IPC_LOCK ({r}); CI is set, so this is a failure");
            }
            eprintln!("skipped: needs root ({what}: {r})");
            false
        }
    }
}

/// Why a bed (and AF_XDP) cannot be used here, or `None`: not root, a missing
/// capability, no network namespaces, no `ip`.
pub fn missing_privileges() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        Some(format!("euid is {euid}"))
    } else if let Some(missing) = missing_caps() {
        Some(format!("missing {missing}"))
    } else if !std::path::Path::new("/proc/self/ns/net").exists() {
        Some("no network namespace support".to_string())
    } else if Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        Some("`ip` (iproute2) not installed".to_string())
    } else {
        None
    }
}

/// Effective capabilities the test bed and the AF_XDP path need, from
/// `/proc/self/status`; `None` when all are present.
fn missing_caps() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim().to_string();
    let eff = u64::from_str_radix(&hex, 16).ok()?;
    let need = [(12, "CAP_NET_ADMIN"), (13, "CAP_NET_RAW"), (14, "CAP_IPC_LOCK"), (21, "CAP_SYS_ADMIN"), (39, "CAP_BPF")];
    let missing: Vec<&str> = need.iter().filter(|(bit, _)| eff & (1u64 << bit) == 0).map(|(_, n)| *n).collect();
    if missing.is_empty() {
        None
    } else {
        Some(missing.join(", "))
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.trim().split(':')) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC address {s:?}"))?;
    }
    Ok(m)
}

impl TestBed {
    /// [`require_root`] then [`TestBed::new`].
    pub fn new_or_skip(what: &str) -> Option<TestBed> {
        if !require_root(what) {
            return None;
        }
        Some(TestBed::new())
    }

    /// Create the namespaces, the veth pair, addresses; links up; offloads off.
    pub fn new() -> TestBed {
        Self::with_queues(1)
    }

    /// Like [`TestBed::new`] with `queues` RX and TX queues on each veth end (no
    /// steering: the kernel spreads flows over them by hash).
    pub fn with_queues(queues: u32) -> TestBed {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = format!("pl{}_{n}", std::process::id());
        TestBed::create(&base, queues).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The bed with namespaces and interfaces `<base>c` / `<base>s`; `Err` says which
    /// step failed (whatever was created is removed). `base` is `pl<pid>_<n>` or
    /// `pld<pid>`, the forms the stale-namespace reaper knows.
    pub fn create(base: &str, queues: u32) -> Result<TestBed, String> {
        static REAP: std::sync::Once = std::sync::Once::new();
        REAP.call_once(reap_stale_namespaces);
        if base.len() >= 15 {
            return Err(format!("interface name too long: {base}"));
        }
        let bed = TestBed {
            client_ns: format!("{base}c"),
            server_ns: format!("{base}s"),
            client_if: format!("{base}c"),
            server_if: format!("{base}s"),
            client_ip: Ipv4Addr::new(10, 200, 1, 2),
            server_ip: Ipv4Addr::new(10, 200, 1, 1),
            prefix_len: 24,
            client_mac: [0; 6],
            server_mac: [0; 6],
        };
        // From here on, Drop cleans up whatever exists.
        let mut bed = bed;
        run_checked(&["ip", "netns", "add", &bed.client_ns])?;
        run_checked(&["ip", "netns", "add", &bed.server_ns])?;
        let q = queues.to_string();
        run_checked(&[
            "ip", "link", "add", &bed.client_if, "netns", &bed.client_ns, "numrxqueues", &q, "numtxqueues", &q, "type",
            "veth", "peer", "name", &bed.server_if, "netns", &bed.server_ns, "numrxqueues", &q, "numtxqueues", &q,
        ])?;
        for (ns, ifn, ip) in [
            (bed.client_ns.clone(), bed.client_if.clone(), bed.client_ip),
            (bed.server_ns.clone(), bed.server_if.clone(), bed.server_ip),
        ] {
            let cidr = format!("{ip}/{}", bed.prefix_len);
            run_checked(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", &ifn])?;
            run_checked(&["ip", "-n", &ns, "link", "set", "dev", &ifn, "up"])?;
            run_checked(&["ip", "-n", &ns, "link", "set", "dev", "lo", "up"])?;
            // Checksum offload off: otherwise the kernel peer's frames reach the XSK with
            // partial checksums; TSO/GSO/GRO off: no oversized frames.
            let (ok, out) = try_run(&["ip", "netns", "exec", &ns, "ethtool", "-K", &ifn, "tx", "off", "tso", "off", "gso", "off", "gro", "off"]);
            if !ok {
                // `tx off` is the one that matters; retry it alone.
                let (ok2, out2) = try_run(&["ip", "netns", "exec", &ns, "ethtool", "-K", &ifn, "tx", "off"]);
                if !ok2 {
                    return Err(format!("ethtool -K {ifn} tx off failed: {out}\n{out2}"));
                }
            }
        }
        bed.client_mac = parse_mac(&bed.try_read_sys(Side::Client, "address")?)?;
        bed.server_mac = parse_mac(&bed.try_read_sys(Side::Server, "address")?)?;
        Ok(bed)
    }

    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Client => &self.client_ns,
            Side::Server => &self.server_ns,
        }
    }
    pub fn ifname(&self, side: Side) -> &str {
        match side {
            Side::Client => &self.client_if,
            Side::Server => &self.server_if,
        }
    }

    /// Add another address (same subnet) to one end.
    pub fn add_addr(&self, side: Side, ip: Ipv4Addr) {
        let cidr = format!("{ip}/{}", self.prefix_len);
        run(&["ip", "-n", self.ns(side), "addr", "add", &cidr, "dev", self.ifname(side)]);
    }

    /// `/sys/class/net/<if>/<attr>` as seen inside the namespace.
    pub fn read_sys(&self, side: Side, attr: &str) -> String {
        self.try_read_sys(side, attr).unwrap_or_else(|e| panic!("{e}"))
    }
    fn try_read_sys(&self, side: Side, attr: &str) -> Result<String, String> {
        let path = format!("/sys/class/net/{}/{attr}", self.ifname(side));
        let out = run_checked(&["ip", "netns", "exec", self.ns(side), "cat", &path])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// An interface statistics counter (`rx_packets`, `tx_packets`, ...).
    pub fn stat(&self, side: Side, name: &str) -> u64 {
        self.read_sys(side, &format!("statistics/{name}")).parse().unwrap_or(0)
    }

    /// Run a command inside a namespace (`ip netns exec`); panics on failure.
    pub fn cmd(&self, side: Side, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", self.ns(side)];
        v.extend_from_slice(args);
        run(&v)
    }
    pub fn client_cmd(&self, args: &[&str]) -> Output {
        self.cmd(Side::Client, args)
    }
    pub fn server_cmd(&self, args: &[&str]) -> Output {
        self.cmd(Side::Server, args)
    }
    /// Like [`TestBed::cmd`] but returns (success, output) instead of panicking.
    pub fn try_cmd(&self, side: Side, args: &[&str]) -> (bool, String) {
        let mut v = vec!["ip", "netns", "exec", self.ns(side)];
        v.extend_from_slice(args);
        try_run(&v)
    }

    /// Run `f` on a new thread that has joined the namespace (setns(2) with
    /// CLONE_NEWNET); returns its result, re-raising its panic.
    pub fn in_ns<F, R>(&self, side: Side, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.ns(side));
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                enter_netns(&path);
                f()
            });
            match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
    /// [`TestBed::in_ns`] that reports instead of panicking: `Err` when the thread
    /// cannot join the namespace or `f` panics.
    pub fn try_in_ns<F, R>(&self, side: Side, f: F) -> Result<R, String>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.ns(side));
        let p = &path;
        std::thread::scope(|s| {
            s.spawn(move || {
                try_enter_netns(p)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(format!("the thread in {path} panicked")))
        })
    }
    pub fn in_client<F: FnOnce() -> R + Send, R: Send>(&self, f: F) -> R {
        self.in_ns(Side::Client, f)
    }
    pub fn in_server<F: FnOnce() -> R + Send, R: Send>(&self, f: F) -> R {
        self.in_ns(Side::Server, f)
    }

    /// Spawn a long-running thread inside a namespace (e.g. a kernel TCP listener).
    pub fn spawn_in<F, R>(&self, side: Side, f: F) -> std::thread::JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.ns(side));
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }

    /// Drop `pct`% of the server's packets towards the client (nftables, server side,
    /// output hook). `pct` 0 removes the rule.
    pub fn set_server_loss(&self, pct: u32) {
        let _ = self.try_cmd(Side::Server, &["nft", "delete", "table", "inet", "pl_loss"]);
        if pct == 0 {
            return;
        }
        let matcher = if pct >= 100 { String::new() } else { format!("numgen random mod 100 < {pct} ") };
        let rules = format!(
            "table inet pl_loss {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  ip daddr {} {matcher}drop\n }}\n}}\n",
            self.client_ip
        );
        let path = std::env::temp_dir().join(format!("{}-loss.nft", self.server_ns));
        std::fs::write(&path, rules).expect("write nft rules");
        self.server_cmd(&["nft", "-f", path.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(path);
    }

    /// A black hole: the server's namespace drops every packet from and to the client
    /// (nftables, input and output hooks), so the server neither sees nor answers
    /// anything and its kernel sends no RST. `false` removes it. Independent of
    /// [`TestBed::set_server_loss`].
    pub fn set_server_blackhole(&self, on: bool) {
        let _ = self.try_cmd(Side::Server, &["nft", "delete", "table", "inet", "pl_blackhole"]);
        if !on {
            return;
        }
        let c = self.client_ip;
        let rules = format!(
            "table inet pl_blackhole {{\n chain in {{\n  type filter hook input priority -10; policy accept;\n  ip saddr {c} drop\n }}\n chain out {{\n  type filter hook output priority -10; policy accept;\n  ip daddr {c} drop\n }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("{}-blackhole.nft", self.server_ns));
        std::fs::write(&path, rules).expect("write nft rules");
        self.server_cmd(&["nft", "-f", path.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(path);
    }

    /// While on, the server's input hook drops every SYN from the client (segments of
    /// established connections pass), counting them ([`TestBed::dropped_client_syns`]).
    /// For testing a lost SYN's retransmission.
    pub fn drop_client_syns(&self, on: bool) {
        let _ = self.try_cmd(Side::Server, &["nft", "delete", "table", "inet", "pl_syn"]);
        if !on {
            return;
        }
        let c = self.client_ip;
        let rules = format!(
            "table inet pl_syn {{\n chain in {{\n  type filter hook input priority -20; policy accept;\n  ip saddr {c} tcp flags & (syn | ack) == syn counter drop\n }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("{}-syn.nft", self.server_ns));
        std::fs::write(&path, rules).expect("write nft rules");
        self.server_cmd(&["nft", "-f", path.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(path);
    }

    /// Packets the [`TestBed::drop_client_syns`] rule dropped so far.
    pub fn dropped_client_syns(&self) -> u64 {
        let (_, out) = self.try_cmd(Side::Server, &["nft", "list", "table", "inet", "pl_syn"]);
        out.split("packets ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// `ip -d link show dev <if>` inside the namespace.
    pub fn link_details(&self, side: Side) -> String {
        let out = self.cmd(side, &["ip", "-d", "link", "show", "dev", self.ifname(side)]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether an XDP program is attached to the interface.
    pub fn has_xdp(&self, side: Side) -> bool {
        let d = self.link_details(side);
        d.contains("prog/xdp") || d.contains(" xdp ") || d.contains("xdpgeneric") || d.contains("xdpdrv")
    }
}

/// The creator's pid of a bed namespace name: `pl<pid>_<n>c|s` (tests) or
/// `pld<pid>c|s` (the demo); `None` for any other name.
fn bed_pid(name: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let body = name.strip_suffix('c').or_else(|| name.strip_suffix('s'))?;
    if let Some(pid) = body.strip_prefix("pld") {
        return digits(pid).then_some(pid);
    }
    let (pid, n) = body.strip_prefix("pl")?.split_once('_')?;
    (digits(pid) && digits(n)).then_some(pid)
}

/// Delete bed namespaces whose creating process is gone — left behind when a test or
/// demo was SIGKILLed (e.g. by a timeout) before Drop ran.
fn reap_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = bed_pid(&name) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("test bed: removing stale namespace {name} (pid {pid} is gone)");
            let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        }
    }
}

/// Join a network namespace on the calling thread; panics if it cannot.
pub fn enter_netns(path: &str) {
    try_enter_netns(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Join a network namespace on the calling thread (and the threads it creates later).
pub fn try_enter_netns(path: &str) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    // SAFETY: setns on a valid namespace fd; affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns({path}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for TestBed {
    fn drop(&mut self) {
        // Deleting a namespace destroys its veth end (and so the pair) and any XDP
        // program attached to it.
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bed_pid;

    #[test]
    fn bed_names() {
        assert_eq!(bed_pid("pl123_4c"), Some("123"));
        assert_eq!(bed_pid("pl123_45s"), Some("123"));
        assert_eq!(bed_pid("pld77c"), Some("77"));
        assert_eq!(bed_pid("pld77s"), Some("77"));
        for other in ["pl123c", "pl_1c", "pl12_c", "pld7_1c", "plx1_2c", "pl1_2x", "feed", "pldc"] {
            assert_eq!(bed_pid(other), None, "{other}");
        }
    }
}

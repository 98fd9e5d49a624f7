//! Network-namespace test bed: two namespaces joined by a veth pair.
//!
//! ```text
//!   netns <base>c  (client: our AF_XDP socket)          netns <base>s  (server: kernel peer)
//!   <veth>c  10.200.1.2/24  <------- veth ------->  <veth>s  10.200.1.1/24
//! ```
//!
//! Names are unique per process and bed (`pl<pid>_<n>c` / `...s`), so tests run in
//! parallel and alongside other users of the machine. Addresses live inside our own
//! namespaces, so every bed can use the same private subnet.
//!
//! Dropping the bed (also while a test panics) deletes both namespaces, which destroys
//! the veth pair and detaches any XDP program on it.
//!
//! Usage:
//! ```ignore
//! let Some(bed) = TestBed::new_or_skip("AF_XDP test") else { return };
//! bed.in_client(|| { /* runs on a thread inside the client namespace */ });
//! bed.server_cmd(&["ping", "-c1", &bed.client_ip.to_string()]);
//! ```

#![allow(dead_code)]

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

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
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let reason = if euid != 0 {
        Some(format!("euid is {euid}"))
    } else if let Some(missing) = missing_caps() {
        Some(format!("missing {missing}"))
    } else if !std::path::Path::new("/proc/self/ns/net").exists() {
        Some("no network namespace support".to_string())
    } else if Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        Some("`ip` (iproute2) not installed".to_string())
    } else {
        None
    };
    match reason {
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

/// Run a command; panic with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Run a command, return success and combined output (no panic).
pub fn try_run(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, format!("spawn {args:?}: {e}")),
    }
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.trim().split(':')) {
        *b = u8::from_str_radix(p, 16).expect("mac byte");
    }
    m
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
        static REAP: std::sync::Once = std::sync::Once::new();
        REAP.call_once(reap_stale_namespaces);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = format!("pl{pid}_{n}");
        assert!(base.len() < 15, "interface name too long: {base}");
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
        run(&["ip", "netns", "add", &bed.client_ns]);
        run(&["ip", "netns", "add", &bed.server_ns]);
        let q = queues.to_string();
        run(&[
            "ip", "link", "add", &bed.client_if, "netns", &bed.client_ns, "numrxqueues", &q, "numtxqueues", &q, "type",
            "veth", "peer", "name", &bed.server_if, "netns", &bed.server_ns, "numrxqueues", &q, "numtxqueues", &q,
        ]);
        for (ns, ifn, ip) in [
            (bed.client_ns.clone(), bed.client_if.clone(), bed.client_ip),
            (bed.server_ns.clone(), bed.server_if.clone(), bed.server_ip),
        ] {
            let cidr = format!("{ip}/{}", bed.prefix_len);
            run(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", &ifn]);
            run(&["ip", "-n", &ns, "link", "set", "dev", &ifn, "up"]);
            run(&["ip", "-n", &ns, "link", "set", "dev", "lo", "up"]);
            // Checksum offload off: otherwise the kernel peer's frames reach the XSK with
            // partial checksums; TSO/GSO/GRO off: no oversized frames.
            let (ok, out) = try_run(&["ip", "netns", "exec", &ns, "ethtool", "-K", &ifn, "tx", "off", "tso", "off", "gso", "off", "gro", "off"]);
            if !ok {
                // `tx off` is the one that matters; retry it alone.
                let (ok2, out2) = try_run(&["ip", "netns", "exec", &ns, "ethtool", "-K", &ifn, "tx", "off"]);
                assert!(ok2, "ethtool -K {ifn} tx off failed: {out}\n{out2}");
            }
        }
        bed.client_mac = parse_mac(&bed.read_sys(Side::Client, "address"));
        bed.server_mac = parse_mac(&bed.read_sys(Side::Server, "address"));
        bed
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
        let path = format!("/sys/class/net/{}/{attr}", self.ifname(side));
        let out = run(&["ip", "netns", "exec", self.ns(side), "cat", &path]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
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

/// Delete test-bed namespaces (`pl<pid>_<n>c|s`) whose creating process is gone — left
/// behind when a test process was SIGKILLed (e.g. by a timeout) before Drop ran.
fn reap_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("pl") else { continue };
        let Some((pid, tail)) = rest.split_once('_') else { continue };
        let well_formed = !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && tail.len() >= 2
            && tail[..tail.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && (tail.ends_with('c') || tail.ends_with('s'));
        if well_formed && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("test bed: removing stale namespace {name} (pid {pid} is gone)");
            let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        }
    }
}

/// Join a network namespace on the calling thread.
pub fn enter_netns(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
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

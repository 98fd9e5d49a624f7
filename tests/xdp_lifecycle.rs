//! Process-level behaviour: the XDP program goes away when its process is SIGKILLed
//! (bpf_link), and missing privileges are reported as `Error::Capability` naming the
//! capability. Child processes are this test binary re-executed with `PL_XDP_CHILD`
//! set, inside the client namespace (`ip netns exec`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pipeline_testkit::netns::{Side, TestBed};
use pipeline::xdp::{XdpConfig, XdpSocket};
use pipeline::Error;

const CHILD_ENV: &str = "PL_XDP_CHILD";

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (what, ifname) = spec.split_once(':').expect("PL_XDP_CHILD=what:ifname");
    if what == "nobody" {
        // SAFETY: plain setresgid/setresuid; dropping root clears the capability sets.
        unsafe {
            assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
            assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
        }
    }
    match XdpSocket::open(&XdpConfig::new(ifname)) {
        Ok(xsk) => {
            println!("READY {}", xsk.mode());
            if what == "hold" {
                // Wait to be killed (bounded, in case the parent dies first).
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        Err(Error::Capability { what, how }) => println!("CAPABILITY|{what}|{how}"),
        Err(e) => println!("ERROR|{e}"),
    }
}

fn child(bed: &TestBed, what: &str, wrapper: &[&str]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &bed.client_ns]);
    c.args(wrapper);
    c.arg(&exe).args(["--exact", "child_entry", "--nocapture", "--test-threads=1"]);
    c.env(CHILD_ENV, format!("{what}:{}", bed.client_if));
    c.env_remove("RUST_BACKTRACE");
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// The child's protocol line (READY/CAPABILITY/ERROR), waiting at most `timeout`.
fn first_line(stdout: std::process::ChildStdout, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may have printed "test child_entry ... " on the same line.
            if let Some(i) = ["READY", "CAPABILITY|", "ERROR|"].iter().filter_map(|m| line.find(m)).min() {
                let _ = tx.send(line[i..].to_string());
                return;
            }
        }
    });
    rx.recv_timeout(timeout).ok()
}

#[test]
fn sigkill_leaves_no_xdp_program_and_the_next_attach_works() {
    let Some(bed) = TestBed::new_or_skip("SIGKILL cleanup") else { return };
    let mut ch = child(&bed, "hold", &[]).spawn().expect("spawn child");
    let line = first_line(ch.stdout.take().unwrap(), Duration::from_secs(20));
    let Some(line) = line else {
        let _ = ch.kill();
        let out = ch.wait_with_output().unwrap();
        panic!("child never attached; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    };
    assert!(line.starts_with("READY"), "child: {line}");
    assert!(bed.has_xdp(Side::Client), "child attached but no XDP program visible:\n{}", bed.link_details(Side::Client));

    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs in place).
    assert_eq!(unsafe { libc::kill(ch.id() as i32, libc::SIGKILL) }, 0);
    let st = ch.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));

    let deadline = Instant::now() + Duration::from_secs(3);
    while bed.has_xdp(Side::Client) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let details = bed.link_details(Side::Client);
    assert!(!bed.has_xdp(Side::Client), "XDP program survived SIGKILL:\n{details}");

    // A new attach + bind on the same interface and queue succeeds right away.
    bed.in_client(|| {
        let xsk = XdpSocket::open(&XdpConfig::new(&bed.client_if)).expect("re-attach after SIGKILL");
        assert!(bed.has_xdp(Side::Client));
        drop(xsk);
    });
    assert!(!bed.has_xdp(Side::Client));
}

fn expect_capability(bed: &TestBed, what: &str, wrapper: &[&str], needle: &str) {
    let mut ch = child(bed, what, wrapper).spawn().expect("spawn child");
    let line = first_line(ch.stdout.take().unwrap(), Duration::from_secs(20));
    let out = ch.wait_with_output().unwrap();
    let line = line.unwrap_or_else(|| panic!("no answer from child {wrapper:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    let parts: Vec<&str> = line.splitn(3, '|').collect();
    assert_eq!(parts[0], "CAPABILITY", "{wrapper:?}: expected a capability error, got {line}");
    assert!(parts[1].contains(needle), "{wrapper:?}: capability error does not name {needle}: {line}");
    assert!(parts[2].contains("setcap") && parts[2].contains("root"), "no way to grant it: {line}");
    assert!(!bed.has_xdp(Side::Client), "failed open left an XDP program behind");
    eprintln!("{wrapper:?} -> {line}");
}

#[test]
fn missing_privileges_are_reported_as_capability_errors() {
    let Some(bed) = TestBed::new_or_skip("capability errors") else { return };
    // As nobody: nothing works; the first privileged step is creating the BPF maps.
    expect_capability(&bed, "nobody", &[], "CAP_BPF");
    if Command::new("capsh").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        eprintln!("capsh not installed: only the setresuid variant ran");
        return;
    }
    // Root without CAP_BPF/CAP_SYS_ADMIN: BPF maps refused.
    expect_capability(
        &bed,
        "open",
        &["capsh", "--drop=cap_bpf,cap_sys_admin,cap_perfmon", "--", "-c", "exec \"$0\" \"$@\""],
        "CAP_BPF",
    );
    // Root without CAP_NET_ADMIN: BPF maps fine, program load/attach refused.
    expect_capability(&bed, "open", &["capsh", "--drop=cap_net_admin,cap_sys_admin", "--", "-c", "exec \"$0\" \"$@\""], "CAP_NET_ADMIN");
    // Root without CAP_NET_RAW: the AF_XDP socket is refused.
    expect_capability(&bed, "open", &["capsh", "--drop=cap_net_raw", "--", "-c", "exec \"$0\" \"$@\""], "CAP_NET_RAW");
    // Root without CAP_IPC_LOCK and a small RLIMIT_MEMLOCK: the UMEM cannot be locked.
    expect_capability(
        &bed,
        "open",
        &["capsh", "--drop=cap_ipc_lock", "--", "-c", "ulimit -l 64; exec \"$0\" \"$@\""],
        "CAP_IPC_LOCK",
    );
}

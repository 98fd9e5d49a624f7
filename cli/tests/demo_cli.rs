//! `pipeline demo` against the Rust feed server: as root (with `CI` set, missing root
//! fails these tests) AF_XDP then the kernel transport over the same veth pair, both
//! summaries, the side-by-side ratios and the latency picture with one curve per
//! transport; `--transport kernel` alone; without root, the kernel transport on
//! loopback (as root the test drops to `nobody` to get there). Every run gets all its
//! messages in order and intact, and leaves no network namespace, shared memory or
//! temporary directory behind — also after Ctrl-C (exit status 130). Bad options are
//! refused.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_testkit::ChildGuard;

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.arg("demo")
        .args(args)
        .env("PIPELINE_REPO", concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

/// Run the demo to its end: (success, stdout + stderr, its pid).
fn run(mut c: Command) -> (bool, String, u32) {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pipeline demo");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for pipeline demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    (out.status.success(), text, pid)
}

/// A directory of this test's own, removed on drop.
struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("demo-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("test directory");
        Dir(d)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo with this pid left nothing behind: its namespaces (and so its veth pair and
/// XDP program), its pipelines' shared memory, its temporary directory.
fn nothing_left_behind(pid: u32) {
    for side in ['c', 's'] {
        let ns = format!("/run/netns/pld{pid}{side}");
        assert!(!Path::new(&ns).exists(), "demo left {ns} behind");
    }
    for e in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with(&format!("pipeline_demo{pid}x")) && !n.starts_with(&format!("pipeline_demo{pid}k")),
            "demo left /dev/shm/{n} behind"
        );
    }
    let tmp = std::env::temp_dir().join(format!("pipeline-demo-{pid}"));
    assert!(!tmp.exists(), "demo left {} behind", tmp.display());
}

/// One transport's summary block: all messages of both runs, no drops.
fn check_summary(out: &str, name: &str, count: u64, latency_count: u64) {
    let block = out
        .split("\nsummary: ")
        .find(|b| b.starts_with(name))
        .unwrap_or_else(|| panic!("no summary for {name}:\n{out}"));
    let block = block.split("\n\n").next().unwrap_or(block);
    assert!(
        block.contains(&format!(
            "messages        {count} of {count} flat out, {latency_count} of {latency_count} paced (server sent {count} + {latency_count})"
        )),
        "{name}: {block}"
    );
    assert!(block.contains("drops/gaps      none"), "{name}: {block}");
    assert!(block.contains("layout / wait   "), "{name}: {block}");
    assert!(
        block.contains(&format!("({latency_count} samples at ")),
        "{name}: every paced message has a latency sample: {block}"
    );
    assert!(block.contains("close handshake completed"), "{name}: {block}");
}

/// The picture the demo said it wrote: one polyline per curve, named.
fn check_picture(out: &str, path: &Path, names: &[&str]) {
    assert!(
        out.contains(&format!("latency picture: {}", path.display())),
        "picture path {}: {out}",
        path.display()
    );
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), names.len(), "{svg}");
    for n in names {
        assert!(svg.contains(n), "curve {n} in {svg}");
    }
}

#[test]
fn demo_as_root_runs_xdp_then_kernel_side_by_side_with_the_picture() {
    if !pipeline_testkit::netns::require_root("pipeline demo over AF_XDP and the veth") {
        return;
    }
    // The default picture path is in the current directory.
    let cwd = Dir::new("default");
    let mut c = command(&["--count", "20000", "--latency-count", "2000"]);
    c.current_dir(&cwd.0);
    let (ok, out, pid) = run(c);
    assert!(ok, "pipeline demo failed:\n{out}");
    check_summary(&out, "AF_XDP (XDP", 20000, 2000);
    check_summary(&out, "kernel TCP (veth)", 20000, 2000);
    assert!(out.contains("pipeline: AF_XDP on pld"), "the library's XDP mode line: {out}");
    assert!(out.contains("client: kernel TCP from netns pld"), "{out}");
    let table = out
        .split("\nside by side")
        .nth(1)
        .unwrap_or_else(|| panic!("no side-by-side table:\n{out}"));
    assert!(table.contains("AF_XDP   kernel TCP  XDP/kernel"), "{table}");
    for row in ["msgs/s flat out", "latency p50 (µs)", "latency p99 (µs)", "latency p99.9 (µs)"] {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(row))
            .unwrap_or_else(|| panic!("no row {row}: {table}"));
        let ratio = line.split_whitespace().last().unwrap_or("");
        let r: f64 = ratio
            .strip_suffix('x')
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("row {row}: ratio {ratio:?}"));
        assert!(r > 0.0, "{line}");
    }
    let picture = std::path::absolute(cwd.0.join("pipeline-demo-latency.svg")).unwrap();
    check_picture(&out, &picture, &["AF_XDP (XDP", "kernel TCP (veth)"]);
    nothing_left_behind(pid);
}

#[test]
fn demo_transport_kernel_alone_over_the_veth() {
    if !pipeline_testkit::netns::require_root("pipeline demo --transport kernel over the veth") {
        return;
    }
    let dir = Dir::new("kernel");
    let picture = dir.0.join("k.svg");
    let (ok, out, pid) = run(command(&[
        "--transport",
        "kernel",
        "--count",
        "20000",
        "--latency-count",
        "2000",
        "--plot",
        picture.to_str().unwrap(),
    ]));
    assert!(ok, "pipeline demo failed:\n{out}");
    check_summary(&out, "kernel TCP (veth)", 20000, 2000);
    assert!(!out.contains("summary: AF_XDP") && !out.contains("pipeline: AF_XDP"), "{out}");
    assert!(!out.contains("side by side"), "one transport, no table: {out}");
    check_picture(&out, &picture, &["kernel TCP (veth)"]);
    nothing_left_behind(pid);
}

#[test]
fn demo_without_root_runs_the_kernel_transport_on_loopback() {
    let dir = Dir::new("nonroot");
    let picture = dir.0.join("lo.svg");
    let mut c = command(&["--count", "20000", "--latency-count", "2000", "--plot", picture.to_str().unwrap()]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root, become nobody: the path a user without privileges takes. The binary and
        // the certificate script are copied where nobody can reach them (a checkout under
        // /root is not).
        let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
        mode(&dir.0, 0o777);
        std::fs::create_dir_all(dir.0.join("tools")).unwrap();
        let script = dir.0.join("tools/testcerts.sh");
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/testcerts.sh"), &script).unwrap();
        let bin = dir.0.join("pipeline");
        std::fs::copy(env!("CARGO_BIN_EXE_pipeline"), &bin).unwrap();
        for p in [&dir.0.join("tools"), &script, &bin] {
            mode(p, 0o755);
        }
        let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
        c = Command::new(&bin);
        c.args(args).env("PIPELINE_REPO", &dir.0).uid(65534).gid(65534);
    }
    let (ok, out, pid) = run(c);
    assert!(ok, "pipeline demo failed:\n{out}");
    assert!(
        out.contains("AF_XDP needs root with") && out.contains("kernel transport on loopback only"),
        "the one line saying why: {out}"
    );
    check_summary(&out, "kernel TCP (loopback)", 20000, 2000);
    assert!(!out.contains("side by side"), "{out}");
    check_picture(&out, &picture, &["kernel TCP (loopback)"]);
    nothing_left_behind(pid);
}

#[test]
fn demo_ctrl_c_exits_130_and_leaves_nothing_behind() {
    if !pipeline_testkit::netns::require_root("pipeline demo interrupted") {
        return;
    }
    let dir = Dir::new("sigint");
    // A paced run of 50 s: interrupted once it has started.
    let mut c = command(&[
        "--count",
        "2000",
        "--latency-count",
        "100000",
        "--rate",
        "2000",
        "--duration",
        "60",
        "--plot",
        dir.0.join("i.svg").to_str().unwrap(),
    ]);
    let child = c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("run pipeline demo");
    let pid = child.id();
    let mut child = ChildGuard(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap_or(0) > 0, "demo ended before its paced run: {seen}");
        seen += &line;
        if line.contains("paced: 100000 messages") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo still running 20 s after SIGINT: {seen}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    seen += &rest;
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("(interrupted)"), "the summary says so: {seen}");
    nothing_left_behind(pid);
}

#[test]
fn demo_past_its_duration_fails_and_says_incomplete() {
    // As root both transports over the veth, else the kernel transport on loopback: the
    // paced run of 5 s is cut at 0.5 s, on both ends.
    let dir = Dir::new("duration");
    let (ok, out, pid) = run(command(&[
        "--count",
        "2000",
        "--latency-count",
        "100000",
        "--duration",
        "0.5",
        "--plot",
        dir.0.join("d.svg").to_str().unwrap(),
    ]));
    assert!(!ok, "{out}");
    let summaries = out.matches("\nsummary: ").count();
    assert!(summaries >= 1, "{out}");
    assert_eq!(out.matches("paced (INCOMPLETE)").count(), summaries, "every transport ran out of time: {out}");
    nothing_left_behind(pid);
}

#[test]
fn demo_refuses_bad_options() {
    for (args, says) in [
        (&["--count", "x"][..], "--count needs a number"),
        (&["--transport", "carrier-pigeon"][..], "expected xdp, kernel or auto"),
        (&["--size", "8"][..], "--size 8: the feed server sends 16..=65535 bytes"),
        (&["--rate", "0"][..], "--rate must be > 0"),
        (&["--latency-count", "0"][..], "must be > 0"),
        (&["--plot"][..], "--plot needs a value"),
        (&["--duration", "inf"][..], "at most 86400"),
    ] {
        let (ok, out, _) = run(command(args));
        assert!(!ok && out.contains(says), "{args:?}: {out}");
    }
}

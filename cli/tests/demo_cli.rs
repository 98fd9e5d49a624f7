//! `pipeline demo --count 20000` completes with every message in order and no drops:
//! over AF_XDP through a veth pair as root (with `CI` set, missing root fails the
//! test), and over the kernel transport on loopback (always). Also: bad options are
//! refused, and the demo leaves no network namespace or shared memory behind.

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("demo")
        .args(args)
        .env("PIPELINE_REPO", concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run pipeline demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check(ok: bool, out: &str, transport: &str) {
    assert!(ok, "pipeline demo failed:\n{out}");
    assert!(out.contains("messages        20000 of 20000"), "{out}");
    assert!(out.contains("drops/gaps      none"), "{out}");
    assert!(
        out.contains(&format!("transport       {transport}")),
        "{out}"
    );
    assert!(out.contains("layout / wait"), "{out}");
    assert!(out.contains("latency (µs)    p50"), "{out}");
}

#[test]
fn demo_kernel_loopback_20000_no_drops() {
    let (ok, out) = demo(&["--transport", "kernel", "--count", "20000", "--rate", "0"]);
    eprintln!("{out}");
    check(ok, &out, "kernel TCP (loopback)");
}

#[test]
fn demo_xdp_20000_no_drops() {
    if !pipeline_testkit::netns::require_root("pipeline demo over AF_XDP") {
        return;
    }
    let (ok, out) = demo(&["--count", "20000", "--rate", "0"]);
    eprintln!("{out}");
    check(ok, &out, "AF_XDP");
    assert!(
        out.contains("pipeline: AF_XDP on pld"),
        "the library's XDP mode line: {out}"
    );
    // Its namespaces are gone (names are per pid; other demos may be running).
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = n
            .strip_prefix("pld")
            .map(|r| r.trim_end_matches(['c', 's']).to_string())
        {
            assert!(
                std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "demo left namespace {n} behind"
            );
        }
    }
}

#[test]
fn demo_refuses_bad_options() {
    let (ok, out) = demo(&["--count", "x"]);
    assert!(!ok && out.contains("--count needs a number"), "{out}");
    let (ok, out) = demo(&["--transport", "carrier-pigeon"]);
    assert!(!ok && out.contains("expected xdp, kernel or auto"), "{out}");
}

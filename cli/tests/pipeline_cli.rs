//! The `pipeline` command line: connect (synthetic server), failures, stat.

use std::process::Command;
use std::time::Duration;

use pipeline::pipeline::Pipeline;
use pipeline::runner::Layout;
use pipeline_testkit::synthetic::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

#[test]
fn connect_prints_messages_and_stops_after_count() {
    let (name, _g) = unique("cli_conn");
    let json = std::env::temp_dir().join(format!("plcli{}.json", std::process::id()));
    for layout in ["inline", "threads", "processes"] {
        let o = bin()
            .args([
                "connect",
                "wss://synthetic.test/",
                "--synthetic",
                "1000",
                "--count",
                "300",
                "--wait",
                "backoff",
            ])
            .args([
                "--layout",
                layout,
                "--name",
                &name,
                "--send",
                "hello",
                "--stats-json",
            ])
            .arg(&json)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{layout}: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 300, "{layout}");
        assert_eq!(lines[0], "synthetic message 0");
        assert_eq!(lines[299], "synthetic message 299");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("layout {layout}, wait backoff")),
            "the chosen layout is said: {err}"
        );
        let j = std::fs::read_to_string(&json).unwrap();
        assert!(
            j.contains("\"state\":\"disconnected\"") && j.contains("\"reason_kind\":\"close_completed\""),
            "{j}"
        );
        assert!(j.contains("\"sent_messages\":1"), "{j}");
        assert!(!pipeline::shm::ShmDir::path_for(&name).exists());
    }
    let _ = std::fs::remove_file(json);
}

#[test]
fn failures_exit_non_zero_with_one_line() {
    let o = bin()
        .args(["connect", "wss://127.0.0.1:9/", "--transport", "kernel"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "a connect failure");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim_end()
            .lines()
            .filter(|l| l.starts_with("pipeline: ") && !l.contains("layout"))
            .count(),
        1,
        "{err}"
    );
    let o = bin().args(["connect", "http://x"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "a URL the library refuses is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not ws or wss"));
    let o = bin()
        .args(["connect", "wss://x/", "--layout", "sideways"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    let o = bin().args(["frobnicate"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = bin()
        .args(["stat", "no_such_pipeline_here"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no pipeline named"));
}

#[test]
fn help_and_demo() {
    let o = bin().arg("--help").output().unwrap();
    assert!(o.status.success());
    let h = String::from_utf8_lossy(&o.stdout);
    for w in [
        "connect",
        "--transport",
        "--layout",
        "--wait",
        "--cores",
        "--count",
        "stat",
        "--json",
        "demo",
    ] {
        assert!(h.contains(w), "help lacks {w}");
    }
    // The default demo; its latency picture goes to the temporary directory, not the tree.
    let plot = std::env::temp_dir().join(format!("pipeline-cli-demo-{}.svg", std::process::id()));
    let o = bin().arg("demo").arg("--plot").arg(&plot).output().unwrap();
    let _ = std::fs::remove_file(&plot);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

#[test]
fn stat_reads_a_running_pipelines_counters() {
    let (name, _g) = unique("cli_stat");
    let mut p =
        Pipeline::start(config(&name, script(text_frames(777), 0), Layout::Threads)).unwrap();
    let mut rx = p.receiver().unwrap();
    for _ in 0..777 {
        rx.next_frame_timeout(Duration::from_secs(10))
            .expect("frame");
    }
    let o = bin()
        .args(["stat", &name, "--once", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = String::from_utf8_lossy(&o.stdout);
    assert!(j.contains("\"state\":\"connected\""), "{j}");
    assert!(
        j.contains("\"layout\":\"threads\"") && j.contains("\"wait\":\"backoff\""),
        "{j}"
    );
    assert!(j.contains("\"messages\":777"), "{j}");
    assert!(
        j.contains(&format!("\"inbox_bytes\":{}", text_frames(777).len())),
        "{j}"
    );
    let o = bin().args(["stat", &name, "--once"]).output().unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("connected (layout threads, wait backoff)") && t.contains("messages"),
        "{t}"
    );
    // Refreshing mode ends by itself when the pipeline goes away.
    let child = bin()
        .args(["stat", &name, "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.stop();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"messages\":777"));
}

fn children_of(pid: u32) -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                v.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    v
}

#[test]
fn stage_processes_die_with_their_parent_and_the_next_start_reclaims() {
    let (name, _g) = unique("cli_pdeath");
    // The synthetic server keeps the connection open after its messages.
    let mut child = bin()
        .args([
            "connect",
            "wss://synthetic.test/",
            "--synthetic",
            "100000",
            "--layout",
            "processes",
            "--wait",
            "backoff",
        ])
        .args(["--name", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let mut kids = Vec::new();
    while kids.len() < 2 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        kids = children_of(child.id());
    }
    assert_eq!(kids.len(), 2, "two stage processes (transport, websocket)");
    child.kill().unwrap(); // SIGKILL the parent: no destructor runs
    child.wait().unwrap();
    let t = std::time::Instant::now();
    for k in &kids {
        // SAFETY: signal 0 only checks existence (the children are reparented, then reaped by init).
        while unsafe { libc::kill(*k, 0) } == 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let gone = unsafe { libc::kill(*k, 0) } != 0
            || std::fs::read_to_string(format!("/proc/{k}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true);
        assert!(
            gone,
            "stage process {k} outlived its parent (PR_SET_PDEATHSIG)"
        );
    }
    // The directory was left behind by the SIGKILL; the next start reclaims it.
    assert!(pipeline::shm::ShmDir::path_for(&name).exists());
    let o = bin()
        .args([
            "connect",
            "wss://synthetic.test/",
            "--synthetic",
            "10",
            "--count",
            "10",
            "--layout",
            "inline",
            "--name",
            &name,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("reclaimed"));
    assert!(!pipeline::shm::ShmDir::path_for(&name).exists());
}

/// A stage process that cannot pin itself says so on stderr — from a message made
/// before the fork and written with write(2) (no allocation or stderr lock in the
/// child before its loop) — and runs unpinned.
#[test]
fn a_stage_process_that_cannot_pin_says_so_and_runs() {
    let (name, _g) = unique("cli_pin");
    let o = bin()
        .args(["connect", "wss://synthetic.test/", "--synthetic", "100", "--count", "50"])
        .args(["--layout", "processes", "--wait", "backoff", "--name", &name])
        // In range for a cpu_set_t, but no such CPU here: sched_setaffinity fails.
        .args(["--cores", "1000,1001"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{:?} {err}", o.status);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 50);
    for (stage, core) in [("transport", 1000), ("websocket", 1001)] {
        let want = format!(
            "pipeline {name}: {stage} stage: could not pin to core {core} (sched_setaffinity errno 22)\n"
        );
        assert!(err.contains(&want), "{err}");
    }
}

/// A loopback `ws://` server that upgrades, sends one text message, then reads and
/// ignores everything: it never answers our close.
fn server_ignoring_close() -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            req.push(b[0]);
        }
        let req = String::from_utf8_lossy(&req).into_owned();
        let key = req
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("key")
            .trim()
            .to_string();
        let mut r = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            pipeline::ws::handshake::accept_key(&key)
        )
        .into_bytes();
        r.extend_from_slice(&[0x81, 5]);
        r.extend_from_slice(b"hello");
        s.write_all(&r).unwrap();
        // Swallow our close (and anything else) until the client goes away.
        let mut sink = [0u8; 4096];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    (port, h)
}

/// Wait for `child` to exit within `limit`; kill it and fail if it hangs.
fn exits_within(child: &mut std::process::Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let t = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (close handshake hung)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--count N` against a server that ignores our close used to hang in Closing; now it
/// exits after `--close-timeout` with the reason.
#[test]
fn connect_count_exits_when_the_server_ignores_the_close() {
    let (port, h) = server_ignoring_close();
    let (name, _g) = unique("cli_noclose");
    let json = std::env::temp_dir().join(format!("{name}.json"));
    let mut child = bin()
        .args(["connect", &format!("ws://127.0.0.1:{port}/"), "--transport", "kernel"])
        .args(["--count", "1", "--close-timeout", "0.5", "--layout", "inline", "--wait", "backoff"])
        .args(["--name", &name])
        .arg("--stats-json")
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let st = exits_within(&mut child, Duration::from_secs(30), "connect --count 1");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n");
    assert_eq!(st.code(), Some(6), "the server did not finish our close: {err}");
    let j = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    assert!(j.contains("\"reason_kind\":\"close_timeout\""), "{j}");
    // The user is told why, on stderr.
    assert!(err.contains("did not answer"), "{err}");
    h.join().unwrap();
    assert!(!pipeline::shm::ShmDir::path_for(&name).exists());
}

/// SIGTERM (and SIGINT, same handler) during a close the server never answers: the CLI
/// exits within the close timeout, with 143 (128 + SIGTERM) as a shell would say.
#[test]
fn connect_exits_on_sigterm_when_the_server_ignores_the_close() {
    use std::io::BufRead;
    let (port, h) = server_ignoring_close();
    let (name, _g) = unique("cli_sigterm");
    let mut child = bin()
        .args(["connect", &format!("ws://127.0.0.1:{port}/"), "--transport", "kernel"])
        .args(["--close-timeout", "0.5", "--layout", "inline", "--wait", "backoff"])
        .args(["--name", &name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n", "connected and received");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = exits_within(&mut child, Duration::from_secs(30), "connect after SIGTERM");
    assert_eq!(st.code(), Some(143));
    h.join().unwrap();
    assert!(!pipeline::shm::ShmDir::path_for(&name).exists());
}

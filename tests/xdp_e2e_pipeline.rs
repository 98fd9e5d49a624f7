//! End to end over the veth test bed, through the shipped product: `Pipeline` with
//! `TransportKind::Xdp` (the XDP poll stage, our TCP + OpenSSL TLS, the WebSocket stage),
//! layout `inline` with `backoff`, against `tools/exchange_sim.py` (Python `websockets`,
//! kernel TCP, TLS with a certificate from the test CA for the server's address) in the
//! server namespace. Every feed message is checked: order, opcode (text or binary),
//! size, content, and for binary messages the sequence number and crc32 in the header.
//! Fault injection uses the pipeline's own testing knobs (`Config.xdp`): loss in our
//! XDP program, the seeded reorder / duplicate / delay hook in the XDP poll stage, a
//! lower RTO floor; and nftables loss on the server's side.
//!
//! Needs root (skipped otherwise; with `CI` set, a failure). Run alone:
//! `cargo test --test xdp_e2e_pipeline -- --test-threads=1`.

use pipeline_testkit::certs;
use pipeline_testkit::feed;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_testkit::netns::{Side, TestBed};
use pipeline_testkit::exsim::{json_num, ExSim};
use pipeline::pipeline::{Config, Pipeline, PipelineState, Receiver, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;
use pipeline::xdp::FaultConfig;
use pipeline::Error;
use pipeline_testkit::synthetic::unique;

/// Per-step timeout (set-up, one echo, one close).
const T: Duration = Duration::from_secs(15);
/// Deadline for a whole 100k-message feed (Python streams 7-15k msg/s; loss slows it).
const FEED_DEADLINE: Duration = Duration::from_secs(300);
/// The simulator sends every 7th message as text (`--text-every`).
const TEXT_EVERY: u64 = 7;
const FEED_COUNT: u64 = 100_000;

fn server(bed: &TestBed, args: &[&str]) -> ExSim {
    let (c, k) = certs::certs().leaf("veth");
    ExSim::start(Some(&bed.server_ns), &bed.server_ip.to_string(), &c, &k, args)
}

fn fast_rto(t: &mut pipeline::tcp::TcpConfig) {
    t.rto_min_us = 20_000;
    t.rto_initial_us = 200_000;
}

/// The pipeline config every test starts from: XDP, verified TLS against the test CA
/// (the certificate names the server's address), inline + backoff (2-core machines).
fn xdp_config(ip: std::net::Ipv4Addr, port: u16, name: &str) -> Config {
    let mut c = Config::new(&format!("wss://{ip}:{port}/feed"));
    c.name = Some(name.to_string());
    c.transport = TransportKind::Xdp;
    c.ca_file = Some(certs::certs().ca());
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.timeout = T;
    c.quiet = true;
    c
}

/// Non-zero counters, for failure messages and the log.
fn nonzero(p: &Pipeline) -> String {
    p.stats()
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The disconnect reason once the pipeline is Disconnected (waits up to `t`).
fn disconnected(p: &Pipeline, t: Duration) -> pipeline::pipeline::DisconnectReason {
    assert!(p.wait_disconnected(t), "still {:?} after {t:?}; {}", p.state(), nonzero(p));
    match p.state() {
        PipelineState::Disconnected { reason } => reason,
        s => panic!("state {s:?}"),
    }
}

/// The kind of a close frame from the server with `code` and `reason`.
fn server_closed(code: u16, reason: &str) -> pipeline::pipeline::DisconnectKind {
    pipeline::pipeline::DisconnectKind::ServerClosed { code, reason: reason.into() }
}

/// Read feed messages `from..to` (in order, each checked) within `deadline`.
fn read_feed(p: &Pipeline, rx: &mut Receiver, from: u64, to: u64, deadline: Instant) -> u64 {
    let mut bytes = 0u64;
    for seq in from..to {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(f) = rx.next_frame_timeout(left) else {
            panic!("feed stopped after {} of {to} messages: state {:?}; {}", seq, p.state(), nonzero(p));
        };
        if let Err(e) = feed::check_feed(seq, TEXT_EVERY, f.opcode(), f.payload()) {
            panic!("{e}");
        }
        bytes += f.payload().len() as u64;
    }
    bytes
}

/// The next message, which must be `want` (an echo, or the server's answer).
fn expect_message(p: &Pipeline, rx: &mut Receiver, opcode: u8, check: impl FnOnce(&[u8])) {
    let Some(f) = rx.next_frame_timeout(T) else {
        panic!("no message: state {:?}; {}", p.state(), nonzero(p));
    };
    assert_eq!(f.opcode(), opcode, "opcode of {} bytes", f.payload().len());
    check(f.payload());
}

/// Upload `n` binary messages of `size` bytes (1 MiB in all by default) and check each
/// echo: the upload direction of our TCP (retransmits under server-side loss).
fn upload_and_check_echoes(p: &Pipeline, rx: &mut Receiver, n: usize, size: usize) {
    for k in 0..n {
        let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(7) ^ (i >> 11) ^ k) as u8).collect();
        let deadline = Instant::now() + T;
        loop {
            match p.send_binary(&data) {
                Ok(()) => break,
                Err(Error::WouldBlock) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("upload {k}: {e}"),
            }
        }
        expect_message(p, rx, 0x2, |m| assert!(m == &data[..], "echo {k} of {size} bytes differs"));
    }
}

/// 100,000 mixed messages (1 B .. 64 KiB; every 7th text, every 13th in 3 fragments,
/// joined by the WebSocket stage), then 1 MiB uploaded and echoed, then `cmd:close`:
/// the server closes with 1000 "closing on request". Returns the final counters.
fn feed_test(what: &str, bed_setup: impl FnOnce(&TestBed), tweak: impl FnOnce(&mut Config) + Send) -> Option<pipeline::pipeline::Stats> {
    feed_test_with(what, FEED_COUNT, &[], bed_setup, tweak)
}

/// [`feed_test`] with `count` messages and more simulator arguments.
fn feed_test_with(
    what: &str,
    count: u64,
    server_args: &[&str],
    bed_setup: impl FnOnce(&TestBed),
    tweak: impl FnOnce(&mut Config) + Send,
) -> Option<pipeline::pipeline::Stats> {
    let bed = TestBed::new_or_skip(what)?;
    let n = count.to_string();
    let te = TEXT_EVERY.to_string();
    let mut args = vec!["--count", &n, "--fragment-every", "13", "--text-every", &te, "--once"];
    args.extend_from_slice(server_args);
    let srv = server(&bed, &args);
    bed_setup(&bed);
    // One name per test: the feed tests run in parallel in one process.
    let tag: String = what.trim_start_matches("xdp pipeline feed").chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect();
    let (name, _g) = unique(&format!("feed{tag}"));
    let (ip, port) = (bed.server_ip, srv.port);
    let stats = bed.in_client(|| {
        let mut cfg = xdp_config(ip, port, &name);
        tweak(&mut cfg);
        let mut p = Pipeline::start(cfg).expect("pipeline over XDP");
        let mut rx = p.receiver().unwrap();
        let t0 = Instant::now();
        let bytes = read_feed(&p, &mut rx, 0, count, t0 + FEED_DEADLINE);
        let secs = t0.elapsed().as_secs_f64();
        upload_and_check_echoes(&p, &mut rx, 4, 256 << 10);
        p.send_text("cmd:close").unwrap();
        let reason = disconnected(&p, T);
        let s = p.stats();
        eprintln!(
            "{what}: {count} messages, {:.1} MB in {secs:.1} s ({:.0} msg/s); 1 MiB echoed; {reason}\n  counters: {}",
            bytes as f64 / 1e6,
            count as f64 / secs,
            nonzero(&p)
        );
        assert_eq!(reason.kind, server_closed(1000, "closing on request"), "{reason}");
        assert_eq!(s.get(Counter::Messages), count + 4, "websocket stage message count");
        assert_eq!(s.get(Counter::Overruns), 0);
        p.stop();
        s
    });
    let sum = srv.finish();
    eprintln!("server: {sum}");
    assert_eq!(json_num(&sum, "sent"), Some(count as f64), "{sum}");
    assert_eq!(json_num(&sum, "echoed"), Some(4.0), "{sum}");
    // Every message the server fragmented was joined by the WebSocket stage.
    assert_eq!(json_num(&sum, "fragmented"), Some(stats.get(Counter::Reassembled) as f64), "{sum}");
    assert_eq!(json_num(&sum, "text"), Some(count.div_ceil(TEXT_EVERY) as f64), "{sum}");
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached after stop");
    Some(stats)
}

/// Drop `pct`% of what the server receives from the client (nftables, input hook):
/// real gaps in our upload and lost ACKs. (Loss on the server's output hook is re-queued
/// by the kernel's TCP at once, so it is no gap on the wire; `set_server_loss` adds it
/// too, as the old tests did.)
fn set_server_input_loss(bed: &TestBed, pct: u32) {
    let _ = bed.try_cmd(Side::Server, &["nft", "delete", "table", "inet", "pl_inloss"]);
    if pct == 0 {
        return;
    }
    let matcher = if pct >= 100 { String::new() } else { format!("numgen random mod 100 < {pct} ") };
    let rules = format!(
        "table inet pl_inloss {{\n chain inp {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {} {matcher}drop\n }}\n}}\n",
        bed.client_ip
    );
    let path = std::env::temp_dir().join(format!("{}-inloss.nft", bed.server_ns));
    std::fs::write(&path, rules).unwrap();
    bed.server_cmd(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
}

// ------------------------------------------------------------------ the feed

#[test]
fn feed_100k_mixed_messages() {
    feed_test("xdp pipeline feed, clean", |_| {}, |_| {});
}

/// permessage-deflate over AF_XDP: the simulator compresses (websockets' defaults),
/// the WebSocket stage inflates every message into MSG_INBOX; uploads are compressed.
#[test]
fn feed_compressed_over_xdp() {
    let Some(s) = feed_test_with("xdp pipeline feed, permessage-deflate", 20_000, &["--compression"], |_| {}, |c| {
        c.deflate = Some(pipeline::pipeline::DeflateConfig::default());
    }) else {
        return;
    };
    assert!(s.get(Counter::InflatedMessages) > 20_000 / 2, "inflated {}", s.get(Counter::InflatedMessages));
    assert!(s.get(Counter::CompressedSent) >= 4, "compressed sent {}", s.get(Counter::CompressedSent));
}

#[test]
fn feed_100k_with_3pct_loss() {
    // Loss both ways: our XDP program drops 3% of the server's segments (gaps on our
    // receive side: out-of-order buffering, dup ACKs, the server's fast retransmit) and
    // nftables on the server drops 3% of what we send (our upload: our retransmits).
    let Some(s) = feed_test(
        "xdp pipeline feed, 3% loss",
        |bed| {
            bed.set_server_loss(3);
            set_server_input_loss(bed, 3);
        },
        |c| {
            c.xdp.rx_loss_percent = 3;
            c.xdp.tcp_tweak = Some(fast_rto);
        },
    ) else {
        return;
    };
    assert!(s.get(Counter::Retransmits) > 0, "no retransmits of our 1 MiB upload under 3% input loss");
    assert!(s.get(Counter::DupAcks) > 0, "no dup ACKs sent under 3% loss in our XDP program");
}

#[test]
fn feed_100k_with_reordering() {
    let Some(s) = feed_test("xdp pipeline feed, reordering", |_| {}, |c| {
        c.xdp.fault = FaultConfig { seed: 7, reorder_permille: 30, reorder_depth: 3, reorder_max_hold_us: 2_000, ..Default::default() };
        c.xdp.tcp_tweak = Some(fast_rto);
    }) else {
        return;
    };
    // A reordered segment arrives out of order: it is buffered and a duplicate ACK
    // goes out at once.
    assert!(s.get(Counter::DupAcks) > 0, "reordering produced no out-of-order arrivals");
}

#[test]
fn feed_100k_with_duplication_and_delay() {
    let Some(s) = feed_test("xdp pipeline feed, duplication + delay", |_| {}, |c| {
        c.xdp.fault = FaultConfig { seed: 11, duplicate_permille: 30, delay_permille: 5, delay_us: 3_000, ..Default::default() };
        c.xdp.tcp_tweak = Some(fast_rto);
    }) else {
        return;
    };
    // Duplicates are ACKed again (duplicate ACKs) and must never reach MSG_INBOX twice
    // (the feed check would have failed).
    assert!(s.get(Counter::DupAcks) > 0, "duplicated segments produced no duplicate ACKs");
}

/// Echo (text and 70 kB binary), our ping answered, the server's ping answered by the
/// auto-PONG (the server reports `pong-ok`), then `cmd:close`.
#[test]
fn echo_and_pings_both_ways() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline echo/ping") else { return };
    let srv = server(&bed, &["--count", "0", "--once"]);
    let (name, _g) = unique("echo");
    let (ip, port) = (bed.server_ip, srv.port);
    bed.in_client(|| {
        let mut p = Pipeline::start(xdp_config(ip, port, &name)).expect("pipeline over XDP");
        let mut rx = p.receiver().unwrap();
        p.send_text("hello exchange").unwrap();
        expect_message(&p, &mut rx, 0x1, |m| assert_eq!(m, b"hello exchange"));
        upload_and_check_echoes(&p, &mut rx, 1, 70_000);
        // Our ping: the pong is counted (control frames are not delivered).
        p.ping(b"are you there").unwrap();
        let deadline = Instant::now() + T;
        while p.stats().get(Counter::PongsReceived) == 0 {
            assert!(Instant::now() < deadline, "no pong for our ping; {}", nonzero(&p));
            std::thread::sleep(Duration::from_millis(5));
        }
        // The server's ping: our auto-PONG; the server says so.
        p.send_text("cmd:ping").unwrap();
        expect_message(&p, &mut rx, 0x1, |m| {
            assert!(m.starts_with(b"pong-ok "), "{:?}", String::from_utf8_lossy(m))
        });
        let s = p.stats();
        assert_eq!(s.get(Counter::PingsReceived), 1);
        assert_eq!(s.get(Counter::PongsSent), 1);
        assert_eq!(s.get(Counter::PingsSent), 1);
        p.send_text("cmd:close").unwrap();
        assert_eq!(disconnected(&p, T).kind, server_closed(1000, "closing on request"));
        eprintln!("echo/ping: {}", nonzero(&p));
    });
    let sum = srv.finish();
    eprintln!("server: {sum}");
    assert_eq!(json_num(&sum, "echoed"), Some(2.0), "{sum}");
    assert_eq!(json_num(&sum, "pongs"), Some(1.0), "{sum}");
}

// ------------------------------------------------------------------ endings

/// The server's close frame mid-connection: every message before it is delivered,
/// then Disconnected with the server's code and reason; nothing left on the interface.
#[test]
fn server_close_ends_the_connection_with_its_code_and_reason() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline server close") else { return };
    let te = TEXT_EVERY.to_string();
    let srv = server(&bed, &["--count", "500", "--text-every", &te, "--close-after", "500", "--once"]);
    let (name, _g) = unique("close");
    let (ip, port) = (bed.server_ip, srv.port);
    bed.in_client(|| {
        let mut p = Pipeline::start(xdp_config(ip, port, &name)).expect("pipeline over XDP");
        let mut rx = p.receiver().unwrap();
        read_feed(&p, &mut rx, 0, 500, Instant::now() + T);
        let reason = disconnected(&p, T);
        eprintln!("server close: {reason}; {}", nonzero(&p));
        assert_eq!(reason.kind, server_closed(1000, "closing after 500 messages"), "{reason}");
        assert!(rx.next_frame_timeout(Duration::from_millis(200)).is_none(), "a message after the close");
        p.stop();
    });
    let sum = srv.finish();
    eprintln!("server: {sum}");
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached after the close");
}

/// The server aborts its TCP connection (SO_LINGER 0): Disconnected with a reset reason.
#[test]
fn server_rst_ends_the_connection_with_a_reset_reason() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline server RST") else { return };
    let srv = server(&bed, &["--count", "0", "--once"]);
    let (name, _g) = unique("rst");
    let (ip, port) = (bed.server_ip, srv.port);
    bed.in_client(|| {
        let p = Pipeline::start(xdp_config(ip, port, &name)).expect("pipeline over XDP");
        p.send_text("cmd:rst").unwrap();
        let reason = disconnected(&p, T);
        eprintln!("server RST: {reason}");
        assert_eq!(reason.kind, pipeline::pipeline::DisconnectKind::TcpReset, "{reason}");
        assert!(reason.message.contains("reset by 10.200.1.1:"), "{reason}");
        p.stop();
    });
    srv.finish();
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached after the RST");
}

/// The server's kernel answers our segments with RST mid-stream (nftables `reject with
/// tcp reset` on its input): Disconnected with a reset reason.
#[test]
fn rst_from_the_server_kernel_mid_stream_ends_the_connection() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline RST mid-stream") else { return };
    let te = TEXT_EVERY.to_string();
    let srv = server(&bed, &["--count", "-1", "--rate", "2000", "--text-every", &te]);
    let (name, _g) = unique("rst2");
    let (ip, port) = (bed.server_ip, srv.port);
    bed.in_client(|| {
        let mut p = Pipeline::start(xdp_config(ip, port, &name)).expect("pipeline over XDP");
        let mut rx = p.receiver().unwrap();
        read_feed(&p, &mut rx, 0, 200, Instant::now() + T);
        let rules = format!(
            "table inet pl_rst {{\n chain inp {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {} tcp dport {port} reject with tcp reset\n }}\n}}\n",
            bed.client_ip
        );
        let path = std::env::temp_dir().join(format!("{}-rst.nft", bed.server_ns));
        std::fs::write(&path, rules).unwrap();
        bed.server_cmd(&["nft", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(path);
        // Our ACKs for the stream now meet RSTs.
        let deadline = Instant::now() + T;
        while p.stats().get(Counter::State) != 3 {
            assert!(Instant::now() < deadline, "no disconnect after the RSTs; {}", nonzero(&p));
            while rx.next_frame().is_some() {}
            std::thread::sleep(Duration::from_millis(2));
        }
        let reason = disconnected(&p, T);
        eprintln!("RST from the server's kernel: {reason}");
        assert_eq!(reason.kind, pipeline::pipeline::DisconnectKind::TcpReset, "{reason}");
        p.stop();
    });
    drop(srv);
}

// ------------------------------------------------------------------ set-up failures

#[test]
fn refused_port_is_reported_and_leaves_no_program() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline refused") else { return };
    let (name, _g) = unique("refused");
    let ip = bed.server_ip;
    let err = bed.in_client(|| Pipeline::start(xdp_config(ip, 9, &name)).unwrap_err());
    let s = err.to_string();
    eprintln!("refused: {s}");
    assert!(s.contains("refused") && s.contains("10.200.1.1:9"), "{s}");
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached");
}

#[test]
fn silent_server_times_out_with_a_clear_error() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline connect timeout") else { return };
    set_server_input_loss(&bed, 100);
    let (name, _g) = unique("silent");
    let ip = bed.server_ip;
    let err = bed.in_client(|| {
        let mut c = xdp_config(ip, 443, &name);
        c.timeout = Duration::from_millis(1500);
        Pipeline::start(c).unwrap_err()
    });
    eprintln!("silent server: {err}");
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached");
}

#[test]
fn arp_failure_is_reported() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline ARP failure") else { return };
    let (name, _g) = unique("arp");
    // An address on the client's subnet that nobody owns.
    let err = bed.in_client(|| {
        let mut c = xdp_config(std::net::Ipv4Addr::new(10, 200, 1, 77), 443, &name);
        c.timeout = Duration::from_secs(2);
        Pipeline::start(c).unwrap_err()
    });
    let s = err.to_string();
    eprintln!("ARP: {s}");
    assert!(matches!(err, Error::Net(_)), "{err:?}");
    assert!(s.contains("10.200.1.77"), "{s}");
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached");
}

#[test]
fn missing_privileges_are_a_capability_error() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline capabilities") else { return };
    let (name, _g) = unique("caps");
    let ip = bed.server_ip;
    let err = bed.in_client(|| {
        // Drop root on this thread only (raw syscalls: glibc's setresuid would change
        // every thread of the test process). Capabilities are per thread.
        // SAFETY: plain syscalls on the calling thread.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
        }
        Pipeline::start(xdp_config(ip, 443, &name)).unwrap_err()
    });
    eprintln!("unprivileged: {err}");
    assert!(matches!(err, Error::Capability { .. }), "{err:?}");
    assert!(!bed.has_xdp(Side::Client));
}

// ------------------------------------------------------------------ SIGKILL

const CHILD_ENV: &str = "PL_XDP_PIPELINE_CHILD";

/// The child (this binary re-run inside the client namespace): start the pipeline,
/// read 100 messages, say READY, keep reading until killed.
#[test]
fn sigkill_child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut it = spec.split('|');
    let ip = it.next().unwrap().parse().unwrap();
    let port: u16 = it.next().unwrap().parse().unwrap();
    let name = it.next().unwrap().to_string();
    let mut p = Pipeline::start(xdp_config(ip, port, &name)).expect("child: pipeline over XDP");
    let mut rx = p.receiver().unwrap();
    read_feed(&p, &mut rx, 0, 100, Instant::now() + T);
    eprintln!("READY");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        drop(rx.next_frame_timeout(Duration::from_millis(100)));
    }
}

/// SIGKILL of a process whose pipeline is mid-stream over XDP: the bpf_link goes with
/// it (no program on the interface), and the next start on the same interface, with
/// the same pipeline name (its stale shared memory reclaimed), works at once.
#[test]
fn sigkill_leaves_no_xdp_program_and_the_next_start_works() {
    let Some(bed) = TestBed::new_or_skip("xdp pipeline SIGKILL") else { return };
    // Streams until each client goes away; serves any number of connections.
    let te = TEXT_EVERY.to_string();
    let srv = server(&bed, &["--count", "-1", "--rate", "2000", "--text-every", &te]);
    let (name, _g) = unique("sigkill");
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &bed.client_ns])
        .arg(&exe)
        .args(["--exact", "sigkill_child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{}|{}", bed.server_ip, srv.port, name))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed and reaped on every path, also when an assertion below fails.
    let mut child = KillOnDrop(child);
    let out = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if l.starts_with("READY") {
                let _ = tx.send(l);
            } else {
                eprintln!("  child| {l}");
            }
        }
    });
    assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok(), "child did not get the feed running");
    assert!(bed.has_xdp(Side::Client), "XDP program should be attached while the child runs");
    child.0.kill().unwrap(); // SIGKILL
    let st = child.0.wait().unwrap();
    eprintln!("child ended: {st:?}");
    let details = bed.link_details(Side::Client);
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached after SIGKILL:\n{details}");
    assert!(
        std::path::Path::new(&pipeline::shm::ShmDir::path_for(&name)).exists(),
        "the killed pipeline's shared memory should still be there (to be reclaimed)"
    );
    let t0 = Instant::now();
    let (ip, port) = (bed.server_ip, srv.port);
    bed.in_client(|| {
        let mut p = Pipeline::start(xdp_config(ip, port, &name)).expect("start after SIGKILL");
        let mut rx = p.receiver().unwrap();
        read_feed(&p, &mut rx, 0, 1000, Instant::now() + T);
        p.send_text("cmd:close").unwrap();
        let reason = disconnected(&p, T);
        assert_eq!(reason.kind, server_closed(1000, "closing on request"), "{reason}");
        p.stop();
    });
    eprintln!("second start read 1000 messages in {:?}", t0.elapsed());
    let sum = srv.finish();
    eprintln!("server: {sum}");
    assert!(json_num(&sum, "connections").unwrap_or(0.0) >= 2.0, "{sum}");
}

/// Our child process, SIGKILLed and reaped when dropped (std's `kill` does nothing
/// once the child has been waited for, so a reused pid is never signalled).
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

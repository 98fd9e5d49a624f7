//! Reconnect in the namespace test bed, over AF_XDP (our TCP) and the kernel transport,
//! against `pipeline_testkit::feed_server` (Rust, wss:// with the test CA's "veth" leaf
//! for 10.200.1.1) running on threads inside the server namespace:
//! - the server ends connections by RST, FIN, close 1001 and a stall (liveness), each
//!   time the client reconnects within the backoff, the new connection resumes the TLS
//!   session, receives the subscription first, and the stream goes on with
//!   FLAG_RECONNECT on each new connection's first message;
//! - a black hole (nftables drops everything both ways in the server namespace): the
//!   liveness check declares the connection dead, attempts fail while it lasts, and the
//!   client is back once it is lifted (XDP and kernel);
//! - a reconnect whose first SYN is lost is saved by the SYN's retransmission (no new
//!   attempt);
//! - 200 consecutive XDP reconnects leave the engine's frames, fds, shm files and RSS
//!   where they were.
//!
//! Needs root (skipped otherwise; with `CI` set, a failure). Run alone:
//! `cargo test --test xdp_reconnect -- --test-threads=1`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::feed::{LivenessConfig, ReconnectPolicy};
use pipeline::pipeline::{Config, DisconnectKind, Pipeline, PipelineState, Subscription, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stage::{Engine, EngineStats};
use pipeline::stats::Counter;
use pipeline_testkit::certs::certs;
use pipeline_testkit::feed_server::{Ending, FeedServer};
use pipeline_testkit::netns::{Side, TestBed};
use pipeline_testkit::synthetic::unique;

const MS: u64 = 1_000_000;
const SUB: &str = "{\"op\":\"subscribe\",\"args\":[\"trades\"]}";

fn fast_rto(t: &mut pipeline::tcp::TcpConfig) {
    t.rto_min_us = 20_000;
    t.rto_initial_us = 200_000;
}

fn server(bed: &TestBed, plan: Vec<(usize, Ending)>, interval: Duration) -> FeedServer {
    let ip = bed.server_ip.to_string();
    bed.in_ns(Side::Server, move || FeedServer::start_at(&ip, "veth", true, 0, plan, interval))
}

fn config(name: &str, server: &FeedServer, xdp: bool) -> Config {
    let mut c = Config::new(&server.url());
    c.name = Some(name.to_string());
    c.ca_file = Some(certs().ca());
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.timeout = Duration::from_secs(3);
    c.quiet = true;
    if xdp {
        c.transport = TransportKind::Xdp;
        c.xdp.tcp_tweak = Some(fast_rto);
    } else {
        c.transport = TransportKind::Kernel;
    }
    c.reconnect = ReconnectPolicy {
        initial_ns: 20 * MS,
        max_ns: 200 * MS,
        jitter: 0.0,
        storm_attempts: 0,
        ..ReconnectPolicy::standard()
    };
    c.subscriptions = vec![Subscription::Text(SUB.into())];
    c.liveness = Some(LivenessConfig::new(100 * MS, 400 * MS).unwrap());
    c
}

fn nonzero(p: &Pipeline) -> String {
    p.stats().iter().filter(|(_, v)| *v > 0).map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ")
}

fn causes(ev: &[PipelineState]) -> Vec<DisconnectKind> {
    ev.iter()
        .filter_map(|s| match s {
            PipelineState::Reconnecting { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn xdp_rst_fin_close_1001_and_stall_reconnect_resume_and_resubscribe() {
    let Some(bed) = TestBed::new_or_skip("XDP reconnect") else { return };
    let per = 5;
    let plan = vec![(per, Ending::Rst), (per, Ending::Fin), (per, Ending::Close1001), (per, Ending::Stall)];
    let server = server(&bed, plan, Duration::from_millis(2));
    let ifname = bed.client_if.clone();
    bed.in_client(|| {
        let (name, _g) = unique("xrc_end");
        let mut p = Pipeline::start(config(&name, &server, true)).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        p.on_state_change(Box::new(move |s| ev.lock().unwrap().push(s.clone())));
        let mut rx = p.receiver().unwrap();
        let t0 = Instant::now();
        let mut got: Vec<(String, bool)> = Vec::new();
        while got.len() < 5 * per && t0.elapsed() < Duration::from_secs(30) {
            if let Some(f) = rx.next_frame_timeout(Duration::from_millis(50)) {
                got.push((f.text().unwrap().to_string(), f.after_reconnect()));
            }
        }
        let texts: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        let want: Vec<String> = (0..5).flat_map(|c| (0..per).map(move |i| format!("{c}-{i}"))).collect();
        assert_eq!(texts, want, "one stream across four reconnects; {}", nonzero(&p));
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.1, i > 0 && i % per == 0, "FLAG_RECONNECT exactly on each new connection's first message ({i})");
        }
        let conns = server.connections();
        assert_eq!(conns.len(), 5);
        for (i, c) in conns.iter().enumerate() {
            assert_eq!(c.received.first(), Some(&(0x1, SUB.as_bytes().to_vec())), "connection {i} got the subscription first");
            if i > 0 {
                assert!(c.resumed, "connection {i} resumed the TLS session");
            }
        }
        assert!(conns[2].received.iter().any(|f| f.0 == 0x8 && f.1 == 1001u16.to_be_bytes()), "our CLOSE reply to 1001");
        std::thread::sleep(Duration::from_millis(20));
        let ev = events.lock().unwrap().clone();
        let c = causes(&ev);
        assert_eq!(c.len(), 4, "{ev:?}");
        assert_eq!(c[0], DisconnectKind::TcpReset, "{ev:?}");
        assert_eq!(c[1], DisconnectKind::TcpClosed, "{ev:?}");
        assert!(matches!(c[2], DisconnectKind::ServerClosed { code: 1001, .. }), "{:?}", c[2]);
        assert_eq!(c[3], DisconnectKind::Timeout, "liveness");
        assert_eq!(ev.iter().filter(|s| **s == PipelineState::Connected).count(), 4, "{ev:?}");
        let st = p.stats();
        assert_eq!(st.get(Counter::Reconnects), 4);
        assert_eq!(st.get(Counter::Generation), 4);
        assert_eq!(st.get(Counter::LivenessTimeouts), 1);
        let es = Engine::stats_for(&ifname).expect("the engine runs");
        assert_eq!(es.flows_replaced, 4, "{es:?}");
        assert_eq!(es.tx_refused, 0, "{es:?}");
        p.close(1000, "bye").unwrap();
        assert!(p.wait_disconnected(Duration::from_secs(5)));
        assert!(
            matches!(p.state(), PipelineState::Disconnected { reason } if matches!(reason.kind, DisconnectKind::CloseCompleted { code: 1000 })),
            "{:?}",
            p.state()
        );
        assert_eq!(server.connections().len(), 5, "our close does not reconnect");
        p.stop();
    });
    assert!(!bed.has_xdp(Side::Client), "program detached after stop");
}

/// The server streams; then everything between the two namespaces is dropped both
/// ways; liveness declares the connection dead; attempts fail while the hole lasts;
/// once it is lifted the client reconnects, resubscribes and the stream goes on.
fn black_hole(xdp: bool) {
    let Some(bed) = TestBed::new_or_skip("black hole reconnect") else { return };
    let server = server(&bed, vec![], Duration::from_millis(5));
    let bed = &bed;
    bed.in_client(|| {
        let (name, _g) = unique(if xdp { "xrc_bh" } else { "krc_bh" });
        let mut cfg = config(&name, &server, xdp);
        cfg.timeout = Duration::from_millis(700);
        let mut p = Pipeline::start(cfg).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        p.on_state_change(Box::new(move |s| ev.lock().unwrap().push(s.clone())));
        let mut rx = p.receiver().unwrap();
        let mut first = Vec::new();
        while first.len() < 20 {
            let f = rx.next_frame_timeout(Duration::from_secs(5)).unwrap_or_else(|| panic!("no feed: {}", nonzero(&p)));
            first.push(f.text().unwrap().to_string());
        }
        bed.set_server_blackhole(true);
        let t_hole = Instant::now();
        // Drain what was in flight; then the liveness timeout (400 ms) must fire.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(p.state(), PipelineState::Reconnecting { .. }) && Instant::now() < deadline {
            while rx.next_frame_timeout(Duration::from_millis(1)).is_some() {}
        }
        let detected = t_hole.elapsed();
        assert!(matches!(p.state(), PipelineState::Reconnecting { .. }), "{:?}; {}", p.state(), nonzero(&p));
        assert_eq!(p.stats().get(Counter::LivenessTimeouts), 1);
        // Let attempts fail for a while (connect / handshake timeouts of 700 ms).
        std::thread::sleep(Duration::from_millis(2000));
        let failed_attempts = p.stats().get(Counter::Reconnects);
        assert!(failed_attempts >= 2, "attempts during the black hole: {failed_attempts}; {}", nonzero(&p));
        assert_eq!(server.connections().len(), 1, "nothing reached the server through the hole");
        bed.set_server_blackhole(false);
        let t_lift = Instant::now();
        // Back: a message after FLAG_RECONNECT from a new connection.
        let mut after = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(f) = rx.next_frame_timeout(Duration::from_millis(20)) {
                if f.after_reconnect() {
                    after = Some(f.text().unwrap().to_string());
                    break;
                }
            }
        }
        let back = t_lift.elapsed();
        let after = after.unwrap_or_else(|| panic!("no message after the hole: {:?}; {}", p.state(), nonzero(&p)));
        let conns = server.connections();
        let last = conns.len() - 1;
        assert!(after.starts_with(&format!("{last}-")), "{after} comes from the newest connection ({last})");
        assert!(conns[last].resumed, "resumed after the hole");
        // The stream goes on.
        for _ in 0..10 {
            let f = rx.next_frame_timeout(Duration::from_secs(5)).expect("stream after the hole");
            assert!(f.text().unwrap().starts_with(&format!("{last}-")));
        }
        // (The server records what it read in its own time.)
        assert_eq!(server.connections()[last].received.first(), Some(&(0x1, SUB.as_bytes().to_vec())));
        let ev = events.lock().unwrap().clone();
        let c = causes(&ev);
        assert_eq!(c[0], DisconnectKind::Timeout, "liveness first: {ev:?}");
        assert_eq!(p.state(), PipelineState::Connected);
        eprintln!(
            "black hole ({}): dead after {detected:?}, {failed_attempts} attempt(s) in the hole, back {back:?} after the lift, {} connection(s) at the server",
            if xdp { "xdp" } else { "kernel" },
            conns.len()
        );
        p.stop();
    });
}

#[test]
fn xdp_black_hole_is_detected_by_liveness_and_survived() {
    black_hole(true);
}

#[test]
fn kernel_black_hole_is_detected_by_liveness_and_survived() {
    black_hole(false);
}

#[test]
fn xdp_reconnect_with_a_lost_syn_is_saved_by_the_syn_retransmit() {
    let Some(bed) = TestBed::new_or_skip("XDP lost SYN") else { return };
    let server = server(&bed, vec![(5, Ending::Rst)], Duration::from_millis(2));
    let bed = &bed;
    bed.in_client(|| {
        let (name, _g) = unique("xrc_syn");
        let mut cfg = config(&name, &server, true);
        cfg.liveness = None;
        let mut p = Pipeline::start(cfg).unwrap();
        let mut rx = p.receiver().unwrap();
        // From now on the server's input hook drops our SYNs (not the established
        // connection's segments).
        bed.drop_client_syns(true);
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(rx.next_frame_timeout(Duration::from_secs(5)).expect("first connection").text().unwrap().to_string());
        }
        // The RST, 20 ms of backoff, then the SYN that is dropped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while bed.dropped_client_syns() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let dropped = bed.dropped_client_syns();
        bed.drop_client_syns(false);
        assert!(dropped >= 1, "no SYN was dropped");
        // The SYN's retransmit (after 200 ms) connects: no new attempt.
        let f = rx.next_frame_timeout(Duration::from_secs(5)).unwrap_or_else(|| panic!("not back: {}", nonzero(&p)));
        assert_eq!(f.text().unwrap(), "1-0");
        assert!(f.after_reconnect());
        let st = p.stats();
        assert_eq!(st.get(Counter::Reconnects), 1, "one attempt, its SYN retransmitted; {}", nonzero(&p));
        assert_eq!(server.connections().len(), 2);
        eprintln!("lost SYN: {dropped} SYN(s) dropped, connected by the retransmission");
        p.stop();
    });
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}
/// This pipeline's shared-memory files (its directory's files, and anything else in
/// /dev/shm named after it); the rest of /dev/shm belongs to other processes.
fn shm_files(name: &str) -> usize {
    let ours = std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().contains(name)).count())
        .unwrap_or(0);
    let inside = std::fs::read_dir(format!("/dev/shm/pipeline_{name}")).map(|d| d.count()).unwrap_or(0);
    ours + inside
}
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The engine's frame accounting when it is quiet (waits until nothing is in flight).
fn quiet_engine(ifname: &str) -> EngineStats {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = Engine::stats_for(ifname).expect("the engine runs");
        if (s.tx_in_flight == 0 && s.rx_held == 0 && s.rx_refill_pending == 0) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn xdp_200_reconnects_leak_no_frames_fds_shm_or_memory() {
    let Some(bed) = TestBed::new_or_skip("XDP 200 reconnects") else { return };
    const WARM: usize = 10;
    const N: usize = 200;
    // WARM quick ones, a quiet one (measure), N quick ones, a quiet one (measure), then
    // one that keeps streaming (the upload). "Quiet": a stall, ended by the liveness
    // timeout.
    let mut plan = vec![(1, Ending::Rst); WARM];
    plan.push((1, Ending::Stall));
    plan.extend(std::iter::repeat_n((1, Ending::Rst), N));
    plan.push((1, Ending::Stall));
    let server = server(&bed, plan, Duration::from_millis(1));
    let ifname = bed.client_if.clone();
    bed.in_client(|| {
        let (name, _g) = unique("xrc_200");
        let mut cfg = config(&name, &server, true);
        cfg.reconnect.initial_ns = 2 * MS;
        cfg.reconnect.multiplier = 1.0;
        cfg.reconnect.max_ns = 2 * MS;
        cfg.liveness = Some(LivenessConfig::new(300 * MS, 600 * MS).unwrap());
        let t0 = Instant::now();
        let mut p = Pipeline::start(cfg).unwrap();
        let mut rx = p.receiver().unwrap();
        let mut wait_for = |want: &str| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let f = rx.next_frame_timeout(deadline.saturating_duration_since(Instant::now()));
                let f = f.unwrap_or_else(|| panic!("waiting for {want}: {:?}", p.stats().get(Counter::Reconnects)));
                if f.text().unwrap() == want {
                    return;
                }
            }
        };
        wait_for(&format!("{WARM}-0"));
        std::thread::sleep(Duration::from_millis(150));
        let (e0, f0, s0, r0) = (quiet_engine(&ifname), fds(), shm_files(&name), rss_kib());
        let t1 = Instant::now();
        wait_for(&format!("{}-0", WARM + 1 + N));
        let dt = t1.elapsed();
        std::thread::sleep(Duration::from_millis(150));
        let (e1, f1, s1, r1) = (quiet_engine(&ifname), fds(), shm_files(&name), rss_kib());
        assert!(s0 > 0, "found the pipeline's shm files");
        let reconnects = p.stats().get(Counter::Reconnects);
        eprintln!(
            "{N} reconnects in {dt:?} ({:.1} ms each; total {reconnects} since start {:?} ago)\n  before: fds {f0} shm {s0} rss {r0} KiB engine {e0:?}\n  after:  fds {f1} shm {s1} rss {r1} KiB engine {e1:?}",
            dt.as_secs_f64() * 1e3 / N as f64,
            t0.elapsed()
        );
        assert_eq!(reconnects as usize, WARM + 1 + N);
        assert_eq!(e1.flows_replaced - e0.flows_replaced, N as u64 + 1);
        // Every frame is somewhere the engine knows: free, or held by the connection.
        let pools = [pipeline::config::ACK_FRAMES, pipeline::config::PONG_FRAMES, pipeline::config::MSG_FRAMES];
        for (k, size) in pools.iter().enumerate() {
            assert_eq!(e1.tx_free[k] + e1.tx_held[k], *size, "pool {k}: {e1:?}");
        }
        assert_eq!((e1.tx_in_flight, e1.rx_held, e1.rx_refill_pending), (0, 0, 0), "{e1:?}");
        // Free ACK/PONG frames exactly as before; data frames the connection keeps as
        // its cache may differ by what it happened to hold (at most its cache).
        assert_eq!(e1.tx_free[0], e0.tx_free[0], "ACK pool");
        assert_eq!(e1.tx_free[1], e0.tx_free[1], "PONG pool");
        assert!(e1.tx_free[2].abs_diff(e0.tx_free[2]) <= 64, "MSG pool: {} then {}", e0.tx_free[2], e1.tx_free[2]);
        assert_eq!(e1.tx_refused, 0);
        assert_eq!(f1, f0, "fds");
        assert_eq!(s1, s0, "shm files");
        assert!(r1 <= r0 + 4096, "RSS grew by {} KiB", r1 as i64 - r0 as i64);
        // The data frames all work: 500 kB up on the next connection (hundreds of
        // frames through completion and acknowledgement).
        let last = WARM + 2 + N;
        wait_for(&format!("{last}-0"));
        let big: Vec<u8> = (0..500_000).map(|i: usize| (i * 7) as u8).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match p.send_binary(&big) {
                Ok(()) => break,
                Err(pipeline::Error::WouldBlock) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("upload: {e}"),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let c = server.connections();
            if c.len() > last && c[last].received.iter().any(|f| f.0 == 0x2 && f.1 == big) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let c = server.connections();
        assert!(c[last].received.iter().any(|f| f.0 == 0x2 && f.1 == big), "500 kB reached the server");
        p.stop();
    });
}

/// Reconnects while the engine's fault hook delays, reorders and duplicates frames: at
/// a reconnect the hook may still hold frames of the old flow, and the RAW_INBOX may
/// still carry some. They must go back (not reach the new connection, not leak).
#[test]
fn xdp_reconnects_under_the_fault_hook_pass_the_old_flows_frames() {
    let Some(bed) = TestBed::new_or_skip("XDP reconnect + fault hook") else { return };
    const N: usize = 30;
    let server = server(&bed, vec![(4, Ending::Rst); N], Duration::from_millis(1));
    let ifname = bed.client_if.clone();
    bed.in_client(|| {
        let (name, _g) = unique("xrc_flt");
        let mut cfg = config(&name, &server, true);
        cfg.liveness = None;
        cfg.reconnect.initial_ns = MS;
        cfg.reconnect.multiplier = 1.0;
        cfg.reconnect.max_ns = MS;
        cfg.xdp.fault = pipeline::xdp::FaultConfig {
            seed: 7,
            reorder_permille: 100,
            reorder_depth: 3,
            reorder_max_hold_us: 30_000,
            duplicate_permille: 50,
            delay_permille: 300,
            delay_us: 15_000,
        };
        let mut p = Pipeline::start(cfg).unwrap();
        let mut rx = p.receiver().unwrap();
        let mut last: (usize, i64) = (0, -1);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Until 20 messages of the connection after the planned ones.
        let mut tail = 0;
        while tail < 20 {
            let f = rx
                .next_frame_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|| panic!("stream stopped after {last:?}: {}", nonzero(&p)));
            let t = f.text().unwrap().to_string();
            let (c, i) = t.split_once('-').unwrap();
            let (c, i): (usize, i64) = (c.parse().unwrap(), i.parse().unwrap());
            assert!(c > last.0 || (c == last.0 && i > last.1), "{t} after {last:?}");
            assert_eq!(f.after_reconnect(), c != last.0, "{t}");
            last = (c, i);
            if c == N {
                tail += 1;
            }
        }
        assert_eq!(p.stats().get(Counter::Reconnects) as usize, N);
        let conns = server.connections();
        // The server ends a connection 4 ms after its upgrade whether it has read our
        // subscription or not (our receive side is delayed by the hook): whatever it
        // read starts with the subscription; the lasting connection has it.
        for (i, c) in conns.iter().enumerate() {
            assert!(c.received.is_empty() || c.received[0] == (0x1, SUB.as_bytes().to_vec()), "connection {i}");
        }
        assert_eq!(conns[N].received.first(), Some(&(0x1, SUB.as_bytes().to_vec())));
        let e = quiet_engine(&ifname);
        eprintln!("fault hook: {N} reconnects; engine {e:?}");
        let pools = [pipeline::config::ACK_FRAMES, pipeline::config::PONG_FRAMES, pipeline::config::MSG_FRAMES];
        for (k, size) in pools.iter().enumerate() {
            assert_eq!(e.tx_free[k] + e.tx_held[k], *size, "pool {k}: {e:?}");
        }
        assert_eq!(e.tx_refused, 0);
        assert_eq!(e.xdp.pools.rx_bad_release, 0, "no frame released twice");
        p.stop();
    });
}

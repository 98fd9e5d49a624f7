//! Per-message timestamps and the stats region's latency histograms, through the
//! product (`Pipeline`): over the synthetic transport (every layout, polling and
//! callback delivery), the kernel TLS transport (loopback feed server from the test
//! kit) and AF_XDP (the veth test bed). For every message: arrival <= decrypted <=
//! parsed <= delivered, all inside the run's wall time; each stage histogram counts
//! exactly the messages delivered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, Pipeline, Timestamps, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stage::{now_ns, SyntheticScript};
use pipeline::ws::DeflateConfig;
use pipeline::stats::{Counter, Latency, StatsRegion};
use pipeline_testkit::certs::certs;
use pipeline_testkit::feed_server::{Ending, FeedServer};
use pipeline_testkit::synthetic::*;

/// The stage order of one message, inside `[t0, t1]` (CLOCK_MONOTONIC ns).
fn check_order(i: usize, t: &Timestamps, t0: u64, t1: u64) {
    assert!(
        t0 <= t.arrival_ns
            && t.arrival_ns <= t.decrypted_ns
            && t.decrypted_ns <= t.parsed_ns
            && t.parsed_ns <= t.delivered_ns
            && t.delivered_ns <= t1,
        "message {i}: stamps out of order or outside the run [{t0}, {t1}]: {t:?}"
    );
}

/// Every stage histogram counted `n` messages, and its buckets add up to that.
fn check_histograms(stats: &StatsRegion, n: u64, ctx: &str) {
    for h in Latency::STAGES {
        let s = stats.histogram(h).expect("latency area");
        assert_eq!(s.count, n, "{ctx}: {} count", h.name());
        assert_eq!(s.buckets.iter().sum::<u64>(), n, "{ctx}: {} buckets", h.name());
        assert!(s.quantile(0.5) <= s.max_ns, "{ctx}: {} p50 above max", h.name());
    }
    let e2e = stats.histogram(Latency::ArrivalToDelivered).unwrap();
    let parts: u64 = [Latency::ArrivalToDecrypted, Latency::DecryptedToParsed, Latency::ParsedToDelivered]
        .iter()
        .map(|&h| stats.histogram(h).unwrap().sum_ns)
        .sum();
    assert_eq!(e2e.sum_ns, parts, "{ctx}: the stages add up to end-to-end");
}

#[test]
fn synthetic_stamps_are_ordered_in_every_layout_and_histograms_count_every_message() {
    let n = 3000usize;
    for layout in [Layout::Inline, Layout::Threads, Layout::Processes] {
        let ctx = layout.name();
        let (name, _g) = unique(&format!("ts_{ctx}"));
        let t0 = now_ns();
        // Small chunks: many reads, so many stamp entries (and the cursor's wrap).
        let mut p = Pipeline::start(config(&name, script(text_frames(n), 700), layout)).unwrap();
        let mut rx = p.receiver().unwrap();
        let mut stamps = Vec::with_capacity(n);
        for i in 0..n {
            let f = rx.next_frame_timeout(Duration::from_secs(10)).unwrap_or_else(|| panic!("{ctx}: message {i}"));
            assert_eq!(f.text().unwrap(), msg(i));
            assert_eq!(Timestamps::current(), Some(f.timestamps()), "{ctx}: current() is the frame just taken");
            stamps.push(f.timestamps());
        }
        let t1 = now_ns();
        for (i, t) in stamps.iter().enumerate() {
            check_order(i, t, t0, t1);
        }
        check_histograms(p.stats_region(), n as u64, ctx);
        p.stop();
    }
}

#[test]
fn stamps_stay_ordered_through_the_permessage_deflate_path() {
    // permessage-deflate agreed: the transport writes WIRE_INBOX and the WebSocket stage
    // copies (these frames are not compressed) into MSG_INBOX; the stamps follow.
    let n = 2000usize;
    let (name, _g) = unique("ts_defl");
    let s = SyntheticScript { extensions: Some("permessage-deflate; server_max_window_bits=15".into()), ..script(text_frames(n), 333) };
    let mut c = config(&name, s, Layout::Threads);
    c.deflate = Some(DeflateConfig::default());
    let t0 = now_ns();
    let mut p = Pipeline::start(c).unwrap();
    assert_ne!(p.stats().get(Counter::Deflate), 0, "deflate negotiated");
    let mut rx = p.receiver().unwrap();
    let mut stamps = Vec::with_capacity(n);
    for i in 0..n {
        let f = rx.next_frame_timeout(Duration::from_secs(10)).unwrap_or_else(|| panic!("message {i}"));
        assert_eq!(f.text().unwrap(), msg(i));
        stamps.push(f.timestamps());
    }
    let t1 = now_ns();
    for (i, t) in stamps.iter().enumerate() {
        check_order(i, t, t0, t1);
    }
    check_histograms(p.stats_region(), n as u64, "deflate");
    p.stop();
}

#[test]
fn callback_sees_the_stamps_of_its_message() {
    let n = 2000usize;
    let (name, _g) = unique("ts_cb");
    let seen: Arc<Mutex<Vec<Timestamps>>> = Arc::default();
    let s2 = seen.clone();
    let t0 = now_ns();
    let p = Pipeline::start_with_callback(
        config(&name, script(text_frames(n), 0), Layout::Threads),
        Box::new(move |_payload, _op, _fin| {
            s2.lock().unwrap().push(Timestamps::current().expect("stamps inside the callback"));
        }),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t1 = now_ns();
    let v = seen.lock().unwrap().clone();
    assert_eq!(v.len(), n);
    for (i, t) in v.iter().enumerate() {
        check_order(i, t, t0, t1);
    }
    check_histograms(p.stats_region(), n as u64, "callback");
    p.stop();
}

#[test]
fn kernel_tls_stamps_come_from_the_socket_and_rx_packets_are_counted() {
    let n = 400usize;
    let server = FeedServer::start(true, vec![(n, Ending::Stall)], Duration::from_micros(500));
    let (name, _g) = unique("ts_kernel");
    let mut cfg = Config::new(&server.url());
    cfg.name = Some(name);
    cfg.ca_file = Some(certs().ca());
    cfg.layout = Some(Layout::Threads);
    cfg.wait = Some(WaitKind::Backoff);
    cfg.quiet = true;
    let t0 = now_ns();
    let mut p = Pipeline::start(cfg).expect("wss over the kernel transport");
    let mut rx = p.receiver().unwrap();
    let mut stamps = Vec::with_capacity(n);
    for i in 0..n {
        let f = rx.next_frame_timeout(Duration::from_secs(10)).unwrap_or_else(|| panic!("message {i}"));
        stamps.push(f.timestamps());
    }
    let t1 = now_ns();
    let mut before_read = 0;
    for (i, t) in stamps.iter().enumerate() {
        check_order(i, t, t0, t1);
        before_read += (t.arrival_ns < t.decrypted_ns) as usize;
    }
    // SO_TIMESTAMPNS: the kernel stamped the segment before our recv read it (the
    // fallback, the time of the read, would make the two equal for every message).
    assert!(before_read * 10 >= n * 9, "only {before_read} of {n} arrivals precede their decrypt");
    check_histograms(p.stats_region(), n as u64, "kernel");
    let h = p.stats_region().histogram(Latency::ArrivalToDecrypted).unwrap();
    eprintln!("kernel: arrival->decrypted p50 {} ns max {} ns", h.quantile(0.5), h.max_ns);
    let s = p.stats();
    assert!(s.get(Counter::RxPackets) > 0, "the kernel transport counts its recvs");
    assert!(s.get(Counter::RxBytes) > 0 && s.get(Counter::TxPackets) > 0);
    p.stop();
}

#[test]
fn xdp_stamps_are_ordered_and_histograms_count_every_message() {
    use pipeline_testkit::exsim::ExSim;
    use pipeline_testkit::netns::TestBed;
    let Some(bed) = TestBed::new_or_skip("xdp timestamps") else { return };
    let n = 3000u64;
    let (c, k) = certs().leaf("veth");
    let srv = ExSim::start(Some(&bed.server_ns), &bed.server_ip.to_string(), &c, &k, &["--count", &n.to_string(), "--once"]);
    let (name, _g) = unique("ts_xdp");
    let (ip, port) = (bed.server_ip, srv.port);
    bed.in_client(|| {
        let mut cfg = Config::new(&format!("wss://{ip}:{port}/feed"));
        cfg.name = Some(name.clone());
        cfg.transport = TransportKind::Xdp;
        cfg.ca_file = Some(certs().ca());
        cfg.layout = Some(Layout::Inline);
        cfg.wait = Some(WaitKind::Backoff);
        cfg.quiet = true;
        let t0 = now_ns();
        let mut p = Pipeline::start(cfg).expect("pipeline over XDP");
        let mut rx = p.receiver().unwrap();
        let mut stamps = Vec::with_capacity(n as usize);
        for i in 0..n {
            let f = rx.next_frame_timeout(Duration::from_secs(30)).unwrap_or_else(|| panic!("message {i}"));
            stamps.push(f.timestamps());
        }
        let t1 = now_ns();
        for (i, t) in stamps.iter().enumerate() {
            check_order(i, t, t0, t1);
        }
        check_histograms(p.stats_region(), n, "xdp");
        let h = p.stats_region().histogram(Latency::ArrivalToDelivered).unwrap();
        eprintln!("xdp: {n} messages, arrival->delivered p50 {} ns p99 {} ns", h.quantile(0.5), h.quantile(0.99));
        p.stop();
    });
    let _ = srv.finish();
}

/// Unix time now, ns.
fn unix_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn server_stamps_give_the_one_way_histogram_json_and_binary() {
    use pipeline::pipeline::ServerStamp;
    use pipeline::stage::encode_server_frame;
    let n = 1000usize;
    // JSON, milliseconds (an exchange's "E"); stamped a little before the start, so
    // every one-way value is positive and below the test's own duration + 2 ms.
    let (name, _g) = unique("ts_srv_json");
    // The bound below counts from here: before the stamp is read.
    let t0 = Instant::now();
    let sent_ms = unix_ns() / 1_000_000 - 2;
    let mut data = Vec::new();
    for i in 0..n {
        let m = format!("{{\"e\":\"trade\",\"E\": {sent_ms},\"i\":{i}}}");
        encode_server_frame(&mut data, 0x1, true, m.as_bytes());
    }
    // One message without the field and one with a stamp from the future (server
    // clock ahead): neither is recorded.
    encode_server_frame(&mut data, 0x1, true, b"{\"e\":\"hello\"}");
    encode_server_frame(&mut data, 0x1, true, format!("{{\"E\":{}}}", sent_ms + 3_600_000).as_bytes());
    let mut c = config(&name, script(data, 500), Layout::Threads);
    c.server_stamp = Some(ServerStamp::JsonField { name: "E".into(), unit_ns: 1_000_000 });
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    for i in 0..n + 2 {
        rx.next_frame_timeout(Duration::from_secs(10)).unwrap_or_else(|| panic!("message {i}"));
    }
    let bound = t0.elapsed().as_nanos() as u64 + 3_000_000;
    let h = p.stats_region().histogram(Latency::ServerToDelivered).unwrap();
    assert_eq!(h.count, n as u64, "every stamped message once; not the unstamped, not the future one");
    assert!(h.max_ns <= bound && h.quantile(0.5) >= 1_000_000, "one-way {} .. {} ns (bound {bound})", h.quantile(0.5), h.max_ns);
    p.stop();

    // Binary: u64 little-endian ns at offset 8.
    let (name, _g) = unique("ts_srv_bin");
    let t0 = Instant::now();
    let sent = unix_ns() - 1_000_000;
    let mut data = Vec::new();
    for i in 0..n as u64 {
        let mut m = i.to_le_bytes().to_vec();
        m.extend_from_slice(&sent.to_le_bytes());
        m.extend_from_slice(&[0xAB; 40]);
        encode_server_frame(&mut data, 0x2, true, &m);
    }
    let mut c = config(&name, script(data, 0), Layout::Inline);
    c.server_stamp = Some(ServerStamp::Binary { offset: 8, width: 8, big_endian: false, unit_ns: 1 });
    let mut p = Pipeline::start(c).unwrap();
    let mut rx = p.receiver().unwrap();
    for i in 0..n {
        rx.next_frame_timeout(Duration::from_secs(10)).unwrap_or_else(|| panic!("message {i}"));
    }
    let bound = t0.elapsed().as_nanos() as u64 + 2_000_000;
    let h = p.stats_region().histogram(Latency::ServerToDelivered).unwrap();
    assert_eq!(h.count, n as u64);
    assert!(h.max_ns <= bound && h.quantile(0.01) >= 1_000_000, "one-way {} .. {} ns", h.quantile(0.01), h.max_ns);
    p.stop();

    // Without a server stamp the histogram stays empty; a bad one is refused at start.
    let (name, _g) = unique("ts_srv_bad");
    let mut c = config(&name, script(text_frames(3), 0), Layout::Inline);
    c.server_stamp = Some(ServerStamp::Binary { offset: 0, width: 3, big_endian: false, unit_ns: 1 });
    let Err(e) = Pipeline::start(c) else { panic!("width 3 accepted") };
    assert!(matches!(e, pipeline::Error::Config(_)) && e.to_string().contains("width 3"), "{e}");
}

//! `pipeline connect URL URL --dedup-json-field seq ...` (A/B legs merged by key) and
//! `--rotate-every 2` over a 10 s feed, against two `SeqServer`s on loopback.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline_testkit::feed_server::{SeqServer, SeqSpec};
use pipeline_testkit::synthetic::unique;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

fn seqs(stdout: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("{\"seq\":")?.split(',').next()?.parse().ok())
        .collect()
}

#[test]
fn two_urls_one_merged_stream_with_a_gap_event() {
    // The servers stream live from `origin`: the lead covers the CLI's start on a loaded box.
    let origin = Instant::now() + Duration::from_millis(1500);
    let interval = Duration::from_millis(1);
    let mut a = SeqSpec::new("A", origin, interval, 3000);
    a.drop = Arc::new(|n| n % 10 == 3 || n == 1500);
    a.max_delay = Duration::from_millis(1);
    let mut b = SeqSpec::new("B", origin, interval, 3000);
    b.drop = Arc::new(|n| n % 10 == 7 || n == 1500);
    b.max_delay = Duration::from_millis(2);
    b.seed = 5;
    let (sa, sb) = (SeqServer::start(a), SeqServer::start(b));
    let (name, _g) = unique("cli_feed");
    let (_g0, _g1, _g2) = (unique("cli_feed-0").1, unique("cli_feed-1").1, unique("cli_feed-2").1);
    let o = bin()
        .args(["connect", &sa.url(), &sb.url(), "--dedup-json-field", "seq", "--contiguous", "--hold-ms", "250"])
        .args(["--layout", "inline", "--wait", "backoff", "--name", &name, "--count", "3000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let got = seqs(&o.stdout);
    let want: Vec<u64> = (0..=3000).filter(|&n| n != 1500).collect();
    assert_eq!(got.len(), 3000, "{err}");
    assert_eq!(got, want[..3000].to_vec(), "every sequence once, in order");
    assert!(err.lines().any(|l| l == "pipeline: gap: stream 0 sequence 1500"), "{err}");
    assert!(err.lines().any(|l| l == "pipeline: leg 1 up: generation 0"), "{err}");
    // One line per event: nothing on stderr but pipeline: lines.
    assert!(err.lines().all(|l| l.starts_with("pipeline")), "{err}");
}

#[test]
fn several_urls_need_a_key() {
    let o = bin().args(["connect", "ws://127.0.0.1:1/", "ws://127.0.0.1:2/"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dedup-json-field"));
}

#[test]
fn rotate_every_2_over_a_10s_feed() {
    let origin = Instant::now() + Duration::from_millis(1500);
    let mut spec = SeqSpec::new("R", origin, Duration::from_millis(1), 10_000);
    spec.max_delay = Duration::from_micros(500);
    let server = SeqServer::start(spec);
    let (name, _g) = unique("cli_rot");
    let (_g0, _g1) = (unique("cli_rot-0").1, unique("cli_rot-1").1);
    let o = bin()
        .args(["connect", &server.url(), "--dedup-json-field", "seq", "--contiguous", "--hold-ms", "250"])
        .args(["--rotate-every", "2", "--layout", "inline", "--wait", "backoff", "--name", &name, "--count", "10001"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let got = seqs(&o.stdout);
    assert_eq!(got, (0..=10_000).collect::<Vec<u64>>(), "no gap, no duplicate");
    let rotations = err.lines().filter(|l| l.starts_with("pipeline: rotation: leg ")).count();
    assert!(rotations >= 4, "at least 4 rotations: {err}");
    assert!(!err.contains("gap:"), "{err}");
    eprintln!("{err}");
}

#[test]
fn external_consumer_publishes_the_merged_stream_for_a_header_only_reader() {
    // Built before the feed's clock starts: the servers stream live from `origin`, and
    // the first build of this sanitized reader took longer than the 800 ms lead on a
    // loaded CI box, so the legs joined at sequence ~755.
    let reader = pipeline_testkit::c_program::feed_reader();
    let origin = Instant::now() + Duration::from_millis(1500);
    let mut a = SeqSpec::new("A", origin, Duration::from_millis(1), 2000);
    a.drop = Arc::new(|n| n % 10 == 3 || n == 1500);
    let mut b = SeqSpec::new("B", origin, Duration::from_millis(1), 2000);
    b.drop = Arc::new(|n| n % 10 == 7 || n == 1500);
    b.seed = 5;
    let (sa, sb) = (SeqServer::start(a), SeqServer::start(b));
    let (name, _g) = unique("cli_pub");
    let (_g0, _g1, _g2) = (unique("cli_pub-0").1, unique("cli_pub-1").1, unique("cli_pub-2").1);
    let mut cli = pipeline_testkit::ChildGuard(
        bin()
            .args(["connect", &sa.url(), &sb.url(), "--dedup-json-field", "seq", "--contiguous", "--hold-ms", "250"])
            .args(["--layout", "inline", "--wait", "backoff", "--name", &name, "--external-consumer"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The directory appears once the feed has started.
    let dir = pipeline::shm::ShmDir::path_for(&name);
    let t0 = Instant::now();
    while !dir.join("ws_frame_info.shm").exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the feed never published {}", dir.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = Command::new(&reader).args([name.as_str(), "plain", "2000"]).output().unwrap();
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(r.status.success(), "{out} {}", String::from_utf8_lossy(&r.stderr));
    let f: Vec<u64> = out.trim().strip_prefix("ok ").unwrap().split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!(f[0], 2000, "0..=2000 but 1500, in order: {out}");
    // Ctrl-C: the legs close with 1001, the feed says what it published.
    let pid = cli.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = cli.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(cli.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains(&format!("plc_open(\"{name}\")")), "{err}");
    assert!(err.lines().any(|l| l.starts_with(&format!("pipeline: feed {name}: ")) && l.contains("1 gap(s)")), "{err}");
}

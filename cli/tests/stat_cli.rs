//! `pipeline stat`: the list, `--json` (parsed by Python's json module), `--prometheus`
//! (parsed by the reference parser, `prometheus_client.parser`), `--plot` (an SVG with
//! one curve per stage), and a SIGKILLed pipeline shown as dead.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline::pipeline::Pipeline;
use pipeline::runner::Layout;
use pipeline::shm::ShmDir;
use pipeline::stats::{Counter, StatsRegion};
use pipeline_testkit::synthetic::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

/// The Debian interpreter: python3-prometheus-client (tools/setup.sh) installs there.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Run `script` with `input` on stdin under the system Python; its stdout.
fn python(script: &str, input: &[u8]) -> String {
    let mut c = Command::new(SYSTEM_PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "python failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stat(args: &[&str]) -> String {
    let o = bin().arg("stat").args(args).output().unwrap();
    assert!(o.status.success(), "stat {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn stat_json_prometheus_plot_and_list_of_a_running_pipeline() {
    let n = 1500;
    let (name, _g) = unique("stat_out");
    let mut p = Pipeline::start(config(&name, script(text_frames(n), 0), Layout::Threads)).unwrap();
    let mut rx = p.receiver().unwrap();
    for i in 0..n {
        rx.next_frame_timeout(Duration::from_secs(10)).unwrap_or_else(|| panic!("message {i}"));
    }

    // --json: one object, with liveness, rates and every stage's percentiles.
    let j = stat(&[&name, "--once", "--json", "--window", "100"]);
    let checked = python(
        r#"
import json, sys
d = json.load(sys.stdin)
assert d["alive"] is True, d
assert d["state"] == "connected", d
assert set(d["rates"]) >= {"messages", "rx_packets"}, d["rates"]
lat = d["latency_ns"]
assert set(lat) == {"arrival_to_decrypted", "decrypted_to_parsed", "parsed_to_delivered", "arrival_to_delivered",
                    "server_to_delivered"}, lat
assert lat["server_to_delivered"]["count"] == 0, lat  # no server stamp configured
for k, h in lat.items():
    assert h["p50"] <= h["p90"] <= h["p99"] <= h["p999"] <= h["max"], (k, h)
print(lat["arrival_to_delivered"]["count"], d["counters"]["messages"], d["owner_pid"])
"#,
        j.as_bytes(),
    );
    let f: Vec<u64> = checked.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(f, vec![n as u64, n as u64, std::process::id() as u64], "{j}");

    // --prometheus: the reference parser reads it; the latency summary has every stage.
    let prom = stat(&[&name, "--prometheus", "--window", "100"]);
    let parsed = python(
        r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
lat = fams["pipeline_latency_seconds"]
assert lat.type == "summary", lat.type
stages = {s.labels["stage"] for s in lat.samples} - {"server_to_delivered"}
counts = {s.labels["stage"]: s.value for s in lat.samples if s.name.endswith("_count") and s.labels["stage"] in stages}
up = [s.value for s in fams["pipeline_up"].samples]
msgs = [s.value for s in fams["pipeline_messages"].samples]
print(len(stages), int(min(counts.values())), int(up[0]), int(msgs[0]))
"#,
        prom.as_bytes(),
    );
    assert_eq!(parsed.trim(), format!("4 {n} 1 {n}"), "{prom}");

    // --plot: an SVG with one curve (polyline) per stage.
    let svg = std::env::temp_dir().join(format!("{name}.svg"));
    stat(&[&name, "--plot", svg.to_str().unwrap(), "--window", "50"]);
    let s = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(s.starts_with("<svg") || s.starts_with("<?xml"), "{}", &s[..s.len().min(200)]);
    assert_eq!(s.matches("<polyline").count(), 4, "one curve per stage");
    for stage in ["arrival_to_decrypted", "decrypted_to_parsed", "parsed_to_delivered", "arrival_to_delivered"] {
        assert!(s.contains(stage), "legend names {stage}");
    }

    // The table: the latency block and rates.
    let t = stat(&[&name, "--once", "--window", "50"]);
    assert!(t.contains("latency (us)") && t.contains("p99.9") && t.contains("rates (per second):"), "{t}");

    // No NAME: the list has this pipeline, alive.
    let l = stat(&[]);
    let line = l.lines().find(|x| x.starts_with(&name)).unwrap_or_else(|| panic!("{name} not listed:\n{l}"));
    assert!(line.contains("connected") && line.contains("alive"), "{line}");
    p.stop();
}

#[test]
fn a_sigkilled_pipeline_shows_as_dead() {
    let (name, _g) = unique("stat_dead");
    let mut child = bin()
        .args(["connect", "wss://synthetic.test/", "--synthetic", "100000", "--layout", "inline", "--wait", "backoff"])
        .args(["--name", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it runs and has delivered something.
    let t = Instant::now();
    loop {
        let st = ShmDir::open(&name).and_then(|d| StatsRegion::attach(&d));
        if let Ok(st) = st {
            if st.get(Counter::Messages) > 0 {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the pipeline never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive = stat(&[&name, "--once", "--json", "--window", "50"]);
    assert!(alive.contains("\"alive\":true"), "{alive}");
    child.kill().unwrap(); // SIGKILL: no destructor, the directory stays
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let j = stat(&[&name, "--once", "--json"]);
    let age = python(
        "import json,sys; d=json.load(sys.stdin); assert d['alive'] is False, d; print(d['heartbeat_age_s'], d['owner_pid'])",
        j.as_bytes(),
    );
    let v: Vec<f64> = age.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(v[0] >= 0.2 && v[0] < 30.0, "heartbeat age {} s", v[0]);
    assert_eq!(v[1] as u32, child.id(), "owner pid");
    let t = stat(&[&name, "--once"]);
    assert!(t.contains(&format!("dead (owner pid {} gone; last heartbeat", child.id())), "{t}");
    let l = stat(&[]);
    let line = l.lines().find(|x| x.starts_with(&name)).unwrap_or_else(|| panic!("{name} not listed:\n{l}"));
    assert!(line.contains("dead (owner pid"), "{line}");
    // The refreshing view ends by itself on a dead pipeline (it does not move).
    let o = bin().args(["stat", &name]).stdout(Stdio::piped()).output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("dead"));
}

//! Another process is the AppClient: a C program using only include/pipeline_consumer.h
//! (no link to libpipeline) reads a running pipeline's frames in place; it sees the
//! pipeline's state (`plc_state`) and the end of the stream (`PLC_END`, within 100 ms
//! of the disconnect), and a second reader is refused while the first lives (and takes
//! over once it died).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pipeline::pipeline::{Config, Pipeline};
use pipeline::runner::{Layout, WaitKind};
use pipeline_testkit::feed_server::{Ending, FeedServer};
use pipeline_testkit::synthetic::*;

/// Compile a C program against include/ with the sanitizers (a bad read in the header
/// aborts it instead of passing by luck).
fn compile(src: &Path, out: &Path) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("cc")
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-o"])
        .arg(out)
        .arg(src)
        .arg(format!("-I{}", root.join("include").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// tests/c/consumer_end.c, built once.
fn consumer_end() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plc_consumer_end");
        compile(&root.join("tests/c/consumer_end.c"), &out);
        out
    })
    .clone()
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn external(name: &str, url: &str) -> Config {
    let mut c = Config::new(url);
    c.name = Some(name.to_string());
    c.layout = Some(Layout::Threads);
    c.wait = Some(WaitKind::Backoff);
    c.quiet = true;
    c.external_consumer = true;
    c
}

/// A paced feed (1 ms per message) that the server closes (1001): the reader sees
/// CONNECTED while reading, every frame, then PLC_END and DISCONNECTED no later than
/// 100 ms after this process saw the pipeline disconnect (polling every millisecond).
#[test]
fn plc_next_says_end_soon_after_the_disconnect_and_plc_state_follows() {
    const N: usize = 300;
    let server = FeedServer::start(false, vec![(N, Ending::Close1001)], Duration::from_millis(1));
    let (name, _g) = unique("extend");
    let p = Pipeline::start(external(&name, &server.url())).unwrap();
    let child = Command::new(consumer_end()).args([&name, "read"]).stdout(Stdio::piped()).spawn().unwrap();
    assert!(p.wait_disconnected(Duration::from_secs(30)), "the server never closed");
    let seen = monotonic_ns();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{:?}: {text}", out.status);
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"end"), "{text}");
    assert_eq!(f[1], N.to_string(), "every frame before the end: {text}");
    assert_eq!(f[2], "1", "plc_state while reading is PLC_STATE_CONNECTED: {text}");
    assert_eq!(f[3], "3", "plc_state at the end is PLC_STATE_DISCONNECTED: {text}");
    let end: u64 = f[4].parse().unwrap();
    let lag_ms = (end as i128 - seen as i128) as f64 / 1e6;
    eprintln!("PLC_END {lag_ms:+.2} ms after this process saw the disconnect");
    assert!(lag_ms <= 100.0, "PLC_END came {lag_ms:.1} ms after the disconnect");
    p.stop();
}

/// One reader per pipeline: a second `plc_open` is PLC_ERR_BUSY naming the first
/// reader's pid; once that reader is SIGKILLed (no plc_close) the next one takes the
/// claim over and reads everything to the end.
#[test]
fn a_second_reader_is_refused_until_the_first_one_died() {
    const N: usize = 50;
    let (name, _g) = unique("ext1r");
    let mut cfg = config(&name, script(text_frames(N), 512), Layout::Threads);
    cfg.external_consumer = true;
    let p = Pipeline::start(cfg).unwrap();
    let mut a = Command::new(consumer_end()).args([&name, "hold"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(a.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "open ok");
    let b = Command::new(consumer_end()).args([&name, "read"]).output().unwrap();
    let text = String::from_utf8_lossy(&b.stdout);
    assert_eq!(b.status.code(), Some(2), "{text}");
    assert!(text.starts_with("open -6 "), "PLC_ERR_BUSY: {text}");
    assert!(text.contains(&format!("already has a reader: process {}", a.id())), "{text}");
    // SAFETY: killing the reader this test started.
    unsafe { libc::kill(a.id() as i32, libc::SIGKILL) };
    a.wait().unwrap();
    let c = Command::new(consumer_end()).args([&name, "read"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p.close(1000, "done").unwrap();
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {text}", out.status);
    assert!(text.starts_with(&format!("end {N} ")), "took the dead reader's claim over and read to the end: {text}");
    p.stop();
}

/// A pipeline with its own (in-process) consumer: an outside reader is refused, naming
/// this process.
#[test]
fn an_outside_reader_is_refused_while_the_pipeline_has_its_own_consumer() {
    let (name, _g) = unique("extown");
    let p = Pipeline::start(config(&name, script(text_frames(5), 512), Layout::Inline)).unwrap();
    let b = Command::new(consumer_end()).args([&name, "read"]).output().unwrap();
    let text = String::from_utf8_lossy(&b.stdout);
    assert_eq!(b.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("already has a reader: process {}", std::process::id())), "{text}");
    p.stop();
}

const PROGRAM: &str = r#"
#include "pipeline_consumer.h"
#include <time.h>
int main(int argc, char **argv) {
    plc_consumer c;
    if (argc < 3 || plc_open(&c, argv[1]) != PLC_OK) { fprintf(stderr, "open: %s\n", c.error); return 2; }
    long n = atol(argv[2]), got = 0, idle = 0;
    char want[300];
    while (got < n) {
        plc_frame f;
        int r = plc_next(&c, &f);
        if (r == PLC_EMPTY) {
            struct timespec ts = {0, 100000};
            if (++idle > 100000) { fprintf(stderr, "timeout at %ld\n", got); return 3; }
            nanosleep(&ts, NULL);
            continue;
        }
        if (r < 0) { fprintf(stderr, "%s\n", c.error); return 4; }
        if (f.opcode >= 0x8) { plc_release(&c, &f); continue; } /* control: release only */
        int k = snprintf(want, sizeof want, "ext %ld", got);
        if (f.opcode != PLC_OPCODE_TEXT || (long)f.len != k || memcmp(f.payload, want, f.len) != 0) {
            fprintf(stderr, "frame %ld wrong\n", got);
            return 5;
        }
        plc_release(&c, &f);
        got++;
    }
    plc_close(&c);
    printf("ok %ld\n", got);
    return 0;
}
"#;

#[test]
fn a_c_process_consumes_a_running_pipeline() {
    let n = 20_000usize;
    let (name, _g) = unique("extc");
    let mut v = Vec::new();
    for i in 0..n {
        if i % 1000 == 0 {
            pipeline::stage::encode_server_frame(&mut v, 0x9, true, b"hb");
        }
        pipeline::stage::encode_server_frame(&mut v, 1, true, format!("ext {i}").as_bytes());
    }
    let mut cfg = config(&name, script(v, 512), Layout::Threads);
    cfg.external_consumer = true;
    let mut p = Pipeline::start(cfg).unwrap();
    assert!(p.receiver().is_none(), "no in-process receiver competes");
    let tmp = std::env::temp_dir().join(format!("plext{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("main.c"), PROGRAM).unwrap();
    compile(&tmp.join("main.c"), &tmp.join("main"));
    let run = Command::new(tmp.join("main"))
        .args([&name, &n.to_string()])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&tmp).ok();
    assert!(
        run.status.success(),
        "{:?} {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        format!("ok {n}")
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(p.stats().get(pipeline::stats::Counter::PongsSent), 20);
    p.stop();
}

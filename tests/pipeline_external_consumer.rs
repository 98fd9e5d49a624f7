//! Another process is the AppClient: a C program using only include/pipeline_consumer.h
//! (no link to libpipeline) reads a running pipeline's frames in place.

use std::process::Command;
use std::time::Duration;

use pipeline::pipeline::Pipeline;
use pipeline::runner::Layout;
use pipeline_testkit::synthetic::*;

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
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("cc")
        // Sanitized like tests/consumer_header.rs: a bad read in the header aborts.
        .args(["-std=c11", "-O1", "-Wall", "-Werror", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-o"])
        .arg(tmp.join("main"))
        .arg(tmp.join("main.c"))
        .arg(format!("-I{}", root.join("include").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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

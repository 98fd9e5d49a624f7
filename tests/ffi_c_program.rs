//! A C program uses the pipeline through include/pipeline.h and libpipeline.so:
//! synthetic server, polling and callback delivery, send, close, state, stats.

use std::path::PathBuf;
use std::process::Command;

fn lib_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

const PROGRAM: &str = r#"
#define _POSIX_C_SOURCE 200809L
#include "pipeline.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 20000
static unsigned char data[N * 40];
static size_t data_len;
static volatile size_t seen;
static volatile int bad;

static void add_frame(const char *s) {
    size_t n = strlen(s);
    data[data_len++] = 0x81;             /* FIN | text */
    data[data_len++] = (unsigned char)n; /* < 126, unmasked */
    memcpy(data + data_len, s, n);
    data_len += n;
}

static void on_message(void *user, const uint8_t *payload, size_t len, uint32_t opcode) {
    char want[32];
    snprintf(want, sizeof want, "tick %zu", seen);
    if (opcode != 1 || len != strlen(want) || memcmp(payload, want, len) != 0 || user != (void *)&seen) bad++;
    seen++;
}

static void nap(void) { struct timespec ts = {0, 100000}; nanosleep(&ts, NULL); }

static int fail(const char *what, enum PlResult r) {
    char msg[256];
    pl_last_error(msg, sizeof msg);
    fprintf(stderr, "%s: %s: %s\n", what, pl_result_name(r), msg);
    return 1;
}

int main(int argc, char **argv) {
    char name[64], name2[64], buf[32];
    if (argc < 2) return 2;
    snprintf(name, sizeof name, "%s_poll", argv[1]);
    snprintf(name2, sizeof name2, "%s_cb", argv[1]);
    for (size_t i = 0; i < N; i++) { snprintf(buf, sizeof buf, "tick %zu", i); add_frame(buf); }

    PlConfig cfg;
    if (pl_config_init(&cfg) != PL_OK) return 3;
    cfg.url = "wss://synthetic.test/feed";
    cfg.name = name;
    cfg.transport = PL_TRANSPORT_SYNTHETIC;
    cfg.layout = PL_LAYOUT_INLINE;
    cfg.wait = PL_WAIT_BACKOFF;
    cfg.synthetic_data = data;
    cfg.synthetic_len = data_len;
    cfg.synthetic_chunk = 1000;
    cfg.inbox_size = 1 << 20;
    cfg.max_message = 1 << 16;
    cfg.quiet = true;

    pl_pipeline *p = NULL;
    enum PlResult r = pl_start(&cfg, &p);
    if (r != PL_OK) return fail("pl_start", r);
    size_t got = 0;
    long spins = 0;
    while (got < N) {
        PlFrame f;
        r = pl_poll(p, &f);
        if (r == PL_ERR_WOULD_BLOCK) { if (++spins > 200000) return fail("timeout", r); nap(); continue; }
        if (r != PL_OK) return fail("pl_poll", r);
        snprintf(buf, sizeof buf, "tick %zu", got);
        if (f.len != strlen(buf) || memcmp(f.payload, buf, f.len) != 0 || f.opcode != 1) {
            fprintf(stderr, "message %zu wrong\n", got);
            return 4;
        }
        pl_release(p, &f);
        got++;
    }
    const char *hi = "hi from C";
    if ((r = pl_send_text(p, hi, strlen(hi))) != PL_OK) return fail("pl_send_text", r);
    if ((r = pl_close(p, 1000, "done")) != PL_OK) return fail("pl_close", r);
    if ((r = pl_wait_disconnected(p, 10000)) != PL_OK) return fail("pl_wait_disconnected", r);
    PlState st;
    char reason[200];
    pl_get_state(p, &st, reason, sizeof reason);
    PlDisconnect d;
    char msg[200];
    if ((r = pl_get_disconnect(p, &d, msg, sizeof msg)) != PL_OK) return fail("pl_get_disconnect", r);
    if (st != PL_STATE_DISCONNECTED || d.kind != PL_DISCONNECT_CLOSE_COMPLETED || d.close_code != 1000
        || strcmp(msg, reason) != 0) {
        fprintf(stderr, "state %d kind %s (%u) close code %u reason %s / %s\n", (int)st,
                pl_disconnect_kind_name(d.kind), d.kind, d.close_code, reason, msg);
        return 5;
    }
    PlStats s;
    pl_get_stats(p, &s);
    if (s.messages != N || s.sent_messages != 1) { fprintf(stderr, "stats %llu %llu\n", (unsigned long long)s.messages, (unsigned long long)s.sent_messages); return 6; }
    pl_stop(p);
    pl_free(p);

    /* Callback delivery on a stage thread. */
    cfg.name = name2;
    cfg.layout = PL_LAYOUT_THREADS;
    cfg.on_message = on_message;
    cfg.on_message_user = (void *)&seen;
    if ((r = pl_start(&cfg, &p)) != PL_OK) return fail("pl_start cb", r);
    spins = 0;
    while (seen < N) { if (++spins > 200000) return fail("callback timeout", PL_ERR_TIMEOUT); nap(); }
    if (bad) { fprintf(stderr, "%d bad callbacks\n", bad); return 7; }
    pl_free(p);
    printf("ok %zu %zu\n", got, (size_t)seen);
    return 0;
}
"#;

#[test]
fn a_c_program_drives_a_pipeline() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = std::env::temp_dir().join(format!("plcprog{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let src = tmp.join("main.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = tmp.join("main");
    let lib = lib_dir();
    let o = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg(format!("-I{}", root.join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .args(["-lpipeline", &format!("-Wl,-rpath,{}", lib.display())])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "compile failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let name = format!("c{}", std::process::id());
    let run = Command::new(&exe).arg(&name).output().unwrap();
    for suffix in ["_poll", "_cb"] {
        let _ =
            std::fs::remove_dir_all(pipeline::shm::ShmDir::path_for(&format!("{name}{suffix}")));
    }
    std::fs::remove_dir_all(&tmp).ok();
    assert!(
        run.status.success(),
        "C program failed: {:?}\nstdout: {}\nstderr: {}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("ok 20000 20000"));
}

//! A C program uses the pipeline through include/pipeline.h and libpipeline.so:
//! synthetic server, polling and callback delivery, send, close, state, stats.

use pipeline_testkit::c_program::run_named_program;

const PROGRAM: &str = concat!(
    pipeline_testkit::c_prelude!(),
    pipeline_testkit::c_synthetic!(),
    r#"
#define N 20000
static unsigned char data[N * 40];
static size_t data_len;
static volatile size_t seen;
static volatile int bad;

static void on_message(void *user, const uint8_t *payload, size_t len, uint32_t opcode) {
    char want[32];
    snprintf(want, sizeof want, "tick %zu", seen);
    if (opcode != 1 || len != strlen(want) || memcmp(payload, want, len) != 0 || user != (void *)&seen) bad++;
    seen++;
}

int main(int argc, char **argv) {
    char name[64], name2[64], buf[32];
    if (argc < 2) return 2;
    snprintf(name, sizeof name, "%s_poll", argv[1]);
    snprintf(name2, sizeof name2, "%s_cb", argv[1]);
    data_len = tick_frames(data, N);

    PlConfig cfg;
    if (synthetic_config(&cfg, name, data, data_len, 1000) != 0) return 3;
    cfg.layout = PL_LAYOUT_INLINE;

    pl_pipeline *p = NULL;
    enum PlResult r = pl_start(&cfg, &p);
    if (r != PL_OK) return fail("pl_start", r);
    size_t got = 0;
    long spins = 0;
    while (got < N) {
        PlFrame f;
        if ((r = poll_wait(p, &f, &spins)) != PL_OK) return fail("pl_poll", r);
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
    if (wait_seen(&seen, N) != 0) return 1;
    if (bad) { fprintf(stderr, "%d bad callbacks\n", bad); return 7; }
    pl_free(p);
    printf("ok %zu %zu\n", got, (size_t)seen);
    return 0;
}
"#
);

#[test]
fn a_c_program_drives_a_pipeline() {
    assert!(run_named_program("plcprog", PROGRAM, &["_poll", "_cb"]).starts_with("ok 20000 20000"));
}

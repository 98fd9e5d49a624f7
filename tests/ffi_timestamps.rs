//! `pl_message_timestamps` from C: after `pl_poll` and inside the message callback the
//! four stamps are in stage order and inside the run; before any message it is
//! `PL_ERR_WOULD_BLOCK`; a too-small `struct_size` is `PL_ERR_CONFIG`; a caller's larger
//! (newer) struct gets the library's fields and `struct_size` set to what was written.
//! The `server_stamp_*` fields of `PlConfig` are checked at `pl_start`.

use pipeline_testkit::c_program::run_named_program;

const PROGRAM: &str = concat!(
    pipeline_testkit::c_prelude!(),
    pipeline_testkit::c_synthetic!(),
    r#"
#include <time.h>
#include <stddef.h>
#define N 5000
static unsigned char data[N * 40];
static size_t data_len;
static volatile size_t seen;
static volatile int bad;
static uint64_t t0;

static uint64_t mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int ordered(const PlTimestamps *t, uint64_t lo, uint64_t hi) {
    return lo <= t->arrival_ns && t->arrival_ns <= t->decrypted_ns && t->decrypted_ns <= t->parsed_ns
        && t->parsed_ns <= t->delivered_ns && t->delivered_ns <= hi;
}

static void on_message(void *user, const uint8_t *payload, size_t len, uint32_t opcode) {
    (void)user; (void)payload; (void)len; (void)opcode;
    PlTimestamps t = { .struct_size = sizeof t };
    if (pl_message_timestamps(&t) != PL_OK || !ordered(&t, t0, mono())) bad++;
    seen++;
}

int main(int argc, char **argv) {
    char name[64], name2[64];
    if (argc < 2) return 2;
    snprintf(name, sizeof name, "%s_tpoll", argv[1]);
    snprintf(name2, sizeof name2, "%s_tcb", argv[1]);
    data_len = tick_frames(data, N);
    PlTimestamps t = { .struct_size = sizeof t };
    enum PlResult r = pl_message_timestamps(&t);
    if (r != PL_ERR_WOULD_BLOCK) return fail("timestamps before any message", r);

    PlConfig cfg;
    if (synthetic_config(&cfg, name, data, data_len, 900) != 0) return 3;
    cfg.layout = PL_LAYOUT_THREADS;

    /* Server stamp settings are checked at pl_start: a JSON field and a binary width
     * at once, or a width other than 4/8, is PL_ERR_CONFIG. */
    pl_pipeline *p = NULL;
    cfg.server_stamp_field = "E";
    cfg.server_stamp_width = 8;
    if ((r = pl_start(&cfg, &p)) != PL_ERR_CONFIG) return fail("field and width", r);
    cfg.server_stamp_field = NULL;
    cfg.server_stamp_width = 3;
    if ((r = pl_start(&cfg, &p)) != PL_ERR_CONFIG) return fail("width 3", r);
    cfg.server_stamp_width = 0;
    if (cfg.server_stamp_unit_ns != 1) return 8; /* the default: ns */
    cfg.server_stamp_field = "E"; /* not in these messages: nothing recorded, nothing breaks */
    cfg.server_stamp_unit_ns = 1000000;

    t0 = mono();
    if ((r = pl_start(&cfg, &p)) != PL_OK) return fail("pl_start", r);
    size_t got = 0;
    long spins = 0;
    while (got < N) {
        PlFrame f;
        if ((r = poll_wait(p, &f, &spins)) != PL_OK) return fail("pl_poll", r);
        PlTimestamps ts = { .struct_size = sizeof ts };
        if ((r = pl_message_timestamps(&ts)) != PL_OK) return fail("pl_message_timestamps", r);
        if (!ordered(&ts, t0, mono()) || ts.struct_size != sizeof ts) {
            fprintf(stderr, "message %zu: %llu %llu %llu %llu (t0 %llu)\n", got, (unsigned long long)ts.arrival_ns,
                    (unsigned long long)ts.decrypted_ns, (unsigned long long)ts.parsed_ns,
                    (unsigned long long)ts.delivered_ns, (unsigned long long)t0);
            return 4;
        }
        if (got == N - 1) {
            /* A newer header's bigger struct: our fields written, struct_size says how many. */
            struct { PlTimestamps t; uint64_t later_field; } big;
            memset(&big, 0xAB, sizeof big);
            big.t.struct_size = sizeof big;
            if ((r = pl_message_timestamps(&big.t)) != PL_OK) return fail("bigger struct", r);
            if (big.t.struct_size != sizeof(PlTimestamps) || big.later_field != 0xABABABABABABABABull
                || big.t.delivered_ns != ts.delivered_ns) return 5;
            /* Too small (not initialised): refused. */
            PlTimestamps z = { .struct_size = 0 };
            if ((r = pl_message_timestamps(&z)) != PL_ERR_CONFIG) return fail("struct_size 0", r);
            if (pl_monotonic_to_unix_ns(ts.arrival_ns) < 1700000000ull * 1000000000ull) return 6;
        }
        pl_release(p, &f);
        got++;
    }
    pl_free(p);

    cfg.name = name2;
    cfg.on_message = on_message;
    t0 = mono();
    if ((r = pl_start(&cfg, &p)) != PL_OK) return fail("pl_start cb", r);
    if (wait_seen(&seen, N) != 0) return 1;
    pl_free(p);
    if (bad) { fprintf(stderr, "%d callbacks saw stamps out of order\n", bad); return 7; }
    printf("ok %zu %zu\n", got, (size_t)seen);
    return 0;
}
"#
);

#[test]
fn c_reads_message_timestamps_after_poll_and_in_the_callback() {
    assert!(run_named_program("plcts", PROGRAM, &["_tpoll", "_tcb"]).starts_with("ok 5000 5000"));
}

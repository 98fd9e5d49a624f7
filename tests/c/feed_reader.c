/* A header-only reader of a published merged feed (Feed::start_published): every
 * {"seq":N} frame in order, and the events. Usage: feed_reader NAME feed|plain END
 * `feed`: plc_next_feed (frames and events); `plain`: plc_next (an old reader: frames
 * only, events passed over). Prints "ok <frames> <gaps> <gap_first> <downs>" and exits
 * 0, or says what is wrong and exits 1. */
#define _GNU_SOURCE
#include "pipeline_consumer.h"
#include <time.h>

static void nap(void) { struct timespec ts = {0, 200000}; nanosleep(&ts, NULL); }

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int events = strcmp(argv[2], "feed") == 0;
    unsigned long long end = strtoull(argv[3], NULL, 10);
    plc_consumer c;
    if (plc_open(&c, argv[1]) != PLC_OK) { fprintf(stderr, "open: %s\n", c.error); return 1; }
    /* 0: not known yet (the stream starts where the legs joined it). */
    unsigned long long next = 0, frames = 0, gaps = 0, gap_first = 0, downs = 0;
    long idle = 0;
    /* Done after the last sequence, and (reading events) once both legs are gone. */
    while (next == 0 || next <= end || (events && downs < 2)) {
        plc_frame f;
        plc_feed_event ev;
        int r = events ? plc_next_feed(&c, &f, &ev) : plc_next(&c, &f);
        if (r == PLC_EMPTY) {
            if (++idle > 100000) { fprintf(stderr, "timeout at %llu (downs %llu)\n", next, downs); return 1; }
            nap();
            continue;
        }
        idle = 0;
        if (r == PLC_FEED_EVENT) {
            if (ev.kind == PLC_FEED_GAP) {
                if (ev.stream != 0 || (next != 0 && ev.seq != next) || ev.to < ev.seq) { fprintf(stderr, "gap %llu..%llu at %llu\n", (unsigned long long)ev.seq, (unsigned long long)ev.to, next); return 1; }
                gaps++;
                gap_first = ev.seq;
                next = ev.to + 1;
            } else if (ev.kind == PLC_FEED_LEG_DOWN && ev.generation == 0) {
                if (ev.leg > 1) { fprintf(stderr, "leg %u\n", ev.leg); return 1; }
                downs++;
            }
            continue;
        }
        if (r != PLC_OK) { fprintf(stderr, "next: %d %s\n", r, c.error); return 1; }
        if (f.opcode != PLC_OPCODE_TEXT || f.len < 8 || memcmp(f.payload, "{\"seq\":", 7) != 0) {
            fprintf(stderr, "frame opcode %u len %u\n", f.opcode, f.len);
            return 1;
        }
        char buf[32];
        size_t n = f.len - 7 < sizeof buf - 1 ? f.len - 7 : sizeof buf - 1;
        memcpy(buf, f.payload + 7, n);
        buf[n] = 0;
        unsigned long long s = strtoull(buf, NULL, 10);
        /* Without events a gap shows as a jump; with them every frame is the next. */
        if (next != 0 && (events ? s != next : s < next)) { fprintf(stderr, "frame %llu, wanted %llu\n", s, next); return 1; }
        next = s + 1;
        frames++;
        plc_release(&c, &f);
    }
    plc_close(&c);
    printf("ok %llu %llu %llu %llu\n", frames, gaps, gap_first, downs);
    return 0;
}

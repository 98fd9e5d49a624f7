/* Test driver for plc_state, PLC_END and the one-reader claim of
 * include/pipeline_consumer.h (tests/pipeline_external_consumer.rs runs it):
 *
 *   consumer_end NAME read   read every frame until PLC_END, then print
 *                            "end <frames> <state while reading> <state at the end> <CLOCK_MONOTONIC ns at PLC_END>"
 *   consumer_end NAME hold   open, print "open ok", then sleep (the test kills it)
 *
 * Exit codes: 0 ok, 2 open failed (printed "open <code> <error>"), 3 timeout (60 s),
 * 4 plc_next failed. */
#include "pipeline_consumer.h"
#include <time.h>

static unsigned long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    plc_consumer c;
    int r = plc_open(&c, argv[1]);
    if (r != PLC_OK) {
        printf("open %d %s\n", r, c.error);
        return 2;
    }
    if (strcmp(argv[2], "hold") == 0) {
        printf("open ok\n");
        fflush(stdout);
        sleep(60);
        return 0;
    }
    long got = 0;
    int first_state = PLC_STATE_UNKNOWN;
    unsigned long long start = now_ns();
    for (;;) {
        plc_frame f;
        r = plc_next(&c, &f);
        if (r == PLC_OK) {
            if (got++ == 0) first_state = plc_state(&c);
            plc_release(&c, &f);
            continue;
        }
        if (r == PLC_END) break;
        if (r != PLC_EMPTY) {
            printf("next %d %s\n", r, c.error);
            return 4;
        }
        if (now_ns() - start > 60000000000ull) {
            printf("timeout after %ld frames, state %d\n", got, plc_state(&c));
            return 3;
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    unsigned long long t = now_ns();
    printf("end %ld %d %d %llu\n", got, first_state, plc_state(&c), t);
    plc_close(&c);
    return 0;
}

/* Test driver for include/pipeline_consumer.h: attach to pipeline argv[1], read
 * argv[2] frames whose payloads are "msg <i>" and check them (and their stamps), printing one result
 * line. Exit codes: 0 ok, 2 open failed (message on stdout), 3 content mismatch,
 * 4 overrun noticed, 5 timeout, 6 plc_next failed otherwise (e.g. PLC_ERR_CORRUPT).
 *
 * With argv[3] "drain" it checks nothing but reads every byte of every frame it is
 * given (as a real reader would) until argv[2] frames or the ring is empty: a frame
 * pointing outside the mapping then crashes it (under ASan: a report and abort). */
#include "pipeline_consumer.h"
#include <time.h>

/* Frame i's arrival stamp (tests/consumer_header.rs, STAMP_BASE). */
#define STAMP_BASE ((1ULL << 48) - 150000000ULL)

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    long n = atol(argv[2]);
    plc_consumer c;
    int r = plc_open(&c, argv[1]);
    if (r != PLC_OK) {
        printf("open failed: %d %s\n", r, c.error);
        return 2;
    }
    int drain = argc > 3 && strcmp(argv[3], "drain") == 0;
    long got = 0;
    unsigned sum = 0;
    unsigned spins = 0;
    time_t start = time(NULL);
    while (got < n) {
        plc_frame f;
        r = plc_next(&c, &f);
        if (r == PLC_EMPTY) {
            if (drain) break;
            if (++spins % 1024 == 0) {
                usleep(50);
                if (time(NULL) - start > 60) { printf("timeout after %ld frames\n", got); return 5; }
            }
            continue;
        }
        if (r == PLC_ERR_OVERRUN) {
            printf("overrun noticed after %ld frames: %s\n", got, c.error);
            plc_close(&c);
            return 4;
        }
        if (r != PLC_OK) {
            printf("next failed after %ld frames: %d %s\n", got, r, c.error);
            plc_close(&c);
            return 6;
        }
        if (drain) {
            for (uint32_t i = 0; i < f.len; i++) sum += f.payload[i];
            plc_release(&c, &f);
            got++;
            continue;
        }
        /* The stamps tests/consumer_header.rs wrote: arrival, +100 decrypted, +250 us
         * parsed (the parse stamp crosses a 2^48 ns boundary around frame 150,000). */
        uint64_t arrival = STAMP_BASE + (uint64_t)got * 1000u;
        if (f.arrival_ns != arrival || f.decrypted_ns != arrival + 100 || f.parse_stamp != arrival + 250000) {
            printf("stamps of frame %ld: %llu %llu %llu, want %llu +100 +250000\n", got, (unsigned long long)f.arrival_ns,
                   (unsigned long long)f.decrypted_ns, (unsigned long long)f.parse_stamp, (unsigned long long)arrival);
            return 3;
        }
        char want[32];
        int wl = snprintf(want, sizeof want, "msg %ld", got);
        if (f.len != (uint32_t)wl || memcmp(f.payload, want, (size_t)wl) != 0 || f.opcode != PLC_OPCODE_TEXT || !f.is_final) {
            printf("mismatch at frame %ld: len %u opcode %u\n", got, f.len, f.opcode);
            return 3;
        }
        plc_release(&c, &f);
        got++;
    }
    if (drain)
        printf("ok %ld (sum %u)\n", got, sum);
    else
        printf("ok %ld\n", got);
    plc_close(&c);
    return 0;
}

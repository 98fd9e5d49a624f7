/* consumer_reader: a separate process reading a running pipeline's messages through
 * include/pipeline_consumer.h only (no link to libpipeline).
 *
 *   consumer_reader NAME [--count N] [--timeout SECS] [--quiet]
 *
 * Start the pipeline with an external consumer first, e.g.
 *   pipeline connect wss://127.0.0.1:8443/ --ca-file ca.pem --name feed --external-consumer
 * then `consumer_reader feed --count 20000`. It waits (up to --timeout, default 30 s)
 * for /dev/shm/pipeline_NAME/ to appear, reads messages in place, checks those of
 * tools/exchange_sim.py (order, size, crc32, pattern; latency from the embedded send
 * time), prints one line per message unless --quiet, and a summary line:
 *   summary: messages=N gaps=0 bad=0 text=T seconds=S rate=R/s latency_us p50=.. p99=.. max=..
 * Without --count it reads until the stream ends (PLC_END: the pipeline disconnected and
 * every message was read). Exit status: 0 all N read in order, 1 gap/corruption/overrun
 * or the stream ended before N, 2 usage or open failure (PLC_ERR_BUSY, another reader,
 * at once), 3 timeout. Control frames never reach it: plc_next skips them. */
#include <wspipe/pipeline_consumer.h>
#include "feed_check.h"

#include <signal.h>

static volatile sig_atomic_t interrupted;
static void on_sig(int s) { (void)s; interrupted = 1; }

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *name = NULL;
    long long count = -1;
    double timeout = 30.0;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count") && i + 1 < argc) count = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = atof(argv[++i]);
        else if (!strcmp(argv[i], "--quiet")) quiet = 1;
        else if (argv[i][0] != '-' && !name) name = argv[i];
        else {
            fprintf(stderr, "usage: consumer_reader NAME [--count N] [--timeout SECS] [--quiet]\n");
            return 2;
        }
    }
    if (!name) {
        fprintf(stderr, "usage: consumer_reader NAME [--count N] [--timeout SECS] [--quiet]\n");
        return 2;
    }
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);

    plc_consumer c;
    uint64_t deadline = feed_now_ns() + (uint64_t)(timeout * 1e9);
    int r;
    while ((r = plc_open(&c, name)) != PLC_OK) {
        /* Not there yet (or still being created): retry until the deadline. */
        if (r == PLC_ERR_BUSY || feed_now_ns() > deadline || interrupted) {
            fprintf(stderr, "consumer_reader: %s\n", c.error);
            return 2;
        }
        usleep(20000);
    }
    size_t cap = count > 0 ? (size_t)count : 1u << 20;
    uint64_t *lat = (uint64_t *)malloc(cap * sizeof *lat);
    size_t nlat = 0;
    uint64_t want = 0, gaps = 0, bad = 0, text = 0, first = 0, last = 0;
    unsigned idle = 0;
    int status = 0;
    while (count < 0 || want < (uint64_t)count) {
        if (interrupted) { status = 130; break; }
        plc_frame f;
        r = plc_next(&c, &f);
        if (r == PLC_EMPTY) {
            if (++idle > 256) {
                usleep(20);
                if ((idle & 1023) == 0 && feed_now_ns() > deadline) {
                    fprintf(stderr, "consumer_reader: timeout after %llu messages\n", (unsigned long long)want);
                    status = 3;
                    break;
                }
            }
            continue;
        }
        if (r == PLC_END) {
            fprintf(stderr, "consumer_reader: the stream ended (state %d) after %llu messages\n", plc_state(&c),
                    (unsigned long long)want);
            if (count > 0) status = 1;
            break;
        }
        if (r != PLC_OK) {
            fprintf(stderr, "consumer_reader: %s\n", c.error);
            status = 1;
            break;
        }
        idle = 0;
        if (f.opcode == PLC_OPCODE_TEXT) {
            text++;
            if (!quiet) printf("text %.*s\n", (int)f.len, (const char *)f.payload);
            plc_release(&c, &f);
            continue;
        }
        uint64_t now = feed_now_ns(), seq, sent;
        int k = feed_check(f.payload, f.len, want, &seq, &sent, 1);
        if (!first) first = now;
        last = now;
        if (k == FEED_GAP) { gaps += seq - want; fprintf(stderr, "consumer_reader: gap before seq %llu\n", (unsigned long long)seq); }
        if (k == FEED_BAD) { bad++; fprintf(stderr, "consumer_reader: bad message at seq %llu\n", (unsigned long long)want); }
        want = seq + 1;
        if (sent && now >= sent && nlat < cap) lat[nlat++] = now - sent;
        if (!quiet) printf("seq=%llu size=%u latency_us=%.1f\n", (unsigned long long)seq, f.len, sent ? (now - sent) / 1e3 : 0.0);
        plc_release(&c, &f);
        deadline = now + (uint64_t)(timeout * 1e9);
    }
    plc_close(&c);
    qsort(lat, nlat, sizeof *lat, cmp_u64);
#define PCT(p) (nlat ? lat[(size_t)((p) / 100.0 * (double)(nlat - 1) + 0.5)] / 1e3 : 0.0)
    double secs = last > first ? (last - first) / 1e9 : 0.0;
    printf("summary: messages=%llu gaps=%llu bad=%llu text=%llu seconds=%.3f rate=%.0f/s latency_us p50=%.1f p99=%.1f max=%.1f\n",
           (unsigned long long)want, (unsigned long long)gaps, (unsigned long long)bad, (unsigned long long)text, secs,
           secs > 0 ? want / secs : 0.0, PCT(50), PCT(99), PCT(100));
    free(lat);
    if (status) return status;
    return (gaps || bad) ? 1 : 0;
}

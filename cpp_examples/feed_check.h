/* Checks one message of tools/exchange_sim.py's feed (C and C++; no dependencies).
 *
 * Message `seq` has the content byte i = (seq*131 + i) & 0xff, and when its size is
 * >= 24 the first 24 bytes are <seq u64 LE><send CLOCK_MONOTONIC ns u64 LE><size u32
 * LE><crc32 of bytes 24.. u32 LE>. feed_check() compares a payload with the message
 * the reader expects next (`want`, counting from 0) and says what it found. */
#ifndef FEED_CHECK_H
#define FEED_CHECK_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

enum { FEED_OK = 0, FEED_GAP = 1, FEED_BAD = 2 };

static inline uint32_t feed_crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static inline uint64_t feed_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t feed_le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t feed_le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* FEED_OK: the message `want` (*seq = want; *sent_ns its send time or 0 when < 24 bytes).
 * FEED_GAP: a later message (*seq = its number): messages were lost.
 * FEED_BAD: corrupt (size, crc or pattern), or an earlier message (reordered). */
static inline int feed_check(const uint8_t *p, size_t n, uint64_t want, uint64_t *seq, uint64_t *sent_ns,
                             int full_crc) {
    *sent_ns = 0;
    *seq = want;
    size_t from = 0;
    if (n >= 24) {
        *seq = feed_le64(p);
        *sent_ns = feed_le64(p + 8);
        if (feed_le32(p + 16) != (uint32_t)n) return FEED_BAD;
        if (full_crc && feed_crc32(p + 24, n - 24) != feed_le32(p + 20)) return FEED_BAD;
        from = 24;
    }
    for (size_t i = from; i < n; i += (full_crc ? 1 : 61)) /* sample the pattern when not checking fully */
        if (p[i] != (uint8_t)((*seq * 131u + i) & 0xFFu)) return FEED_BAD;
    if (*seq > want) return FEED_GAP;
    if (*seq < want) return FEED_BAD;
    return FEED_OK;
}
#endif

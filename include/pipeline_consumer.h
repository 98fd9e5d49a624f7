/*
 * pipeline_consumer.h — header-only reader of a running libpipeline's frames.
 *
 * Another process uses this to become a pipeline's AppClient: it attaches to the
 * shared memory of pipeline NAME (/dev/shm/pipeline_NAME/) and reads each WebSocket
 * frame's payload in place, with no link to libpipeline. Start the pipeline with an
 * external consumer (`PlConfig.external_consumer = true` / `--external-consumer`) so
 * that no built-in AppClient competes for the same ring.
 *
 *   plc_consumer c;
 *   if (plc_open(&c, "feed") != PLC_OK) { fprintf(stderr, "%s\n", c.error); ... }
 *   plc_frame f;
 *   for (;;) {
 *       int r = plc_next(&c, &f);
 *       if (r == PLC_EMPTY) continue;          // or back off
 *       if (r < 0) { fprintf(stderr, "%s\n", c.error); break; }   // e.g. PLC_ERR_OVERRUN
 *       handle(f.payload, f.len, f.opcode);    // payload points into shared memory
 *                                              // (opcode 1 text, 2 binary, 0 continuation:
 *                                              //  control frames are skipped by plc_next)
 *       plc_release(&c, &f);                   // the pipeline may now reuse those bytes
 *   }
 *   plc_close(&c);
 *
 * Layout contract (must match src/shm/region.rs and the files in src/ring/; the layout version
 * below is checked on open and a mismatch is refused):
 *   - every region file: a 4096-byte header page starting with plc_region_header, the
 *     ring indices at byte 256 of that page (each on its own 128-byte block), then the
 *     payload;
 *   - ws_frame_info.shm: an SPSC ring of 16-byte frame infos; head (producer) at
 *     ctl+0, tail (consumer) at ctl+128; positions are 64-bit and only grow;
 *   - msg_inbox.shm: a byte ring mapped twice back to back here too, so any payload is
 *     one contiguous range; write_pos at ctl+0, release (read) position at ctl+128,
 *     dirty flag (u32) at ctl+384, overrun byte count at ctl+392.
 *
 * Compiles as C11 and C++17 (GCC/Clang atomics builtins), POSIX only.
 */
#ifndef PIPELINE_CONSUMER_H
#define PIPELINE_CONSUMER_H

/* pread, MAP_ANONYMOUS, O_CLOEXEC are POSIX/BSD, not ISO C: ask for them when the
 * includer has not chosen a feature set (include this header first in strict -std=c11). */
#if !defined(_DEFAULT_SOURCE) && !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PLC_REGION_MAGIC 0x3130455049504c50ULL /* "PLPIPE01" little-endian */
#define PLC_LAYOUT_VERSION 1u
#define PLC_HEADER_BYTES 4096u
#define PLC_CTL_OFFSET 256u
#define PLC_KIND_ELEM_RING 2u
#define PLC_KIND_BYTE_RING 3u

/* plc_next() results */
#define PLC_OK 0
#define PLC_EMPTY 1
#define PLC_ERR_OPEN (-1)    /* a file is missing or cannot be mapped (see error) */
#define PLC_ERR_LAYOUT (-2)  /* not a pipeline region, or another layout version */
#define PLC_ERR_OVERRUN (-3) /* the pipeline overwrote data this consumer had not read */

/* WebSocket opcodes as delivered */
#define PLC_OPCODE_TEXT 0x1u
#define PLC_OPCODE_BINARY 0x2u

typedef struct plc_region_header {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t kind;
    uint32_t header_bytes;
    uint32_t elem_size;
    uint64_t capacity;
    uint64_t payload_bytes;
    uint32_t creator_pid;
    uint32_t reserved;
} plc_region_header;

/* One entry of WS_FRAME_INFO_RING (16 bytes). */
typedef struct plc_frame_info {
    uint32_t msg_inbox_offset; /* low 32 bits of the payload's stream position */
    uint32_t payload_len;
    uint64_t meta; /* 0..48 parse stamp, 48..56 opcode, 56 is_final, 57.. flags */
} plc_frame_info;

#define PLC_FLAG_MESSAGE 1u
#define PLC_FLAG_OVERRUN 2u

/* A frame handed to the reader. */
typedef struct plc_frame {
    const uint8_t *payload; /* in shared memory; valid until plc_release */
    uint32_t len;
    uint8_t opcode;
    uint8_t is_final;
    uint8_t flags;
    uint64_t stream_pos; /* 64-bit MSG_INBOX position of the payload */
    uint64_t parse_stamp;
} plc_frame;

typedef struct plc_consumer {
    uint8_t *ring_map;   /* ws_frame_info.shm */
    size_t ring_len;
    uint64_t ring_cap;
    uint8_t *inbox_map;  /* msg_inbox.shm, mirror-mapped */
    size_t inbox_len;
    uint64_t inbox_cap;
    uint64_t tail;        /* next frame position */
    uint64_t cached_head;
    uint64_t inbox_pos;   /* our idea of the released MSG_INBOX position */
    char error[1024];
} plc_consumer;

static inline uint64_t *plc__ctl64(uint8_t *map, size_t off) {
    return (uint64_t *)(void *)(map + PLC_CTL_OFFSET + off);
}

static inline void plc__path(char *out, size_t len, const char *name, const char *file) {
    const char *root = getenv("PIPELINE_SHM_ROOT");
    snprintf(out, len, "%s/pipeline_%s/%s", root ? root : "/dev/shm", name, file);
}

/* Open and check one region; for a byte ring, map its payload twice. */
static inline int plc__map(plc_consumer *c, const char *name, const char *file, uint32_t kind,
                           uint32_t elem_size, uint8_t **map_out, size_t *len_out, uint64_t *cap_out) {
    char path[512];
    struct stat st;
    plc_region_header h;
    plc__path(path, sizeof path, name, file);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(c->error, sizeof c->error, "open %s: %s (is pipeline \"%s\" running?)", path, strerror(errno), name);
        return PLC_ERR_OPEN;
    }
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < PLC_HEADER_BYTES || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        snprintf(c->error, sizeof c->error, "%s: too small or unreadable: not a pipeline region", path);
        close(fd);
        return PLC_ERR_LAYOUT;
    }
    if (h.magic != PLC_REGION_MAGIC) {
        snprintf(c->error, sizeof c->error, "%s: bad magic: not a pipeline region (or still being created)", path);
        close(fd);
        return PLC_ERR_LAYOUT;
    }
    if (h.layout_version != PLC_LAYOUT_VERSION) {
        snprintf(c->error, sizeof c->error, "%s: layout version %u, this header knows version %u: refusing to read it",
                 path, h.layout_version, PLC_LAYOUT_VERSION);
        close(fd);
        return PLC_ERR_LAYOUT;
    }
    if (h.kind != kind || h.elem_size != elem_size || h.header_bytes != PLC_HEADER_BYTES ||
        h.payload_bytes + PLC_HEADER_BYTES != (uint64_t)st.st_size || h.capacity == 0 ||
        (h.capacity & (h.capacity - 1)) != 0) {
        snprintf(c->error, sizeof c->error, "%s: unexpected region kind %u / element size %u / size", path, h.kind,
                 h.elem_size);
        close(fd);
        return PLC_ERR_LAYOUT;
    }
    size_t first = (size_t)st.st_size;
    size_t total = kind == PLC_KIND_BYTE_RING ? first + (size_t)h.payload_bytes : first;
    void *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        snprintf(c->error, sizeof c->error, "reserve %zu bytes for %s: %s", total, path, strerror(errno));
        close(fd);
        return PLC_ERR_OPEN;
    }
    int ok = mmap(base, first, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != MAP_FAILED;
    if (ok && kind == PLC_KIND_BYTE_RING)
        ok = mmap((uint8_t *)base + first, (size_t)h.payload_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                  (off_t)PLC_HEADER_BYTES) != MAP_FAILED;
    close(fd);
    if (!ok) {
        snprintf(c->error, sizeof c->error, "map %s: %s", path, strerror(errno));
        munmap(base, total);
        return PLC_ERR_OPEN;
    }
    *map_out = (uint8_t *)base;
    *len_out = total;
    *cap_out = h.capacity;
    return PLC_OK;
}

static inline void plc_close(plc_consumer *c) {
    if (c->ring_map) munmap(c->ring_map, c->ring_len);
    if (c->inbox_map) munmap(c->inbox_map, c->inbox_len);
    c->ring_map = NULL;
    c->inbox_map = NULL;
}

/* Attach to pipeline `name`. Continues from where the previous consumer stopped (the
 * stored positions), never replaying old frames. On failure c->error says why. */
static inline int plc_open(plc_consumer *c, const char *name) {
    memset(c, 0, sizeof *c);
    int r = plc__map(c, name, "ws_frame_info.shm", PLC_KIND_ELEM_RING, (uint32_t)sizeof(plc_frame_info), &c->ring_map,
                     &c->ring_len, &c->ring_cap);
    if (r == PLC_OK)
        r = plc__map(c, name, "msg_inbox.shm", PLC_KIND_BYTE_RING, 1, &c->inbox_map, &c->inbox_len, &c->inbox_cap);
    if (r != PLC_OK) {
        char keep[sizeof c->error];
        memcpy(keep, c->error, sizeof keep);
        plc_close(c);
        memcpy(c->error, keep, sizeof keep);
        return r;
    }
    c->tail = __atomic_load_n(plc__ctl64(c->ring_map, 128), __ATOMIC_ACQUIRE);
    c->cached_head = __atomic_load_n(plc__ctl64(c->ring_map, 0), __ATOMIC_ACQUIRE);
    c->inbox_pos = __atomic_load_n(plc__ctl64(c->inbox_map, 128), __ATOMIC_ACQUIRE);
    return PLC_OK;
}

static inline int plc__next_entry(plc_consumer *c, plc_frame *out);
static inline void plc_release(plc_consumer *c, const plc_frame *f);

/* Has the pipeline overwritten bytes at or after MSG_INBOX position `pos`? */
static inline int plc__overrun_since(const plc_consumer *c, uint64_t pos) {
    uint64_t w = __atomic_load_n(plc__ctl64(c->inbox_map, 0), __ATOMIC_ACQUIRE);
    return w > pos && w - pos > c->inbox_cap;
}

/* The next data frame: PLC_OK (filled *out), PLC_EMPTY, or PLC_ERR_OVERRUN.
 * WS_FRAME_INFO also carries release-only entries for control frames (opcode >= 0x8:
 * close, ping, pong; the pipeline answers them itself): plc_next skips them, releasing
 * their bytes, so a reader only ever sees text (1), binary (2) or continuation (0). */
static inline int plc_next(plc_consumer *c, plc_frame *out) {
    for (;;) {
        int r = plc__next_entry(c, out);
        if (r != PLC_OK || out->opcode < 0x8u) return r;
        plc_release(c, out);
    }
}

/* One WS_FRAME_INFO entry, control frames included. */
static inline int plc__next_entry(plc_consumer *c, plc_frame *out) {
    if (c->tail == c->cached_head) {
        c->cached_head = __atomic_load_n(plc__ctl64(c->ring_map, 0), __ATOMIC_ACQUIRE);
        if (c->tail == c->cached_head) return PLC_EMPTY;
    }
    const plc_frame_info *fi =
        (const plc_frame_info *)(const void *)(c->ring_map + PLC_HEADER_BYTES) + (c->tail & (c->ring_cap - 1));
    /* 32-bit offset back to a 64-bit position near the last one we released. */
    uint64_t pos = c->inbox_pos + (uint64_t)(int64_t)(int32_t)(fi->msg_inbox_offset - (uint32_t)c->inbox_pos);
    uint8_t flags = (uint8_t)(fi->meta >> 57);
    if ((flags & PLC_FLAG_OVERRUN) || plc__overrun_since(c, pos)) {
        snprintf(c->error, sizeof c->error,
                 "overrun: the pipeline overwrote MSG_INBOX data this consumer had not read (consumer too slow)");
        return PLC_ERR_OVERRUN;
    }
    out->payload = c->inbox_map + PLC_HEADER_BYTES + (pos & (c->inbox_cap - 1));
    out->len = fi->payload_len;
    out->opcode = (uint8_t)(fi->meta >> 48);
    out->is_final = (uint8_t)((fi->meta >> 56) & 1u);
    out->flags = flags;
    out->stream_pos = pos;
    out->parse_stamp = fi->meta & ((1ULL << 48) - 1);
    return PLC_OK;
}

/* After reading a payload in overwrite mode: was it intact the whole time? */
static inline int plc_payload_intact(const plc_consumer *c, const plc_frame *f) {
    return !plc__overrun_since(c, f->stream_pos);
}

/* Done with the frame returned by the last plc_next: free its slot and its bytes. */
static inline void plc_release(plc_consumer *c, const plc_frame *f) {
    c->tail += 1;
    c->inbox_pos = f->stream_pos + f->len;
    __atomic_store_n(plc__ctl64(c->inbox_map, 128), c->inbox_pos, __ATOMIC_RELEASE);
    __atomic_store_n(plc__ctl64(c->ring_map, 128), c->tail, __ATOMIC_RELEASE);
}

#ifdef __cplusplus
}
#endif

#endif /* PIPELINE_CONSUMER_H */

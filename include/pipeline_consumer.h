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
 *       if (r == PLC_END) break;               // disconnected and every frame read
 *       if (r < 0) { fprintf(stderr, "%s\n", c.error); break; }   // e.g. PLC_ERR_OVERRUN
 *       handle(f.payload, f.len, f.opcode);    // payload points into shared memory
 *                                              // (opcode 1 text, 2 binary, 0 continuation:
 *                                              //  control frames are skipped by plc_next)
 *       plc_release(&c, &f);                   // the pipeline may now reuse those bytes
 *   }
 *   plc_close(&c);
 *
 * One reader per pipeline: plc_open claims the ring for this process (its pid in the
 * ring's control area) and refuses a second reader with PLC_ERR_BUSY, naming the
 * process that reads it (another plc reader, or the pipeline's own in-process consumer
 * when it was not started with an external consumer). A claim whose process is gone
 * (it exited or was killed without plc_close) is taken over: the new reader continues
 * from the last released frame, so frames the dead one took but did not release come
 * again. Readers must share a PID namespace with each other and the pipeline.
 *
 * Layout contract (must match src/shm/region.rs and the files in src/ring/; the layout version
 * below is checked on open and a mismatch is refused):
 *   - every region file: a 4096-byte header page starting with plc_region_header, the
 *     ring indices at byte 256 of that page (each on its own 128-byte block), then the
 *     payload;
 *   - ws_frame_info.shm: an SPSC ring of 32-byte frame infos; head (producer) at
 *     ctl+0, tail (consumer) at ctl+128; positions are 64-bit and only grow;
 *   - msg_inbox.shm: a byte ring mapped twice back to back here too, so any payload is
 *     one contiguous range; write_pos at ctl+0, release (read) position at ctl+128,
 *     dirty flag (u32) at ctl+384, overrun byte count at ctl+392.
 *   - ws_frame_info.shm's ctl+256: the reader claim (u32 pid, 0 free).
 *   - stats.shm (optional here: without it plc_state is PLC_STATE_UNKNOWN and plc_next
 *     never says PLC_END): slots of 64 bytes, a NUL-padded name in the first 56 and the
 *     u64 value in the last 8; the slots named "state" and "reconnects" give the state.
 *
 * Trust (see docs/architecture.md, "Shared memory"): the directory and both files are
 * opened O_NOFOLLOW (the files relative to the directory's descriptor) and must be a
 * real directory / regular files owned by the uid this process runs as, or by root,
 * with no group or other write bit: anything else is refused with PLC_ERR_OWNER, since
 * another local user could have planted it. Nothing read from shared memory is trusted
 * to stay in bounds: plc_open checks every header field against the file's real size
 * (PLC_ERR_LAYOUT), and plc_next checks each frame's position and length against the
 * inbox capacity and what the producer has written (PLC_ERR_CORRUPT) before handing
 * out a pointer.
 *
 * Compiles as C11 and C++17 (GCC/Clang atomics builtins), POSIX only.
 */
#ifndef WSPIPE_PIPELINE_CONSUMER_H
#define WSPIPE_PIPELINE_CONSUMER_H

/* pread, MAP_ANONYMOUS, O_CLOEXEC are POSIX/BSD, not ISO C: ask for them when the
 * includer has not chosen a feature set (include this header first in strict -std=c11). */
#if !defined(_DEFAULT_SOURCE) && !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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
#define PLC_KIND_STATS 5u
#define PLC_STATS_SLOT 64u
#define PLC_CLAIM_OFF 256u

/* plc_next() results */
#define PLC_OK 0
#define PLC_EMPTY 1
#define PLC_END 2            /* the pipeline is disconnected and every frame was read */
#define PLC_ERR_OPEN (-1)    /* a file is missing or cannot be mapped (see error) */
#define PLC_ERR_LAYOUT (-2)  /* not a pipeline region, or another layout version */
#define PLC_ERR_OVERRUN (-3) /* the pipeline overwrote data this consumer had not read */
#define PLC_ERR_OWNER (-4)   /* directory or file is a symlink, another user's, or writable by others */
#define PLC_ERR_CORRUPT (-5) /* a ring entry points outside what the pipeline wrote: corrupt memory */
#define PLC_ERR_BUSY (-6)    /* plc_open: another live process reads this pipeline (see error) */

/* plc_state() results: PlState's values (pipeline.h), and UNKNOWN without stats.shm */
#define PLC_STATE_UNKNOWN (-1)
#define PLC_STATE_CONNECTING 0
#define PLC_STATE_CONNECTED 1
#define PLC_STATE_CLOSING 2
#define PLC_STATE_DISCONNECTED 3
#define PLC_STATE_RECONNECTING 4

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

/* One entry of WS_FRAME_INFO_RING (32 bytes; a pipeline with the older 16-byte entries
 * is refused at plc_open: the element size is checked). Stamps are CLOCK_MONOTONIC ns. */
typedef struct plc_frame_info {
    uint32_t msg_inbox_offset; /* low 32 bits of the payload's stream position */
    uint32_t payload_len;
    uint64_t meta; /* 0..48 parse stamp (low bits), 48..56 opcode, 56 is_final, 57.. flags */
    uint64_t arrival_ns;   /* the packet completing the frame arrived (0: unknown) */
    uint64_t decrypted_ns; /* its plaintext was committed to MSG_INBOX (0: unknown) */
} plc_frame_info;

#define PLC_FLAG_MESSAGE 1u
#define PLC_FLAG_OVERRUN 2u
/* The first data entry of a new connection after a reconnect (a message the disconnect
 * cut was not delivered). plc_next passes over the generation boundary entry (opcode
 * 0xF, release-only) like over control frames. */
#define PLC_FLAG_RECONNECT 4u

/* A frame handed to the reader. */
typedef struct plc_frame {
    const uint8_t *payload; /* in shared memory; valid until plc_release */
    uint32_t len;
    uint8_t opcode;
    uint8_t is_final;
    uint8_t flags;
    uint64_t stream_pos; /* 64-bit MSG_INBOX position of the payload */
    uint64_t parse_stamp;  /* CLOCK_MONOTONIC ns the WebSocket stage published it (full 64 bits) */
    uint64_t arrival_ns;   /* CLOCK_MONOTONIC ns the packet completing it arrived (0: unknown) */
    uint64_t decrypted_ns; /* CLOCK_MONOTONIC ns its plaintext was in MSG_INBOX (0: unknown) */
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
    uint8_t *stats_map;   /* stats.shm, or NULL */
    size_t stats_len;
    const uint64_t *state_word;      /* the "state" slot's value */
    const uint64_t *reconnects_word; /* the "reconnects" slot's value */
    uint32_t claimed;     /* our pid while we hold the reader claim, else 0 */
} plc_consumer;

static inline uint64_t *plc__ctl64(uint8_t *map, size_t off) {
    return (uint64_t *)(void *)(map + PLC_CTL_OFFSET + off);
}

/* "ROOT/pipeline_NAME" (ROOT: $PIPELINE_SHM_ROOT or /dev/shm); 0 if it does not fit. */
static inline int plc__dir_path(char *out, size_t len, const char *name) {
    const char *root = getenv("PIPELINE_SHM_ROOT");
    int n = snprintf(out, len, "%s/pipeline_%s", root ? root : "/dev/shm", name);
    return n > 0 && (size_t)n < len;
}

/* A pipeline name is one path component of [A-Za-z0-9_.-], 1-64 long, no leading '.'
 * (as the library's own check): no "../" can lead the consumer elsewhere. */
static inline int plc__name_ok(const char *name) {
    size_t n = 0;
    if (!name || name[0] == '.') return 0;
    for (; name[n]; n++) {
        char ch = name[n];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                 ch == '-' || ch == '.';
        if (!ok || n >= 64) return 0;
    }
    return n > 0;
}

/* Is what `st` describes (opened O_NOFOLLOW) something we may read? A directory or a
 * regular file as asked, owned by our uid or root, no group/other write bit. */
static inline int plc__trusted(plc_consumer *c, const struct stat *st, const char *path, int want_dir) {
    uid_t me = geteuid();
    if (want_dir ? !S_ISDIR(st->st_mode) : !S_ISREG(st->st_mode)) {
        snprintf(c->error, sizeof c->error, "%s is not a %s: not a pipeline's; remove it", path,
                 want_dir ? "directory" : "regular file");
        return PLC_ERR_OWNER;
    }
    if (st->st_uid != me && st->st_uid != 0) {
        snprintf(c->error, sizeof c->error,
                 "%s is owned by uid %u, not by uid %u that runs this consumer (nor root): another local user may "
                 "have planted it; refusing to read it",
                 path, (unsigned)st->st_uid, (unsigned)me);
        return PLC_ERR_OWNER;
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(c->error, sizeof c->error,
                 "%s has mode %04o: writable by group or others, so its contents cannot be trusted; restart the "
                 "pipeline (it creates its directory 0700 and files 0600)",
                 path, (unsigned)(st->st_mode & 07777));
        return PLC_ERR_OWNER;
    }
    return PLC_OK;
}

/* Say why opening `path` failed: a symlink (O_NOFOLLOW) is an ownership refusal. */
static inline int plc__open_error(plc_consumer *c, const char *path, const char *name, int err) {
    struct stat ls;
    if (err == ELOOP || (lstat(path, &ls) == 0 && S_ISLNK(ls.st_mode))) {
        snprintf(c->error, sizeof c->error,
                 "%s is a symbolic link: a pipeline's directory and files are never links (another local user may "
                 "have planted it); refusing to follow it",
                 path);
        return PLC_ERR_OWNER;
    }
    snprintf(c->error, sizeof c->error, "open %s: %s (is pipeline \"%s\" running?)", path, strerror(err), name);
    return PLC_ERR_OPEN;
}

/* Open and check one region of the directory open as `dfd`; for a byte ring, map its
 * payload twice. Every header field is checked against the file's real size before
 * anything is mapped or indexed. */
static inline int plc__map(plc_consumer *c, int dfd, const char *dir, const char *name, const char *file,
                           uint32_t kind, uint32_t elem_size, uint8_t **map_out, size_t *len_out, uint64_t *cap_out) {
    char path[600];
    struct stat st;
    plc_region_header h;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = openat(dfd, file, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return plc__open_error(c, path, name, errno);
    if (fstat(fd, &st) != 0) {
        snprintf(c->error, sizeof c->error, "stat %s: %s", path, strerror(errno));
        close(fd);
        return PLC_ERR_OPEN;
    }
    int r = plc__trusted(c, &st, path, 0);
    if (r != PLC_OK) {
        close(fd);
        return r;
    }
    /* The mirror reserves header + 2 * payload: keep that far from overflowing size_t. */
    if (st.st_size < (off_t)PLC_HEADER_BYTES || (uint64_t)st.st_size > (uint64_t)(SIZE_MAX / 4) ||
        pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        snprintf(c->error, sizeof c->error, "%s: %lld bytes, too small, too large or unreadable: not a pipeline region",
                 path, (long long)st.st_size);
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
    uint64_t payload = (uint64_t)st.st_size - PLC_HEADER_BYTES;
    if (h.kind != kind || h.elem_size != elem_size || h.header_bytes != PLC_HEADER_BYTES || h.payload_bytes != payload) {
        snprintf(c->error, sizeof c->error,
                 "%s: unexpected region kind %u / element size %u / header %u + payload %llu bytes (the file has "
                 "%llu after the header)",
                 path, h.kind, h.elem_size, h.header_bytes, (unsigned long long)h.payload_bytes,
                 (unsigned long long)payload);
        close(fd);
        return PLC_ERR_LAYOUT;
    }
    /* The capacity is what every position is masked with: it must be a power of two and
     * its slots must be exactly the payload (division first: cap * size can overflow).
     * A byte ring's payload must also be whole pages, or the mirror cannot be mapped. */
    long page = sysconf(_SC_PAGESIZE);
    int cap_ok = h.capacity != 0 && (h.capacity & (h.capacity - 1)) == 0 && h.capacity <= payload / elem_size &&
                 h.capacity * elem_size == payload;
    if (cap_ok && kind == PLC_KIND_BYTE_RING) cap_ok = page > 0 && payload % (uint64_t)page == 0;
    /* The stats region: `capacity` counter slots, then its text area, in the payload. */
    if (kind == PLC_KIND_STATS) cap_ok = h.capacity != 0 && h.capacity <= payload / elem_size;
    if (!cap_ok) {
        snprintf(c->error, sizeof c->error,
                 "%s: capacity %llu of %u-byte entries does not fit the %llu-byte payload (or is not a power of two)",
                 path, (unsigned long long)h.capacity, elem_size, (unsigned long long)payload);
        close(fd);
        return PLC_ERR_LAYOUT;
    }
    size_t first = (size_t)st.st_size;
    size_t total = kind == PLC_KIND_BYTE_RING ? first + (size_t)payload : first;
    void *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        snprintf(c->error, sizeof c->error, "reserve %zu bytes for %s: %s", total, path, strerror(errno));
        close(fd);
        return PLC_ERR_OPEN;
    }
    int ok = mmap(base, first, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != MAP_FAILED;
    if (ok && kind == PLC_KIND_BYTE_RING)
        ok = mmap((uint8_t *)base + first, (size_t)payload, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
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

static inline uint32_t *plc__claim(plc_consumer *c) {
    return (uint32_t *)(void *)(c->ring_map + PLC_CTL_OFFSET + PLC_CLAIM_OFF);
}

static inline void plc_close(plc_consumer *c) {
    if (c->claimed) {
        uint32_t me = c->claimed;
        __atomic_compare_exchange_n(plc__claim(c), &me, 0u, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
        c->claimed = 0;
    }
    if (c->ring_map) munmap(c->ring_map, c->ring_len);
    if (c->inbox_map) munmap(c->inbox_map, c->inbox_len);
    if (c->stats_map) munmap(c->stats_map, c->stats_len);
    c->ring_map = NULL;
    c->inbox_map = NULL;
    c->stats_map = NULL;
    c->state_word = NULL;
    c->reconnects_word = NULL;
}

/* Claim the ring for this process, or say who reads it (PLC_ERR_BUSY). A claim whose
 * process no longer exists is taken over. Before the positions are read: the previous
 * reader's last releases are then visible (its release stores precede its exit). */
static inline int plc__claim_reader(plc_consumer *c, const char *name) {
    uint32_t me = (uint32_t)getpid();
    uint32_t *w = plc__claim(c);
    for (;;) {
        uint32_t cur = __atomic_load_n(w, __ATOMIC_ACQUIRE);
        if (cur != 0) {
            /* Not a pid (above any pid_max; as a pid_t it would name a process group):
             * a corrupt word, not a reader. */
            int alive = cur <= 0x3fffffffu && (cur == me || kill((pid_t)cur, 0) == 0 || errno == EPERM);
            if (alive) {
                snprintf(c->error, sizeof c->error,
                         "pipeline \"%s\" already has a reader: process %u%s (one reader per pipeline: plc_close "
                         "the other one, or start the pipeline with an external consumer if it is its own)",
                         name, (unsigned)cur, cur == me ? " (this one)" : "");
                return PLC_ERR_BUSY;
            }
        }
        if (__atomic_compare_exchange_n(w, &cur, me, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) break;
    }
    c->claimed = me;
    return PLC_OK;
}

/* Map stats.shm if there is one and find the state words by name (the slot order is
 * the library's business). Missing: PLC_OK with no state; present but bad: refused. */
static inline int plc__map_stats(plc_consumer *c, int dfd, const char *dir, const char *name) {
    uint64_t cap = 0;
    if (faccessat(dfd, "stats.shm", F_OK, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) return PLC_OK;
    int r = plc__map(c, dfd, dir, name, "stats.shm", PLC_KIND_STATS, PLC_STATS_SLOT, &c->stats_map, &c->stats_len,
                     &cap);
    if (r != PLC_OK) return r;
    for (uint64_t i = 0; i < cap; i++) {
        const uint8_t *slot = c->stats_map + PLC_HEADER_BYTES + i * PLC_STATS_SLOT;
        const uint64_t *value = (const uint64_t *)(const void *)(slot + PLC_STATS_SLOT - 8);
        if (memcmp(slot, "state\0", 6) == 0) c->state_word = value;
        if (memcmp(slot, "reconnects\0", 11) == 0) c->reconnects_word = value;
    }
    return PLC_OK;
}

/* The pipeline's state: PLC_STATE_CONNECTING, _CONNECTED, _CLOSING, _DISCONNECTED (the
 * stream is over; plc_next says PLC_END once the rest is read), _RECONNECTING (a lost
 * connection being made again), or PLC_STATE_UNKNOWN without a stats region. */
static inline int plc_state(const plc_consumer *c) {
    if (!c->state_word) return PLC_STATE_UNKNOWN;
    uint64_t s = __atomic_load_n(c->state_word, __ATOMIC_ACQUIRE);
    if (s == 0 && c->reconnects_word && __atomic_load_n(c->reconnects_word, __ATOMIC_RELAXED) != 0)
        return PLC_STATE_RECONNECTING;
    return s <= 3 ? (int)s : PLC_STATE_DISCONNECTED;
}

/* Attach to pipeline `name` and claim it (PLC_ERR_BUSY if another live process reads
 * it). Continues from where the previous consumer stopped (the stored positions), never
 * replaying old frames. On failure c->error says why. */
static inline int plc_open(plc_consumer *c, const char *name) {
    char dir[512];
    struct stat st;
    memset(c, 0, sizeof *c);
    if (!plc__name_ok(name)) {
        snprintf(c->error, sizeof c->error, "pipeline name \"%s\" must be 1-64 characters of [A-Za-z0-9_.-], not "
                 "starting with '.'", name ? name : "(null)");
        return PLC_ERR_OPEN;
    }
    if (!plc__dir_path(dir, sizeof dir, name)) {
        snprintf(c->error, sizeof c->error, "shared-memory path for \"%s\" is too long", name);
        return PLC_ERR_OPEN;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return plc__open_error(c, dir, name, errno);
    int r = fstat(dfd, &st) == 0 ? plc__trusted(c, &st, dir, 1) : PLC_ERR_OPEN;
    if (r == PLC_ERR_OPEN) snprintf(c->error, sizeof c->error, "stat %s: %s", dir, strerror(errno));
    if (r == PLC_OK)
        r = plc__map(c, dfd, dir, name, "ws_frame_info.shm", PLC_KIND_ELEM_RING, (uint32_t)sizeof(plc_frame_info),
                     &c->ring_map, &c->ring_len, &c->ring_cap);
    if (r == PLC_OK)
        r = plc__map(c, dfd, dir, name, "msg_inbox.shm", PLC_KIND_BYTE_RING, 1, &c->inbox_map, &c->inbox_len,
                     &c->inbox_cap);
    if (r == PLC_OK) r = plc__map_stats(c, dfd, dir, name);
    close(dfd);
    if (r == PLC_OK) r = plc__claim_reader(c, name);
    if (r != PLC_OK) {
        char keep[sizeof c->error];
        memcpy(keep, c->error, sizeof keep);
        plc_close(c);
        memcpy(c->error, keep, sizeof keep);
        return r;
    }
    c->tail = __atomic_load_n(plc__ctl64(c->ring_map, 128), __ATOMIC_ACQUIRE);
    /* The producer's position is loaded (and checked) by the first plc_next. */
    c->cached_head = c->tail;
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

/* The next data frame: PLC_OK (filled *out), PLC_EMPTY, PLC_END (the pipeline is
 * disconnected and every frame was read: nothing more will come; the same rule as
 * pl_poll's PL_ERR_CLOSED), PLC_ERR_OVERRUN, or PLC_ERR_CORRUPT (the rings hold
 * something the pipeline cannot have written: stop).
 * WS_FRAME_INFO also carries release-only entries for control frames (opcode >= 0x8:
 * close, ping, pong; the pipeline answers them itself): plc_next skips them, releasing
 * their bytes, so a reader only ever sees text (1), binary (2) or continuation (0). */
static inline int plc_next(plc_consumer *c, plc_frame *out) {
    for (;;) {
        /* The state before the look at the ring: Disconnected then, and nothing in the
         * ring now, means drained (what was published before the state moved is seen). */
        int ended = plc_state(c) == PLC_STATE_DISCONNECTED;
        int r = plc__next_entry(c, out);
        if (r == PLC_EMPTY && ended) return PLC_END;
        if (r != PLC_OK || out->opcode < 0x8u) return r;
        plc_release(c, out);
    }
}

/* One WS_FRAME_INFO entry, control frames included. Nothing in shared memory is
 * trusted: the producer position must be within one ring of ours, and the payload must
 * lie within what the producer has written and within the inbox capacity (so the
 * pointer handed out stays inside the mirrored mapping). A bad entry is not consumed:
 * every later call reports it again. */
static inline int plc__next_entry(plc_consumer *c, plc_frame *out) {
    if (c->tail == c->cached_head) {
        uint64_t head = __atomic_load_n(plc__ctl64(c->ring_map, 0), __ATOMIC_ACQUIRE);
        if (head - c->tail > c->ring_cap) { /* unsigned: also catches head < tail */
            snprintf(c->error, sizeof c->error,
                     "corrupt shared memory: WS_FRAME_INFO producer position %llu is not within %llu entries after "
                     "the consumer's %llu",
                     (unsigned long long)head, (unsigned long long)c->ring_cap, (unsigned long long)c->tail);
            return PLC_ERR_CORRUPT;
        }
        c->cached_head = head;
        if (c->tail == head) return PLC_EMPTY;
    }
    plc_frame_info *slot = (plc_frame_info *)(void *)(c->ring_map + PLC_HEADER_BYTES) + (c->tail & (c->ring_cap - 1));
    /* Each field loaded once: what is checked below is what is used. */
    uint32_t off32 = __atomic_load_n(&slot->msg_inbox_offset, __ATOMIC_RELAXED);
    uint32_t len = __atomic_load_n(&slot->payload_len, __ATOMIC_RELAXED);
    uint64_t meta = __atomic_load_n(&slot->meta, __ATOMIC_RELAXED);
    uint64_t arrival = __atomic_load_n(&slot->arrival_ns, __ATOMIC_RELAXED);
    uint64_t decrypted = __atomic_load_n(&slot->decrypted_ns, __ATOMIC_RELAXED);
    /* 32-bit offset back to a 64-bit position near the last one we released. */
    uint64_t pos = c->inbox_pos + (uint64_t)(int64_t)(int32_t)(off32 - (uint32_t)c->inbox_pos);
    uint8_t flags = (uint8_t)(meta >> 57);
    uint64_t written = __atomic_load_n(plc__ctl64(c->inbox_map, 0), __ATOMIC_ACQUIRE);
    if ((flags & PLC_FLAG_OVERRUN) || (written > pos && written - pos > c->inbox_cap)) {
        snprintf(c->error, sizeof c->error,
                 "overrun: the pipeline overwrote MSG_INBOX data this consumer had not read (consumer too slow)");
        return PLC_ERR_OVERRUN;
    }
    if (len > c->inbox_cap || pos > written || written - pos < len) {
        snprintf(c->error, sizeof c->error,
                 "corrupt shared memory: frame %llu's payload [%llu, +%u) is not within what the pipeline has "
                 "written (write position %llu, inbox capacity %llu)",
                 (unsigned long long)c->tail, (unsigned long long)pos, len, (unsigned long long)written,
                 (unsigned long long)c->inbox_cap);
        return PLC_ERR_CORRUPT;
    }
    out->payload = c->inbox_map + PLC_HEADER_BYTES + (pos & (c->inbox_cap - 1));
    out->len = len;
    out->opcode = (uint8_t)(meta >> 48);
    out->is_final = (uint8_t)((meta >> 56) & 1u);
    out->flags = flags;
    out->stream_pos = pos;
    /* The parse stamp's 48 bits placed at or after the arrival (never 2^48 ns later). */
    {
        uint64_t low = meta & ((1ULL << 48) - 1), base = arrival ? arrival : decrypted;
        uint64_t t = (base & ~((1ULL << 48) - 1)) | low;
        if (t < base) t += 1ULL << 48;
        out->parse_stamp = (low == 0 && base == 0) ? 0 : t;
    }
    out->arrival_ns = arrival;
    out->decrypted_ns = decrypted;
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

/* ---- Merged feeds (docs/consumers.md, "A merged feed") ----------------------------
 * A feed started with Feed::start_published / `pipeline feed --external-consumer`
 * publishes its merged stream under its own name: plc_open(c, "<feed>") as for a
 * pipeline. Besides the frames, its WS_FRAME_INFO carries event entries (opcode 0xE,
 * payload one plc_feed_event). plc_next passes over them like control frames;
 * plc_next_feed returns them. */

#define PLC_OPCODE_FEED_EVENT 0xEu
/* plc_next_feed: *ev holds an event (the entry is already released). */
#define PLC_FEED_EVENT 2

/* plc_feed_event.kind (the values of PlFeedItemKind in pipeline.h). */
#define PLC_FEED_GAP 2u              /* sequences seq..=to of `stream` came from no leg */
#define PLC_FEED_LEG_UP 3u           /* leg `leg` connected; generation 0 is its first */
#define PLC_FEED_LEG_DOWN 4u         /* leg `leg` lost: cause (a PL_DISCONNECT_* kind), generation = attempt (0: gone) */
#define PLC_FEED_ROTATION_STARTED 5u /* leg `leg` is being opened to replace `old_leg` */
#define PLC_FEED_ROTATION_DONE 6u    /* leg `leg` replaced `old_leg` (flags & PLC_FEED_IN_STEP unless forced) */
#define PLC_FEED_ROTATION_ABORTED 7u /* the new leg `leg` failed; `old_leg` carries on */
#define PLC_FEED_IN_STEP 4u

/* One event of a merged feed: 48 bytes, little-endian, as the feed writes it. */
typedef struct plc_feed_event {
    uint32_t kind;
    uint32_t leg;
    uint32_t old_leg;
    uint32_t stream;
    uint64_t seq; /* gaps: the first missing sequence */
    uint64_t to;  /* gaps: the last missing sequence */
    uint64_t generation;
    uint32_t cause;
    uint32_t flags;
} plc_feed_event;
typedef char plc__feed_event_is_48_bytes[sizeof(plc_feed_event) == 48 ? 1 : -1];

/* The next frame (PLC_OK: *out, release it with plc_release) or event (PLC_FEED_EVENT:
 * *ev, nothing to release) of a merged feed; otherwise as plc_next. An event entry of
 * the wrong size is PLC_ERR_CORRUPT. */
static inline int plc_next_feed(plc_consumer *c, plc_frame *out, plc_feed_event *ev) {
    for (;;) {
        int r = plc__next_entry(c, out);
        if (r != PLC_OK) return r;
        if (out->opcode == PLC_OPCODE_FEED_EVENT) {
            if (out->len != sizeof *ev) {
                snprintf(c->error, sizeof c->error, "corrupt shared memory: a feed event entry of %u bytes (not %u)",
                         out->len, (unsigned)sizeof *ev);
                return PLC_ERR_CORRUPT;
            }
            memcpy(ev, out->payload, sizeof *ev);
            plc_release(c, out);
            return PLC_FEED_EVENT;
        }
        if (out->opcode < 0x8u) return PLC_OK;
        plc_release(c, out);
    }
}

#ifdef __cplusplus
}
#endif

#endif /* WSPIPE_PIPELINE_CONSUMER_H */

/* libFuzzer harness for include/pipeline_consumer.h: the fuzz input becomes the two
 * region files a consumer reads (ws_frame_info.shm, msg_inbox.shm) in a private
 * temporary pipeline directory, then the real plc_open / plc_next / plc_release run on
 * them. Whatever the bytes, the header must return an error code or hand out frames
 * that lie inside what it mapped: never crash, never trip ASan/UBSan.
 *
 *   clang -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *         -Iinclude tests/c/fuzz_consumer.c -o fuzz_consumer
 *   ./fuzz_consumer NEW_CORPUS_DIR tests/c/fuzz_corpus/consumer -max_total_time=600
 *   (tools/test.d/fuzz_consumer.sh does this for CI, 20 s)
 *
 * Input layout. Every region byte starts from a valid template (a 16-entry frame ring
 * and a 4 KiB inbox with consistent headers, empty rings) and the input is XORed onto
 * it, so the empty input is a valid idle pipeline and each input bit flips one bit of
 * shared memory; missing bytes leave the template as it is:
 *   [0, 2)          u16 LE: ring file size. Top nibble 0xF: (v & 0xFFF) bytes, shorter
 *                   than a header page; otherwise 4096 + (256 ^ v).
 *   [2, 4)          u16 LE: inbox file size, the same with 4096 ^ v.
 *   [4, 516)        XOR over the ring file's bytes 0..512 (header, head at 256, tail at 384)
 *   [516, 1220)     XOR over the inbox file's bytes 0..704 (header, write 256, read 384,
 *                   parse 512, dirty 640, mode 644, overrun 648)
 *   [1220, ...)     XOR over the ring payload (frame infos), then the inbox payload.
 * The template headers follow the chosen sizes (payload_bytes = size - 4096, capacity
 * the largest power of two that fits), so size changes alone still reach plc_next.
 * tools/fuzz_consumer_seeds.py writes the seed corpus in this format. */
#include "pipeline_consumer.h"

#include <sys/stat.h>

#define RING_MAX (4096 + 65536)
#define INBOX_MAX (4096 + 65536)
#define RING_HDR_XOR 512
#define INBOX_HDR_XOR 704

static char g_root[128];
static char g_dir[192];
static char g_ring_path[256];
static char g_inbox_path[256];
static uint8_t g_ring[RING_MAX];
static uint8_t g_inbox[INBOX_MAX];
/* Payload bytes are summed into this so that reading them is not optimised away. */
static volatile unsigned g_sum;
/* PLC_FUZZ_VERBOSE=1: one line per input (what open and next returned), to check seeds. */
static int g_verbose = -1;

static void cleanup(void) {
    if (!g_root[0]) return;
    unlink(g_ring_path);
    unlink(g_inbox_path);
    rmdir(g_dir);
    rmdir(g_root);
}

/* Once per process: $PLC_FUZZ_TMP (default /dev/shm)/plfuzz.XXXXXX/pipeline_fz, both
 * 0700 and ours. Removed at exit; a crash leaves it for the caller to remove (the CI
 * script points PLC_FUZZ_TMP into its own temporary directory). */
static void setup(void) {
    if (g_root[0]) return;
    const char *parent = getenv("PLC_FUZZ_TMP");
    snprintf(g_root, sizeof g_root, "%s/plfuzz.XXXXXX", parent ? parent : "/dev/shm");
    if (!mkdtemp(g_root)) {
        /* No /dev/shm (some containers): a private directory under /tmp will do. */
        snprintf(g_root, sizeof g_root, "/tmp/plfuzz.XXXXXX");
        if (!mkdtemp(g_root)) abort();
    }
    snprintf(g_dir, sizeof g_dir, "%s/pipeline_fz", g_root);
    snprintf(g_ring_path, sizeof g_ring_path, "%s/ws_frame_info.shm", g_dir);
    snprintf(g_inbox_path, sizeof g_inbox_path, "%s/msg_inbox.shm", g_dir);
    if (mkdir(g_dir, 0700) != 0) abort();
    setenv("PIPELINE_SHM_ROOT", g_root, 1);
    atexit(cleanup);
}

static size_t file_size(uint16_t v, uint16_t default_payload) {
    if ((v >> 12) == 0xF) return v & 0xFFFu;
    return 4096u + (uint16_t)(default_payload ^ v);
}

static uint64_t pow2_floor(uint64_t n) {
    uint64_t p = 1;
    if (n == 0) return 0;
    while (p <= n / 2) p <<= 1;
    return p;
}

/* A consistent header for a file of `size` bytes (nothing if it is shorter). */
static void template_header(uint8_t *buf, size_t size, uint32_t kind, uint32_t elem_size) {
    memset(buf, 0, size);
    if (size < sizeof(plc_region_header)) return;
    plc_region_header h;
    memset(&h, 0, sizeof h);
    uint64_t payload = size >= 4096 ? size - 4096 : 0;
    h.magic = PLC_REGION_MAGIC;
    h.layout_version = PLC_LAYOUT_VERSION;
    h.kind = kind;
    h.header_bytes = PLC_HEADER_BYTES;
    h.elem_size = elem_size;
    h.capacity = pow2_floor(payload / elem_size);
    h.payload_bytes = payload;
    h.creator_pid = 1;
    memcpy(buf, &h, sizeof h);
}

static void xor_in(uint8_t *dst, size_t dst_len, const uint8_t **src, size_t *left, size_t n) {
    for (size_t i = 0; i < n && *left > 0; i++) {
        if (i < dst_len) dst[i] ^= **src;
        (*src)++;
        (*left)--;
    }
}

static void write_file(const char *path, const uint8_t *buf, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) abort();
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, buf + done, len - done);
        if (w <= 0) abort();
        done += (size_t)w;
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    const uint8_t *p = data;
    size_t left = size;
    uint16_t rv = 0, iv = 0;
    if (left >= 2) { rv = (uint16_t)(p[0] | (p[1] << 8)); p += 2; left -= 2; }
    if (left >= 2) { iv = (uint16_t)(p[0] | (p[1] << 8)); p += 2; left -= 2; }
    size_t ring_len = file_size(rv, 16 * 16);
    size_t inbox_len = file_size(iv, 4096);
    template_header(g_ring, ring_len, PLC_KIND_ELEM_RING, (uint32_t)sizeof(plc_frame_info));
    template_header(g_inbox, inbox_len, PLC_KIND_BYTE_RING, 1);
    xor_in(g_ring, ring_len, &p, &left, RING_HDR_XOR);
    xor_in(g_inbox, inbox_len, &p, &left, INBOX_HDR_XOR);
    if (ring_len > 4096) xor_in(g_ring + 4096, ring_len - 4096, &p, &left, ring_len - 4096);
    if (inbox_len > 4096) xor_in(g_inbox + 4096, inbox_len - 4096, &p, &left, inbox_len - 4096);
    write_file(g_ring_path, g_ring, ring_len);
    write_file(g_inbox_path, g_inbox, inbox_len);

    plc_consumer c;
    int r = plc_open(&c, "fz");
    if (memchr(c.error, 0, sizeof c.error) == NULL) __builtin_trap(); /* message always terminated */
    if (g_verbose < 0) g_verbose = getenv("PLC_FUZZ_VERBOSE") != NULL;
    if (r != PLC_OK) {
        if (g_verbose) fprintf(stderr, "open %d %s\n", r, c.error);
        if (r != PLC_ERR_OPEN && r != PLC_ERR_LAYOUT && r != PLC_ERR_OWNER) __builtin_trap();
        if (c.ring_map || c.inbox_map) __builtin_trap(); /* nothing left mapped on failure */
        return 0;
    }
    /* What open accepted must be what the files hold. */
    if (c.ring_len != 4096 + c.ring_cap * sizeof(plc_frame_info) || c.inbox_len != 4096 + 2 * c.inbox_cap)
        __builtin_trap();
    int frames = 0;
    for (int i = 0; i < 64; i++) {
        plc_frame f;
        r = plc_next(&c, &f);
        if (r == PLC_EMPTY || r == PLC_ERR_OVERRUN || r == PLC_ERR_CORRUPT) break;
        if (r != PLC_OK) __builtin_trap();
        /* The frame handed out lies inside the mirrored inbox mapping, within capacity. */
        const uint8_t *lo = c.inbox_map + PLC_HEADER_BYTES;
        const uint8_t *hi = c.inbox_map + c.inbox_len;
        if (f.len > c.inbox_cap || f.payload < lo || f.payload > hi || (size_t)(hi - f.payload) < f.len)
            __builtin_trap();
        for (uint32_t k = 0; k < f.len; k++) g_sum += f.payload[k];
        frames++;
        (void)plc_payload_intact(&c, &f);
        plc_release(&c, &f);
    }
    if (g_verbose) fprintf(stderr, "open ok, %d frame(s), then %d %s\n", frames, r, r < 0 ? c.error : "");
    plc_close(&c);
    return 0;
}

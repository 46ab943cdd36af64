/*
 * Fuzz target for everything the C core reads from a segment it did not write itself.
 *
 * The input is a segment image. It is copied into a heap block of exactly its size, so
 * AddressSanitizer reports any read or write past the end, and every input is tried both
 * as a data segment and as a control segment:
 *
 *  - data: sps_header_read accepts it or returns a validation error. If accepted, readers
 *    attach (every start and resync mode) and read, read the latest and view, a bounded
 *    number of times; then a hostile writer rewrites the header and every slot header
 *    after validation (lengths far beyond the slot, sequence words from the input) and
 *    the same readers read again: nothing may leave the slot. Finally a writer attaches
 *    to a fresh copy, publishes a few messages, and a reader must get exactly those
 *    (whatever the slots held before, and whatever write_seq said, within its bound).
 *  - control: sps_control_open accepts it or returns an error. If accepted, every entry is
 *    read, an entry claimed and released, a reader and a writer bound to it, and the
 *    sleepers bitmap armed and collected: indices stay within max_subscribers.
 *
 * A broken invariant calls abort(), so it is reported like a sanitizer finding.
 *
 * libFuzzer (clang):
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc \
 *       fuzz/fuzz_segment.c csrc/checksum.c csrc/control.c csrc/file.c csrc/ring.c csrc/header.c \
 *       -o fuzz_segment
 *   ./fuzz_segment -max_len=20000 -timeout=5 fuzz/corpus
 * gcc (no libFuzzer): fuzz/driver.c replays the corpus and mutates it for a bounded time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* Bounded work per input: enough to go round a small ring twice. */
#define MAX_READS 64
#define MAX_SLOTS_REWRITTEN 256

static int is_validation_error(int rc)
{
    return rc <= SPS_E_SIZE && rc >= SPS_E_FILE_FORMAT;
}

static uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Reads until empty (or MAX_READS): every length returned fits the slot and the buffer. */
static void drain(struct sps_reader *r, char *dst, uint64_t cap)
{
    for (int i = 0; i < MAX_READS; i++) {
        uint64_t before = r->next;
        int64_t n = sps_read(r, dst, cap);
        if (n == SPS_EMPTY || n == SPS_BUSY)
            break;
        if (n == SPS_BUFFER_TOO_SMALL) {
            CHECK(r->last_len > cap && r->last_len <= r->ring.slot_capacity);
            break;
        }
        CHECK(n >= 0 && (uint64_t)n <= cap && (uint64_t)n <= r->ring.slot_capacity);
        CHECK(r->last_seq >= before && r->next == r->last_seq + 1);
    }
}

static void latest_and_view(struct sps_reader *r, char *dst, uint64_t cap)
{
    uint64_t seq = 0, offset = 0;
    int64_t n = sps_read_latest(r, dst, cap, &seq);
    CHECK(n == SPS_EMPTY || n == SPS_BUSY || n == SPS_BUFFER_TOO_SMALL
          || (n >= 0 && (uint64_t)n <= cap));
    for (int i = 0; i < 4; i++) {
        n = sps_view_begin(r);
        offset = r->view_offset;
        if (n < 0) {
            CHECK(n == SPS_EMPTY || n == SPS_BUSY);
            break;
        }
        /* The caller reads the payload in place: it must lie inside the mapping. */
        CHECK(offset >= SPS_HEADER_SIZE + SPS_SLOT_HEADER_SIZE);
        CHECK(offset + (uint64_t)n <= r->ring.size);
        volatile unsigned char sink = 0;
        if (n > 0)
            sink ^= r->ring.base[offset] ^ r->ring.base[offset + (uint64_t)n - 1];
        (void)sink;
        int rc = sps_view_end(r);
        CHECK(rc == SPS_OK || rc == SPS_OVERWRITTEN);
    }
}

/* What a writer with write access could do after the readers validated the header. */
static void hostile_rewrite(uint8_t *seg, uint64_t size, const struct sps_reader *r,
                            const uint8_t *data, size_t data_len)
{
    memset(seg + 8, 0xff, sizeof(struct sps_identity) - 8); /* slot count, sizes, pid: garbage */
    uint64_t slots = r->ring.slot_count < MAX_SLOTS_REWRITTEN ? r->ring.slot_count : MAX_SLOTS_REWRITTEN;
    for (uint64_t i = 0; i < slots; i++) {
        struct sps_slot *slot = sps_slot_of(&r->ring, r->next + i);
        CHECK((uint8_t *)slot + SPS_SLOT_HEADER_SIZE <= seg + size);
        /* A sequence word that says "complete" for the message wanted, or one taken from the
         * input's tail (slot payloads, mostly: often zero in the seeds, so mostly "complete"). */
        uint64_t seq = 2 * (r->next + i) + 2;
        if (data_len >= 8 * (i + 1) && (data[data_len - 1 - i] & 1))
            seq = load_u64(data + data_len - 8 * (i + 1));
        atomic_store_explicit(&slot->seq, seq, memory_order_relaxed);
        /* Just past the slot (into the next one, or past the mapping), or far past it. */
        uint32_t length = i % 2 ? UINT32_MAX - (uint32_t)i : (uint32_t)(r->ring.slot_capacity + 1 + 8 * i);
        atomic_store_explicit(&slot->length, length, memory_order_relaxed);
        atomic_store_explicit(&slot->flags, (uint32_t)i, memory_order_relaxed);
    }
    struct sps_shared_header *h = (struct sps_shared_header *)seg;
    uint64_t forged = data_len >= 8 ? load_u64(data + data_len - 8) : UINT64_MAX;
    atomic_store_explicit(&h->progress.write_seq, forged, memory_order_relaxed);
}

static uint8_t *copy_of(const uint8_t *data, size_t size)
{
    uint8_t *seg = malloc(size ? size : 1);
    CHECK(seg != NULL);
    if (size)
        memcpy(seg, data, size);
    return seg;
}

static void fuzz_readers(const uint8_t *data, size_t size, const struct sps_header_info *info)
{
    uint8_t *seg = copy_of(data, size);
    /* A buffer larger than any slot (receive_into may be given one), and one too small for
     * most messages: a length read from the ring must be clamped to the slot, not the buffer. */
    uint64_t cap = info->slot_size + 4096;
    char *dst = malloc(cap);
    char small[8];
    CHECK(dst != NULL);
    struct sps_reader readers[6];
    int count = 0;
    for (int start = SPS_START_NEXT; start <= SPS_START_OLDEST; start++)
        for (int resync = SPS_RESYNC_OLDEST; resync <= SPS_RESYNC_LATEST; resync++)
            CHECK(sps_reader_init(&readers[count++], seg, size, start, resync) == SPS_OK);
    for (int i = 0; i < count; i++) {
        drain(&readers[i], i % 2 ? small : dst, i % 2 ? sizeof small : cap);
        latest_and_view(&readers[i], dst, cap);
    }
    hostile_rewrite(seg, size, &readers[0], data, size);
    for (int i = 0; i < count; i++) {
        drain(&readers[i], dst, cap);
        latest_and_view(&readers[i], dst, cap);
        sps_reader_close(&readers[i]);
        CHECK(sps_read(&readers[i], dst, cap) == SPS_CLOSED);
    }
    free(dst);
    free(seg);
}

/* Message i of the writer's test: 0, 264 and 1,042 bytes (past the word-copy limit), or as
 * much as the slot holds. */
static uint64_t test_length(uint64_t i, uint64_t cap)
{
    uint64_t len = i * i * 257 + i * 7;
    return len < cap ? len : cap;
}

/* A writer on a validated segment publishes; a reader that attached first gets exactly that. */
static void fuzz_writer(const uint8_t *data, size_t size, const struct sps_header_info *info)
{
    uint8_t *seg = copy_of(data, size);
    struct sps_writer w;
    struct sps_reader r;
    CHECK(sps_writer_init(&w, seg, size) == SPS_OK);
    CHECK(sps_reader_init(&r, seg, size, SPS_START_NEXT, SPS_RESYNC_OLDEST) == SPS_OK);
    uint64_t cap = info->slot_size;
    char *msg = malloc(cap + 1), *got = malloc(cap ? cap : 1);
    CHECK(msg != NULL && got != NULL);
    /* The second message goes through a loan. */
    uint64_t count = info->slot_count < 3 ? info->slot_count : 3;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t len = test_length(i, cap);
        memset(msg, (int)('a' + i), len);
        uint64_t offset;
        if (i == 1) {
            CHECK(sps_loan(&w, len, &offset) == SPS_OK && offset + len <= size);
            memcpy(seg + offset, msg, len);
            CHECK(sps_commit(&w) == (int64_t)(info->write_seq + i));
        } else {
            CHECK(sps_publish(&w, msg, len) == (int64_t)(info->write_seq + i));
        }
    }
    CHECK(sps_publish(&w, msg, cap + 1) == SPS_TOO_LARGE);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t len = test_length(i, cap);
        int64_t n = sps_read(&r, got, cap);
        CHECK(n == (int64_t)len && r.lost == 0 && r.last_seq == info->write_seq + i);
        for (uint64_t k = 0; k < len; k++)
            CHECK(got[k] == (char)('a' + i));
    }
    /* What follows in the ring is the input's: slots may claim later messages (forged). */
    uint64_t next = w.next, offset;
    CHECK(sps_skip(&w, 2) == (next + 2 > SPS_MAX_SEQ ? SPS_TOO_LARGE : SPS_OK));
    CHECK(sps_loan(&w, cap, &offset) == SPS_OK && sps_abort(&w) == SPS_OK);
    CHECK(sps_writer_close(&w) == SPS_OK);
    CHECK(sps_publish(&w, msg, 0) == SPS_CLOSED);
    sps_reader_close(&r);
    free(msg);
    free(got);
    free(seg);
}

static void fuzz_data(const uint8_t *data, size_t size)
{
    struct sps_header_info info;
    uint8_t *seg = copy_of(data, size);
    int rc = sps_header_read(size ? seg : NULL, size, &info);
    free(seg);
    if (rc != SPS_OK) {
        CHECK(is_validation_error(rc));
        struct sps_reader r;
        struct sps_writer w;
        seg = copy_of(data, size);
        CHECK(sps_reader_init(&r, seg, size, SPS_START_NEXT, SPS_RESYNC_OLDEST) == rc);
        CHECK(sps_read(&r, NULL, 0) == SPS_CLOSED); /* a refused reader stays refused */
        CHECK(sps_writer_init(&w, seg, size) == rc);
        CHECK(sps_publish(&w, "x", 1) == SPS_CLOSED);
        free(seg);
        return;
    }
    uint64_t stride, total;
    /* A ring file's slots have room for their checksum: its own geometry. */
    int (*geometry)(uint64_t, uint64_t, uint64_t *, uint64_t *) =
        info.file_format == SPS_FILE_FORMAT ? sps_file_geometry : sps_geometry;
    CHECK(geometry(info.slot_count, info.slot_size, &stride, &total) == SPS_OK);
    CHECK(total == size && info.total_size == size && info.slot_stride == stride);
    fuzz_readers(data, size, &info);
    fuzz_writer(data, size, &info);
}

/* A well-formed data segment to bind readers and writers to the fuzzed control segment. */
static uint8_t *small_ring(uint64_t *size)
{
    uint64_t stride;
    CHECK(sps_geometry(2, 8, &stride, size) == SPS_OK);
    uint8_t *seg = calloc(1, *size);
    CHECK(seg != NULL);
    CHECK(sps_header_init(seg, *size, 2, 8, 1, 1, 0, 0) == SPS_OK);
    return seg;
}

static void fuzz_control(const uint8_t *data, size_t size)
{
    uint8_t *seg = copy_of(data, size);
    struct sps_control c;
    struct sps_control_info info;
    int rc = sps_control_open(&c, size ? seg : NULL, size, &info);
    if (rc != SPS_OK) {
        CHECK(is_validation_error(rc));
        free(seg);
        return;
    }
    CHECK(info.max_subscribers >= 1 && info.max_subscribers <= SPS_MAX_SUBSCRIBERS);
    CHECK(info.total_size == size && memchr(info.socket_dir, 0, sizeof info.socket_dir) != NULL);
    CHECK(strlen(info.socket_dir) > 0);

    struct sps_entry_info entry;
    for (uint32_t i = 0; i <= info.max_subscribers; i++) { /* one past the end: refused */
        rc = sps_control_entry(&c, i, &entry);
        int known = rc == SPS_OK || rc == SPS_EMPTY || rc == SPS_CLAIMING;
        CHECK(i < info.max_subscribers ? known : rc == SPS_E_GEOMETRY);
        CHECK(rc == SPS_OK ? (entry.token & 1) == 1 : entry.token == 0);
    }
    uint32_t *found = calloc(info.max_subscribers, sizeof *found);
    uint64_t *tokens = calloc(info.max_subscribers, sizeof *tokens);
    CHECK(found != NULL && tokens != NULL);
    uint32_t n = sps_collect_sleepers(&c, found, tokens, info.max_subscribers);
    CHECK(n <= info.max_subscribers);
    for (uint32_t i = 0; i < n; i++)
        CHECK(found[i] < info.max_subscribers && (tokens[i] & 1) == 1);

    uint64_t ring_size;
    uint8_t *ring = small_ring(&ring_size);
    struct sps_writer w;
    struct sps_reader r;
    CHECK(sps_writer_init(&w, ring, ring_size) == SPS_OK);
    CHECK(sps_reader_init(&r, ring, ring_size, SPS_START_NEXT, SPS_RESYNC_OLDEST) == SPS_OK);
    sps_writer_bind(&w, &c, NULL);
    int index = sps_control_claim(&c, 0x1234567, 42, 7);
    CHECK(index == SPS_FULL || (index >= 0 && (uint32_t)index < info.max_subscribers));
    if (index >= 0) {
        sps_reader_bind(&r, &c, (uint32_t)index);
        CHECK(sps_arm(&r) == 0); /* nothing published: it may sleep */
        CHECK(sps_publish(&w, "wake", 4) == SPS_WAKE);
        n = sps_collect_sleepers(&c, found, tokens, info.max_subscribers);
        CHECK(n >= 1);
        int seen = 0;
        for (uint32_t i = 0; i < n; i++)
            seen |= found[i] == (uint32_t)index;
        CHECK(seen);
        char buf[8];
        CHECK(sps_read(&r, buf, sizeof buf) == 4);
        sps_disarm(&r);
        CHECK(sps_control_release(&c, (uint32_t)index, 0x1234567, 1) == 1);
    }
    sps_reader_close(&r);
    (void)sps_writer_close(&w);
    sps_control_close(&c);
    CHECK(sps_control_claim(&c, 0x1234567, 42, 7) == SPS_CLOSED);
    free(found);
    free(tokens);
    free(ring);
    free(seg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_data(data, size);
    fuzz_control(data, size);
    return 0;
}

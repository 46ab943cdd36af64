/*
 * The seqlock ring: one writer, any number of readers that never write.
 *
 * Message n lives in slot n mod N. Its sequence word is 2n+1 while it is being
 * written and 2n+2 once complete, so a reader that wants message n looks only
 * at that slot: smaller means not yet, equal means readable, larger means the
 * writer has lapped the reader.
 *
 * Memory ordering follows Boehm, "Can Seqlocks Get Along With Programming
 * Language Memory Models?" (2012): the writer stores the odd sequence, then a
 * release fence, then the payload; the reader loads the payload, then an
 * acquire fence, then re-loads the sequence. If any payload word came from a
 * newer write, the fences make the re-load see the newer odd sequence, and the
 * copy is thrown away.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <sched.h>
#include <string.h>
#include <time.h>

#include "layout.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

enum writer_state { WRITER_READY = 0, WRITER_LOANED, WRITER_CLOSED, WRITER_FORKED };

/* A lapped reader retries this many times before giving up with SPS_BUSY;
 * the caller may simply call again (this keeps a hostile writer from
 * trapping a reader inside C). */
#define READ_ATTEMPTS 1000
/* A spin gives its core away between looks once it has lasted this long: with more spinning
 * subscribers than cores, the publisher they wait for may be waiting for that core. Alone on
 * its core, sched_yield returns at once. (-D to measure others: 0 and 1000 did worse.) */
#ifndef SPIN_ALONE_NS
#define SPIN_ALONE_NS 5000
#endif

/* Up to this size payloads move as relaxed 64-bit atomic words, which keeps
 * the racy part of the seqlock data-race-free in C11 (WG21 P1478's recipe).
 * Larger payloads use memcpy between the same fences, as Linux's seqlocks do:
 * formally a race, in practice the fastest copy, and any torn result is still
 * caught by the sequence re-check. */
#define WORD_COPY_MAX 1024

/* Streaming stores for payloads of at least STREAM_COPY_MIN bytes in rings of at least
 * STREAM_RING_MIN bytes (four times a large per-core L2). Both can be set with -D, e.g.
 * -DSTREAM_RING_MIN=UINT64_MAX to measure without them (docs/benchmarks.md). */
#ifndef STREAM_COPY_MIN
#define STREAM_COPY_MIN (64 << 10)
#endif
#ifndef STREAM_RING_MIN
#define STREAM_RING_MIN (16 << 20)
#endif

#if defined(__SSE2__)
/* Non-temporal stores for large payloads in a ring larger than the caches: by the time the
 * writer comes back to a slot, its lines have long left the cache, so an ordinary store
 * first reads each line in (read-for-ownership) only to overwrite it. Streaming stores skip
 * that read and write combined lines straight to memory. They are weakly ordered, even
 * against earlier stores: the first sfence keeps them after the odd sequence word (a reader
 * must never see new payload bytes under the old, even one), the last before the store
 * that completes the slot. */
static void stream_copy(unsigned char *dst, const char *src, uint64_t len)
{
    _mm_sfence();
    uint64_t head = (16 - ((uintptr_t)dst & 15)) & 15;
    if (head > len)
        head = len;
    memcpy(dst, src, head);
    dst += head, src += head, len -= head;
    for (; len >= 64; len -= 64, dst += 64, src += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)src);
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(src + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(src + 48));
        _mm_stream_si128((__m128i *)(void *)dst, a);
        _mm_stream_si128((__m128i *)(void *)(dst + 16), b);
        _mm_stream_si128((__m128i *)(void *)(dst + 32), c);
        _mm_stream_si128((__m128i *)(void *)(dst + 48), d);
    }
    memcpy(dst, src, len);
    _mm_sfence();
}
#define HAVE_STREAM_COPY 1
#endif

static void copy_in(const struct sps_writer *w, unsigned char *slot_payload, const char *src,
                    uint64_t len)
{
#ifdef HAVE_STREAM_COPY
    if (len >= w->stream_from) {
        stream_copy(slot_payload, src, len);
        return;
    }
#else
    (void)w;
#endif
    if (len > WORD_COPY_MAX) {
        memcpy(slot_payload, src, len);
        return;
    }
    _Atomic uint64_t *dst = (_Atomic uint64_t *)(void *)slot_payload;
    uint64_t words = len / 8, rest = len % 8, v;
    for (uint64_t i = 0; i < words; i++) {
        memcpy(&v, src + 8 * i, 8);
        atomic_store_explicit(&dst[i], v, memory_order_relaxed);
    }
    if (rest) {
        v = 0;
        memcpy(&v, src + 8 * words, rest);
        atomic_store_explicit(&dst[words], v, memory_order_relaxed);
    }
}

static void copy_out(char *dst, const unsigned char *slot_payload, uint64_t len)
{
    if (len > WORD_COPY_MAX) {
        memcpy(dst, slot_payload, len);
        return;
    }
    const _Atomic uint64_t *src = (const _Atomic uint64_t *)(const void *)slot_payload;
    uint64_t words = len / 8, rest = len % 8, v;
    for (uint64_t i = 0; i < words; i++) {
        v = atomic_load_explicit(&src[i], memory_order_relaxed);
        memcpy(dst + 8 * i, &v, 8);
    }
    if (rest) {
        v = atomic_load_explicit(&src[words], memory_order_relaxed);
        memcpy(dst + 8 * words, &v, rest);
    }
}

/* ---- writer ---- */

int sps_writer_init(struct sps_writer *w, void *base, uint64_t size)
{
    memset(w, 0, sizeof *w);
    int rc = sps_ring_init(&w->ring, base, size);
    if (rc != SPS_OK) {
        w->state = WRITER_CLOSED;
        w->closed = 1;
        return rc;
    }
    w->next = sps_write_seq(&w->ring);
    w->stream_from = w->ring.slot_count * w->ring.slot_stride >= STREAM_RING_MIN ? STREAM_COPY_MIN
                                                                                : UINT64_MAX;
    w->state = WRITER_READY;
    return SPS_OK;
}

/* sps_writer_close may run in another thread (see sps_enter) and writes these two:
 * whoever reads them outside a counted call must read them atomically. */
static int load_guard(const int *word)
{
    return atomic_load_explicit((const _Atomic int *)(const void *)word, memory_order_relaxed);
}

static int writer_refusal(const struct sps_writer *w)
{
    int state = load_guard(&w->state);
    if (state == WRITER_READY && load_guard(&w->closed))
        return SPS_CLOSED; /* a close in another thread got there first */
    switch (state) {
    case WRITER_LOANED: return SPS_LOAN_ACTIVE;
    case WRITER_FORKED: return SPS_FORKED;
    default: return SPS_CLOSED;
    }
}

/* Marks message n as being written; the payload may be stored after this. */
static struct sps_slot *begin_write(struct sps_writer *w, uint64_t n)
{
    struct sps_slot *slot = sps_slot_of(&w->ring, n);
    atomic_store_explicit(&slot->seq, 2 * n + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    return slot;
}

/* Any subscriber asleep? One seq_cst load per bitmap word (usually one). */
static int sleepers_present(const struct sps_writer *w)
{
    const _Atomic uint64_t *words = (const _Atomic uint64_t *)(const void *)w->sleepers;
    for (uint32_t i = 0; i < w->sleeper_words; i++)
        if (atomic_load_explicit(&words[i], memory_order_seq_cst) != 0)
            return 1;
    return 0;
}

/* Completes message n in its slot: readers may take it. A ring file's slot gets its checksum
 * before its sequence word says complete. The checksum is a call into checksum.c, so that this
 * stays small enough to be inlined: /dev/shm rings pay the test of one flag, nothing more. */
static inline void complete_slot(const struct sps_ring *ring, struct sps_slot *slot, uint64_t n,
                                 uint64_t len, uint32_t flags)
{
    atomic_store_explicit(&slot->length, (uint32_t)len, memory_order_relaxed);
    atomic_store_explicit(&slot->flags, flags, memory_order_relaxed);
    if (ring->checksums)
        sps_slot_checksum_store(slot, 2 * n + 2, (uint32_t)len, flags);
    atomic_store_explicit(&slot->seq, 2 * n + 2, memory_order_release);
}

/* Messages 0..next-1 are complete: publishes write_seq; 1 if someone sleeps.
 * write_seq is stored seq_cst, then the sleepers are loaded seq_cst: paired
 * with a reader that arms (seq_cst) and then re-checks write_seq (seq_cst),
 * either the reader sees the messages or we see its bit (no lost wake-up). */
static int advance(struct sps_writer *w, uint64_t next)
{
    atomic_store_explicit(&sps_header(&w->ring)->progress.write_seq, next, memory_order_seq_cst);
    w->next = next;
    return sleepers_present(w);
}

/* Returns n, or SPS_WAKE (n is then w->next - 1) when someone must be woken. */
static int64_t end_write(struct sps_writer *w, struct sps_slot *slot, uint64_t n, uint64_t len)
{
    complete_slot(&w->ring, slot, n, len, 0);
    return advance(w, n + 1) ? SPS_WAKE : (int64_t)n;
}

/* Only the last ring-full of skipped numbers needs a marker: readers that wanted an earlier
 * one find its slot lapped, and resynchronise (counting) onto the markers. */
static int skip(struct sps_writer *w, uint64_t count)
{
    if (w->state != WRITER_READY)
        return writer_refusal(w);
    if (w->next > SPS_MAX_SEQ || count > SPS_MAX_SEQ - w->next)
        return SPS_TOO_LARGE;
    uint64_t n = w->next, end = n + count;
    uint64_t first = count > w->ring.slot_count ? end - w->ring.slot_count : n;
    for (uint64_t m = first; m < end; m++)
        complete_slot(&w->ring, begin_write(w, m), m, 0, SPS_SLOT_SKIPPED);
    return count && advance(w, end) ? SPS_WAKE : SPS_OK;
}

static int64_t publish(struct sps_writer *w, const char *data, uint64_t len)
{
    if (w->state != WRITER_READY)
        return writer_refusal(w);
    if (len > w->ring.slot_capacity)
        return SPS_TOO_LARGE;
    uint64_t n = w->next;
    struct sps_slot *slot = begin_write(w, n);
    copy_in(w, slot->payload, data, len);
    return end_write(w, slot, n, len);
}

/* All or nothing: every length is checked before the first slot is touched. write_seq moves
 * once, after the last message (one seq_cst store and one look at the sleepers per batch);
 * readers take each message as soon as its own slot is complete. */
static int64_t publish_many(struct sps_writer *w, const char *data, const uint64_t *lengths,
                            uint64_t count, uint64_t record, uint64_t *bad)
{
    if (w->state != WRITER_READY)
        return writer_refusal(w);
    for (uint64_t i = 0; lengths != NULL && i < count; i++)
        if (lengths[i] > w->ring.slot_capacity) {
            *bad = i;
            return SPS_TOO_LARGE;
        }
    if (lengths == NULL && count > 0 && record > w->ring.slot_capacity)
        return SPS_TOO_LARGE;
    uint64_t first = w->next;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t len = lengths != NULL ? lengths[i] : record;
        struct sps_slot *slot = begin_write(w, first + i);
        copy_in(w, slot->payload, data, len);
        complete_slot(&w->ring, slot, first + i, len, 0);
        data += len;
    }
    return count && advance(w, first + count) ? SPS_WAKE : (int64_t)first;
}

static int loan(struct sps_writer *w, uint64_t len, uint64_t *offset)
{
    if (w->state != WRITER_READY)
        return writer_refusal(w);
    if (len > w->ring.slot_capacity)
        return SPS_TOO_LARGE;
    struct sps_slot *slot = begin_write(w, w->next);
    w->loan_len = len;
    w->state = WRITER_LOANED;
    *offset = (uint64_t)(slot->payload - w->ring.base);
    return SPS_OK;
}

static int64_t commit(struct sps_writer *w)
{
    if (w->state != WRITER_LOANED)
        return w->state == WRITER_READY ? SPS_NO_LOAN : writer_refusal(w);
    w->state = WRITER_READY;
    return end_write(w, sps_slot_of(&w->ring, w->next), w->next, w->loan_len);
}

/* The slot keeps its odd sequence: its old message may already be partly
 * overwritten, so it must never look complete again. Readers waiting for
 * message n keep waiting; readers that wanted the old message count it lost.
 * The next publish reuses number n. */
static int abort_loan(struct sps_writer *w)
{
    if (w->state != WRITER_LOANED)
        return w->state == WRITER_READY ? SPS_NO_LOAN : writer_refusal(w);
    w->state = WRITER_READY;
    return SPS_OK;
}

/* ---- the writer's public calls: each counted in flight (see sps_enter) ---- */

int64_t sps_publish(struct sps_writer *w, const char *data, uint64_t len)
{
    if (!sps_enter(&w->busy, &w->closed))
        return writer_refusal(w);
    int64_t rc = publish(w, data, len);
    sps_leave(&w->busy);
    return rc;
}

int64_t sps_publish_many(struct sps_writer *w, const char *data, const uint64_t *lengths,
                         uint64_t count, uint64_t record, uint64_t *bad)
{
    *bad = 0;
    if (!sps_enter(&w->busy, &w->closed))
        return writer_refusal(w);
    int64_t rc = publish_many(w, data, lengths, count, record, bad);
    sps_leave(&w->busy);
    return rc;
}

int sps_loan(struct sps_writer *w, uint64_t len, uint64_t *offset)
{
    *offset = 0;
    if (!sps_enter(&w->busy, &w->closed))
        return writer_refusal(w);
    int rc = loan(w, len, offset);
    sps_leave(&w->busy);
    return rc;
}

int64_t sps_commit(struct sps_writer *w)
{
    if (!sps_enter(&w->busy, &w->closed))
        return writer_refusal(w);
    int64_t rc = commit(w);
    sps_leave(&w->busy);
    return rc;
}

int sps_skip(struct sps_writer *w, uint64_t count)
{
    if (!sps_enter(&w->busy, &w->closed))
        return writer_refusal(w);
    int rc = skip(w, count);
    sps_leave(&w->busy);
    return rc;
}

int sps_abort(struct sps_writer *w)
{
    if (!sps_enter(&w->busy, &w->closed))
        return writer_refusal(w);
    int rc = abort_loan(w);
    sps_leave(&w->busy);
    return rc;
}

/* Returns SPS_WAKE if sleepers must be told (the same pairing as end_write). */
int sps_writer_close(struct sps_writer *w)
{
    if (atomic_load_explicit((_Atomic int *)(void *)&w->closed, memory_order_seq_cst))
        return SPS_OK; /* already closed, or forked */
    sps_shut(&w->closed, &w->busy);
    atomic_store_explicit(&sps_header(&w->ring)->progress.closed, 1, memory_order_seq_cst);
    int wake = sleepers_present(w);
    atomic_store_explicit((_Atomic int *)(void *)&w->state, WRITER_CLOSED, memory_order_relaxed);
    return wake ? SPS_WAKE : SPS_OK;
}

void sps_writer_forked(struct sps_writer *w)
{
    /* Called in a fork child, which has a single thread: nothing is in flight. */
    if (w->state != WRITER_CLOSED)
        w->state = WRITER_FORKED;
    w->closed = 1;
}

/* ---- reader ---- */

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int sps_reader_init(struct sps_reader *r, const void *base, uint64_t size, int start, int resync)
{
    memset(r, 0, sizeof *r);
    r->validate = 1;
    r->sleep_fd = r->wake_fd = -1; /* set by the caller that sleeps (sps_sleep_take) */
    r->resync = resync;
    int rc = sps_ring_init(&r->ring, base, size);
    if (rc != SPS_OK) {
        r->closed = 1;
        return rc;
    }
    uint64_t w = sps_write_seq(&r->ring);
    switch (start) {
    case SPS_START_LATEST:
        r->next = w > 0 ? w - 1 : 0;
        break;
    case SPS_START_OLDEST:
        r->next = w > r->ring.slot_count ? w - r->ring.slot_count : 0;
        break;
    default:
        r->next = w;
    }
    return SPS_OK;
}

/* Keeps our control entry current (for `shmpubsub info`) and drops a stale
 * sleep request: we are clearly awake. Relaxed stores to our own cache line. */
static void report_progress(struct sps_reader *r)
{
    struct sps_entry *e = (struct sps_entry *)(void *)r->entry;
    atomic_store_explicit(&e->read_pos, r->next, memory_order_relaxed);
    atomic_store_explicit(&e->lost, r->lost, memory_order_relaxed);
    if (r->armed)
        sps_disarm(r);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* The writer has overwritten (or is overwriting) the message we wanted; it
 * left sequence word `seen` in that slot. Jump forward and count the exact
 * number of messages skipped. The slot's own sequence bounds how far the
 * writer has got even if our view of write_seq is stale, and the reader only
 * ever moves forward, even over a garbage sequence word. */
static void resync(struct sps_reader *r, uint64_t seen)
{
    uint64_t n_slots = r->ring.slot_count;
    /* No writer numbers messages past SPS_MAX_SEQ: a forged value beyond it must not be able
     * to carry our position round to 0. */
    uint64_t written = min_u64(sps_write_seq(&r->ring), SPS_MAX_SEQ);
    uint64_t lapping = min_u64((seen - 1) / 2, SPS_MAX_SEQ); /* message number that lapped us */
    uint64_t started = max_u64(written, lapping + 1);        /* messages 0..started-1 exist */
    uint64_t target;
    if (r->resync == SPS_RESYNC_LATEST)
        target = written > 0 ? written - 1 : 0;
    else /* the oldest message is the writer's next victim: resume a margin ahead of it */
        target = started > n_slots ? started - n_slots + SPS_LAP_MARGIN(n_slots) : 0;
    target = max_u64(target, r->next + 1);
    r->lost += target - r->next;
    r->next = target;
}

/* Message n was skipped by the publisher (see sps_skip): it counts as lost. */
static void pass_marker(struct sps_reader *r, uint64_t n)
{
    r->lost += 1;
    r->next = n + 1;
}

/* True if the complete slot seen with sequence s1 is a skip marker, re-checked after the
 * flags were read (a marker torn by a new write is no marker). */
static int is_marker(struct sps_slot *slot, uint64_t s1)
{
    if (!(atomic_load_explicit(&slot->flags, memory_order_relaxed) & SPS_SLOT_SKIPPED))
        return 0;
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&slot->seq, memory_order_relaxed) == s1;
}

/* Outcomes of one attempt at a message, besides a length and the public codes. */
enum { LAPPED = -100, MARKER = -101 };

/* One attempt at message r->next: copies and validates it (its length; the reader moves
 * past it), or says why not: SPS_EMPTY (not there yet), SPS_BUFFER_TOO_SMALL (it stays
 * unread), MARKER (a skip marker, not passed yet), LAPPED (*seen: the newer sequence word
 * found in its slot). Reports no progress: the caller does, once per call. */
static int64_t read_once(struct sps_reader *r, char *dst, uint64_t cap, uint64_t *seen)
{
    uint64_t n = r->next;
    uint64_t want = 2 * n + 2;
    struct sps_slot *slot = sps_slot_of(&r->ring, n);
    uint64_t s1 = atomic_load_explicit(&slot->seq, memory_order_acquire);
    if (s1 < want)
        return SPS_EMPTY;
    if (s1 == want && is_marker(slot, s1))
        return MARKER;
    if (s1 == want) {
        uint64_t len = atomic_load_explicit(&slot->length, memory_order_relaxed);
        if (len > r->ring.slot_capacity) /* only a torn or forged length */
            len = r->ring.slot_capacity;
        int fits = len <= cap;
        if (fits)
            copy_out(dst, slot->payload, len);
        atomic_thread_fence(memory_order_acquire);
        uint64_t s2 = atomic_load_explicit(&slot->seq, memory_order_relaxed);
        if (s2 == s1 || !r->validate) {
            r->last_len = len;
            if (!fits)
                return SPS_BUFFER_TOO_SMALL;
            r->last_seq = n;
            r->next = n + 1;
            return (int64_t)len;
        }
        s1 = s2;
    }
    *seen = s1;
    return LAPPED;
}

/* The next message, passing skip markers and absorbing laps (counted in r->lost). */
static int64_t read_next(struct sps_reader *r, char *dst, uint64_t cap)
{
    for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        uint64_t seen = 0;
        int64_t rc = read_once(r, dst, cap, &seen);
        if (rc == MARKER)
            pass_marker(r, r->next);
        else if (rc == LAPPED)
            resync(r, seen);
        else
            return rc;
    }
    return SPS_BUSY;
}

/* read_next, then consecutive messages behind it end to end in dst (ends[i]: where the
 * i-th ends) while they are there, fit, and follow without a gap: a batch holds messages
 * r->last_seq - count + 1 .. r->last_seq. The count, or read_next's code if none. */
static int64_t read_many(struct sps_reader *r, char *dst, uint64_t cap, uint64_t *ends, uint64_t max)
{
    if (max == 0)
        return SPS_EMPTY;
    int64_t rc = read_next(r, dst, cap);
    if (rc < 0)
        return rc;
    uint64_t used = (uint64_t)rc, count = 1, seen;
    ends[0] = used;
    while (count < max && (rc = read_once(r, dst + used, cap - used, &seen)) >= 0) {
        used += (uint64_t)rc;
        ends[count++] = used;
    }
    return (int64_t)count;
}

/* The newest message before number `written` that is not a skip marker, looking back at most
 * a ring-full: its number; -1 if there are only markers in reach; -2 if a slot was
 * overwritten meanwhile (the caller looks at write_seq again). */
static int64_t newest_message(struct sps_reader *r, uint64_t written)
{
    for (uint64_t back = 0; back < r->ring.slot_count && back < written; back++) {
        uint64_t n = written - 1 - back;
        struct sps_slot *slot = sps_slot_of(&r->ring, n);
        uint64_t s1 = atomic_load_explicit(&slot->seq, memory_order_acquire);
        if (s1 != 2 * n + 2)
            return -2; /* overwritten meanwhile: look at write_seq again */
        if (!is_marker(slot, s1))
            return (int64_t)n;
    }
    return -1; /* nothing but skip markers in reach */
}

static int64_t read_latest(struct sps_reader *r, char *dst, uint64_t cap, uint64_t *seq)
{
    for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        uint64_t written = sps_write_seq(&r->ring);
        if (written == 0)
            return SPS_EMPTY;
        int64_t found = newest_message(r, written);
        if (found == -1)
            return SPS_EMPTY;
        if (found < 0)
            continue;
        uint64_t n = (uint64_t)found;
        struct sps_slot *slot = sps_slot_of(&r->ring, n);
        uint64_t s1 = atomic_load_explicit(&slot->seq, memory_order_acquire);
        if (s1 != 2 * n + 2)
            continue; /* already overwritten: look at write_seq again */
        uint64_t len = atomic_load_explicit(&slot->length, memory_order_relaxed);
        if (len > r->ring.slot_capacity)
            len = r->ring.slot_capacity;
        int fits = len <= cap;
        if (fits)
            copy_out(dst, slot->payload, len);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&slot->seq, memory_order_relaxed) != s1)
            continue;
        if (!fits) {
            r->last_len = len;
            return SPS_BUFFER_TOO_SMALL;
        }
        *seq = n;
        return (int64_t)len;
    }
    return SPS_BUSY;
}

static int64_t view_begin(struct sps_reader *r, uint64_t *offset)
{
    for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        uint64_t n = r->next;
        struct sps_slot *slot = sps_slot_of(&r->ring, n);
        uint64_t s1 = atomic_load_explicit(&slot->seq, memory_order_acquire);
        if (s1 < 2 * n + 2)
            return SPS_EMPTY;
        if (s1 == 2 * n + 2 && is_marker(slot, s1)) {
            pass_marker(r, n);
            continue;
        }
        if (s1 == 2 * n + 2) {
            uint64_t len = atomic_load_explicit(&slot->length, memory_order_relaxed);
            if (len > r->ring.slot_capacity)
                len = r->ring.slot_capacity; /* a torn length: sps_view_end will say so */
            r->view_seq = s1;
            r->view_next = n;
            r->last_len = len;
            *offset = (uint64_t)(slot->payload - r->ring.base);
            return (int64_t)len;
        }
        resync(r, s1);
    }
    return SPS_BUSY;
}

static int view_end(struct sps_reader *r)
{
    uint64_t seen = r->view_seq;
    r->view_seq = 0;
    if (seen == 0)
        return SPS_CLOSED;
    if (r->next != r->view_next)
        return SPS_MOVED; /* checking the slot of the new r->next would be meaningless */
    struct sps_slot *slot = sps_slot_of(&r->ring, r->next);
    atomic_thread_fence(memory_order_acquire); /* the caller's reads of the payload come first */
    uint64_t now = atomic_load_explicit(&slot->seq, memory_order_relaxed);
    if (now != seen && r->validate) {
        resync(r, now);
        return SPS_OVERWRITTEN;
    }
    r->last_seq = r->next;
    r->next += 1;
    return SPS_OK;
}

/* Spins until message r->next is there or its slot was lapped (1), the topic closed (2),
 * ns passed or the reader is being closed (0). It watches the slot's own sequence word:
 * its cache line also holds the message's length and first bytes, so the read that
 * follows starts with them at hand. */
static int spin(struct sps_reader *r, uint64_t ns)
{
    const struct sps_slot *slot = sps_slot_of(&r->ring, r->next);
    uint64_t want = 2 * r->next + 2;
    const _Atomic int *closing = (const _Atomic int *)(const void *)&r->closed;
    uint64_t start = monotonic_ns(), deadline = start + ns;
    for (uint32_t i = 1;; i++) {
        if (atomic_load_explicit(&slot->seq, memory_order_acquire) >= want)
            return 1;
        if ((i & 63) == 0) { /* the rest now and then: they cost a cache miss or a clock read */
            if (sps_topic_closed(&r->ring))
                return 2;
            uint64_t now = monotonic_ns();
            if (now >= deadline || atomic_load_explicit(closing, memory_order_relaxed))
                return 0;
            if (now - start >= SPIN_ALONE_NS)
                sched_yield();
        }
        cpu_relax();
    }
}

/* ---- the reader's public calls: each counted in flight (see sps_enter) ---- */

/* Publishes our position in our control entry if a call moved it. */
static void moved(struct sps_reader *r, uint64_t from)
{
    if (r->next != from && r->entry != NULL)
        report_progress(r);
}

int64_t sps_read(struct sps_reader *r, char *dst, uint64_t cap)
{
    if (!sps_enter(&r->busy, &r->closed))
        return SPS_CLOSED;
    uint64_t from = r->next;
    int64_t rc = read_next(r, dst, cap);
    moved(r, from);
    sps_leave(&r->busy);
    return rc;
}

int64_t sps_take(struct sps_reader *r)
{
    return sps_read(r, r->scratch, r->take_cap);
}

int64_t sps_take_wait(struct sps_reader *r)
{
    if (!sps_enter(&r->busy, &r->closed))
        return SPS_CLOSED;
    uint64_t from = r->next;
    int64_t rc = read_next(r, r->scratch, r->take_cap);
    if (rc == SPS_EMPTY && r->spin_ns > 0 && spin(r, r->spin_ns) == 1)
        rc = read_next(r, r->scratch, r->take_cap);
    moved(r, from);
    sps_leave(&r->busy);
    return rc;
}

int64_t sps_take_many(struct sps_reader *r)
{
    if (!sps_enter(&r->busy, &r->closed))
        return SPS_CLOSED;
    uint64_t from = r->next;
    int64_t rc = read_many(r, r->scratch, r->batch_cap, r->ends, r->batch_max);
    moved(r, from);
    sps_leave(&r->busy);
    return rc;
}

int sps_spin(struct sps_reader *r, uint64_t ns)
{
    if (!sps_enter(&r->busy, &r->closed))
        return 2;
    int rc = spin(r, ns);
    sps_leave(&r->busy);
    return rc;
}

int64_t sps_read_latest(struct sps_reader *r, char *dst, uint64_t cap, uint64_t *seq)
{
    if (!sps_enter(&r->busy, &r->closed))
        return SPS_CLOSED;
    int64_t rc = read_latest(r, dst, cap, seq);
    sps_leave(&r->busy);
    return rc;
}

int64_t sps_view_begin(struct sps_reader *r)
{
    uint64_t *offset = &r->view_offset;
    *offset = 0;
    r->view_seq = 0;
    if (!sps_enter(&r->busy, &r->closed))
        return SPS_CLOSED;
    uint64_t from = r->next;
    int64_t rc = view_begin(r, offset);
    moved(r, from);
    sps_leave(&r->busy);
    return rc;
}

int sps_view_end(struct sps_reader *r)
{
    if (!sps_enter(&r->busy, &r->closed))
        return SPS_CLOSED;
    uint64_t from = r->next;
    int rc = view_end(r);
    moved(r, from);
    sps_leave(&r->busy);
    return rc;
}

int64_t sps_reader_write_seq(struct sps_reader *r)
{
    if (!sps_enter(&r->busy, &r->closed))
        return SPS_CLOSED;
    int64_t rc = (int64_t)sps_write_seq(&r->ring);
    sps_leave(&r->busy);
    return rc;
}

int sps_reader_topic_closed(struct sps_reader *r)
{
    if (!sps_enter(&r->busy, &r->closed))
        return SPS_CLOSED;
    int rc = sps_topic_closed(&r->ring);
    sps_leave(&r->busy);
    return rc;
}

void sps_reader_close(struct sps_reader *r)
{
    sps_shut(&r->closed, &r->busy);
}

/* ---- file-backed rings: reopening after the writer ended ---- */

/* The highest number any slot holds in its right place (complete, below SPS_MAX_SEQ), plus one;
 * at least `written`. Numbering continues there, so no number a reader may have seen is
 * reused (a half-written number was never seen: it is reused, as after an aborted loan). */
static uint64_t numbers_used(const struct sps_writer *w, uint64_t written, struct sps_recovery *out)
{
    uint64_t next = written;
    for (uint64_t i = 0; i < w->ring.slot_count; i++) {
        uint64_t s = atomic_load_explicit(&sps_slot_of(&w->ring, i)->seq, memory_order_relaxed);
        if (s & 1) {
            out->torn++;
        } else if (s != 0 && s / 2 - 1 < SPS_MAX_SEQ && ((s / 2 - 1) & w->ring.slot_mask) == i) {
            next = max_u64(next, s / 2);
        }
    }
    return next;
}

/* A complete slot of a ring file holds what its checksum says: after a power cut it may
 * hold some pages of one message and some of the message that was overwriting it, under
 * either one's sequence word. */
static int slot_intact(const struct sps_ring *ring, const struct sps_slot *slot, uint64_t seq)
{
    if (!ring->checksums)
        return 1;
    uint32_t len = atomic_load_explicit(&slot->length, memory_order_relaxed);
    uint32_t flags = atomic_load_explicit(&slot->flags, memory_order_relaxed);
    if (len > ring->slot_capacity)
        return 0;
    uint64_t word = atomic_load_explicit(sps_checksum_word((struct sps_slot *)(uintptr_t)slot, len),
                                         memory_order_relaxed);
    return word == sps_slot_checksum(slot, seq, len, flags);
}

/* Every slot must hold the newest number below `next` that maps to it (e), complete, intact
 * and trusted; anything else (torn, mixed, stale after a power cut, garbage, or not trusted to
 * be on disk) becomes a skip marker for e, which readers count as lost. */
static void repair(struct sps_writer *w, uint64_t next, uint64_t trusted_end, struct sps_recovery *out)
{
    uint64_t n_slots = w->ring.slot_count;
    uint64_t first = next > n_slots ? next - n_slots : 0;
    for (uint64_t i = 0; i < n_slots; i++) {
        struct sps_slot *slot = sps_slot_of(&w->ring, i);
        uint64_t s = atomic_load_explicit(&slot->seq, memory_order_relaxed);
        uint64_t e = first + ((i - first) & w->ring.slot_mask);
        if (e >= next) { /* fewer than N numbers were ever used: this slot must be empty */
            if (s != 0) {
                atomic_store_explicit(&slot->seq, 0, memory_order_release);
                out->repaired++;
            }
            continue;
        }
        if (s == 2 * e + 2 && !slot_intact(&w->ring, slot, s)) {
            out->corrupt++;
        } else if (s == 2 * e + 2 && e < trusted_end) {
            out->kept++;
            continue;
        } else if (s == 2 * e + 2) {
            out->unflushed++;
        }
        complete_slot(&w->ring, begin_write(w, e), e, 0, SPS_SLOT_SKIPPED);
        out->repaired++;
    }
}

/* Repairs every slot of a validated ring whose writer ended, and moves write_seq to where
 * numbering continues. */
static void recover(void *base, uint64_t size, const struct sps_header_info *info,
                    uint64_t trusted_end, struct sps_recovery *out)
{
    struct sps_writer w;
    memset(&w, 0, sizeof w);
    w.ring.base = base;
    w.ring.size = size;
    w.ring.slot_count = info->slot_count;
    w.ring.slot_mask = info->slot_count - 1;
    w.ring.slot_stride = info->slot_stride;
    w.ring.slot_capacity = info->slot_size;
    w.ring.checksums = info->file_format == SPS_FILE_FORMAT;
    uint64_t next = numbers_used(&w, info->write_seq, out);
    repair(&w, next, trusted_end, out);
    advance(&w, next);
    out->next = next;
}

int sps_file_reopen(void *base, uint64_t size, uint64_t trusted_end, uint64_t epoch,
                    int64_t publisher_pid, uint64_t publisher_start_time, uint64_t created_ns,
                    const unsigned char *boot_id, struct sps_recovery *out)
{
    memset(out, 0, sizeof *out);
    struct sps_header_info info;
    struct sps_file_header_info file;
    int rc = sps_header_inspect(base, size, &info, &file);
    if (rc != SPS_OK)
        return rc;
    struct sps_shared_header *h = base;
    /* Attaching readers wait while the magic is withdrawn; attached ones read on safely (every
     * slot is rewritten with the writer's own protocol) and see write_seq only move forward. */
    atomic_store_explicit(&h->id.magic, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    recover(base, size, &info, trusted_end, out);
    sps_header_renew(h, epoch, publisher_pid, publisher_start_time, created_ns, boot_id);
    return SPS_OK;
}

int sps_file_recover_copy(void *base, uint64_t size, uint64_t trusted_end, struct sps_recovery *out)
{
    memset(out, 0, sizeof *out);
    struct sps_header_info info;
    int rc = sps_header_read(base, size, &info);
    if (rc != SPS_OK)
        return rc;
    recover(base, size, &info, trusted_end, out);
    return SPS_OK;
}

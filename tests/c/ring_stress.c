/*
 * Stress test of the C core with threads over one segment, for ThreadSanitizer (and memcheck).
 *
 * One writer thread publishes, loans (committed and aborted) and skips; reader threads read
 * the stream (sps_read), read in place (sps_view_begin/end) and read the newest (read_latest);
 * a churn thread claims, arms and releases control entries and a monitor thread reads them,
 * as `shmpubsub info` does. Stream readers sleep the way subscribers do (spin, arm, re-check,
 * block), on a condition variable standing in for the wake-up socket, and the writer wakes
 * whoever it collects from the sleepers bitmap. Phases alternate:
 *   - flood: the writer never waits, so readers are lapped and resynchronise;
 *   - handshake: a short burst, then the writer waits until every stream reader has caught
 *     up. A reader that sleeps through a message it was owed (a lost wake-up) stalls this,
 *     and the test fails after STALL_SECONDS.
 * At the end the writer and one reader are closed while their threads are still calling in.
 *
 * Every payload is a function of its sequence number and length, so each reader checks every
 * message it gets (a torn read would fail), and received + lost must equal the numbers
 * consumed. Fails (exit 1) on any error; ThreadSanitizer fails it on any race outside the
 * seqlock payload copies (tests/c/tsan.supp says which, and why).
 *
 *   gcc -std=c11 -O1 -g -fsanitize=thread -pthread -Icsrc tests/c/ring_stress.c \
 *       csrc/checksum.c csrc/control.c csrc/file.c csrc/ring.c csrc/header.c -o ring_stress
 *   TSAN_OPTIONS="suppressions=tests/c/tsan.supp halt_on_error=1" ./ring_stress [SECONDS]
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layout.h"

#define SLOTS 8
#define SLOT_SIZE 3000    /* payloads up to 1024 bytes move as atomic words, larger by memcpy */
#define STREAM_READERS 3
#define MAX_SUBSCRIBERS 8 /* the stream readers, the view reader and churn */
#define BURST 3           /* handshake bursts stay under a ring-full: nothing is lapped */
#define MAX_SKIP (2 * SLOTS)
#define STALL_SECONDS 20

static unsigned char *segment, *control_segment;
static uint64_t segment_size, control_size;
static struct sps_writer writer;
static struct sps_control control; /* shared, as one process's handle is by its threads */

static _Atomic int errors, stop;
static _Atomic uint64_t published, skipped, loans_aborted, wakeups, sleeps, laps_seen;

#define FAIL(...)                                                                           \
    do {                                                                                    \
        if (atomic_fetch_add(&errors, 1) < 10) {                                            \
            fprintf(stderr, "ring_stress: " __VA_ARGS__);                                   \
            fputc('\n', stderr);                                                            \
        }                                                                                   \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Message n's length and bytes: any torn copy mixes two messages and fails the check. */
static uint64_t length_of(uint64_t n)
{
    static const uint64_t lengths[] = {0, 1, 7, 48, 200, 1024, 1025, 2000, SLOT_SIZE};
    return lengths[(n * 7) % (sizeof lengths / sizeof lengths[0])];
}

static unsigned char byte_of(uint64_t n, uint64_t i)
{
    return (unsigned char)(n * 131 + i * 7 + (n >> 8) + 1);
}

static void make_message(unsigned char *buf, uint64_t n)
{
    for (uint64_t i = 0; i < length_of(n); i++)
        buf[i] = byte_of(n, i);
}

static int check_message(const char *who, uint64_t n, const unsigned char *buf, int64_t len)
{
    if (len < 0 || (uint64_t)len != length_of(n)) {
        FAIL("%s: message %llu has %lld bytes, not %llu", who, (unsigned long long)n, (long long)len,
             (unsigned long long)length_of(n));
        return 0;
    }
    for (int64_t i = 0; i < len; i++)
        if (buf[i] != byte_of(n, (uint64_t)i)) {
            FAIL("%s: message %llu is torn at byte %lld", who, (unsigned long long)n, (long long)i);
            return 0;
        }
    return 1;
}

/* ---- the wake-up "socket": a flag under a mutex, like a datagram that may be pending ---- */

struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending;
};

static struct waiter waiters[MAX_SUBSCRIBERS];

static void wake(uint32_t index)
{
    struct waiter *wt = &waiters[index];
    pthread_mutex_lock(&wt->lock);
    wt->pending = 1;
    pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&wt->lock);
    atomic_fetch_add(&wakeups, 1);
}

/* Blocks until a wake-up is pending (no time-out: a lost wake-up stalls the handshake). */
static void sleep_on(uint32_t index)
{
    struct waiter *wt = &waiters[index];
    pthread_mutex_lock(&wt->lock);
    while (!wt->pending)
        pthread_cond_wait(&wt->cond, &wt->lock);
    wt->pending = 0;
    pthread_mutex_unlock(&wt->lock);
}

static void wake_sleepers(void)
{
    uint32_t found[MAX_SUBSCRIBERS];
    uint64_t tokens[MAX_SUBSCRIBERS];
    uint32_t n = sps_collect_sleepers(&control, found, tokens, MAX_SUBSCRIBERS);
    for (uint32_t i = 0; i < n; i++)
        wake(found[i]);
}

/* ---- writer ---- */

/* main closes the writer while this thread may still be calling in: after stop, a refusal
 * as closed is the expected answer, not a failure. */
static int closed_at_stop(int64_t rc)
{
    return rc == SPS_CLOSED && atomic_load(&stop);
}

static void after_publish(int64_t rc)
{
    if (rc == SPS_WAKE)
        wake_sleepers();
    else if (rc < 0 && !closed_at_stop(rc))
        FAIL("writer: publish returned %lld", (long long)rc);
}

/* The loan's payload is written in place, racing with readers of the slot's old message. */
static void write_loan(unsigned char *dst, const unsigned char *src, uint64_t len)
{
    memcpy(dst, src, len);
}

static void publish_one(uint64_t round, unsigned char *buf)
{
    uint64_t n = writer.next;
    make_message(buf, n);
    if (round % 5 == 0) { /* through a loan; one in four of those aborted */
        uint64_t offset;
        int rc = sps_loan(&writer, length_of(n), &offset);
        if (rc != SPS_OK) {
            if (!closed_at_stop(rc))
                FAIL("writer: loan refused (%d)", rc);
            return;
        }
        write_loan(segment + offset, buf, length_of(n));
        if (round % 20 == 0) {
            sps_abort(&writer);
            atomic_fetch_add(&loans_aborted, 1);
            return;
        }
        after_publish(sps_commit(&writer));
    } else if (round % 97 == 0) {
        int rc = sps_skip(&writer, 1 + round % MAX_SKIP);
        atomic_fetch_add(&skipped, 1 + round % MAX_SKIP);
        after_publish(rc == SPS_OK ? 0 : rc);
        return;
    } else {
        after_publish(sps_publish(&writer, (const char *)buf, length_of(n)));
    }
    atomic_fetch_add(&published, 1);
}

static int all_caught_up(void)
{
    for (uint32_t i = 0; i < STREAM_READERS + 1; i++) {
        struct sps_entry_info info;
        if (sps_control_entry(&control, i, &info) != SPS_OK || info.read_pos < writer.next)
            return 0;
    }
    return 1;
}

static void *writer_main(void *arg)
{
    (void)arg;
    unsigned char *buf = malloc(SLOT_SIZE);
    uint64_t round = 0;
    while (!atomic_load(&stop)) {
        int flood = (round / 400) % 2 == 0;
        if (flood) {
            publish_one(round++, buf);
            continue;
        }
        for (int i = 0; i < BURST && !atomic_load(&stop); i++)
            publish_one(round++, buf);
        double deadline = now_s() + STALL_SECONDS;
        while (!all_caught_up() && !atomic_load(&stop)) {
            if (now_s() > deadline) {
                FAIL("writer: a stream reader slept %d s with messages pending (lost wake-up)", STALL_SECONDS);
                atomic_store(&stop, 1);
            }
            pause_us(50);
        }
    }
    /* Keep publishing until the main thread's close turns us away. */
    for (;;) {
        make_message(buf, writer.next);
        int64_t rc = sps_publish(&writer, (const char *)buf, length_of(writer.next));
        if (rc == SPS_WAKE)
            wake_sleepers();
        else if (rc < 0)
            break;
        atomic_fetch_add(&published, 1);
        pause_us(10);
    }
    free(buf);
    return NULL;
}

/* ---- readers ---- */

struct reader_thread {
    pthread_t thread;
    char name[32];
    struct sps_reader r;
    uint32_t index;
    uint64_t start;
    uint64_t received;
};

static struct reader_thread stream[STREAM_READERS], viewer, latest;

/* Readers claim entries 0, 1, ... in the order they attach (the churn thread comes later). */
static int attach(struct reader_thread *t, const char *name, int resync)
{
    static uint64_t token = 101;
    snprintf(t->name, sizeof t->name, "%s", name);
    if (sps_reader_init(&t->r, segment, segment_size, SPS_START_NEXT, resync) != SPS_OK)
        return 0;
    token += 2;
    int index = sps_control_claim(&control, token, 1, 0);
    if (index < 0)
        return 0;
    t->index = (uint32_t)index;
    sps_reader_bind(&t->r, &control, t->index);
    t->start = t->r.next;
    return 1;
}

/* As Subscriber.receive: spin a little, arm, re-check, and only then block. */
static int wait_for_message(struct reader_thread *t)
{
    int rc = sps_spin(&t->r, 20000);
    if (rc == 1)
        return 1;
    if (rc == 2)
        return 0;
    if (sps_arm(&t->r)) {
        sps_disarm(&t->r);
        return 1;
    }
    atomic_fetch_add(&sleeps, 1);
    sleep_on(t->index);
    sps_disarm(&t->r);
    return 1;
}

static void check_progress(struct reader_thread *t, uint64_t lost_before)
{
    if (t->r.lost > lost_before)
        atomic_fetch_add(&laps_seen, 1);
    if (t->received + t->r.lost != t->r.next - t->start)
        FAIL("%s: received %llu + lost %llu != %llu consumed", t->name, (unsigned long long)t->received,
             (unsigned long long)t->r.lost, (unsigned long long)(t->r.next - t->start));
}

static void *stream_main(void *arg)
{
    struct reader_thread *t = arg;
    unsigned char *buf = malloc(SLOT_SIZE);
    for (;;) {
        uint64_t lost_before = t->r.lost;
        /* Closed before this read found nothing: then nothing more will come. */
        int closed = sps_reader_topic_closed(&t->r) == 1;
        int64_t len = sps_read(&t->r, (char *)buf, SLOT_SIZE);
        if (len >= 0) {
            t->received++;
            check_message(t->name, t->r.last_seq, buf, len);
            check_progress(t, lost_before);
            continue;
        }
        if (len == SPS_BUSY)
            continue;
        if (len != SPS_EMPTY) {
            FAIL("%s: read returned %lld", t->name, (long long)len);
            break;
        }
        check_progress(t, lost_before);
        if (closed)
            break;
        if (!wait_for_message(t) && sps_reader_topic_closed(&t->r) != 1)
            FAIL("%s: spin said closed, the header says not", t->name);
    }
    free(buf);
    return NULL;
}

/* Reads the payload in place; the copy may be torn and is checked only if sps_view_end agrees. */
static void copy_view(unsigned char *dst, const unsigned char *src, uint64_t len)
{
    memcpy(dst, src, len);
}

static void *view_main(void *arg)
{
    struct reader_thread *t = arg;
    unsigned char *buf = malloc(SLOT_SIZE);
    for (;;) {
        uint64_t offset, lost_before = t->r.lost;
        int closed = sps_reader_topic_closed(&t->r) == 1;
        int64_t len = sps_view_begin(&t->r);
        offset = t->r.view_offset;
        if (len >= 0) {
            uint64_t n = t->r.next;
            copy_view(buf, segment + offset, (uint64_t)len);
            int rc = sps_view_end(&t->r);
            if (rc == SPS_OK) {
                t->received++;
                check_message(t->name, n, buf, len);
            } else if (rc != SPS_OVERWRITTEN) {
                FAIL("%s: view_end returned %d", t->name, rc);
            }
            check_progress(t, lost_before);
            continue;
        }
        if (len == SPS_BUSY)
            continue;
        if (len != SPS_EMPTY) {
            FAIL("%s: view_begin returned %lld", t->name, (long long)len);
            break;
        }
        if (closed)
            break;
        wait_for_message(t);
    }
    free(buf);
    return NULL;
}

/* Reads the newest message until its reader is closed under it (by the main thread). */
static void *latest_main(void *arg)
{
    struct reader_thread *t = arg;
    unsigned char *buf = malloc(SLOT_SIZE);
    uint64_t seq, newest = 0;
    for (;;) {
        int64_t len = sps_read_latest(&t->r, (char *)buf, SLOT_SIZE, &seq);
        if (len == SPS_CLOSED)
            break;
        if (len < 0) {
            if (len != SPS_EMPTY && len != SPS_BUSY)
                FAIL("%s: read_latest returned %lld", t->name, (long long)len);
            continue;
        }
        t->received++;
        check_message(t->name, seq, buf, len);
        if (seq < newest)
            FAIL("%s: latest went back from %llu to %llu", t->name, (unsigned long long)newest,
                 (unsigned long long)seq);
        newest = seq;
    }
    free(buf);
    return NULL;
}

/* ---- control-plane churn and monitoring ---- */

static void *churn_main(void *arg)
{
    (void)arg;
    struct sps_reader r;
    uint64_t token = 1001;
    if (sps_reader_init(&r, segment, segment_size, SPS_START_LATEST, SPS_RESYNC_LATEST) != SPS_OK) {
        FAIL("churn: cannot attach");
        return NULL;
    }
    while (!atomic_load(&stop)) {
        token += 2;
        int index = sps_control_claim(&control, token, 2, 0);
        if (index < 0) {
            FAIL("churn: no free entry");
            break;
        }
        sps_reader_bind(&r, &control, (uint32_t)index);
        if (!sps_arm(&r))
            pause_us(20); /* asleep for a moment: the writer may collect our bit */
        sps_disarm(&r);
        if (sps_control_release(&control, (uint32_t)index, token, 1) != 1)
            FAIL("churn: entry %d not released", index);
    }
    sps_reader_close(&r);
    return NULL;
}

static void *monitor_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        for (uint32_t i = 0; i < MAX_SUBSCRIBERS; i++) {
            struct sps_entry_info info;
            struct sps_header_info h;
            if (sps_control_entry(&control, i, &info) != SPS_OK)
                continue;
            if (sps_header_read(segment, segment_size, &h) != SPS_OK)
                FAIL("monitor: the header stopped validating");
            /* A reader may take message n once its slot is complete, just before write_seq
             * says n + 1, and pass a skip's markers before write_seq moves past them (the
             * writer skips at most MAX_SKIP): it never gets further ahead than that. */
            else if (info.pid == 1 && info.read_pos > h.write_seq + MAX_SKIP)
                FAIL("monitor: entry %u reports position %llu, write_seq is %llu", i,
                     (unsigned long long)info.read_pos, (unsigned long long)h.write_seq);
        }
        pause_us(100);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    uint64_t stride;
    if (sps_geometry(SLOTS, SLOT_SIZE, &stride, &segment_size) != SPS_OK
        || sps_control_geometry(MAX_SUBSCRIBERS, &control_size) != SPS_OK)
        return 2;
    segment = aligned_alloc(4096, segment_size);
    control_segment = aligned_alloc(4096, (control_size + 4095) / 4096 * 4096);
    memset(segment, 0, segment_size);
    memset(control_segment, 0, control_size);
    struct sps_control_info info;
    if (sps_header_init(segment, segment_size, SLOTS, SLOT_SIZE, 1, 1, 0, 0) != SPS_OK
        || sps_control_init(control_segment, control_size, MAX_SUBSCRIBERS, 1, "/nonexistent", (const uint64_t[4]){0}) != SPS_OK
        || sps_control_open(&control, control_segment, control_size, &info) != SPS_OK
        || sps_writer_init(&writer, segment, segment_size) != SPS_OK) {
        fprintf(stderr, "ring_stress: cannot set up the segments\n");
        return 2;
    }
    sps_writer_bind(&writer, &control, NULL);
    for (int i = 0; i < MAX_SUBSCRIBERS; i++) {
        pthread_mutex_init(&waiters[i].lock, NULL);
        pthread_cond_init(&waiters[i].cond, NULL);
    }
    char name[32];
    for (int i = 0; i < STREAM_READERS; i++) {
        snprintf(name, sizeof name, "stream reader %d", i);
        if (!attach(&stream[i], name, i % 2 ? SPS_RESYNC_LATEST : SPS_RESYNC_OLDEST))
            return 2;
    }
    if (!attach(&viewer, "view reader", SPS_RESYNC_OLDEST) || !attach(&latest, "latest reader", SPS_RESYNC_OLDEST))
        return 2;

    pthread_t writer_thread, churn_thread, monitor_thread;
    for (int i = 0; i < STREAM_READERS; i++)
        pthread_create(&stream[i].thread, NULL, stream_main, &stream[i]);
    pthread_create(&viewer.thread, NULL, view_main, &viewer);
    pthread_create(&latest.thread, NULL, latest_main, &latest);
    pthread_create(&churn_thread, NULL, churn_main, NULL);
    pthread_create(&monitor_thread, NULL, monitor_main, NULL);
    pthread_create(&writer_thread, NULL, writer_main, NULL);

    double end = now_s() + seconds;
    while (now_s() < end && !atomic_load(&errors))
        pause_us(10000);
    atomic_store(&stop, 1);
    pthread_join(churn_thread, NULL);
    pthread_join(monitor_thread, NULL);
    /* Close the writer and the latest reader while their threads are still calling in. */
    if (sps_writer_close(&writer) == SPS_WAKE)
        wake_sleepers();
    sps_reader_close(&latest.r);
    pthread_join(writer_thread, NULL);
    pthread_join(latest.thread, NULL);
    for (int i = 0; i < STREAM_READERS; i++)
        pthread_join(stream[i].thread, NULL);
    pthread_join(viewer.thread, NULL);

    uint64_t total = writer.next;
    for (int i = 0; i < STREAM_READERS; i++) {
        struct reader_thread *t = &stream[i];
        if (t->r.next != total || t->received + t->r.lost != total - t->start)
            FAIL("%s: ended at %llu of %llu, received %llu + lost %llu", t->name,
                 (unsigned long long)t->r.next, (unsigned long long)total, (unsigned long long)t->received,
                 (unsigned long long)t->r.lost);
        printf("%s: received %llu, lost %llu\n", t->name, (unsigned long long)t->received,
               (unsigned long long)t->r.lost);
    }
    printf("view reader: %llu intact, lost %llu; latest reader: %llu reads\n",
           (unsigned long long)viewer.received, (unsigned long long)viewer.r.lost,
           (unsigned long long)latest.received);
    printf("writer: %llu messages, %llu numbers skipped, %llu loans aborted; %llu sleeps, %llu wake-ups, "
           "%llu reads lapped\n",
           (unsigned long long)published, (unsigned long long)skipped, (unsigned long long)loans_aborted,
           (unsigned long long)sleeps, (unsigned long long)wakeups, (unsigned long long)laps_seen);
    if (atomic_load(&errors)) {
        printf("ring_stress: FAILED with %d errors\n", atomic_load(&errors));
        return 1;
    }
    printf("ring_stress: OK\n");
    return 0;
}

/*
 * The shared-memory layout of a topic segment: the one source of truth.
 *
 *   [ header: SPS_HEADER_SIZE bytes ][ slot 0 ][ slot 1 ] ... [ slot N-1 ]
 *
 * The header's groups are written by different parties at different times,
 * so each sits in its own 128-byte block (two cache lines: no false sharing,
 * even with the adjacent-line prefetcher).
 */
#ifndef SHMPUBSUB_LAYOUT_H
#define SHMPUBSUB_LAYOUT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shmpubsub.h"

#define SPS_MAGIC UINT64_C(0x3150425553504d53) /* "SMPSUBP1" little-endian */
#define SPS_BLOCK 128

/* Written once by the creator, before the magic is released. */
struct sps_identity {
    _Atomic uint64_t magic;
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t slot_count;
    uint64_t slot_size;
    uint64_t slot_stride;
    uint64_t total_size;
    uint64_t epoch;
    int64_t publisher_pid;
    uint64_t publisher_start_time;
    uint64_t created_ns;
};

/* Written by the publisher on every message. */
struct sps_progress {
    _Atomic uint64_t write_seq; /* messages completely published */
    _Atomic uint32_t closed;    /* set once, when the publisher closes */
};

/* Written by the publisher of a file-backed ring (all zero in /dev/shm segments): the topic
 * the file belongs to, the format of its slots, the boot it was last opened in, and how much
 * of it is known to be on disk. Zero-filled before, so a layout-version-2 reader of a /dev/shm
 * segment never sees it. The topic and the format are written once, before the first magic. */
struct sps_file_block {
    _Atomic uint64_t flushed;             /* messages 0..flushed-1 reached the disk (msync returned) */
    unsigned char boot_id[SPS_BOOT_ID_SIZE]; /* /proc/sys/kernel/random/boot_id at (re)opening */
    char topic[SPS_TOPIC_MAX];            /* NUL-terminated */
    uint32_t format;                      /* SPS_FILE_FORMAT (0: written before formats existed) */
};

struct sps_shared_header {
    struct sps_identity id;
    unsigned char pad0[SPS_BLOCK - sizeof(struct sps_identity)];
    struct sps_progress progress;
    unsigned char pad1[SPS_BLOCK - sizeof(struct sps_progress)];
    struct sps_file_block file;
    unsigned char pad2[SPS_BLOCK - sizeof(struct sps_file_block)];
};

/* A lapped reader that resumes at the oldest message resumes this many messages after it.
 * The oldest is the very slot the writer overwrites next: a reader slower than the writer
 * would be lapped again while copying it, over and over, and deliver almost nothing. A
 * fraction of the ring gives it time to read on; the smallest rings have no margin. */
#define SPS_LAP_MARGIN(slot_count) ((slot_count) / SPS_LAP_MARGIN_DIVISOR)

/* Every slot starts on a 64-byte boundary; seq, length and the first 48
 * payload bytes share one cache line. seq is 2n+1 while message n is being
 * written and 2n+2 once it is complete (0: never written). */
struct sps_slot {
    _Atomic uint64_t seq;
    _Atomic uint32_t length;
    _Atomic uint32_t flags;
    unsigned char payload[];
};

/* A slot completed with this flag holds no message: its number was skipped by the publisher
 * (lost upstream, say, by a bridge); readers count it in `lost` and move on. */
#define SPS_SLOT_SKIPPED UINT32_C(1)

/* In ring files a message of len bytes is followed, at the next multiple of 8, by this word:
 * its checksum (see sps_file_geometry). Its own word, so no reader's word copy overlaps it. */
#define SPS_CHECKSUM_SIZE 8

static inline _Atomic uint64_t *sps_checksum_word(struct sps_slot *slot, uint64_t len)
{
    return (_Atomic uint64_t *)(void *)(slot->payload + ((len + 7) & ~(uint64_t)7));
}

/* The checksum of a ring file's slot: CRC-32C of the slot header as it reads once complete
 * (seq, length, flags), then of the payload. Only the writer and recovery compute it, on
 * slots no one else writes. */
uint32_t sps_slot_checksum(const struct sps_slot *slot, uint64_t seq, uint32_t len, uint32_t flags);
/* Stores it in the slot's checksum word. */
void sps_slot_checksum_store(struct sps_slot *slot, uint64_t seq, uint32_t len, uint32_t flags);

_Static_assert(sizeof(struct sps_identity) <= SPS_BLOCK, "identity block overflows");
_Static_assert(sizeof(struct sps_file_block) <= SPS_BLOCK, "file block overflows");
_Static_assert(offsetof(struct sps_shared_header, progress) == SPS_BLOCK, "progress block misplaced");
_Static_assert(sizeof(struct sps_shared_header) <= SPS_HEADER_SIZE, "header overflows its page");
_Static_assert(offsetof(struct sps_slot, payload) == SPS_SLOT_HEADER_SIZE, "slot header size");
_Static_assert(sizeof(_Atomic uint64_t) == 8 && ATOMIC_LLONG_LOCK_FREE == 2,
               "64-bit atomics must be lock-free: they live in shared memory");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

static inline struct sps_shared_header *sps_header(const struct sps_ring *ring)
{
    return (struct sps_shared_header *)ring->base;
}

static inline struct sps_slot *sps_slot_of(const struct sps_ring *ring, uint64_t n)
{
    return (struct sps_slot *)(ring->base + SPS_HEADER_SIZE + (n & ring->slot_mask) * ring->slot_stride);
}

/*
 * The control segment: [ header: SPS_CONTROL_HEADER_SIZE ][ entry 0 ] ... [ entry M-1 ]
 * Subscribers map it read-write (the data segment stays read-only to them).
 */
#define SPS_CONTROL_MAGIC UINT64_C(0x314c544353504d53) /* "SMPSCTL1" little-endian */
#define SPS_SLEEPER_WORDS (SPS_MAX_SUBSCRIBERS / 64)

struct sps_control_identity {
    _Atomic uint64_t magic;
    uint32_t layout_version;
    uint32_t header_size;
    uint32_t max_subscribers;
    uint32_t entry_size;
    uint64_t epoch;           /* the data segment's epoch */
    uint64_t total_size;
    char socket_dir[SPS_SOCKET_DIR_MAX];
    /* The socket directory's st_dev and st_ino as the publisher sees it (0, 0: not recorded),
     * so that a subscriber in another mount namespace can tell whether the directory it sees
     * under that path is the same one. */
    uint64_t socket_dir_dev;
    uint64_t socket_dir_ino;
    /* The publisher's PID and mount namespaces (inodes of /proc/self/ns/pid and .../mnt; 0:
     * not recorded): its pid means something only in its own PID namespace, and the socket
     * directory is the same directory only within its mount namespace (or one sharing it). */
    uint64_t pid_ns;
    uint64_t mnt_ns;
};

struct sps_control_header {
    struct sps_control_identity id;
    unsigned char pad0[2 * SPS_BLOCK - sizeof(struct sps_control_identity)];
    /* Bit i set: subscriber i sleeps and wants a wake-up. One bitmap (rather than a
     * flag per entry) lets the publisher check every sleeper with one load. */
    _Atomic uint64_t sleepers[SPS_SLEEPER_WORDS];
};

/* Written by its subscriber; read by the publisher and by `shmpubsub info`. */
struct sps_entry {
    _Atomic uint64_t token;   /* 0: free. Else names the subscriber's socket. */
    _Atomic int64_t pid;
    _Atomic uint64_t start_time;
    _Atomic uint64_t read_pos;
    _Atomic uint64_t lost;
};

_Static_assert(sizeof(struct sps_control_identity) <= 2 * SPS_BLOCK, "control identity overflows");
_Static_assert(sizeof(struct sps_control_header) <= SPS_CONTROL_HEADER_SIZE, "control header overflows");
_Static_assert(sizeof(struct sps_entry) <= SPS_ENTRY_SIZE, "control entry overflows");
_Static_assert(SPS_MAX_SUBSCRIBERS % 64 == 0, "sleepers bitmap holds whole words");

/*
 * The stub of a file-backed topic: a one-page object under the topic's /dev/shm name that
 * claims the name exactly as a ring would (same O_EXCL creation, same single-writer lock) and
 * names the file that holds the ring.
 */
#define SPS_STUB_MAGIC UINT64_C(0x314c494653504d53) /* "SMPSFIL1" little-endian */

struct sps_stub {
    _Atomic uint64_t magic;
    uint32_t layout_version;
    uint32_t path_len;
    uint64_t epoch;           /* the ring's epoch */
    int64_t publisher_pid;
    char path[SPS_PATH_MAX];  /* absolute, NUL-terminated */
};

_Static_assert(sizeof(struct sps_stub) <= SPS_STUB_SIZE, "stub overflows its page");

/* Validates everything in a header but its magic; fills *info (see sps_header_read). */
int sps_header_check(const struct sps_shared_header *h, uint64_t size, struct sps_header_info *info);
/* Gives a validated header a new incarnation: identity fields, boot id, closed = 0, then the
 * magic (release). The caller holds the single-writer lock and has zeroed the magic. */
void sps_header_renew(struct sps_shared_header *h, uint64_t epoch, int64_t publisher_pid,
                      uint64_t publisher_start_time, uint64_t created_ns, const unsigned char *boot_id);

/* ---- calls in flight on a process-local handle ----
 * cffi releases the GIL around every call, so one thread may close a handle while another
 * is inside a call that reads the mapping. A call counts itself in `busy` and then checks
 * `closed`; close sets `closed` and then waits for `busy` to drain. Both seq_cst: one of
 * the two always sees the other, so no call ever touches an unmapped segment. Every call
 * is bounded in time, so the wait is too. */
_Static_assert(sizeof(_Atomic int) == sizeof(int), "guard words are plain ints in the cdef");

static inline int sps_enter(int *busy, int *closed)
{
    atomic_fetch_add_explicit((_Atomic int *)(void *)busy, 1, memory_order_seq_cst);
    if (atomic_load_explicit((_Atomic int *)(void *)closed, memory_order_seq_cst)) {
        atomic_fetch_sub_explicit((_Atomic int *)(void *)busy, 1, memory_order_release);
        return 0;
    }
    return 1;
}

static inline void sps_leave(int *busy)
{
    atomic_fetch_sub_explicit((_Atomic int *)(void *)busy, 1, memory_order_release);
}

/* Refuses new calls, then waits for the ones in flight. */
void sps_shut(int *closed, int *busy);

/* Fills a ring view from a validated header. */
int sps_ring_init(struct sps_ring *ring, const void *base, uint64_t size);
uint64_t sps_write_seq(const struct sps_ring *ring);
int sps_topic_closed(const struct sps_ring *ring);

#endif

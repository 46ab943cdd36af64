/*
 * shmpubsub C core: the public interface.
 *
 * A topic is one shared-memory segment: a header page followed by a ring of
 * fixed-size slots guarded by per-slot sequence words (a seqlock per slot).
 * One writer publishes; any number of readers copy messages out and validate
 * them. Readers never write to the segment.
 *
 * The region between the CDEF markers is read verbatim by build_ffi.py and
 * handed to cffi, so Python and C share one declaration of everything they
 * both use. Keep it plain C: no #if, no _Atomic, no macros with expressions.
 * The shared-memory layout itself (with its atomics) is private to the C
 * sources: see layout.h.
 */
#ifndef SHMPUBSUB_H
#define SHMPUBSUB_H

#include <stddef.h>
#include <stdint.h>

/* CDEF BEGIN */

/* Bump on any change to the segment layout or to the protocol. */
#define SPS_LAYOUT_VERSION 2

#define SPS_HEADER_SIZE 4096
#define SPS_SLOT_HEADER_SIZE 16
#define SPS_SLOT_ALIGN 64
#define SPS_MAX_SLOT_COUNT 1073741824
#define SPS_MAX_SLOT_SIZE 2147483648
#define SPS_PID_MAX 4194304
/* Message numbers stay below 2^62 (a skip may not pass it; a header whose write_seq does is
 * corrupt), so that 2n+2 and the int64 returns never overflow: at a billion messages a
 * second a publisher reaches it in 146 years. */
#define SPS_MAX_SEQ 4611686018427387904

/* The control segment: one entry per attached subscriber (see control.c). */
#define SPS_CONTROL_HEADER_SIZE 512
#define SPS_ENTRY_SIZE 128
#define SPS_MAX_SUBSCRIBERS 1024
#define SPS_SOCKET_DIR_MAX 96

/* Where a new reader starts. */
enum sps_start {
    SPS_START_NEXT = 0,   /* the first message published after attaching */
    SPS_START_LATEST = 1, /* the newest message already published */
    SPS_START_OLDEST = 2  /* the oldest message the ring still holds */
};

/* Where a lapped reader resumes. */
#define SPS_LAP_MARGIN_DIVISOR 8 /* oldest: slot_count / this after the oldest (layout.h) */
enum sps_resync {
    SPS_RESYNC_OLDEST = 0, /* near the oldest message that can still be intact */
    SPS_RESYNC_LATEST = 1  /* the newest complete message */
};

/* Return codes: a call returns a length or sequence number (>= 0) or one of these. */
enum sps_status {
    SPS_OK = 0,
    SPS_EMPTY = -1,           /* no new message */
    SPS_TOO_LARGE = -2,       /* message larger than a slot's capacity */
    SPS_BUFFER_TOO_SMALL = -3,/* destination too small; the message stays unread */
    SPS_LOAN_ACTIVE = -4,     /* a loan is open: commit or abort it first */
    SPS_NO_LOAN = -5,         /* commit or abort without a loan */
    SPS_CLOSED = -6,          /* the handle was closed */
    SPS_FORKED = -7,          /* a writer inherited through fork(): only its creator may publish */
    SPS_BUSY = -8,            /* no consistent read within the retry budget (writer too fast) */
    SPS_WAKE = -9,            /* published, and some subscriber sleeps: send wake-ups */
    SPS_FULL = -10,           /* every control entry is taken */
    SPS_OVERWRITTEN = -11,    /* a zero-copy view's message was overwritten while in use */
    SPS_CLAIMING = -12,       /* a control entry is being claimed (by the pid given) */
    SPS_MOVED = -13,          /* the stream was read while a view was open: that read took it */
    /* header validation */
    SPS_E_SIZE = -20,         /* mapping smaller than a header */
    SPS_E_UNINITIALISED = -21,/* magic not written yet: creator still starting, or died */
    SPS_E_MAGIC = -22,        /* not a shmpubsub segment */
    SPS_E_VERSION = -23,      /* written by an incompatible layout version */
    SPS_E_HEADER_SIZE = -24,  /* header size field is wrong */
    SPS_E_GEOMETRY = -25,     /* slot count or slot size out of range */
    SPS_E_TOTAL = -26,        /* total size overflows or disagrees with the mapping */
    SPS_E_SOCKET_DIR = -27,   /* control segment: socket directory not a terminated path */
    SPS_E_PID = -28,          /* publisher pid out of range */
    SPS_E_SEQ = -29           /* write_seq beyond SPS_MAX_SEQ */
};

/* A process-local view of a mapped segment. The geometry is copied out of the
 * header once, after validation, and never re-read from shared memory. */
struct sps_ring {
    unsigned char *base;      /* start of the mapping */
    uint64_t size;            /* bytes mapped */
    uint64_t slot_count;      /* a power of two */
    uint64_t slot_mask;
    uint64_t slot_stride;     /* bytes per slot, slot header included */
    uint64_t slot_capacity;   /* largest payload */
    int checksums;            /* 1 in ring files: a checksum word follows each message */
};

struct sps_writer {
    struct sps_ring ring;
    uint64_t next;            /* number of the next message */
    uint64_t loan_len;
    int state;                /* private: ready, loaned, closed, forked */
    int closed;               /* private: refuses calls (closed or forked) */
    int busy;                 /* private: calls in flight (close waits for them) */
    uint32_t sleeper_words;   /* words in the control segment's sleepers bitmap (0: none bound) */
    uint64_t *sleepers;       /* that bitmap */
    uint64_t stream_from;     /* payloads this long or longer bypass the cache (UINT64_MAX: none) */
    struct sps_waker *waker;  /* sends the wake-ups after sps_publish_waking (NULL: none) */
};

struct sps_reader {
    struct sps_ring ring;
    uint64_t next;            /* number of the next message wanted */
    uint64_t lost;            /* messages skipped because the writer lapped us */
    uint64_t last_seq;        /* number of the message last returned */
    uint64_t last_len;        /* its length (or, after SPS_BUFFER_TOO_SMALL, the length needed) */
    int resync;               /* enum sps_resync */
    int validate;             /* 1; 0 only in the test that proves the checker catches torn reads */
    int closed;
    int busy;                 /* private: calls in flight (close waits for them) */
    uint64_t view_seq;        /* sequence word seen by sps_view_begin (0: no view open) */
    uint64_t view_offset;     /* where sps_view_begin found the payload, in the mapping */
    uint64_t view_next;       /* and the number of that message (r->next then) */
    int armed;                /* our sleepers bit may be set */
    uint64_t sleeper_bit;     /* our bit in *sleepers */
    uint64_t *sleepers;       /* the word of the sleepers bitmap holding our bit (NULL: unbound) */
    unsigned char *entry;     /* our control entry, where we publish our position and losses */
    /* Where the sps_take calls copy to, set once by the caller: they take the reader as their
     * only argument, because from Python a one-argument call costs half of a longer one. */
    char *scratch;            /* copies go here */
    uint64_t take_cap;        /* sps_take and sps_take_wait: the largest message copied */
    uint64_t batch_cap;       /* sps_take_many: bytes of scratch it may fill */
    uint64_t *ends;           /* sps_take_many: where each message ends in scratch */
    uint64_t batch_max;       /* sps_take_many: the most messages (entries in ends) */
    uint64_t spin_ns;         /* sps_take_wait: how long it spins for a message not there yet */
    /* sps_sleep_take: the epoll descriptor it sleeps on, the wake-up socket registered in it
     * (with its descriptor as the event's data, as Python's select.epoll does), and what
     * ended the last sleep (enum sps_woke, or a negative errno). */
    int sleep_fd;
    int wake_fd;
    int woke;
};

/* A process-local view of a validated control segment. */
struct sps_control {
    unsigned char *base;
    uint64_t size;
    uint32_t max_subscribers;
    uint32_t sleeper_words;
    int closed;               /* private */
    int busy;                 /* private: calls in flight */
};

struct sps_control_info {
    uint32_t layout_version;
    uint32_t max_subscribers;
    uint64_t epoch;
    uint64_t total_size;
    char socket_dir[96];      /* SPS_SOCKET_DIR_MAX, NUL-terminated */
    uint64_t socket_dir_dev;  /* the directory's st_dev and st_ino for its publisher (0, 0: unknown) */
    uint64_t socket_dir_ino;
    uint64_t pid_ns;          /* the publisher's PID and mount namespace inodes (0: unknown) */
    uint64_t mnt_ns;
};

/* A wake-up that could not be sent: the subscriber's entry, its token and the errno. */
struct sps_wake_failure {
    uint32_t index;
    int error;
    uint64_t token;
};

/* A socket connected to one subscriber's wake-up socket (token 0: none). */
struct sps_link {
    uint64_t token;
    int fd;
};

/* The publisher's wake-up sender: a non-blocking AF_UNIX datagram socket, the path of the
 * subscribers' sockets up to their token (the socket directory, "/", the name prefix), and up
 * to max_links sockets connected to a subscriber each, indexed by its entry. */
struct sps_waker {
    struct sps_control *control;
    int fd;
    uint32_t prefix_len;
    char path[108];           /* the prefix; each send appends the token's 16 hex digits */
    uint64_t sent;            /* datagrams sent (or already pending: the queue was full) */
    uint64_t failed;          /* sends that failed */
    uint32_t failure_count;   /* failures recorded below since the caller last cleared them */
    uint32_t max_links;       /* lowered to links_open when descriptors run out */
    uint32_t links_open;
    int sending;              /* one sps_wake at a time: the links are not shared */
    struct sps_wake_failure failures[1024]; /* SPS_MAX_SUBSCRIBERS */
    struct sps_link links[1024];
};

/* One subscriber's entry, as plain values. */
struct sps_entry_info {
    uint64_t token;           /* names its wake-up socket; 0: entry free */
    int64_t pid;
    uint64_t start_time;
    uint64_t read_pos;
    uint64_t lost;
    int asleep;
};

/* Everything in a header, as validated plain values. */
struct sps_header_info {
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t slot_count;
    uint64_t slot_size;       /* largest payload */
    uint64_t slot_stride;
    uint64_t total_size;
    uint64_t epoch;
    int64_t publisher_pid;
    uint64_t publisher_start_time;
    uint64_t created_ns;
    uint64_t write_seq;
    uint32_t closed;
    uint32_t file_format;     /* 0, or SPS_FILE_FORMAT in a ring file (see sps_file_geometry) */
};

/* Segment geometry: stride and total size for a slot count and payload size. */
int sps_geometry(uint64_t slot_count, uint64_t slot_size,
                 uint64_t *slot_stride, uint64_t *total_size);

/* Writes a fresh header into a zeroed mapping; the magic is stored last. */
int sps_header_init(void *base, uint64_t size, uint64_t slot_count, uint64_t slot_size,
                    uint64_t epoch, int64_t publisher_pid, uint64_t publisher_start_time,
                    uint64_t created_ns);

/* Validates a header completely against the mapped size and fills *info.
 * On SPS_E_VERSION, info->layout_version holds the version found. */
int sps_header_read(const void *base, uint64_t size, struct sps_header_info *info);

int sps_writer_init(struct sps_writer *w, void *base, uint64_t size);
int64_t sps_publish(struct sps_writer *w, const char *data, uint64_t len);
/* Opens a loan of len bytes; *offset is where its payload starts in the mapping. */
/* Publishes count messages laid end to end in data: lengths[i] bytes each, or, with
 * lengths NULL, record bytes each. All or none: SPS_TOO_LARGE (*bad: the index) publishes
 * nothing. The number of the first message, or SPS_WAKE (the first is then the writer's
 * next minus count), or a refusal as sps_publish. */
int64_t sps_publish_many(struct sps_writer *w, const char *data, const uint64_t *lengths,
                         uint64_t count, uint64_t record, uint64_t *bad);
int sps_loan(struct sps_writer *w, uint64_t len, uint64_t *offset);
/* Records that count message numbers were lost before they reached this publisher:
 * subscribers count them in `lost` as if lapped. SPS_OK or SPS_WAKE, or a refusal. */
int sps_skip(struct sps_writer *w, uint64_t count);
int64_t sps_commit(struct sps_writer *w);
int sps_abort(struct sps_writer *w);
/* Marks the topic closed in shared memory; the handle refuses further use. Waits for
 * calls in flight in other threads, so the mapping may go once it returns.
 * Returns SPS_WAKE if sleeping subscribers must be told. */
int sps_writer_close(struct sps_writer *w);
/* Makes an inherited copy of a writer refuse to publish (called in a fork child). */
void sps_writer_forked(struct sps_writer *w);

int sps_reader_init(struct sps_reader *r, const void *base, uint64_t size, int start, int resync);
/* Copies the next message into dst: its length, SPS_EMPTY, SPS_BUFFER_TOO_SMALL,
 * SPS_BUSY or SPS_CLOSED. Lapping is absorbed: r->lost grows by the exact count. */
int64_t sps_read(struct sps_reader *r, char *dst, uint64_t cap);
/* sps_read into r->scratch, at most r->take_cap bytes. */
int64_t sps_take(struct sps_reader *r);
/* sps_take; if there is no message, spins for one up to r->spin_ns first (SPS_EMPTY if
 * none came). */
int64_t sps_take_wait(struct sps_reader *r);
/* Up to r->batch_max consecutive messages at once into r->scratch: the count, with message
 * i at scratch[ends[i-1]..ends[i]) (ends[-1] = 0) and numbered r->last_seq - count + 1 + i;
 * or, if not even one, sps_read's code (with r->batch_cap as the capacity). Stops before a
 * gap (a lap, a skip marker), a message not there yet, or one that does not fit. */
int64_t sps_take_many(struct sps_reader *r);
/* Copies the newest complete message without moving the stream; *seq gets its number. */
int64_t sps_read_latest(struct sps_reader *r, char *dst, uint64_t cap, uint64_t *seq);
/* Zero-copy read of the next message: its length (and r->view_offset, where its payload
 * is in the mapping, r->view_next its number), SPS_EMPTY, SPS_BUSY or SPS_CLOSED; lapping is
 * absorbed as in sps_read. The caller reads the payload in place, then calls sps_view_end:
 * SPS_OK if nothing was overwritten meanwhile (the message is consumed), SPS_OVERWRITTEN if
 * it was (what was read must be discarded; the reader has resynchronised and counted the
 * loss), SPS_MOVED if a read took messages in between (the view's message among them). */
int64_t sps_view_begin(struct sps_reader *r);
int sps_view_end(struct sps_reader *r);
/* Refuses further calls and waits for those in flight in other threads (all of them are
 * bounded in time): once it returns, the mapping may go. */
void sps_reader_close(struct sps_reader *r);

/* Sleep and wake (the data-plane side of wake-ups; sockets are Python's).
 * A reader arms (sets its sleepers bit, seq_cst) and then re-checks write_seq and
 * closed (seq_cst); the writer stores write_seq (seq_cst) and then loads the bitmap
 * (seq_cst). Either the reader sees the message or the writer sees the bit. */
void sps_reader_bind(struct sps_reader *r, const struct sps_control *c, uint32_t index);
/* Arms; returns 1 if the reader must not sleep (a message is there, or the topic closed). */
int sps_arm(struct sps_reader *r);
void sps_disarm(struct sps_reader *r);
/* Spins (GIL released by cffi) up to ns nanoseconds: 1 when a message is there,
 * 2 when the topic closed, 0 on time-out. */
int sps_spin(struct sps_reader *r, uint64_t ns);

/* Binds the writer to the control segment's sleepers bitmap, and to the waker (or NULL) that
 * sps_publish_waking uses. */
void sps_writer_bind(struct sps_writer *w, const struct sps_control *c, struct sps_waker *k);
/* Clears the sleepers bitmap; writes the entry index and the token (which names its socket:
 * untrusted) of each sleeper found to indices and tokens. Their number. */
uint32_t sps_collect_sleepers(struct sps_control *c, uint32_t *indices, uint64_t *tokens, uint32_t max);

/* Wake-up datagrams (wake.c). sps_waker_init: SPS_OK, or SPS_E_SOCKET_DIR if the prefix
 * leaves no room for a token in a socket path. At most max_links connected sockets are kept
 * (capped at SPS_MAX_SUBSCRIBERS); beyond them, wake-ups are sent by path through fd. */
int sps_waker_init(struct sps_waker *k, struct sps_control *c, int fd, const char *prefix, uint32_t max_links);
/* Closes the connected sockets. Only once no sps_wake can run (the control segment is shut). */
void sps_waker_close(struct sps_waker *k);
/* Collects the sleepers and sends each a datagram; a send that fails is recorded in
 * k->failures (the caller clears failure_count once it has dealt with them). Returns
 * failure_count. */
uint32_t sps_wake(struct sps_waker *k);
/* sps_publish, then the wake-ups through w->waker: n, or SPS_WAKE if some sleeper is still to
 * be dealt with (no waker, or a send failed); the message is published either way. */
int64_t sps_publish_waking(struct sps_writer *w, const char *data, uint64_t len);
/* Discards the datagrams waiting in a subscriber's socket: their count, or a negative errno. */
int sps_drain(int fd);

/* Directory watches (watch.c): an inotify descriptor (non-blocking, close-on-exec) that turns
 * readable when a name is created in, or moved into, `dir`; -errno on failure. Reading it
 * gives struct inotify_event records, each with the name. */
int sps_dir_watch(const char *dir);
/* What ended a sleep in sps_sleep_take, as bits (0: the time-out). */
enum sps_woke {
    SPS_WOKE_SOCKET = 1,      /* the wake-up socket is readable */
    SPS_WOKE_OTHER = 2        /* another descriptor is (the publisher's pidfd: it ended) */
};
/* For an armed reader that found nothing: sleeps in epoll_wait(r->sleep_fd) for up to
 * timeout_ms (-1: no limit), sets r->woke, then takes the next message as sps_take does (so
 * SPS_EMPTY if the sleep ended without one). Not counted in flight: whoever closes the
 * reader must first wake the sleeper and wait for it to leave (Python counts its waiters). */
int64_t sps_sleep_take(struct sps_reader *r, int timeout_ms);

/* Control segment. Subscribers may write it, so everything in it is untrusted:
 * indices are bounds-checked, tokens only ever become numbers in a socket name. */
int sps_control_geometry(uint32_t max_subscribers, uint64_t *total_size);
int sps_control_init(void *base, uint64_t size, uint32_t max_subscribers, uint64_t epoch,
                     const char *socket_dir, const uint64_t where[4]);
int sps_control_open(struct sps_control *c, void *base, uint64_t size, struct sps_control_info *info);
/* Claims a free entry for token: its index, or SPS_FULL. */
int sps_control_claim(struct sps_control *c, uint64_t token, int64_t pid, uint64_t start_time);
/* Reads entry index: SPS_OK; SPS_EMPTY if free; SPS_CLAIMING (info->pid: by whom) if a
 * claim is under way, or its claimer died in the middle. */
int sps_control_entry(struct sps_control *c, uint32_t index, struct sps_entry_info *info);
/* Frees entry index if it still belongs to token: 1 if freed. The owner's release
 * also withdraws its sleep request; anyone else's (reclaiming a dead subscriber's
 * entry) leaves the bitmap alone: the bit may already be a new owner's. */
int sps_control_release(struct sps_control *c, uint32_t index, uint64_t token, int owner);
/* Frees entry index if it is still being claimed by pid (a claimer that died in the middle
 * of sps_control_claim): 1 if freed. */
int sps_control_abandon(struct sps_control *c, uint32_t index, int64_t pid);
/* Refuses further calls and waits for those in flight: then the mapping may go. */
void sps_control_close(struct sps_control *c);

/* The publisher's progress, seen through a reader: write_seq, or SPS_CLOSED. */
int64_t sps_reader_write_seq(struct sps_reader *r);
/* 1 if the publisher closed the topic, 0 if not, SPS_CLOSED if the reader is closed. */
int sps_reader_topic_closed(struct sps_reader *r);

/* ---- file-backed rings ----
 * The same layout in a regular file instead of /dev/shm. The header page's third block (all
 * zero in /dev/shm segments) records the topic, the boot the file was opened in and how far
 * it is known to be on disk. The topic's /dev/shm name holds a one-page stub naming the file. */
#define SPS_TOPIC_MAX 72
#define SPS_BOOT_ID_SIZE 16
#define SPS_STUB_SIZE 4096
#define SPS_PATH_MAX 4064

/* The format of ring files' slots, recorded in the file block (0 in /dev/shm segments, and
 * in ring files written before it existed). Format 1: the publisher follows each message with
 * a 64-bit word holding its CRC-32C (see sps_file_geometry); recovery checks it. A format
 * change of ring files alone changes this number, not SPS_LAYOUT_VERSION. */
#define SPS_FILE_FORMAT 1
enum sps_file_format_status {
    SPS_E_FILE_FORMAT = -31   /* a ring file of another format (the one found: file_format) */
};

enum sps_file_status {
    SPS_E_FILE_BACKED = -30   /* a file-backed topic's stub: its ring is in the file it names */
};

struct sps_file_header_info {
    uint64_t flushed;         /* messages known to be on disk */
    unsigned char boot_id[16];/* SPS_BOOT_ID_SIZE */
    char topic[72];           /* SPS_TOPIC_MAX, NUL-terminated */
    uint32_t format;          /* SPS_FILE_FORMAT, or 0 for a ring file written before formats */
};

struct sps_stub_info {
    uint64_t epoch;
    int64_t publisher_pid;
    char path[4064];          /* SPS_PATH_MAX, NUL-terminated */
};

/* What reopening a ring found and repaired (see sps_file_reopen). */
struct sps_recovery {
    uint64_t next;            /* where numbering continues: after every number any slot holds */
    uint64_t kept;            /* slots kept: complete messages (and skip markers) in place */
    uint64_t torn;            /* slots found half-written (odd sequence word) */
    uint64_t corrupt;         /* complete messages whose checksum did not match (mixed pages) */
    uint64_t unflushed;       /* complete messages dropped: numbered at or after trusted_end */
    uint64_t repaired;        /* slots rewritten: as skip markers (counted lost), or emptied */
};

/* Ring files' geometry: as sps_geometry, with room after the largest payload (rounded up to
 * 8 bytes) for the checksum word. A message of n bytes has its checksum word at payload offset
 * n rounded up to 8: the CRC-32C of the slot header as completed (seq 2n+2, length, flags)
 * followed by the payload, in the word's low 32 bits. */
int sps_file_geometry(uint64_t slot_count, uint64_t slot_size,
                      uint64_t *slot_stride, uint64_t *total_size);
/* CRC-32C of data, continuing crc (0 to start), as zlib's crc32 does for CRC-32: SSE4.2's
 * instruction where the CPU has it, else the portable table (which _portable always uses). */
uint32_t sps_crc32c(uint32_t crc, const void *data, uint64_t len);
uint32_t sps_crc32c_portable(uint32_t crc, const void *data, uint64_t len);
/* 1 if sps_crc32c uses the CPU's instruction. */
int sps_crc32c_hardware(void);
/* Writes a fresh header for a file-backed ring (format SPS_FILE_FORMAT, whose geometry is
 * sps_file_geometry's): the file block, then as sps_header_init. */
int sps_header_init_file(void *base, uint64_t size, uint64_t slot_count, uint64_t slot_size,
                         uint64_t epoch, int64_t publisher_pid, uint64_t publisher_start_time,
                         uint64_t created_ns, const char *topic, const unsigned char *boot_id);
/* For the holder of the single-writer lock: validates like sps_header_read, but also accepts
 * a zero magic if everything else validates (a writer died while opening the ring), checks
 * the sequence numbers, and refuses a ring file of a format other than SPS_FILE_FORMAT
 * (SPS_E_FILE_FORMAT). Fills *info and *file. */
int sps_header_inspect(const void *base, uint64_t size, struct sps_header_info *info,
                       struct sps_file_header_info *file);
/* The file block of a validated header. */
void sps_header_file(const void *base, struct sps_file_header_info *file);
/* Reopens a ring after its writer ended (closed, killed, or the machine lost power), for the
 * holder of the single-writer lock. With the magic withdrawn (attaching readers wait): every
 * slot must hold the newest message numbered below `next` that maps to it, complete and as its
 * checksum says, else it becomes a skip marker for that number (a checksum that does not match
 * counts in `corrupt`); complete messages numbered at or after trusted_end are not
 * trusted (they may not have reached the disk) and become markers too; write_seq := next.
 * Then the identity is renewed and the magic restored. */
int sps_file_reopen(void *base, uint64_t size, uint64_t trusted_end, uint64_t epoch,
                    int64_t publisher_pid, uint64_t publisher_start_time, uint64_t created_ns,
                    const unsigned char *boot_id, struct sps_recovery *out);
/* The same repair in a private (copy-on-write) mapping of a ring file whose publisher is
 * gone, so that its readers take exactly what a new publisher would keep (and count the rest
 * lost): neither the file nor the identity changes. */
int sps_file_recover_copy(void *base, uint64_t size, uint64_t trusted_end, struct sps_recovery *out);
/* msync(MS_SYNC) of the whole mapping; then records that the messages completed before it
 * are on disk, and syncs that record (the header page). *flushed gets their count. With
 * if_new, does nothing if no message was published since the last flush. 0, or a negative
 * errno. */
int sps_file_flush(void *base, uint64_t size, int if_new, uint64_t *flushed);

int sps_stub_init(void *base, uint64_t size, const char *path, uint64_t epoch, int64_t publisher_pid);
int sps_stub_read(const void *base, uint64_t size, struct sps_stub_info *info);

/* Whole-file open-file-description lock: the single-writer guard.
 * sps_lock_take: 0, or an errno (EAGAIN / EACCES while someone holds it).
 * sps_lock_probe: 1 if another open file description holds a lock, 0 if not,
 * or a negative errno. */
int sps_lock_take(int fd);
int sps_lock_probe(int fd);

/* CDEF END */

#endif

/*
 * The control segment and the sleep/wake protocol's shared-memory half.
 *
 * Subscribers write here (their entry, their sleepers bit); the publisher only
 * reads entries and clears bits. Every value read from this segment is
 * untrusted: indices are bounds-checked against process-private copies of the
 * geometry, and a forged value can at worst cost a spurious or missing wake-up
 * for the forger, never a wild memory access or a lost message.
 */
#define _POSIX_C_SOURCE 200809L /* sched_yield */
#include <sched.h>
#include <string.h>

#include "layout.h"

void sps_shut(int *closed, int *busy)
{
    atomic_store_explicit((_Atomic int *)(void *)closed, 1, memory_order_seq_cst);
    while (atomic_load_explicit((_Atomic int *)(void *)busy, memory_order_seq_cst) != 0)
        sched_yield();
}

static struct sps_control_header *control_header(const struct sps_control *c)
{
    return (struct sps_control_header *)c->base;
}

static struct sps_entry *entry_at(const struct sps_control *c, uint32_t index)
{
    return (struct sps_entry *)(c->base + SPS_CONTROL_HEADER_SIZE + (uint64_t)index * SPS_ENTRY_SIZE);
}

int sps_control_geometry(uint32_t max_subscribers, uint64_t *total_size)
{
    if (max_subscribers == 0 || max_subscribers > SPS_MAX_SUBSCRIBERS)
        return SPS_E_GEOMETRY;
    *total_size = SPS_CONTROL_HEADER_SIZE + (uint64_t)max_subscribers * SPS_ENTRY_SIZE;
    return SPS_OK;
}

/* where: the socket directory's st_dev and st_ino, the publisher's PID and mount namespace
 * inodes (any may be 0: unknown). */
int sps_control_init(void *base, uint64_t size, uint32_t max_subscribers, uint64_t epoch,
                     const char *socket_dir, const uint64_t where[4])
{
    uint64_t total;
    int rc = sps_control_geometry(max_subscribers, &total);
    if (rc != SPS_OK)
        return rc;
    if (size != total)
        return SPS_E_TOTAL;
    size_t dir_len = strnlen(socket_dir, SPS_SOCKET_DIR_MAX);
    if (dir_len == 0 || dir_len >= SPS_SOCKET_DIR_MAX)
        return SPS_E_SOCKET_DIR;

    struct sps_control_header *h = base;
    h->id.layout_version = SPS_LAYOUT_VERSION;
    h->id.header_size = SPS_CONTROL_HEADER_SIZE;
    h->id.max_subscribers = max_subscribers;
    h->id.entry_size = SPS_ENTRY_SIZE;
    h->id.epoch = epoch;
    h->id.total_size = total;
    memcpy(h->id.socket_dir, socket_dir, dir_len + 1);
    h->id.socket_dir_dev = where[0];
    h->id.socket_dir_ino = where[1];
    h->id.pid_ns = where[2];
    h->id.mnt_ns = where[3];
    atomic_store_explicit(&h->id.magic, SPS_CONTROL_MAGIC, memory_order_release);
    return SPS_OK;
}

int sps_control_open(struct sps_control *c, void *base, uint64_t size, struct sps_control_info *info)
{
    memset(c, 0, sizeof *c);
    memset(info, 0, sizeof *info);
    if (base == NULL || size < SPS_CONTROL_HEADER_SIZE)
        return SPS_E_SIZE;
    const struct sps_control_header *h = base;
    uint64_t magic = atomic_load_explicit(&h->id.magic, memory_order_acquire);
    if (magic == 0)
        return SPS_E_UNINITIALISED;
    if (magic != SPS_CONTROL_MAGIC)
        return SPS_E_MAGIC;

    /* Validate a private copy only (see sps_header_read). */
    struct sps_control_identity id;
    memcpy((unsigned char *)&id + sizeof id.magic, (const unsigned char *)&h->id + sizeof id.magic,
           sizeof id - sizeof id.magic);
    info->layout_version = id.layout_version;
    if (id.layout_version != SPS_LAYOUT_VERSION)
        return SPS_E_VERSION;
    if (id.header_size != SPS_CONTROL_HEADER_SIZE || id.entry_size != SPS_ENTRY_SIZE)
        return SPS_E_HEADER_SIZE;
    uint64_t total;
    if (sps_control_geometry(id.max_subscribers, &total) != SPS_OK)
        return SPS_E_GEOMETRY;
    if (id.total_size != total || total != size)
        return SPS_E_TOTAL;
    size_t dir_len = strnlen(id.socket_dir, SPS_SOCKET_DIR_MAX);
    if (dir_len == 0 || dir_len >= SPS_SOCKET_DIR_MAX)
        return SPS_E_SOCKET_DIR;

    c->base = base;
    c->size = size;
    c->max_subscribers = id.max_subscribers;
    c->sleeper_words = (id.max_subscribers + 63) / 64;
    info->max_subscribers = id.max_subscribers;
    info->epoch = id.epoch;
    info->total_size = id.total_size;
    memcpy(info->socket_dir, id.socket_dir, dir_len + 1);
    info->socket_dir_dev = id.socket_dir_dev;
    info->socket_dir_ino = id.socket_dir_ino;
    info->pid_ns = id.pid_ns;
    info->mnt_ns = id.mnt_ns;
    return SPS_OK;
}

/* A claim goes through a marker, so that whoever sees an entry's real token also sees
 * its owner's pid (never the previous, dead owner's): reapers judge entries by pid. The
 * marker is even and carries the claimer's pid, so that an entry whose claimer died in
 * the middle can be told from one being claimed now, and freed (sps_control_abandon).
 * Real tokens are odd; 0 is free. */
static uint64_t claiming(int64_t pid)
{
    return (uint64_t)pid << 1;
}

int sps_control_claim(struct sps_control *c, uint64_t token, int64_t pid, uint64_t start_time)
{
    if ((token & 1) == 0)
        return SPS_E_GEOMETRY;
    if (pid <= 0 || pid > SPS_PID_MAX)
        return SPS_E_PID;
    if (!sps_enter(&c->busy, &c->closed))
        return SPS_CLOSED;
    int found = SPS_FULL;
    for (uint32_t i = 0; i < c->max_subscribers; i++) {
        struct sps_entry *e = entry_at(c, i);
        uint64_t expected = 0;
        if (atomic_compare_exchange_strong_explicit(&e->token, &expected, claiming(pid),
                                                    memory_order_acq_rel, memory_order_relaxed)) {
            atomic_store_explicit(&e->pid, pid, memory_order_relaxed);
            atomic_store_explicit(&e->start_time, start_time, memory_order_relaxed);
            atomic_store_explicit(&e->read_pos, 0, memory_order_relaxed);
            atomic_store_explicit(&e->lost, 0, memory_order_relaxed);
            atomic_store_explicit(&e->token, token, memory_order_release);
            found = (int)i;
            break;
        }
    }
    sps_leave(&c->busy);
    return found;
}

static int bit_set(const struct sps_control *c, uint32_t index)
{
    uint64_t word = atomic_load_explicit(&control_header(c)->sleepers[index / 64], memory_order_relaxed);
    return (word >> (index % 64)) & 1;
}

int sps_control_entry(struct sps_control *c, uint32_t index, struct sps_entry_info *info)
{
    memset(info, 0, sizeof *info);
    if (index >= c->max_subscribers)
        return SPS_E_GEOMETRY;
    if (!sps_enter(&c->busy, &c->closed))
        return SPS_CLOSED;
    const struct sps_entry *e = entry_at(c, index);
    info->token = atomic_load_explicit(&e->token, memory_order_acquire);
    if ((info->token & 1) == 0) { /* free, or being claimed (by pid token / 2) */
        info->pid = (int64_t)(info->token >> 1);
        info->token = 0;
        sps_leave(&c->busy);
        return info->pid != 0 ? SPS_CLAIMING : SPS_EMPTY;
    }
    info->pid = atomic_load_explicit(&e->pid, memory_order_relaxed);
    info->start_time = atomic_load_explicit(&e->start_time, memory_order_relaxed);
    info->read_pos = atomic_load_explicit(&e->read_pos, memory_order_relaxed);
    info->lost = atomic_load_explicit(&e->lost, memory_order_relaxed);
    info->asleep = bit_set(c, index);
    sps_leave(&c->busy);
    return SPS_OK;
}

int sps_control_release(struct sps_control *c, uint32_t index, uint64_t token, int owner)
{
    if (index >= c->max_subscribers || (token & 1) == 0)
        return 0;
    if (!sps_enter(&c->busy, &c->closed))
        return 0;
    struct sps_entry *e = entry_at(c, index);
    int freed = 0;
    if (atomic_load_explicit(&e->token, memory_order_acquire) == token) {
        /* The owner withdraws its sleep request before the entry can be reused. Anyone
         * else leaves the bit: a stale bit costs one empty collect, while clearing it
         * could cancel a new owner's request (a lost wake-up). */
        if (owner)
            atomic_fetch_and_explicit(&control_header(c)->sleepers[index / 64],
                                      ~(UINT64_C(1) << (index % 64)), memory_order_seq_cst);
        atomic_store_explicit(&e->pid, 0, memory_order_relaxed);
        uint64_t expected = token;
        freed = atomic_compare_exchange_strong_explicit(&e->token, &expected, 0, memory_order_acq_rel,
                                                        memory_order_relaxed);
    }
    sps_leave(&c->busy);
    return freed;
}

int sps_control_abandon(struct sps_control *c, uint32_t index, int64_t pid)
{
    if (index >= c->max_subscribers || pid <= 0 || pid > SPS_PID_MAX)
        return 0;
    if (!sps_enter(&c->busy, &c->closed))
        return 0;
    uint64_t expected = claiming(pid);
    int freed = atomic_compare_exchange_strong_explicit(&entry_at(c, index)->token, &expected, 0,
                                                        memory_order_acq_rel, memory_order_relaxed);
    sps_leave(&c->busy);
    return freed;
}

void sps_control_close(struct sps_control *c)
{
    sps_shut(&c->closed, &c->busy);
}

/* ---- the sleep/wake protocol ---- */

void sps_reader_bind(struct sps_reader *r, const struct sps_control *c, uint32_t index)
{
    if (index >= c->max_subscribers)
        return;
    r->sleepers = (uint64_t *)&control_header(c)->sleepers[index / 64];
    r->sleeper_bit = UINT64_C(1) << (index % 64);
    r->entry = (unsigned char *)entry_at(c, index);
    r->armed = 0;
    /* Report the starting position now, not at the first read: a subscriber that attached
     * with start="next" has no lag yet. */
    struct sps_entry *e = entry_at(c, index);
    atomic_store_explicit(&e->read_pos, r->next, memory_order_relaxed);
    atomic_store_explicit(&e->lost, r->lost, memory_order_relaxed);
}

static _Atomic uint64_t *sleepers_word(const struct sps_reader *r)
{
    return (_Atomic uint64_t *)(void *)r->sleepers;
}

/* True if the reader has something to do instead of sleeping. */
static int wake_condition(const struct sps_reader *r)
{
    const struct sps_shared_header *h = sps_header(&r->ring);
    return atomic_load_explicit(&h->progress.write_seq, memory_order_seq_cst) > r->next
           || atomic_load_explicit(&h->progress.closed, memory_order_seq_cst) != 0;
}

int sps_arm(struct sps_reader *r)
{
    if (!sps_enter(&r->busy, &r->closed))
        return 1;
    if (r->sleepers != NULL) {
        atomic_fetch_or_explicit(sleepers_word(r), r->sleeper_bit, memory_order_seq_cst);
        r->armed = 1;
    }
    int wake = wake_condition(r);
    sps_leave(&r->busy);
    return wake;
}

void sps_disarm(struct sps_reader *r)
{
    if (!sps_enter(&r->busy, &r->closed))
        return;
    if (r->armed && r->sleepers != NULL)
        atomic_fetch_and_explicit(sleepers_word(r), ~r->sleeper_bit, memory_order_relaxed);
    r->armed = 0;
    sps_leave(&r->busy);
}

void sps_writer_bind(struct sps_writer *w, const struct sps_control *c, struct sps_waker *k)
{
    w->waker = k;
    w->sleepers = (uint64_t *)control_header(c)->sleepers;
    w->sleeper_words = c->sleeper_words;
}

uint32_t sps_collect_sleepers(struct sps_control *c, uint32_t *indices, uint64_t *tokens, uint32_t max)
{
    if (!sps_enter(&c->busy, &c->closed))
        return 0;
    uint32_t found = 0;
    for (uint32_t w = 0; w < c->sleeper_words; w++) {
        _Atomic uint64_t *word = &control_header(c)->sleepers[w];
        if (atomic_load_explicit(word, memory_order_seq_cst) == 0)
            continue;
        uint64_t bits = atomic_exchange_explicit(word, 0, memory_order_seq_cst);
        while (bits != 0) {
            uint32_t index = w * 64 + (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (index >= c->max_subscribers || found >= max)
                continue;
            uint64_t token = atomic_load_explicit(&entry_at(c, index)->token, memory_order_acquire);
            if ((token & 1) == 0)
                continue; /* freed, or being claimed, since it armed: nobody to wake */
            indices[found] = index;
            tokens[found++] = token;
        }
    }
    sps_leave(&c->busy);
    return found;
}

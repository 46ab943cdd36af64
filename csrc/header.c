/*
 * A ring's header: geometry, creation, validation (the file block of a ring file included);
 * and the single-writer lock.
 * Everything read from a segment is untrusted until validated here.
 */
#define _GNU_SOURCE /* F_OFD_SETLK */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "layout.h"

static int is_power_of_two(uint64_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* A slot holds its header, slot_size bytes of payload and, in ring files, the checksum word. */
static int geometry(uint64_t slot_count, uint64_t slot_size, uint64_t trailer,
                    uint64_t *slot_stride, uint64_t *total_size)
{
    if (!is_power_of_two(slot_count) || slot_count > SPS_MAX_SLOT_COUNT)
        return SPS_E_GEOMETRY;
    if (slot_size > SPS_MAX_SLOT_SIZE)
        return SPS_E_GEOMETRY;
    /* Both bounds keep these sums far from overflow (2^30 * (2^31 + 192) < 2^62). */
    uint64_t stride = (SPS_SLOT_HEADER_SIZE + slot_size + trailer + SPS_SLOT_ALIGN - 1)
                      & ~(uint64_t)(SPS_SLOT_ALIGN - 1);
    *slot_stride = stride;
    *total_size = SPS_HEADER_SIZE + slot_count * stride;
    return SPS_OK;
}

int sps_geometry(uint64_t slot_count, uint64_t slot_size,
                 uint64_t *slot_stride, uint64_t *total_size)
{
    return geometry(slot_count, slot_size, 0, slot_stride, total_size);
}

int sps_file_geometry(uint64_t slot_count, uint64_t slot_size,
                      uint64_t *slot_stride, uint64_t *total_size)
{
    /* The checksum word sits at the payload's length rounded up to 8, so the largest
     * payload, rounded up, is followed by the word itself. */
    uint64_t room = ((slot_size + 7) & ~(uint64_t)7) - slot_size + SPS_CHECKSUM_SIZE;
    return geometry(slot_count, slot_size, room, slot_stride, total_size);
}

/* The geometry of a ring whose file block declares `format` (0 in /dev/shm segments). */
static int geometry_of(uint32_t format, uint64_t slot_count, uint64_t slot_size,
                       uint64_t *slot_stride, uint64_t *total_size)
{
    if (format == 0)
        return sps_geometry(slot_count, slot_size, slot_stride, total_size);
    if (format == SPS_FILE_FORMAT)
        return sps_file_geometry(slot_count, slot_size, slot_stride, total_size);
    return SPS_E_FILE_FORMAT;
}

int sps_header_init(void *base, uint64_t size, uint64_t slot_count, uint64_t slot_size,
                    uint64_t epoch, int64_t publisher_pid, uint64_t publisher_start_time,
                    uint64_t created_ns)
{
    struct sps_shared_header *h = base;
    uint64_t stride, total;
    /* A zeroed mapping declares format 0; sps_header_init_file has set the ring file's. */
    int rc = geometry_of(h->file.format, slot_count, slot_size, &stride, &total);
    if (rc != SPS_OK)
        return rc;
    if (size != total)
        return SPS_E_TOTAL;

    h->id.layout_version = SPS_LAYOUT_VERSION;
    h->id.header_size = SPS_HEADER_SIZE;
    h->id.slot_count = slot_count;
    h->id.slot_size = slot_size;
    h->id.slot_stride = stride;
    h->id.total_size = total;
    h->id.epoch = epoch;
    h->id.publisher_pid = publisher_pid;
    h->id.publisher_start_time = publisher_start_time;
    h->id.created_ns = created_ns;
    atomic_store_explicit(&h->progress.write_seq, 0, memory_order_relaxed);
    atomic_store_explicit(&h->progress.closed, 0, memory_order_relaxed);
    /* Last, with release: whoever sees the magic sees everything above. */
    atomic_store_explicit(&h->id.magic, SPS_MAGIC, memory_order_release);
    return SPS_OK;
}

/* The epoch is the identity's one field that changes when a ring is reopened (see
 * sps_header_renew); readers use it as the sequence word of a seqlock over the identity. */
static _Atomic uint64_t *epoch_word(const struct sps_shared_header *h)
{
    return (_Atomic uint64_t *)(void *)&((struct sps_shared_header *)(uintptr_t)h)->id.epoch;
}

_Static_assert(sizeof(_Atomic uint64_t) == sizeof(uint64_t), "the epoch is read as an atomic word");

static void copy_identity(struct sps_identity *id, const struct sps_shared_header *h)
{
    memcpy((unsigned char *)id + sizeof id->magic, (const unsigned char *)&h->id + sizeof id->magic,
           sizeof *id - sizeof id->magic);
}

/* Validates a private copy of the identity, and of the file block's format (which decides
 * the geometry; the caller copies it into info->file_format), only: a field that changes
 * under us cannot pass one check and fail another. */
static int check_copy(const struct sps_identity *id, uint64_t size, struct sps_header_info *info)
{
    info->layout_version = id->layout_version;
    if (id->layout_version != SPS_LAYOUT_VERSION)
        return SPS_E_VERSION;
    info->header_size = id->header_size;
    if (id->header_size != SPS_HEADER_SIZE)
        return SPS_E_HEADER_SIZE;

    uint64_t stride, total;
    int rc = geometry_of(info->file_format, id->slot_count, id->slot_size, &stride, &total);
    if (rc == SPS_E_FILE_FORMAT)
        return rc;
    if (rc != SPS_OK || id->slot_stride != stride)
        return SPS_E_GEOMETRY;
    if (id->total_size != total || total != size)
        return SPS_E_TOTAL;
    if (id->publisher_pid <= 0 || id->publisher_pid > SPS_PID_MAX)
        return SPS_E_PID;

    info->slot_count = id->slot_count;
    info->slot_size = id->slot_size;
    info->slot_stride = id->slot_stride;
    info->total_size = id->total_size;
    info->epoch = id->epoch;
    info->publisher_pid = id->publisher_pid;
    info->publisher_start_time = id->publisher_start_time;
    info->created_ns = id->created_ns;
    return SPS_OK;
}

/* No writer numbers messages past SPS_MAX_SEQ: a write_seq beyond it is corrupt or forged. */
static int read_progress(const struct sps_shared_header *h, struct sps_header_info *info)
{
    info->write_seq = atomic_load_explicit(&h->progress.write_seq, memory_order_acquire);
    info->closed = atomic_load_explicit(&h->progress.closed, memory_order_acquire);
    return info->write_seq > SPS_MAX_SEQ ? SPS_E_SEQ : SPS_OK;
}

int sps_header_check(const struct sps_shared_header *h, uint64_t size, struct sps_header_info *info)
{
    struct sps_identity id;
    copy_identity(&id, h);
    info->file_format = h->file.format;
    int rc = check_copy(&id, size, info);
    return rc == SPS_OK ? read_progress(h, info) : rc;
}

/* Our segments are sized whole before anything is written: anything shorter than a header
 * that does not start with one of our magics is somebody else's file. */
static int check_magic(const void *base, uint64_t size, int allow_zero)
{
    if (base == NULL || size < sizeof(uint64_t))
        return SPS_E_MAGIC;
    const struct sps_shared_header *h = base;
    uint64_t magic = atomic_load_explicit(&h->id.magic, memory_order_acquire);
    if (magic == SPS_STUB_MAGIC)
        return SPS_E_FILE_BACKED;
    if (size < SPS_HEADER_SIZE)
        return magic == SPS_MAGIC ? SPS_E_SIZE : SPS_E_MAGIC;
    if (magic == 0)
        return allow_zero ? SPS_OK : SPS_E_UNINITIALISED;
    return magic == SPS_MAGIC ? SPS_OK : SPS_E_MAGIC;
}

int sps_header_read(const void *base, uint64_t size, struct sps_header_info *info)
{
    memset(info, 0, sizeof *info);
    int rc = check_magic(base, size, 0);
    if (rc != SPS_OK)
        return rc;
    const struct sps_shared_header *h = base;
    /* A seqlock over the identity, for rings that are reopened (file-backed ones): the writer
     * zeroes the magic, rewrites the identity, stores the new epoch (release), then the magic
     * (release). If our copy saw any of the rewrite, the re-loads see a zero magic or a new
     * epoch; a torn copy is never validated. Like large payloads, the copy itself is a formal
     * race caught by the re-check. Segments that are never reopened pass at the first try. */
    uint64_t epoch = atomic_load_explicit(epoch_word(h), memory_order_acquire);
    struct sps_identity id;
    copy_identity(&id, h);
    info->file_format = h->file.format;
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&h->id.magic, memory_order_acquire) != SPS_MAGIC
        || atomic_load_explicit(epoch_word(h), memory_order_relaxed) != epoch)
        return SPS_E_UNINITIALISED;
    id.epoch = epoch;
    rc = check_copy(&id, size, info);
    return rc == SPS_OK ? read_progress(h, info) : rc;
}

int sps_header_inspect(const void *base, uint64_t size, struct sps_header_info *info,
                       struct sps_file_header_info *file)
{
    memset(info, 0, sizeof *info);
    memset(file, 0, sizeof *file);
    int rc = check_magic(base, size, 1);
    if (rc != SPS_OK)
        return rc;
    rc = sps_header_check(base, size, info);
    if (rc == SPS_E_VERSION && info->layout_version == 0)
        return SPS_E_UNINITIALISED; /* zero magic, nothing written: a creator died at once */
    if (rc != SPS_OK)
        return rc;
    const struct sps_shared_header *h = base;
    if (h->file.topic[0] != '\0' && info->file_format != SPS_FILE_FORMAT)
        return SPS_E_FILE_FORMAT; /* a ring file written before checksums: recovery needs them */
    sps_header_file(base, file);
    return SPS_OK;
}

/* The header's file block (all zero in a /dev/shm ring). */
void sps_header_file(const void *base, struct sps_file_header_info *file)
{
    const struct sps_shared_header *h = base;
    memset(file, 0, sizeof *file);
    file->flushed = atomic_load_explicit(&h->file.flushed, memory_order_acquire);
    memcpy(file->boot_id, h->file.boot_id, SPS_BOOT_ID_SIZE);
    memcpy(file->topic, h->file.topic, SPS_TOPIC_MAX - 1); /* the last byte stays NUL */
    file->format = h->file.format;
}

void sps_header_renew(struct sps_shared_header *h, uint64_t epoch, int64_t publisher_pid,
                      uint64_t publisher_start_time, uint64_t created_ns, const unsigned char *boot_id)
{
    h->id.publisher_pid = publisher_pid;
    h->id.publisher_start_time = publisher_start_time;
    h->id.created_ns = created_ns;
    memcpy(h->file.boot_id, boot_id, SPS_BOOT_ID_SIZE);
    atomic_store_explicit(&h->progress.closed, 0, memory_order_relaxed);
    atomic_store_explicit(epoch_word(h), epoch, memory_order_release);
    atomic_store_explicit(&h->id.magic, SPS_MAGIC, memory_order_release);
}

int sps_ring_init(struct sps_ring *ring, const void *base, uint64_t size)
{
    struct sps_header_info info;
    memset(ring, 0, sizeof *ring);
    int rc = sps_header_read(base, size, &info);
    if (rc != SPS_OK)
        return rc;
    ring->base = (unsigned char *)base;
    ring->size = size;
    ring->slot_count = info.slot_count;
    ring->slot_mask = info.slot_count - 1;
    ring->slot_stride = info.slot_stride;
    ring->slot_capacity = info.slot_size;
    ring->checksums = info.file_format == SPS_FILE_FORMAT;
    return SPS_OK;
}

uint64_t sps_write_seq(const struct sps_ring *ring)
{
    return atomic_load_explicit(&sps_header(ring)->progress.write_seq, memory_order_acquire);
}

int sps_topic_closed(const struct sps_ring *ring)
{
    return atomic_load_explicit(&sps_header(ring)->progress.closed, memory_order_acquire) != 0;
}

/* Open-file-description locks belong to the open file, not the process: the
 * kernel drops them when the last descriptor closes, including at death. */
int sps_lock_take(int fd)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
}

int sps_lock_probe(int fd)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

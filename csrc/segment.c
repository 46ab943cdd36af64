/*
 * Segment header: geometry, creation, validation; and the single-writer lock.
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

int sps_geometry(uint64_t slot_count, uint64_t slot_size,
                 uint64_t *slot_stride, uint64_t *total_size)
{
    if (!is_power_of_two(slot_count) || slot_count > SPS_MAX_SLOT_COUNT)
        return SPS_E_GEOMETRY;
    if (slot_size > SPS_MAX_SLOT_SIZE)
        return SPS_E_GEOMETRY;
    /* Both bounds keep these sums far from overflow (2^30 * (2^31 + 128) < 2^62). */
    uint64_t stride = (SPS_SLOT_HEADER_SIZE + slot_size + SPS_SLOT_ALIGN - 1)
                      & ~(uint64_t)(SPS_SLOT_ALIGN - 1);
    *slot_stride = stride;
    *total_size = SPS_HEADER_SIZE + slot_count * stride;
    return SPS_OK;
}

int sps_header_init(void *base, uint64_t size, uint64_t slot_count, uint64_t slot_size,
                    uint64_t epoch, int64_t publisher_pid, uint64_t publisher_start_time,
                    uint64_t created_ns)
{
    uint64_t stride, total;
    int rc = sps_geometry(slot_count, slot_size, &stride, &total);
    if (rc != SPS_OK)
        return rc;
    if (size != total)
        return SPS_E_TOTAL;

    struct sps_shared_header *h = base;
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

int sps_header_read(const void *base, uint64_t size, struct sps_header_info *info)
{
    memset(info, 0, sizeof *info);
    /* Our segments are sized whole before anything is written: anything shorter than a
     * header that does not start with our magic is somebody else's file. */
    if (base == NULL || size < sizeof(uint64_t))
        return SPS_E_MAGIC;
    const struct sps_shared_header *h = base;
    uint64_t magic = atomic_load_explicit(&h->id.magic, memory_order_acquire);
    if (size < SPS_HEADER_SIZE)
        return magic == SPS_MAGIC ? SPS_E_SIZE : SPS_E_MAGIC;
    if (magic == 0)
        return SPS_E_UNINITIALISED;
    if (magic != SPS_MAGIC)
        return SPS_E_MAGIC;

    /* Take one private copy, then validate only the copy: a field that
     * changes under us cannot pass one check and fail another. */
    struct sps_identity id;
    memcpy((unsigned char *)&id + sizeof id.magic, (const unsigned char *)&h->id + sizeof id.magic,
           sizeof id - sizeof id.magic);

    info->layout_version = id.layout_version;
    if (id.layout_version != SPS_LAYOUT_VERSION)
        return SPS_E_VERSION;
    info->header_size = id.header_size;
    if (id.header_size != SPS_HEADER_SIZE)
        return SPS_E_HEADER_SIZE;

    uint64_t stride, total;
    if (sps_geometry(id.slot_count, id.slot_size, &stride, &total) != SPS_OK || id.slot_stride != stride)
        return SPS_E_GEOMETRY;
    if (id.total_size != total || total != size)
        return SPS_E_TOTAL;
    if (id.publisher_pid <= 0 || id.publisher_pid > SPS_PID_MAX)
        return SPS_E_PID;

    uint64_t write_seq = atomic_load_explicit(&h->progress.write_seq, memory_order_acquire);
    if (write_seq > SPS_MAX_SEQ)
        return SPS_E_SEQ;

    info->slot_count = id.slot_count;
    info->slot_size = id.slot_size;
    info->slot_stride = id.slot_stride;
    info->total_size = id.total_size;
    info->epoch = id.epoch;
    info->publisher_pid = id.publisher_pid;
    info->publisher_start_time = id.publisher_start_time;
    info->created_ns = id.created_ns;
    info->write_seq = write_seq;
    info->closed = atomic_load_explicit(&h->progress.closed, memory_order_acquire);
    return SPS_OK;
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

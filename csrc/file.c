/*
 * File-backed rings: a new ring file's header, durability (msync), and the stub that ties a
 * topic's /dev/shm name to the file holding its ring. Recovery after a crash is in ring.c
 * (sps_file_reopen), beside the writer it reuses.
 */
#define _POSIX_C_SOURCE 200809L /* msync */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "layout.h"

static int set_topic(struct sps_file_block *file, const char *topic)
{
    size_t len = strnlen(topic, SPS_TOPIC_MAX);
    if (len == 0 || len >= SPS_TOPIC_MAX)
        return SPS_E_GEOMETRY;
    memset(file->topic, 0, sizeof file->topic);
    memcpy(file->topic, topic, len);
    return SPS_OK;
}

int sps_header_init_file(void *base, uint64_t size, uint64_t slot_count, uint64_t slot_size,
                         uint64_t epoch, int64_t publisher_pid, uint64_t publisher_start_time,
                         uint64_t created_ns, const char *topic, const unsigned char *boot_id)
{
    struct sps_shared_header *h = base;
    if (size < SPS_HEADER_SIZE)
        return SPS_E_TOTAL;
    int rc = set_topic(&h->file, topic);
    if (rc != SPS_OK)
        return rc;
    memcpy(h->file.boot_id, boot_id, SPS_BOOT_ID_SIZE);
    h->file.format = SPS_FILE_FORMAT; /* sps_header_init lays the slots out for it */
    atomic_store_explicit(&h->file.flushed, 0, memory_order_relaxed);
    /* The magic comes last, in sps_header_init: whoever sees it sees the file block too. */
    return sps_header_init(base, size, slot_count, slot_size, epoch, publisher_pid,
                           publisher_start_time, created_ns);
}

/* msync(MS_SYNC) writes the dirty pages of the whole mapping and waits for the disk (on Linux
 * it is fdatasync of the range). Only the publisher's threads call this, one at a time. */
int sps_file_flush(void *base, uint64_t size, int if_new, uint64_t *flushed)
{
    struct sps_shared_header *h = base;
    /* Messages 0..end-1 were complete in the page cache before msync started: it writes them. */
    uint64_t end = atomic_load_explicit(&h->progress.write_seq, memory_order_acquire);
    *flushed = atomic_load_explicit(&h->file.flushed, memory_order_relaxed);
    if (if_new && end == *flushed)
        return SPS_OK;
    if (msync(base, size, MS_SYNC) != 0)
        return -errno;
    /* Recorded only once msync returned, so the disk never claims more than it has; then the
     * header page once more, so that a restart after a power cut trusts this very flush. */
    if (end > atomic_load_explicit(&h->file.flushed, memory_order_relaxed))
        atomic_store_explicit(&h->file.flushed, end, memory_order_release);
    if (msync(base, SPS_HEADER_SIZE, MS_SYNC) != 0)
        return -errno;
    *flushed = atomic_load_explicit(&h->file.flushed, memory_order_relaxed);
    return SPS_OK;
}

int sps_stub_init(void *base, uint64_t size, const char *path, uint64_t epoch, int64_t publisher_pid)
{
    if (size != SPS_STUB_SIZE)
        return SPS_E_TOTAL;
    size_t len = strnlen(path, SPS_PATH_MAX);
    if (len == 0 || len >= SPS_PATH_MAX || path[0] != '/')
        return SPS_E_GEOMETRY;
    struct sps_stub *stub = base;
    stub->layout_version = SPS_LAYOUT_VERSION;
    stub->path_len = (uint32_t)len;
    stub->epoch = epoch;
    stub->publisher_pid = publisher_pid;
    memcpy(stub->path, path, len + 1);
    atomic_store_explicit(&stub->magic, SPS_STUB_MAGIC, memory_order_release);
    return SPS_OK;
}

int sps_stub_read(const void *base, uint64_t size, struct sps_stub_info *info)
{
    memset(info, 0, sizeof *info);
    if (base == NULL || size < sizeof(uint64_t))
        return SPS_E_MAGIC;
    const struct sps_stub *stub = base;
    uint64_t magic = atomic_load_explicit(&stub->magic, memory_order_acquire);
    if (magic == 0)
        return SPS_E_UNINITIALISED;
    if (magic != SPS_STUB_MAGIC)
        return SPS_E_MAGIC;
    if (size != SPS_STUB_SIZE)
        return SPS_E_TOTAL;
    /* Written once before the magic: no copy needed, but nothing is trusted unchecked. */
    if (stub->layout_version != SPS_LAYOUT_VERSION)
        return SPS_E_VERSION;
    uint32_t len = stub->path_len;
    if (len == 0 || len >= SPS_PATH_MAX || stub->path[0] != '/' || stub->path[len] != '\0'
        || memchr(stub->path, '\0', len) != NULL)
        return SPS_E_GEOMETRY;
    if (stub->publisher_pid <= 0 || stub->publisher_pid > SPS_PID_MAX)
        return SPS_E_PID;
    info->epoch = stub->epoch;
    info->publisher_pid = stub->publisher_pid;
    memcpy(info->path, stub->path, (size_t)len + 1);
    return SPS_OK;
}

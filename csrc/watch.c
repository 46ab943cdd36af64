/*
 * Directory watches: a descriptor that turns readable when a name appears in a directory, so
 * that a subscriber can wait for its topic to be created without polling. The names come
 * with the events; the caller reads them (struct inotify_event) and decides what they mean.
 */
#define _GNU_SOURCE /* IN_CLOEXEC, IN_NONBLOCK */
#include <errno.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "shmpubsub.h"

int sps_dir_watch(const char *dir)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return -errno;
    /* A name appears by creation (shm_open, open with O_CREAT) or by a rename into the
     * directory (a ring file written elsewhere and moved in place). */
    if (inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/*
 * The wake-up datagrams: the publisher's sends, the subscriber's sleep and drain.
 *
 * They carry no data: a datagram only means "look at the ring". The sends are made here
 * rather than from Python because they sit on the blocking path's critical path: a round of
 * benchmarks/wakeup_path.py (arm, publish, wake, drain, take) costs 4.3 us with the send here
 * against 5.9-7.7 us with it in Python (docs/architecture.md, "Why the sends are in C"). What a
 * failed send means (a subscriber died: reclaim its entry) is decided by the caller, from
 * k->failures.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "layout.h"

int sps_waker_init(struct sps_waker *k, struct sps_control *c, int fd, const char *prefix)
{
    memset(k, 0, sizeof *k);
    size_t len = strlen(prefix);
    /* The token's 16 hex digits and the NUL must fit in sockaddr_un's sun_path too. */
    if (len + 17 > sizeof k->path || len + 17 > sizeof ((struct sockaddr_un *)0)->sun_path)
        return SPS_E_SOCKET_DIR;
    memcpy(k->path, prefix, len + 1);
    k->prefix_len = (uint32_t)len;
    k->control = c;
    k->fd = fd;
    return SPS_OK;
}

static void note_failure(struct sps_waker *k, uint32_t index, uint64_t token, int error)
{
    k->failed++;
    if (k->failure_count < SPS_MAX_SUBSCRIBERS) {
        struct sps_wake_failure *f = &k->failures[k->failure_count++];
        f->index = index;
        f->error = error;
        f->token = token;
    }
}

/* One datagram to the socket the token names. 0, or the errno of a send that failed. */
static int send_wakeup(struct sps_waker *k, uint64_t token)
{
    static const char digits[] = "0123456789abcdef";
    struct sockaddr_un to;
    to.sun_family = AF_UNIX;
    memcpy(to.sun_path, k->path, k->prefix_len);
    for (int i = 0; i < 16; i++)
        to.sun_path[k->prefix_len + (uint32_t)i] = digits[(token >> (60 - 4 * i)) & 15];
    to.sun_path[k->prefix_len + 16] = '\0';
    static const char wake = 1;
    for (;;) {
        if (sendto(k->fd, &wake, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&to, sizeof to) == 1)
            return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0; /* its queue is full: a wake-up is already pending there */
        if (errno != EINTR)
            return errno;
    }
}

uint32_t sps_wake(struct sps_waker *k)
{
    struct sps_control *c = k->control;
    /* Counted in flight on the control segment: its close waits for us, and only then may
     * the socket be closed. */
    if (c == NULL || !sps_enter(&c->busy, &c->closed))
        return k->failure_count;
    uint32_t indices[SPS_MAX_SUBSCRIBERS];
    uint64_t tokens[SPS_MAX_SUBSCRIBERS];
    uint32_t n = sps_collect_sleepers(c, indices, tokens, SPS_MAX_SUBSCRIBERS);
    for (uint32_t i = 0; i < n; i++) {
        int error = send_wakeup(k, tokens[i]);
        if (error == 0)
            k->sent++;
        else
            note_failure(k, indices[i], tokens[i], error);
    }
    sps_leave(&c->busy);
    return k->failure_count;
}

int64_t sps_publish_waking(struct sps_writer *w, const char *data, uint64_t len)
{
    int64_t n = sps_publish(w, data, len);
    if (n == SPS_WAKE && w->waker != NULL && sps_wake(w->waker) == 0)
        return (int64_t)(w->next - 1); /* the writer is one thread's: next is ours to read */
    return n;
}

int sps_drain(int fd)
{
    char sink[64];
    int drained = 0;
    for (;;) {
        ssize_t got = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (got >= 0)
            drained++;
        else if (errno != EINTR)
            return errno == EAGAIN || errno == EWOULDBLOCK ? drained : -errno;
    }
}

int64_t sps_sleep_take(struct sps_reader *r, int timeout_ms)
{
    struct epoll_event events[4];
    int n = epoll_wait(r->sleep_fd, events, 4, timeout_ms);
    r->woke = n < 0 ? -errno : 0;
    for (int i = 0; i < n; i++)
        r->woke |= events[i].data.fd == r->wake_fd ? SPS_WOKE_SOCKET : SPS_WOKE_OTHER;
    return sps_take(r);
}

/*
 * The wake-up datagrams: the publisher's sends, the subscriber's sleep and drain.
 *
 * They carry no data: a datagram only means "look at the ring". The sends are made here
 * rather than from Python because they sit on the blocking path's critical path: a round of
 * benchmarks/wakeup_path.py (arm, publish, wake, drain, take) costs markedly less with the send
 * here (docs/benchmarks.md, "The blocking path, piece by piece"; docs/architecture.md, "Why the
 * sends are in C"). What a failed send means (a subscriber died: reclaim its entry) is decided by
 * the caller, from k->failures.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "layout.h"

int sps_waker_init(struct sps_waker *k, struct sps_control *c, int fd, const char *prefix, uint32_t max_links)
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
    k->max_links = max_links < SPS_MAX_SUBSCRIBERS ? max_links : SPS_MAX_SUBSCRIBERS;
    return SPS_OK;
}

static void unlink_entry(struct sps_waker *k, struct sps_link *l)
{
    if (l->token != 0) {
        close(l->fd);
        l->token = 0;
        k->links_open--;
    }
}

void sps_waker_close(struct sps_waker *k)
{
    for (uint32_t i = 0; i < SPS_MAX_SUBSCRIBERS && k->links_open > 0; i++)
        unlink_entry(k, &k->links[i]);
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

static void socket_path(const struct sps_waker *k, uint64_t token, struct sockaddr_un *to)
{
    static const char digits[] = "0123456789abcdef";
    memset(to, 0, sizeof *to);
    to->sun_family = AF_UNIX;
    memcpy(to->sun_path, k->path, k->prefix_len);
    for (int i = 0; i < 16; i++)
        to->sun_path[k->prefix_len + (uint32_t)i] = digits[(token >> (60 - 4 * i)) & 15];
}

/* A new socket connected to this subscriber, in place of the entry's earlier one; -1 if
 * there is none (no room left, or the connect failed: the send by path then says why). */
static int link_to(struct sps_waker *k, struct sps_link *l, uint64_t token, const struct sockaddr_un *to)
{
    unlink_entry(k, l);
    if (k->links_open >= k->max_links)
        return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        k->max_links = k->links_open; /* out of descriptors: make no more */
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) != 0) {
        close(fd);
        return -1;
    }
    l->token = token;
    l->fd = fd;
    k->links_open++;
    return fd;
}

/* One datagram to the socket the token names: through its link, else by path. 0, or the
 * errno of a send that failed. */
static int send_wakeup(struct sps_waker *k, uint32_t index, uint64_t token)
{
    static const char wake = 1;
    struct sps_link *l = &k->links[index];
    struct sockaddr_un to;
    int fd = l->token == token ? l->fd : -1;
    if (fd < 0) { /* its first wake-up: the path is needed */
        socket_path(k, token, &to);
        fd = link_to(k, l, token, &to);
    }
    for (;;) {
        ssize_t sent = fd >= 0 ? send(fd, &wake, 1, MSG_DONTWAIT | MSG_NOSIGNAL)
                               : sendto(k->fd, &wake, 1, MSG_DONTWAIT | MSG_NOSIGNAL,
                                        (const struct sockaddr *)&to, sizeof to);
        if (sent == 1)
            return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0; /* its queue is full: a wake-up is already pending there */
        if (errno != EINTR) {
            int error = errno;
            unlink_entry(k, l); /* if a link refused: its subscriber closed it, so is dead */
            return error;
        }
    }
}

uint32_t sps_wake(struct sps_waker *k)
{
    struct sps_control *c = k->control;
    /* Counted in flight on the control segment: its close waits for us, and only then may
     * the sockets be closed. */
    if (c == NULL || !sps_enter(&c->busy, &c->closed))
        return k->failure_count;
    /* A close() in another thread wakes the sleepers while a publish may be doing so: one at
     * a time, as each send is non-blocking and the wait short. */
    while (atomic_exchange_explicit((_Atomic int *)(void *)&k->sending, 1, memory_order_acquire))
        sched_yield();
    uint32_t indices[SPS_MAX_SUBSCRIBERS];
    uint64_t tokens[SPS_MAX_SUBSCRIBERS];
    uint32_t n = sps_collect_sleepers(c, indices, tokens, SPS_MAX_SUBSCRIBERS);
    for (uint32_t i = 0; i < n; i++) {
        int error = send_wakeup(k, indices[i], tokens[i]);
        if (error == 0)
            k->sent++;
        else
            note_failure(k, indices[i], tokens[i], error);
    }
    atomic_store_explicit((_Atomic int *)(void *)&k->sending, 0, memory_order_release);
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

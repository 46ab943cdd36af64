/* The floor of a blocking hop: two processes bounce a message, each asleep until the other's
 * arrives (what a wake-up costs on this kernel and hypervisor, with no Python). Three ways to
 * sleep, run in turn so that the host's noise falls on each alike:
 *   - a 64-byte datagram over a Unix socketpair, asleep in recv();
 *   - the same, asleep in epoll_wait() first, as a subscriber sleeps (its epoll also watches
 *     the publisher's pidfd);
 *   - a futex word in shared memory: no socket at all, so no descriptor to hand to a selector
 *     and no way to watch a pidfd in the same wait.
 * Prints, for each, the best of the rounds' one-way medians and its p99, in µs. */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floors.h"

enum { ROUNDS = 20000, WARM = 200, TURNS = 4 };
enum way { DGRAM, DGRAM_EPOLL, FUTEX, WAYS };
static const char *const names[WAYS] = {
    "datagram wake-up, both sides asleep in recv()",
    "datagram wake-up, both sides asleep in epoll_wait()",
    "futex wake-up in shared memory, both sides asleep",
};

struct hop { /* one side's way to send and to wait */
    int out, in, epoll;
    _Atomic unsigned *send_word, *wait_word;
};

static void futex(_Atomic unsigned *word, int op, unsigned value)
{
    syscall(SYS_futex, word, op, value, NULL, NULL, 0);
}

static int epoll_on(int fd)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        exit(1);
    return ep;
}

static void send_one(enum way way, struct hop *h, unsigned n)
{
    static char buf[64];
    if (way == FUTEX) {
        atomic_store(h->send_word, n);
        futex(h->send_word, FUTEX_WAKE, 1);
    } else if (send(h->out, buf, sizeof buf, 0) < 0) {
        exit(1);
    }
}

static void wait_one(enum way way, struct hop *h, unsigned n)
{
    static char buf[64];
    if (way == FUTEX) {
        while (atomic_load(h->wait_word) < n)
            futex(h->wait_word, FUTEX_WAIT, n - 1);
        return;
    }
    if (way == DGRAM_EPOLL) {
        struct epoll_event events[4];
        if (epoll_wait(h->epoll, events, 4, -1) < 1)
            exit(1);
    }
    if (recv(h->in, buf, sizeof buf, 0) < 0)
        exit(1);
}

/* One way's ping-pong: fills rtt with ROUNDS round trips in ns. */
static void bounce(enum way way, long *rtt)
{
    int ping[2], pong[2];
    _Atomic unsigned *words = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (words == MAP_FAILED || socketpair(AF_UNIX, SOCK_DGRAM, 0, ping) != 0 ||
        socketpair(AF_UNIX, SOCK_DGRAM, 0, pong) != 0)
        exit(1);
    memset((void *)words, 0, 4096);
    pid_t child = fork();
    if (child == 0) {
        pin(1);
        struct hop h = {pong[1], ping[1], epoll_on(ping[1]), &words[16], &words[0]};
        for (unsigned n = 1; n <= ROUNDS + WARM; n++) {
            wait_one(way, &h, n);
            send_one(way, &h, n);
        }
        _exit(0);
    }
    pin(0);
    struct hop h = {ping[0], pong[0], epoll_on(pong[0]), &words[0], &words[16]};
    for (unsigned n = 1; n <= ROUNDS + WARM; n++) {
        long t = now_ns();
        send_one(way, &h, n);
        wait_one(way, &h, n);
        if (n > WARM)
            rtt[n - WARM - 1] = now_ns() - t;
    }
    waitpid(child, NULL, 0);
    close(h.epoll);
    for (int i = 0; i < 2; i++) {
        close(ping[i]);
        close(pong[i]);
    }
    munmap((void *)words, 4096);
}

int main(void)
{
    long *rtt = malloc(sizeof *rtt * ROUNDS);
    double best[WAYS][2];
    for (int w = 0; w < WAYS; w++)
        best[w][0] = 1e30;
    for (int turn = 0; turn < TURNS; turn++) {
        for (int w = 0; w < WAYS; w++) {
            bounce((enum way)w, rtt);
            qsort(rtt, ROUNDS, sizeof *rtt, by_value);
            double median = rtt[ROUNDS / 2] / 2000.0, p99 = rtt[ROUNDS * 99 / 100] / 2000.0;
            if (median < best[w][0]) {
                best[w][0] = median;
                best[w][1] = p99;
            }
        }
    }
    for (int w = 0; w < WAYS; w++)
        printf("%s\t%.3f\t%.3f\n", names[w], best[w][0], best[w][1]);
    return 0;
}

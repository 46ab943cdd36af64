/* The floor of a blocking hop: two processes bounce a 64-byte datagram over a Unix socketpair,
 * each asleep in recv() until the other's arrives (what a wake-up costs on this kernel and
 * hypervisor, with no Python and no shared memory). Prints the one-way median and p99 in µs. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floors.h"

int main(void)
{
    enum { ROUNDS = 20000, WARM = 100 };
    int sv[2];
    char buf[64] = {0};
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) != 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        pin(1);
        for (int i = 0; i < ROUNDS + WARM; i++)
            if (recv(sv[1], buf, sizeof buf, 0) < 0 || send(sv[1], buf, sizeof buf, 0) < 0)
                _exit(1);
        _exit(0);
    }
    pin(0);
    long *rtt = malloc(sizeof *rtt * ROUNDS);
    for (int i = 0; i < ROUNDS + WARM; i++) {
        long t = now_ns();
        if (send(sv[0], buf, sizeof buf, 0) < 0 || recv(sv[0], buf, sizeof buf, 0) < 0)
            return 1;
        if (i >= WARM)
            rtt[i - WARM] = now_ns() - t;
    }
    waitpid(child, NULL, 0);
    report("datagram wake-up, both sides asleep", rtt, ROUNDS);
    return 0;
}

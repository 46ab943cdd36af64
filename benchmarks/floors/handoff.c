/* The floor of a spinning hop: two processes, pinned to CPUs 0 and 1, bounce one cache line
 * (a counter each way, both sides spinning). Prints the one-way median and p99 in µs. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floors.h"

int main(void)
{
    enum { ROUNDS = 200000, WARM = 1000 };
    _Atomic long *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 1;
    _Atomic long *ping = shared, *pong = shared + 16; /* separate cache lines */
    pid_t child = fork();
    if (child == 0) {
        pin(1);
        for (long i = 1; i <= ROUNDS + WARM; i++) {
            while (atomic_load(ping) != i)
                ;
            atomic_store(pong, i);
        }
        _exit(0);
    }
    pin(0);
    long *rtt = malloc(sizeof *rtt * ROUNDS);
    for (long i = 1; i <= ROUNDS + WARM; i++) {
        long t = now_ns();
        atomic_store(ping, i);
        while (atomic_load(pong) != i)
            ;
        if (i > WARM)
            rtt[i - WARM - 1] = now_ns() - t;
    }
    waitpid(child, NULL, 0);
    report("cache-line hand-off, spinning", rtt, ROUNDS);
    return 0;
}

/* What the floor programs share: pinning, a clock, and the one-way report (RTT / 2). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set); /* best effort: one CPU is still a measurement */
}

static inline long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline int by_value(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static inline void report(const char *what, long *rtt, int n)
{
    qsort(rtt, (size_t)n, sizeof *rtt, by_value);
    printf("%s\t%.3f\t%.3f\n", what, rtt[n / 2] / 2000.0, rtt[n * 99 / 100] / 2000.0);
}

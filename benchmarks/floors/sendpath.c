/* What naming the receiver costs a datagram's sender: one process sends a byte to a bound
 * Unix datagram socket and takes it back out, by the socket's path (sendto: the kernel looks the
 * path up on every send, as the publisher's wake-ups do) and through a connected socket (send).
 * Prints each round's mean in ns, best of 5 runs of 200 000. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "floors.h"

enum { ROUNDS = 200000, RUNS = 5 };

static double best_round_ns(int tx, int rx, const struct sockaddr_un *to)
{
    char byte = 1, sink[64];
    double best = 1e18;
    for (int run = 0; run < RUNS; run++) {
        long t = now_ns();
        for (int i = 0; i < ROUNDS; i++) {
            ssize_t sent = to != NULL ? sendto(tx, &byte, 1, 0, (const struct sockaddr *)to, sizeof *to)
                                      : send(tx, &byte, 1, 0);
            if (sent != 1 || recv(rx, sink, sizeof sink, 0) != 1)
                return -1;
        }
        double ns = (double)(now_ns() - t) / ROUNDS;
        best = ns < best ? ns : best;
    }
    return best;
}

int main(void)
{
    struct sockaddr_un at = {.sun_family = AF_UNIX};
    snprintf(at.sun_path, sizeof at.sun_path, "/tmp/floor-sendpath-%d", (int)getpid());
    int rx = socket(AF_UNIX, SOCK_DGRAM, 0), tx = socket(AF_UNIX, SOCK_DGRAM, 0);
    int connected = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (rx < 0 || tx < 0 || connected < 0 || bind(rx, (struct sockaddr *)&at, sizeof at) != 0)
        return 1;
    if (connect(connected, (struct sockaddr *)&at, sizeof at) != 0) {
        unlink(at.sun_path);
        return 1;
    }
    double by_path = best_round_ns(tx, rx, &at), by_connection = best_round_ns(connected, rx, NULL);
    unlink(at.sun_path);
    if (by_path < 0 || by_connection < 0)
        return 1;
    printf("sendto() by the socket's path, then recv()\t%.0f\n", by_path);
    printf("send() on a connected socket, then recv()\t%.0f\n", by_connection);
    return 0;
}

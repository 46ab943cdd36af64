/* What writing a 1 MiB message costs, by how the slot is written and how large the ring is:
 * memcpy against SSE2 streaming stores, into rings of 2 to 64 one-MiB slots in shared memory.
 * Prints µs per 1 MiB copy: the best of ROUNDS rounds, since on a shared host a round may lose
 * the CPU or the memory bus to a neighbour. */
#define _GNU_SOURCE
#include <emmintrin.h>
#include <string.h>
#include <sys/mman.h>

#include "floors.h"

enum { SLOT = 1 << 20, MAX_SLOTS = 64, COPIES = 256, ROUNDS = 10 };

static void streamed(unsigned char *dst, const unsigned char *src, size_t len)
{
    for (size_t i = 0; i + 16 <= len; i += 16)
        _mm_stream_si128((__m128i *)(void *)(dst + i), _mm_loadu_si128((const __m128i *)(const void *)(src + i)));
    _mm_sfence();
}

int main(void)
{
    unsigned char *ring = mmap(NULL, (size_t)MAX_SLOTS * SLOT, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    unsigned char *src = malloc(SLOT);
    if (ring == MAP_FAILED || src == NULL)
        return 1;
    memset(ring, 1, (size_t)MAX_SLOTS * SLOT); /* fault every page in first */
    memset(src, 2, SLOT);
    for (int stream = 0; stream < 2; stream++)
        for (int slots = 2; slots <= MAX_SLOTS; slots *= 2) {
            long best = -1;
            for (int round = 0; round < ROUNDS; round++) {
                long t = now_ns();
                for (int i = 0; i < COPIES; i++) {
                    unsigned char *dst = ring + (size_t)(i % slots) * SLOT;
                    if (stream)
                        streamed(dst, src, SLOT);
                    else
                        memcpy(dst, src, SLOT);
                }
                t = now_ns() - t;
                best = best < 0 || t < best ? t : best;
            }
            printf("%s\t%d\t%.1f\n", stream ? "streaming" : "memcpy", slots, best / 1e3 / COPIES);
        }
    return 0;
}

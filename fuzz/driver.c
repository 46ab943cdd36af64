/*
 * A stand-in for libFuzzer where there is none (gcc): runs LLVMFuzzerTestOneInput on every
 * file of a corpus, then on random mutations of them until the time is up. Build it with the
 * harness and the sanitizers, so the same harness runs under ASan+UBSan with either compiler:
 *
 *   gcc -std=c11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Icsrc \
 *       fuzz/driver.c fuzz/fuzz_segment.c csrc/checksum.c csrc/control.c csrc/file.c csrc/ring.c \
 *       csrc/header.c -o fuzz_replay
 *   ./fuzz_replay [-t SECONDS] [-s SEED] [-o CRASH_FILE] fuzz/corpus
 *
 * Mutations are structure-aware: besides bit flips and byte writes they store boundary
 * values into the 64- and 32-bit fields of the headers and slot headers, truncate, extend
 * and splice. The input being tried is written to CRASH_FILE if the process dies (a
 * sanitizer report, an abort, or a hang caught by a per-input alarm), to be replayed with
 * ./fuzz_replay CRASH_FILE.
 */
#define _DEFAULT_SOURCE /* DT_REG, d_type */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__ /* gcc's -fsanitize=address; without it: plain (gcov, valgrind) */
#include <sanitizer/common_interface_defs.h>
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define INPUT_MAX_BYTES 20000
#define MAX_CORPUS 1024
#define HANG_SECONDS 10
#define STRINGIFY(x) #x
#define STR(x) STRINGIFY(x)

struct input {
    uint8_t *data;
    size_t size;
};

static struct input corpus[MAX_CORPUS];
static size_t corpus_size;
static const char *crash_file = "fuzz-crash.bin";
static const uint8_t *current;
static size_t current_size;

/* On death, leave the input behind. Only async-signal-safe calls. */
static void save_current(void)
{
    int fd = open(crash_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (current_size && write(fd, current, current_size) < 0)
            (void)0;
        close(fd);
    }
}

/* abort() (a broken invariant) raises SIGABRT again once this handler returns. */
static void on_abort(int sig)
{
    (void)sig;
    save_current();
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "fuzz driver: an input ran longer than " STR(HANG_SECONDS) " s (a hang)\n";
    if (write(2, msg, sizeof msg - 1) < 0)
        (void)0;
    save_current();
    abort();
}

static void run(const uint8_t *data, size_t size)
{
    current = data;
    current_size = size;
    alarm(HANG_SECONDS);
    LLVMFuzzerTestOneInput(data, size);
    alarm(0);
}

static void add_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    uint8_t *buf = malloc(INPUT_MAX_BYTES);
    size_t n = fread(buf, 1, INPUT_MAX_BYTES, f);
    fclose(f);
    if (corpus_size == MAX_CORPUS) {
        fprintf(stderr, "fuzz driver: more than %d corpus files\n", MAX_CORPUS);
        exit(2);
    }
    corpus[corpus_size++] = (struct input){buf, n};
}

static void add_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        add_file(path);
        return;
    }
    DIR *dir = opendir(path);
    struct dirent *e;
    char file[4096];
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        add_file(file);
    }
    if (dir != NULL)
        closedir(dir);
}

/* xorshift64*: reproducible from the printed seed. */
static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static uint64_t below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* Values at which size and index arithmetic tends to break. */
static uint64_t boundary_value(size_t size)
{
    static const uint64_t fixed[] = {
        0, 1, 2, 3, 7, 8, 63, 64, 65, 127, 128, 4095, 4096, 4097,
        UINT64_C(0x7fffffff), UINT64_C(0x80000000), UINT64_C(0xffffffff), UINT64_C(0x100000000),
        UINT64_C(0x3fffffffffffffff), UINT64_C(0x4000000000000000),
        UINT64_C(0x7fffffffffffffff), UINT64_C(0x8000000000000000), UINT64_MAX, UINT64_MAX - 1,
    };
    switch (below(4)) {
    case 0: return (uint64_t)1 << below(64);
    case 1: return size + below(129) - 64;
    default: return fixed[below(sizeof fixed / sizeof fixed[0])];
    }
}

/* An offset likely to hold a field: the headers' first 512 bytes, or a slot header. */
static size_t field_offset(size_t size, size_t width)
{
    size_t off;
    if (below(2))
        off = below(512);
    else
        off = 4096 + below(size > 4096 ? size - 4096 : 1);
    off &= ~(width - 1);
    return off + width <= size ? off : 0;
}

static size_t mutate(uint8_t *buf, size_t size)
{
    int rounds = 1 + (int)below(8);
    for (int i = 0; i < rounds; i++) {
        switch (below(7)) {
        case 0: /* flip a bit */
            if (size)
                buf[below(size)] ^= (uint8_t)(1u << below(8));
            break;
        case 1: /* set a byte */
            if (size)
                buf[below(size)] = (uint8_t)rnd();
            break;
        case 2: /* a boundary value into a 64-bit field */
            if (size >= 8) {
                uint64_t v = boundary_value(size);
                memcpy(buf + field_offset(size, 8), &v, 8);
            }
            break;
        case 3: /* ... or into a 32-bit one */
            if (size >= 4) {
                uint32_t v = (uint32_t)boundary_value(size);
                memcpy(buf + field_offset(size, 4), &v, 4);
            }
            break;
        case 4: /* truncate */
            size = below(size + 1);
            break;
        case 5: { /* extend with zeros or noise */
            size_t more = below(INPUT_MAX_BYTES - size + 1) % 4200;
            int noise = (int)below(2);
            for (size_t k = 0; k < more; k++)
                buf[size + k] = noise ? (uint8_t)rnd() : 0;
            size += more;
            break;
        }
        default: { /* splice in a chunk of another corpus entry */
            const struct input *other = &corpus[below(corpus_size)];
            if (other->size && size) {
                size_t from = below(other->size), to = below(size);
                size_t len = below(other->size - from + 1);
                if (len > size - to)
                    len = size - to;
                memcpy(buf + to, other->data + from, len);
            }
            break;
        }
        }
    }
    return size;
}

int main(int argc, char **argv)
{
    double seconds = 10;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int opt;
    while ((opt = getopt(argc, argv, "t:s:o:")) != -1) {
        switch (opt) {
        case 't': seconds = atof(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 0); break;
        case 'o': crash_file = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-t SECONDS] [-s SEED] [-o CRASH_FILE] CORPUS...\n", argv[0]);
            return 2;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "usage: %s [-t SECONDS] [-s SEED] [-o CRASH_FILE] CORPUS...\n", argv[0]);
        return 2;
    }
    for (int i = optind; i < argc; i++)
        add_path(argv[i]);
    signal(SIGALRM, on_alarm);
    signal(SIGABRT, on_abort);
#ifdef __SANITIZE_ADDRESS__
    __sanitizer_set_death_callback(save_current);
#endif

    for (size_t i = 0; i < corpus_size; i++)
        run(corpus[i].data, corpus[i].size);
    printf("replayed %zu corpus inputs\n", corpus_size);

    rng_state = seed ? seed : 1;
    printf("mutating for %.0f s, seed %llu\n", seconds, (unsigned long long)seed);
    fflush(stdout);
    uint8_t *buf = malloc(INPUT_MAX_BYTES);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long long execs = 0;
    for (;;) {
        if ((execs & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 >= seconds)
                break;
        }
        size_t size;
        if (corpus_size == 0 || below(16) == 0) { /* now and then, pure noise */
            size = below(INPUT_MAX_BYTES / 2);
            for (size_t k = 0; k < size; k++)
                buf[k] = (uint8_t)rnd();
        } else {
            const struct input *base = &corpus[below(corpus_size)];
            memcpy(buf, base->data, base->size);
            size = mutate(buf, base->size);
        }
        /* An exact-size copy, so a read past the end is past the allocation. */
        uint8_t *exact = malloc(size ? size : 1);
        memcpy(exact, buf, size);
        run(exact, size);
        free(exact);
        execs++;
    }
    printf("%llu mutated inputs in %.0f s, no finding\n", execs, seconds);
    free(buf);
    return 0;
}

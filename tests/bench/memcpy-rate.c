/* The machine's memory-copy rate: how fast one thread copies 256 KiB
 * chunks between two buffers too large for the caches.  A sequential read
 * over NBD copies each byte at least this often (page cache -> socket ->
 * client), so it bounds any server, like socketpair-limit does for the
 * socket itself.
 * Usage: memcpy-rate MIB; prints MiB/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK (256 * 1024)
#define BUF (64 * 1024 * 1024) /* well past any L3 on the machines we run on */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long long total = (argc > 1 ? atoll(argv[1]) : 4096) * 1024 * 1024;
    if (total < BUF) /* the check below reads the whole destination */
        total = BUF;
    char *src = malloc(BUF), *dst = malloc(BUF);
    if (!src || !dst) {
        perror("malloc");
        return 1;
    }
    /* Fault both buffers in first: page faults are not the copy's cost. */
    memset(src, 0x5a, BUF);
    memset(dst, 0, BUF);
    double start = now();
    size_t off = 0;
    for (long long done = 0; done < total; done += CHUNK) {
        memcpy(dst + off, src + off, CHUNK);
        off = (off + CHUNK) % BUF;
    }
    double secs = now() - start;
    /* Read the destination back so the copies cannot be optimised away. */
    unsigned sum = 0;
    for (size_t i = 0; i < BUF; i += 4096)
        sum += (unsigned char)dst[i];
    if (sum != (BUF / 4096) * 0x5aU) {
        fprintf(stderr, "copy check failed\n");
        return 1;
    }
    printf("%.0f\n", total / (1024.0 * 1024.0) / secs);
    return 0;
}

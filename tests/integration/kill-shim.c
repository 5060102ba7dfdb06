/* LD_PRELOAD shim for crash tests: SIGKILLs the process just before its
 * Nth pwrite() to one file, so a test can stop blockd at chosen points of
 * a metadata update (tests/integration/test_qcow2_snapshot_crash.py).
 *
 *   KILL_SHIM_FILE=PATH   the file whose writes are counted (by its path)
 *   KILL_SHIM_AT=N        the write (1 = the first) that is never made
 *   KILL_SHIM_COUNT=PATH  at exit, the number of writes to the file is
 *                         written there (to choose the points)
 *
 * Without both it only passes writes on.  With ASan the daemon needs
 * ASAN_OPTIONS=verify_asan_link_order=0 (this library comes first). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
/* Both pwrite and pwrite64 are defined here: no redirection of one to the other. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static long countdown, seen;
static int enabled;
static char target[PATH_MAX];

__attribute__((constructor)) static void shim_init(void)
{
    const char *file = getenv("KILL_SHIM_FILE"), *at = getenv("KILL_SHIM_AT");
    if (!file || !at || !realpath(file, target))
        return;
    countdown = atol(at);
    enabled = 1;
}

__attribute__((destructor)) static void shim_fini(void)
{
    const char *out = getenv("KILL_SHIM_COUNT");
    FILE *f = out && target[0] ? fopen(out, "w") : NULL;
    if (f) {
        fprintf(f, "%ld\n", __atomic_load_n(&seen, __ATOMIC_SEQ_CST));
        fclose(f);
    }
}

static void count(int fd)
{
    if (!enabled)
        return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return;
    path[n] = 0;
    if (strcmp(path, target) != 0)
        return;
    __atomic_add_fetch(&seen, 1, __ATOMIC_SEQ_CST);
    if (__atomic_sub_fetch(&countdown, 1, __ATOMIC_SEQ_CST) == 0)
        raise(SIGKILL);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real)
        real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    count(fd);
    return real(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real)
        real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    count(fd);
    return real(fd, buf, len, off);
}

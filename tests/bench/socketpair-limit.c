/* The machine's ceiling for an NBD server on a Unix socket: how fast one
 * process can stream 256 KiB writes to another through a socketpair.
 * Usage: socketpair-limit MIB; prints MiB/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long long total = (argc > 1 ? atoll(argv[1]) : 4096) * 1024 * 1024;
    int sv[2];
    static char buf[CHUNK];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    memset(buf, 0x5a, sizeof buf);
    double start = now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) { /* reader: drain everything */
        close(sv[0]);
        long long got = 0;
        ssize_t n;
        while (got < total && (n = read(sv[1], buf, sizeof buf)) > 0)
            got += n;
        _exit(got == total ? 0 : 1);
    }
    close(sv[1]);
    for (long long sent = 0; sent < total;) {
        ssize_t n = write(sv[0], buf, CHUNK);
        if (n < 0) {
            perror("write");
            return 1;
        }
        sent += n;
    }
    int status;
    waitpid(pid, &status, 0);
    double secs = now() - start;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "reader failed\n");
        return 1;
    }
    printf("%.0f\n", total / (1024.0 * 1024.0) / secs);
    return 0;
}

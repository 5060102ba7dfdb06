/* The least work of a sequential write through any NBD server into a file:
 * one process reads SRC 256 KiB at a time and streams it through a
 * socketpair, the other receives each chunk whole and pwrite()s it into a
 * new file DST, then fsyncs it, like nbdcopy into a server's file backend
 * without the protocol, and with no copy a server could avoid.
 * Usage: socket-to-file SRC DST; prints MiB/s (DST is removed first). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* The receiver: chunks from the socket into the file at their offsets. */
static int receive(int sock, const char *dst, long long total)
{
    static char buf[CHUNK];
    int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(dst);
        return 1;
    }
    for (long long off = 0; off < total;) {
        size_t want = total - off < CHUNK ? (size_t)(total - off) : CHUNK, got = 0;
        while (got < want) {
            ssize_t n = read(sock, buf + got, want - got);
            if (n <= 0)
                return 1;
            got += (size_t)n;
        }
        if (pwrite(fd, buf, got, off) != (ssize_t)got) {
            perror("pwrite");
            return 1;
        }
        off += (long long)got;
    }
    return fsync(fd) < 0 || close(fd) < 0;
}

int main(int argc, char **argv)
{
    static char buf[CHUNK];
    struct stat st;
    int sv[2];
    if (argc != 3) {
        fprintf(stderr, "usage: socket-to-file SRC DST\n");
        return 2;
    }
    int src = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (src < 0 || fstat(src, &st) < 0) {
        perror(argv[1]);
        return 1;
    }
    unlink(argv[2]);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    /* Buffers of several chunks (a server may set them so): with the
     * default ~200 KiB every chunk waits for the receiver. */
    int bufsize = 4 << 20;
    for (int i = 0; i < 2; i++) {
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
    }
    double start = now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        close(sv[0]);
        _exit(receive(sv[1], argv[2], st.st_size));
    }
    close(sv[1]);
    for (long long off = 0; off < st.st_size;) {
        ssize_t n = pread(src, buf, CHUNK, off);
        if (n <= 0) {
            perror("pread");
            return 1;
        }
        for (ssize_t sent = 0; sent < n;) {
            ssize_t w = write(sv[0], buf + sent, (size_t)(n - sent));
            if (w < 0) {
                perror("write");
                return 1;
            }
            sent += w;
        }
        off += n;
    }
    int status;
    waitpid(pid, &status, 0);
    double secs = now() - start;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "receiver failed\n");
        return 1;
    }
    printf("%.0f\n", st.st_size / (1024.0 * 1024.0) / secs);
    return 0;
}

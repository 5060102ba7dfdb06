/* nbdkit_* parsing, password and path helpers, with nbdkit 1.32's rules
 * and messages.  Results a plugin frees are malloc'ed, not g_malloc'ed. */
#include "block/plugin-host/host-internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <unistd.h>

/* ---- integers: strtol base 0, whole string, range-checked ---- */

static bool parse_signed(const char *what, const char *str, intmax_t min, intmax_t max, intmax_t *out)
{
    char *end;
    errno = 0;
    long long r = strtoll(str, &end, 0);
    if (end == str) {
        nbdkit_error("%s: could not parse number: \"%s\"", what, str);
        return false;
    }
    if (*end) {
        nbdkit_error("%s: could not parse number: \"%s\": trailing garbage", what, str);
        return false;
    }
    if (errno == ERANGE || r < min || r > max) {
        errno = ERANGE;
        nbdkit_error("%s: could not parse number: \"%s\": %m", what, str);
        return false;
    }
    *out = r;
    return true;
}

static bool parse_unsigned(const char *what, const char *str, uintmax_t max, uintmax_t *out)
{
    const char *p = str;
    while (isspace((unsigned char) *p))
        p++;
    if (*p == '-') {
        nbdkit_error("%s: negative numbers are not allowed", what);
        return false;
    }
    char *end;
    errno = 0;
    unsigned long long r = strtoull(str, &end, 0);
    if (end == str) {
        nbdkit_error("%s: could not parse number: \"%s\"", what, str);
        return false;
    }
    if (*end) {
        nbdkit_error("%s: could not parse number: \"%s\": trailing garbage", what, str);
        return false;
    }
    if (errno == ERANGE || r > max) {
        errno = ERANGE;
        nbdkit_error("%s: could not parse number: \"%s\": %m", what, str);
        return false;
    }
    *out = r;
    return true;
}

#define DEFINE_PARSE_SIGNED(fn, type, min, max)                          \
    HOST_EXPORT int fn(const char *what, const char *str, type *r)       \
    {                                                                    \
        intmax_t v;                                                      \
        if (!parse_signed(what, str, min, max, &v))                      \
            return -1;                                                   \
        if (r)                                                           \
            *r = v;                                                      \
        return 0;                                                        \
    }

#define DEFINE_PARSE_UNSIGNED(fn, type, max)                             \
    HOST_EXPORT int fn(const char *what, const char *str, type *r)       \
    {                                                                    \
        uintmax_t v;                                                     \
        if (!parse_unsigned(what, str, max, &v))                         \
            return -1;                                                   \
        if (r)                                                           \
            *r = v;                                                      \
        return 0;                                                        \
    }

DEFINE_PARSE_SIGNED(nbdkit_parse_int, int, INT_MIN, INT_MAX)
DEFINE_PARSE_SIGNED(nbdkit_parse_int8_t, int8_t, INT8_MIN, INT8_MAX)
DEFINE_PARSE_SIGNED(nbdkit_parse_int16_t, int16_t, INT16_MIN, INT16_MAX)
DEFINE_PARSE_SIGNED(nbdkit_parse_int32_t, int32_t, INT32_MIN, INT32_MAX)
DEFINE_PARSE_SIGNED(nbdkit_parse_int64_t, int64_t, INT64_MIN, INT64_MAX)
DEFINE_PARSE_UNSIGNED(nbdkit_parse_unsigned, unsigned, UINT_MAX)
DEFINE_PARSE_UNSIGNED(nbdkit_parse_uint8_t, uint8_t, UINT8_MAX)
DEFINE_PARSE_UNSIGNED(nbdkit_parse_uint16_t, uint16_t, UINT16_MAX)
DEFINE_PARSE_UNSIGNED(nbdkit_parse_uint32_t, uint32_t, UINT32_MAX)
DEFINE_PARSE_UNSIGNED(nbdkit_parse_uint64_t, uint64_t, UINT64_MAX)

/* ---- sizes and booleans ---- */

HOST_EXPORT int64_t nbdkit_parse_size(const char *str)
{
    char *end;
    errno = 0;
    intmax_t size = strtoimax(str, &end, 10);
    if (end == str) {
        nbdkit_error("could not parse size string (%s)", str);
        return -1;
    }
    if (size < 0) {
        nbdkit_error("size cannot be negative (%s)", str);
        return -1;
    }
    if (errno == ERANGE) {
        nbdkit_error("size (%s) exceeds maximum value", str);
        return -1;
    }
    int64_t scale = 1;
    switch (*end) {
    case '\0':
        break;
    case 'b': case 'B': scale = 1; break;
    case 's': case 'S': scale = 512; break;
    case 'k': case 'K': scale = INT64_C(1) << 10; break;
    case 'm': case 'M': scale = INT64_C(1) << 20; break;
    case 'g': case 'G': scale = INT64_C(1) << 30; break;
    case 't': case 'T': scale = INT64_C(1) << 40; break;
    case 'p': case 'P': scale = INT64_C(1) << 50; break;
    case 'e': case 'E': scale = INT64_C(1) << 60; break;
    default:
        nbdkit_error("could not parse size: unknown suffix '%s'", end);
        return -1;
    }
    if (*end && end[1]) {
        nbdkit_error("could not parse size: unknown suffix '%s'", end);
        return -1;
    }
    if (size > INT64_MAX / scale) {
        nbdkit_error("size (%s) exceeds maximum value", str);
        return -1;
    }
    return size * scale;
}

HOST_EXPORT int nbdkit_parse_bool(const char *str)
{
    static const char *const yes[] = { "1", "true", "t", "yes", "y", "on" };
    static const char *const no[] = { "0", "false", "f", "no", "n", "off" };
    for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (strcasecmp(str, yes[i]) == 0)
            return 1;
        if (strcasecmp(str, no[i]) == 0)
            return 0;
    }
    nbdkit_error("could not decipher boolean (%s)", str);
    return -1;
}

/* ---- passwords ---- */

/* Reads all of fd into a malloc'ed string, dropping one trailing newline. */
static char *read_all(int fd, const char *what)
{
    size_t len = 0, cap = 256;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            nbdkit_error("malloc: %m");
            return NULL;
        }
        if (len + 1 >= cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
            continue;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            nbdkit_error("reading password from %s: %m", what);
            free(buf);
            return NULL;
        }
        if (r == 0)
            break;
        len += r;
    }
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    buf[len] = '\0';
    return buf;
}

static char *read_password_from_tty(void)
{
    if (!nbdkit_stdio_safe()) {
        nbdkit_error("stdin is not available for reading password");
        return NULL;
    }
    if (!isatty(STDIN_FILENO)) {
        nbdkit_error("stdin is not a tty, cannot read password interactively");
        return NULL;
    }
    struct termios orig, noecho;
    bool restore = tcgetattr(STDIN_FILENO, &orig) == 0;
    if (restore) {
        noecho = orig;
        noecho.c_lflag &= ~ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho);
    }
    printf("password: ");
    fflush(stdout);
    char *line = NULL;
    size_t cap = 0;
    ssize_t r = getline(&line, &cap, stdin);
    int saved_errno = errno;
    if (restore)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &orig);
    printf("\n");
    if (r == -1) {
        errno = saved_errno;
        nbdkit_error("could not read password from stdin: %m");
        free(line);
        return NULL;
    }
    if (r > 0 && line[r - 1] == '\n')
        line[r - 1] = '\0';
    return line;
}

HOST_EXPORT int nbdkit_read_password(const char *value, char **password)
{
    *password = NULL;
    char *pw;
    if (strcmp(value, "-") == 0)
        pw = read_password_from_tty();
    else if (value[0] == '-' && g_ascii_isdigit(value[1])) {
        int fd;
        if (nbdkit_parse_int("password file descriptor", value + 1, &fd) == -1)
            return -1;
        if (fd <= STDERR_FILENO) {
            nbdkit_error("cannot use password -FD for stdin/stdout/stderr");
            return -1;
        }
        pw = read_all(fd, "file descriptor");
        close(fd);
    } else if (value[0] == '+') {
        int fd = open(value + 1, O_RDONLY | O_CLOEXEC);
        if (fd == -1) {
            nbdkit_error("open %s: %m", value + 1);
            return -1;
        }
        pw = read_all(fd, value + 1);
        close(fd);
    } else {
        pw = strdup(value);
        if (!pw)
            nbdkit_error("strdup: %m");
    }
    if (!pw)
        return -1;
    *password = pw;
    return 0;
}

/* ---- paths ---- */

HOST_EXPORT char *nbdkit_absolute_path(const char *path)
{
    if (!path || !*path) {
        nbdkit_error("cannot convert null or empty path to an absolute path");
        return NULL;
    }
    if (path[0] == '/') {
        char *r = strdup(path);
        if (!r)
            nbdkit_error("strdup: %m");
        return r;
    }
    char *cwd = getcwd(NULL, 0);
    if (!cwd) {
        nbdkit_error("getcwd: %m");
        return NULL;
    }
    char *r = NULL;
    if (asprintf(&r, "%s/%s", cwd, path) == -1) {
        nbdkit_error("asprintf: %m");
        r = NULL;
    }
    free(cwd);
    return r;
}

HOST_EXPORT char *nbdkit_realpath(const char *path)
{
    if (!path || !*path) {
        nbdkit_error("cannot resolve a null or empty path");
        return NULL;
    }
    char *r = realpath(path, NULL);
    if (!r)
        nbdkit_error("realpath: %s: %m", path);
    return r;
}

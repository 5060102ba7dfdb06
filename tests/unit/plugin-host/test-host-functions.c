/* The exported nbdkit_* helper functions, checked against nbdkit 1.32's
 * documented rules (reference/nbdkit-plugin-host.md section 9.2). */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#include <nbdkit-filter.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "block/plugin-host/plugin-host.h"

static void test_parse_size(void)
{
    static const struct { const char *in; int64_t out; } cases[] = {
        { "0", 0 }, { "1", 1 }, { "512", 512 }, { "1b", 1 }, { "1B", 1 },
        { "1s", 512 }, { "2S", 1024 }, { "1k", 1024 }, { "1K", 1024 },
        { "3m", 3 << 20 }, { "1M", 1 << 20 }, { "1g", INT64_C(1) << 30 },
        { "1G", INT64_C(1) << 30 }, { "1t", INT64_C(1) << 40 }, { "1T", INT64_C(1) << 40 },
        { "1p", INT64_C(1) << 50 }, { "1P", INT64_C(1) << 50 }, { "1e", INT64_C(1) << 60 },
        { "7E", INT64_C(7) << 60 }, { "9223372036854775807", INT64_MAX },
        { "", -1 }, { "x", -1 }, { "-1", -1 }, { "1MiB", -1 }, { "1x", -1 },
        { "8E", -1 }, { "9223372036854775808", -1 }, { "1 M", -1 }, { "M", -1 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_test_message("parse_size(\"%s\")", cases[i].in);
        g_assert_cmpint(nbdkit_parse_size(cases[i].in), ==, cases[i].out);
    }
}

static void test_parse_bool(void)
{
    static const char *const yes[] = { "1", "true", "TRUE", "t", "T", "yes", "Yes", "y", "Y", "on", "ON" };
    static const char *const no[] = { "0", "false", "False", "f", "F", "no", "NO", "n", "N", "off", "Off" };
    for (size_t i = 0; i < G_N_ELEMENTS(yes); i++)
        g_assert_cmpint(nbdkit_parse_bool(yes[i]), ==, 1);
    for (size_t i = 0; i < G_N_ELEMENTS(no); i++)
        g_assert_cmpint(nbdkit_parse_bool(no[i]), ==, 0);
    g_assert_cmpint(nbdkit_parse_bool(""), ==, -1);
    g_assert_cmpint(nbdkit_parse_bool("2"), ==, -1);
    g_assert_cmpint(nbdkit_parse_bool("yess"), ==, -1);
    g_assert_nonnull(strstr(plugin_host_last_error(), "yess"));
}

static void test_parse_int(void)
{
    int i = 42;
    g_assert_cmpint(nbdkit_parse_int("n", "0x10", &i), ==, 0);
    g_assert_cmpint(i, ==, 16);
    g_assert_cmpint(nbdkit_parse_int("n", "010", &i), ==, 0);
    g_assert_cmpint(i, ==, 8);
    g_assert_cmpint(nbdkit_parse_int("n", " -5", &i), ==, 0);
    g_assert_cmpint(i, ==, -5);
    g_assert_cmpint(nbdkit_parse_int("n", "2147483647", &i), ==, 0);
    g_assert_cmpint(i, ==, INT32_MAX);
    i = 42;
    g_assert_cmpint(nbdkit_parse_int("count", "2147483648", &i), ==, -1);
    g_assert_cmpint(i, ==, 42);                        /* unchanged on error */
    g_assert_nonnull(strstr(plugin_host_last_error(), "count"));
    g_assert_cmpint(nbdkit_parse_int("n", "", &i), ==, -1);
    g_assert_cmpint(nbdkit_parse_int("n", "12abc", &i), ==, -1);
    g_assert_cmpint(nbdkit_parse_int("n", "12 ", &i), ==, -1);
    g_assert_cmpint(i, ==, 42);
    g_assert_cmpint(nbdkit_parse_int("n", "7", NULL), ==, 0);  /* r may be NULL */

    int8_t i8;
    g_assert_cmpint(nbdkit_parse_int8_t("n", "-128", &i8), ==, 0);
    g_assert_cmpint(i8, ==, -128);
    g_assert_cmpint(nbdkit_parse_int8_t("n", "128", &i8), ==, -1);
    int16_t i16;
    g_assert_cmpint(nbdkit_parse_int16_t("n", "-32769", &i16), ==, -1);
    g_assert_cmpint(nbdkit_parse_int16_t("n", "32767", &i16), ==, 0);
    g_assert_cmpint(i16, ==, 32767);
    int32_t i32;
    g_assert_cmpint(nbdkit_parse_int32_t("n", "-2147483649", &i32), ==, -1);
    int64_t i64;
    g_assert_cmpint(nbdkit_parse_int64_t("n", "-9223372036854775808", &i64), ==, 0);
    g_assert_cmpint(i64, ==, INT64_MIN);
    g_assert_cmpint(nbdkit_parse_int64_t("n", "9223372036854775808", &i64), ==, -1);
}

static void test_parse_unsigned(void)
{
    unsigned u = 9;
    g_assert_cmpint(nbdkit_parse_unsigned("n", "-1", &u), ==, -1);
    g_assert_nonnull(strstr(plugin_host_last_error(), "negative"));
    g_assert_cmpint(nbdkit_parse_unsigned("n", " -0", &u), ==, -1);
    g_assert_cmpuint(u, ==, 9);
    g_assert_cmpint(nbdkit_parse_unsigned("n", "4294967295", &u), ==, 0);
    g_assert_cmpuint(u, ==, UINT32_MAX);
    g_assert_cmpint(nbdkit_parse_unsigned("n", "4294967296", &u), ==, -1);

    uint8_t u8;
    g_assert_cmpint(nbdkit_parse_uint8_t("n", "255", &u8), ==, 0);
    g_assert_cmpuint(u8, ==, 255);
    g_assert_cmpint(nbdkit_parse_uint8_t("n", "256", &u8), ==, -1);
    uint16_t u16;
    g_assert_cmpint(nbdkit_parse_uint16_t("n", "0xffff", &u16), ==, 0);
    g_assert_cmpuint(u16, ==, 0xffff);
    g_assert_cmpint(nbdkit_parse_uint16_t("n", "65536", &u16), ==, -1);
    uint32_t u32;
    g_assert_cmpint(nbdkit_parse_uint32_t("n", "0x100000000", &u32), ==, -1);
    g_assert_cmpint(nbdkit_parse_uint32_t("n", "017", &u32), ==, 0);
    g_assert_cmpuint(u32, ==, 15);
    uint64_t u64;
    g_assert_cmpint(nbdkit_parse_uint64_t("n", "18446744073709551615", &u64), ==, 0);
    g_assert_cmpuint(u64, ==, UINT64_MAX);
    g_assert_cmpint(nbdkit_parse_uint64_t("n", "18446744073709551616", &u64), ==, -1);
    g_assert_cmpint(nbdkit_parse_uint64_t("n", "1k", &u64), ==, -1);
}

/* Adds (offset, length, type) and returns nbdkit_add_extent's result. */
static int add(struct nbdkit_extents *e, uint64_t off, uint64_t len, uint32_t type)
{
    return nbdkit_add_extent(e, off, len, type);
}

static void assert_extent(struct nbdkit_extents *e, size_t i, uint64_t off, uint64_t len, uint32_t type)
{
    struct nbdkit_extent x = nbdkit_get_extent(e, i);
    g_assert_cmpuint(x.offset, ==, off);
    g_assert_cmpuint(x.length, ==, len);
    g_assert_cmpuint(x.type, ==, type);
}

static void test_extents(void)
{
    errno = 0;
    g_assert_null(nbdkit_extents_new(10, 5));
    g_assert_cmpint(errno, ==, ERANGE);
    g_assert_null(nbdkit_extents_new(0, (uint64_t) INT64_MAX + 1));
    struct nbdkit_extents *e = nbdkit_extents_new(5, 5);  /* empty range is fine */
    g_assert_nonnull(e);
    nbdkit_extents_free(e);
    nbdkit_extents_free(NULL);

    /* Range [100, 1000). */
    e = nbdkit_extents_new(100, 1000);
    g_assert_cmpint(add(e, 0, 50, 0), ==, 0);         /* wholly before start: ignored */
    g_assert_cmpuint(nbdkit_extents_count(e), ==, 0);
    g_assert_cmpint(add(e, 50, 100, 3), ==, 0);       /* straddles start: trimmed */
    assert_extent(e, 0, 100, 50, 3);
    g_assert_cmpint(add(e, 150, 0, 0), ==, 0);        /* zero length: ignored */
    g_assert_cmpuint(nbdkit_extents_count(e), ==, 1);
    g_assert_cmpint(add(e, 150, 50, 3), ==, 0);       /* same type: merged */
    g_assert_cmpuint(nbdkit_extents_count(e), ==, 1);
    assert_extent(e, 0, 100, 100, 3);
    errno = 0;
    g_assert_cmpint(add(e, 300, 10, 0), ==, -1);      /* gap */
    g_assert_cmpint(errno, ==, ERANGE);
    g_assert_cmpint(add(e, 150, 10, 0), ==, -1);      /* going backwards */
    g_assert_cmpint(add(e, 200, 900, 0), ==, 0);      /* clipped at end */
    assert_extent(e, 1, 200, 800, 0);
    g_assert_cmpint(add(e, 1100, 100, 1), ==, 0);     /* beyond end: ignored */
    g_assert_cmpuint(nbdkit_extents_count(e), ==, 2);
    nbdkit_extents_free(e);

    /* The first kept extent must cover start. */
    e = nbdkit_extents_new(100, 1000);
    errno = 0;
    g_assert_cmpint(add(e, 101, 10, 0), ==, -1);
    g_assert_cmpint(errno, ==, ERANGE);
    nbdkit_extents_free(e);

    /* At most 1 048 576 extents are stored; more are silently dropped. */
    e = nbdkit_extents_new(0, UINT64_C(1) << 40);
    for (uint64_t i = 0; i < (1u << 20) + 10; i++)
        g_assert_cmpint(add(e, i, 1, i & 1), ==, 0);
    g_assert_cmpuint(nbdkit_extents_count(e), ==, 1u << 20);
    nbdkit_extents_free(e);
}

/* A fake next backend for the filter helpers: 300-byte extents alternating
 * data (0) and hole,zero (3), at most two per call. */
static int fake_extents(nbdkit_next *next, uint32_t count, uint64_t offset, uint32_t flags,
                        struct nbdkit_extents *e, int *err)
{
    uint64_t start = offset / 300 * 300;
    for (int i = 0; i < 2; i++, start += 300)
        if (nbdkit_add_extent(e, start, 300, (start / 300) % 2 ? 3 : 0) == -1) {
            *err = errno;
            return -1;
        }
    return 0;
}

static void test_filter_extents(void)
{
    struct nbdkit_next_ops next = { .extents = fake_extents };
    int err = 0;
    struct nbdkit_extents *all = nbdkit_extents_full(&next, 3000, 0, 0, &err);
    g_assert_nonnull(all);
    g_assert_cmpuint(nbdkit_extents_count(all), ==, 10);
    assert_extent(all, 9, 2700, 300, 3);
    nbdkit_extents_free(all);

    /* Aligned to 1024: the short leading extents merge (type 0 & 3 = 0). */
    struct nbdkit_extents *e = nbdkit_extents_new(0, 3000);
    g_assert_cmpint(nbdkit_extents_aligned(&next, 2048, 0, 0, 1024, e, &err), ==, 0);
    g_assert_cmpuint(nbdkit_extents_count(e), ==, 1);
    assert_extent(e, 0, 0, 1024, 0);
    nbdkit_extents_free(e);
}

static void test_exports(void)
{
    struct nbdkit_exports *e = nbdkit_exports_new();
    g_assert_cmpint(nbdkit_add_export(e, "a", NULL), ==, 0);
    g_assert_cmpint(nbdkit_add_export(e, "b", "desc"), ==, 0);
    g_assert_cmpint(nbdkit_add_export(e, NULL, NULL), ==, -1);
    g_autofree char *big = g_strnfill(4097, 'x');
    errno = 0;
    g_assert_cmpint(nbdkit_add_export(e, big, NULL), ==, -1);
    g_assert_cmpint(errno, ==, EINVAL);
    g_assert_cmpint(nbdkit_add_export(e, "c", big), ==, -1);
    g_assert_cmpuint(nbdkit_exports_count(e), ==, 2);
    struct nbdkit_export x = nbdkit_get_export(e, 1);
    g_assert_cmpstr(x.name, ==, "b");
    g_assert_cmpstr(x.description, ==, "desc");
    g_assert_cmpint(nbdkit_use_default_export(e), ==, 0);
    nbdkit_exports_free(e);
}

static void test_read_password(void)
{
    char *pw = NULL;
    g_assert_cmpint(nbdkit_read_password("secret", &pw), ==, 0);
    g_assert_cmpstr(pw, ==, "secret");
    free(pw);

    /* +FILE: one trailing newline is stripped. */
    g_autofree char *dir = g_dir_make_tmp("blockd-pw-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(dir, "pw", NULL);
    g_assert_true(g_file_set_contents(file, "from-file\n\n", -1, NULL));
    g_autofree char *arg = g_strconcat("+", file, NULL);
    g_assert_cmpint(nbdkit_read_password(arg, &pw), ==, 0);
    g_assert_cmpstr(pw, ==, "from-file\n");
    free(pw);
    g_autofree char *missing = g_strconcat("+", dir, "/nope", NULL);
    g_assert_cmpint(nbdkit_read_password(missing, &pw), ==, -1);
    g_assert_null(pw);
    g_unlink(file);
    g_rmdir(dir);

    /* -FD: read from an inherited descriptor, which is closed afterwards. */
    int fds[2];
    g_assert_cmpint(pipe(fds), ==, 0);
    g_assert_cmpint(write(fds[1], "via-fd\n", 7), ==, 7);
    close(fds[1]);
    g_autofree char *fdarg = g_strdup_printf("-%d", fds[0]);
    g_assert_cmpint(nbdkit_read_password(fdarg, &pw), ==, 0);
    g_assert_cmpstr(pw, ==, "via-fd");
    free(pw);
    g_assert_cmpint(fcntl(fds[0], F_GETFD), ==, -1);  /* closed */

    g_assert_cmpint(nbdkit_read_password("-0", &pw), ==, -1);
    g_assert_cmpint(nbdkit_read_password("-1", &pw), ==, -1);
    g_assert_cmpint(nbdkit_read_password("-2", &pw), ==, -1);
}

static void test_paths(void)
{
    char *p = nbdkit_absolute_path("/a/b");
    g_assert_cmpstr(p, ==, "/a/b");
    free(p);
    g_autofree char *cwd = g_get_current_dir();
    g_autofree char *expect = g_build_filename(cwd, "no-such-file", NULL);
    p = nbdkit_absolute_path("no-such-file");         /* no existence check */
    g_assert_cmpstr(p, ==, expect);
    free(p);
    g_assert_null(nbdkit_absolute_path(""));
    g_assert_null(nbdkit_realpath("/no/such/file/anywhere"));
    g_assert_nonnull(strstr(plugin_host_last_error(), "/no/such/file/anywhere"));
    p = nbdkit_realpath("/");
    g_assert_cmpstr(p, ==, "/");
    free(p);
}

static void test_error_and_debug(void)
{
    errno = EAGAIN;
    nbdkit_error("failed: %m (%d)", 7);
    g_assert_cmpint(errno, ==, EAGAIN);               /* preserved */
    g_autofree char *expect = g_strdup_printf("failed: %s (7)", g_strerror(EAGAIN));
    g_assert_cmpstr(plugin_host_last_error(), ==, expect);
    errno = ENOSPC;
    nbdkit_debug("quiet %d", 1);
    g_assert_cmpint(errno, ==, ENOSPC);

    /* Outside a connection the connection queries fail. */
    g_assert_null(nbdkit_export_name());
    g_assert_cmpint(nbdkit_is_tls(), ==, -1);
    g_assert_cmpint(nbdkit_peer_pid(), ==, -1);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    g_assert_cmpint(nbdkit_peer_name((struct sockaddr *) &ss, &len), ==, -1);
}

static void test_intern_and_sleep(void)
{
    const char *s = nbdkit_strdup_intern("hello");
    g_assert_cmpstr(s, ==, "hello");
    g_assert_cmpstr(nbdkit_strndup_intern("hello", 3), ==, "hel");
    g_assert_cmpstr(nbdkit_printf_intern("%d-%s", 4, "x"), ==, "4-x");
    g_assert_cmpint(nbdkit_nanosleep(0, 1000), ==, 0);
    errno = 0;
    g_assert_cmpint(nbdkit_nanosleep(INT32_MAX, 0), ==, -1);
    g_assert_cmpint(errno, ==, EINVAL);
    g_assert_cmpint(nbdkit_stdio_safe(), ==, 1);
    plugin_host_set_stdio_safe(false);
    g_assert_cmpint(nbdkit_stdio_safe(), ==, 0);
    char *pw = NULL;
    g_assert_cmpint(nbdkit_read_password("-", &pw), ==, -1);  /* stdio not safe */
    plugin_host_set_stdio_safe(true);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/plugin-host/parse-size", test_parse_size);
    g_test_add_func("/plugin-host/parse-bool", test_parse_bool);
    g_test_add_func("/plugin-host/parse-int", test_parse_int);
    g_test_add_func("/plugin-host/parse-unsigned", test_parse_unsigned);
    g_test_add_func("/plugin-host/extents", test_extents);
    g_test_add_func("/plugin-host/exports", test_exports);
    g_test_add_func("/plugin-host/filter-extents", test_filter_extents);
    g_test_add_func("/plugin-host/read-password", test_read_password);
    g_test_add_func("/plugin-host/paths", test_paths);
    g_test_add_func("/plugin-host/error-and-debug", test_error_and_debug);
    g_test_add_func("/plugin-host/intern-and-sleep", test_intern_and_sleep);
    return g_test_run();
}

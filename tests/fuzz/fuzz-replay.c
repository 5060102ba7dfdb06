/* The fuzz targets in the regular test suite: every seed of
 * tests/fuzz/corpus/TARGET/ and every input that once crashed a target,
 * tests/fuzz/regressions/TARGET/, run through the same harness functions
 * the fuzzers use, here in the ASan/UBSan build without libFuzzer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include "tests/fuzz/fuzz.h"

static const FuzzTarget *const targets[] = {
    &fuzz_target_nbd_handshake, &fuzz_target_nbd_wire, &fuzz_target_qmp,
    &fuzz_target_keyval, &fuzz_target_qcow2, &fuzz_target_bitmap_store,
    &fuzz_target_backing_name,
};

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every file of `dir` (if it exists) through the target; returns how many. */
static unsigned replay_dir(const FuzzTarget *t, const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (!d)
        return 0;
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(d)))
        if (name[0] != '.')
            g_ptr_array_add(names, g_strdup(name));
    g_dir_close(d);
    qsort(names->pdata, names->len, sizeof(char *), compare_names);
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *path = g_build_filename(dir, names->pdata[i], NULL);
        g_autofree char *data = NULL;
        gsize len = 0;
        g_autoptr(GError) err = NULL;
        if (!g_file_get_contents(path, &data, &len, &err))
            g_error("%s", err->message);
        g_test_message("%s: %s (%zu bytes)", t->name, path, (size_t)len);
        t->one((const uint8_t *)data, len);
    }
    return names->len;
}

static void replay_target(gconstpointer data)
{
    const FuzzTarget *t = data;
    const char *src = g_getenv("SOURCE_DIR") ? g_getenv("SOURCE_DIR") : FUZZ_SOURCE_DIR;
    g_autofree char *corpus = g_build_filename(src, "tests", "fuzz", "corpus", t->name, NULL);
    g_autofree char *regressions = g_build_filename(src, "tests", "fuzz", "regressions", t->name, NULL);
    if (t->init)
        t->init();
    unsigned seeds = replay_dir(t, corpus);
    unsigned crashes = replay_dir(t, regressions);
    if (t->cleanup)
        t->cleanup();
    g_test_message("%s: %u seeds, %u regression inputs", t->name, seeds, crashes);
    g_assert_cmpuint(seeds, >, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* The harnesses' files go to the build directory: an input that crashes
     * (while its fix is missing) leaves them there, not in /tmp. */
    const char *build = g_getenv("BUILD_DIR");
    if (build) {
        g_autofree char *tmp = g_build_filename(build, "tests", "fuzz", "replay-tmp", NULL);
        g_mkdir_with_parents(tmp, 0700);
        g_setenv("TMPDIR", tmp, TRUE);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(targets); i++) {
        g_autofree char *name = g_strdup_printf("/fuzz-replay/%s", targets[i]->name);
        g_test_add_data_func(name, targets[i], replay_target);
    }
    return g_test_run();
}

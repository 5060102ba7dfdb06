/* A plugin that misbehaves on request, for the nbdkit driver's error tests:
 *   crash=1     raises SIGSEGV inside config
 *   exit=1      calls exit(3) inside config (allowed in nbdkit, not in blockd)
 *   hang=1      sleeps forever inside config (the probe gives up after 30 s)
 *   fail=MSG    rejects the parameter with nbdkit_error(MSG)
 *   size=N      the disk size (default 1 MiB); reads return 0xab bytes
 *   eio=OFFSET  reads at OFFSET fail with nbdkit_set_error(ENOSPC)
 * Built with -DNO_GET_SIZE it lacks the required .get_size callback. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static int64_t size = 1024 * 1024;
static int64_t eio_offset = -1;

static int misbehaving_config(const char *key, const char *value)
{
    if (strcmp(key, "crash") == 0)
        raise(SIGSEGV);
    else if (strcmp(key, "exit") == 0)
        exit(3);
    else if (strcmp(key, "hang") == 0)
        for (;;)
            pause();
    else if (strcmp(key, "fail") == 0) {
        nbdkit_error("%s", value);
        return -1;
    } else if (strcmp(key, "size") == 0) {
        if ((size = nbdkit_parse_size(value)) == -1)
            return -1;
    } else if (strcmp(key, "eio") == 0) {
        if ((eio_offset = nbdkit_parse_size(value)) == -1)
            return -1;
    } else {
        nbdkit_error("unknown parameter '%s'", key);
        return -1;
    }
    return 0;
}

static void *misbehaving_open(int readonly)
{
    return NBDKIT_HANDLE_NOT_NEEDED;
}

#ifndef NO_GET_SIZE
static int64_t misbehaving_get_size(void *handle)
{
    return size;
}
#endif

static int misbehaving_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    if (eio_offset >= 0 && offset <= (uint64_t) eio_offset && (uint64_t) eio_offset < offset + count) {
        nbdkit_error("simulated failure at %" PRIi64, eio_offset);
        nbdkit_set_error(ENOSPC);
        return -1;
    }
    memset(buf, 0xab, count);
    return 0;
}

static struct nbdkit_plugin plugin = {
    .name = "misbehaving",
    .config = misbehaving_config,
    .open = misbehaving_open,
#ifndef NO_GET_SIZE
    .get_size = misbehaving_get_size,
#endif
    .pread = misbehaving_pread,
};

NBDKIT_REGISTER_PLUGIN(plugin)

/* null: a disk of a given size that reads as zeroes and discards writes.
 *
 * Instance safety (shared by every blockd plugin): nbdkit's configuration
 * callbacks write process-global state, but blockd runs the built-in copy of
 * a plugin once per node.  So config() only fills the `config` globals;
 * get_ready() turns them into a reference-counted instance, makes it the
 * "current" one and resets the globals to their defaults; open() takes a
 * reference to the current instance into its handle and close() drops it.
 * Under real nbdkit (get_ready once, open per connection) every connection
 * shares one instance; under blockd each node gets its own. */

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

struct null_instance {
  unsigned refs;        /* atomic */
  int64_t size;
};

static int64_t config_size;                 /* size= (default 0, like nbdkit) */
static struct null_instance *current;

static struct null_instance *
instance_ref (struct null_instance *inst)
{
  __atomic_add_fetch (&inst->refs, 1, __ATOMIC_RELAXED);
  return inst;
}

static void
instance_unref (struct null_instance *inst)
{
  if (inst && __atomic_sub_fetch (&inst->refs, 1, __ATOMIC_ACQ_REL) == 0)
    free (inst);
}

static int
null_config (const char *key, const char *value)
{
  if (strcmp (key, "size") == 0) {
    int64_t r = nbdkit_parse_size (value);
    if (r == -1)
      return -1;
    config_size = r;
    return 0;
  }
  nbdkit_error ("unknown parameter '%s'", key);
  return -1;
}

static int
null_get_ready (void)
{
  struct null_instance *inst = calloc (1, sizeof *inst);
  if (!inst) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  inst->refs = 1;
  inst->size = config_size;
  instance_unref (current);
  current = inst;
  config_size = 0;
  return 0;
}

static void
null_cleanup (void)
{
  instance_unref (current);
  current = NULL;
}

static void *
null_open (int readonly)
{
  if (!current) {
    nbdkit_error ("plugin is not configured");
    return NULL;
  }
  return instance_ref (current);
}

static void
null_close (void *handle)
{
  instance_unref (handle);
}

static int64_t
null_get_size (void *handle)
{
  return ((struct null_instance *) handle)->size;
}

static int
null_always (void *handle)
{
  return 1;
}

static int
null_native (void *handle)
{
  return NBDKIT_FUA_NATIVE; /* == NBDKIT_CACHE_NATIVE */
}

static int
null_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  memset (buf, 0, count);
  return 0;
}

static int
null_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  return 0;
}

static int
null_flush (void *handle, uint32_t flags)
{
  return 0;
}

/* trim and zero: nothing to do, and doing nothing is fast. */
static int
null_range_noop (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return 0;
}

static int
null_cache (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  if (flags != 0) {
    nbdkit_error ("cache: unexpected flags 0x%x", flags);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

static int
null_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
              struct nbdkit_extents *extents)
{
  struct null_instance *inst = handle;
  return nbdkit_add_extent (extents, offset, inst->size - offset,
                            NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO);
}

static struct nbdkit_plugin plugin = {
  .name              = "null",
  .longname          = "blockd null plugin",
  .version           = "1.0",
  .description       = "a disk that reads zeroes and discards writes",
  .config            = null_config,
  .config_help       = "size=<SIZE>  Size of the disk (default 0).",
  .magic_config_key  = "size",
  .get_ready         = null_get_ready,
  .cleanup           = null_cleanup,
  .open              = null_open,
  .close             = null_close,
  .get_size          = null_get_size,
  .can_write         = null_always,
  .can_flush         = null_always,
  .can_trim          = null_always,
  .can_zero          = null_always,
  .can_fast_zero     = null_always,
  .can_fua           = null_native,
  .can_cache         = null_native,
  .can_extents       = null_always,
  .can_multi_conn    = null_always,
  .pread             = null_pread,
  .pwrite            = null_pwrite,
  .flush             = null_flush,
  .trim              = null_range_noop,
  .zero              = null_range_noop,
  .cache             = null_cache,
  .extents           = null_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)

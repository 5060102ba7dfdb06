/* memory: a sparse RAM disk.
 *
 * Storage is a two-level table of 64 KiB pages: the first level has one
 * slot per 256 MiB, each pointing to a table of 4096 page pointers that is
 * created on the first write into its span.  A page is allocated on its
 * first non-zero write and freed again when trim/zero clears it, so unused
 * space costs nothing and block status can report it as a hole.
 *
 * Locking (PARALLEL thread model): page pointers are protected by a small
 * array of mutexes striped by page number, so requests on different pages
 * run concurrently; second-level tables are installed with compare-and-swap
 * and live as long as the store.
 *
 * Instance safety (see null.c for the scheme): config() fills globals,
 * get_ready() builds the store and makes it current, open() references it.
 * Under real nbdkit all connections share one store; under blockd every
 * node gets its own. */

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#define PAGE_SHIFT 16
#define PAGE_SIZE (UINT64_C (1) << PAGE_SHIFT)
#define L2_BITS 12
#define L2_PAGES (UINT64_C (1) << L2_BITS)
#define L2_SPAN (PAGE_SIZE * L2_PAGES)          /* 256 MiB */
#define MAX_SIZE (UINT64_C (1) << 50)           /* 1 PiB: 32 MiB of slots */
#define STRIPES 64

struct memory_store {
  unsigned refs;                 /* atomic */
  uint64_t size;
  size_t l1_len;
  char ***l1;                    /* l1[i][j]: page i*L2_PAGES+j or NULL */
  pthread_mutex_t stripe[STRIPES];
};

static int64_t config_size = -1;
static struct memory_store *current;

static bool
is_zero (const char *buf, size_t len)
{
  const size_t head = len < 16 ? len : 16;
  for (size_t i = 0; i < head; i++)
    if (buf[i])
      return false;
  return len <= 16 || memcmp (buf, buf + 16, len - 16) == 0;
}

static struct memory_store *
store_new (uint64_t size)
{
  struct memory_store *s = calloc (1, sizeof *s);
  if (!s)
    return NULL;
  s->refs = 1;
  s->size = size;
  s->l1_len = (size + L2_SPAN - 1) / L2_SPAN;
  s->l1 = calloc (s->l1_len ? s->l1_len : 1, sizeof *s->l1);
  if (!s->l1) {
    free (s);
    return NULL;
  }
  for (size_t i = 0; i < STRIPES; i++)
    pthread_mutex_init (&s->stripe[i], NULL);
  return s;
}

static void
store_unref (struct memory_store *s)
{
  if (!s || __atomic_sub_fetch (&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  for (size_t i = 0; i < s->l1_len; i++) {
    if (!s->l1[i])
      continue;
    for (size_t j = 0; j < L2_PAGES; j++)
      free (s->l1[i][j]);
    free (s->l1[i]);
  }
  for (size_t i = 0; i < STRIPES; i++)
    pthread_mutex_destroy (&s->stripe[i]);
  free (s->l1);
  free (s);
}

/* The second-level table for page `page`; created if `create`. */
static char **
store_l2 (struct memory_store *s, uint64_t page, bool create)
{
  char ***slot = &s->l1[page >> L2_BITS];
  char **l2 = __atomic_load_n (slot, __ATOMIC_ACQUIRE);
  if (l2 || !create)
    return l2;
  char **fresh = calloc (L2_PAGES, sizeof *fresh);
  if (!fresh)
    return NULL;
  if (__atomic_compare_exchange_n (slot, &l2, fresh, false,
                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    return fresh;
  free (fresh);                 /* another thread won; l2 holds its table */
  return l2;
}

static pthread_mutex_t *
stripe_of (struct memory_store *s, uint64_t page)
{
  return &s->stripe[page % STRIPES];
}

static int
memory_config (const char *key, const char *value)
{
  if (strcmp (key, "size") == 0) {
    int64_t r = nbdkit_parse_size (value);
    if (r == -1)
      return -1;
    if ((uint64_t) r > MAX_SIZE) {
      nbdkit_error ("size %s is too large (the maximum is 1P)", value);
      return -1;
    }
    config_size = r;
    return 0;
  }
  nbdkit_error ("unknown parameter '%s'", key);
  return -1;
}

static int
memory_config_complete (void)
{
  if (config_size == -1) {
    nbdkit_error ("size parameter is required");
    return -1;
  }
  return 0;
}

static int
memory_get_ready (void)
{
  struct memory_store *s = store_new (config_size);
  if (!s) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  store_unref (current);
  current = s;
  config_size = -1;
  return 0;
}

static void
memory_cleanup (void)
{
  store_unref (current);
  current = NULL;
}

static void *
memory_open (int readonly)
{
  if (!current) {
    nbdkit_error ("plugin is not configured");
    return NULL;
  }
  __atomic_add_fetch (&current->refs, 1, __ATOMIC_RELAXED);
  return current;
}

static void
memory_close (void *handle)
{
  store_unref (handle);
}

static int64_t
memory_get_size (void *handle)
{
  return ((struct memory_store *) handle)->size;
}

static int
memory_always (void *handle)
{
  return 1;
}

/* RAM is as durable as it gets: FUA needs no work, cache is a no-op. */
static int
memory_native (void *handle)
{
  return NBDKIT_FUA_NATIVE; /* == NBDKIT_CACHE_NATIVE */
}

static int
memory_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
              uint32_t flags)
{
  struct memory_store *s = handle;
  char *out = buf;
  while (count > 0) {
    uint64_t page = offset >> PAGE_SHIFT;
    uint32_t in_page = offset & (PAGE_SIZE - 1);
    uint32_t n = PAGE_SIZE - in_page < count ? PAGE_SIZE - in_page : count;
    char **l2 = store_l2 (s, page, false);
    if (!l2)
      memset (out, 0, n);
    else {
      pthread_mutex_lock (stripe_of (s, page));
      char *p = l2[page & (L2_PAGES - 1)];
      if (p)
        memcpy (out, p + in_page, n);
      else
        memset (out, 0, n);
      pthread_mutex_unlock (stripe_of (s, page));
    }
    out += n; offset += n; count -= n;
  }
  return 0;
}

static int
memory_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  struct memory_store *s = handle;
  const char *in = buf;
  while (count > 0) {
    uint64_t page = offset >> PAGE_SHIFT;
    uint32_t in_page = offset & (PAGE_SIZE - 1);
    uint32_t n = PAGE_SIZE - in_page < count ? PAGE_SIZE - in_page : count;
    bool zero = is_zero (in, n);
    char **l2 = store_l2 (s, page, !zero);
    if (!l2 && !zero) {
      nbdkit_error ("calloc: %m");
      errno = ENOMEM;
      return -1;
    }
    if (l2) {
      pthread_mutex_lock (stripe_of (s, page));
      char **slot = &l2[page & (L2_PAGES - 1)];
      if (!*slot && !zero)
        *slot = calloc (1, PAGE_SIZE);
      if (*slot)
        memcpy (*slot + in_page, in, n);
      bool failed = !*slot && !zero;
      pthread_mutex_unlock (stripe_of (s, page));
      if (failed) {
        nbdkit_error ("calloc: %m");
        errno = ENOMEM;
        return -1;
      }
    }
    in += n; offset += n; count -= n;
  }
  return 0;
}

static int
memory_flush (void *handle, uint32_t flags)
{
  return 0;
}

/* Both trim and zero clear the range and free pages that become empty. */
static int
memory_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct memory_store *s = handle;
  while (count > 0) {
    uint64_t page = offset >> PAGE_SHIFT;
    uint32_t in_page = offset & (PAGE_SIZE - 1);
    uint32_t n = PAGE_SIZE - in_page < count ? PAGE_SIZE - in_page : count;
    char **l2 = store_l2 (s, page, false);
    if (l2) {
      pthread_mutex_lock (stripe_of (s, page));
      char **slot = &l2[page & (L2_PAGES - 1)];
      if (*slot) {
        memset (*slot + in_page, 0, n);
        if (n == PAGE_SIZE || is_zero (*slot, PAGE_SIZE)) {
          free (*slot);
          *slot = NULL;
        }
      }
      pthread_mutex_unlock (stripe_of (s, page));
    }
    offset += n; count -= n;
  }
  return 0;
}

static int
memory_cache (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  if (flags != 0) {
    nbdkit_error ("cache: unexpected flags 0x%x", flags);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

/* Unallocated pages and allocated pages that hold only zeroes are holes. */
static int
memory_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                struct nbdkit_extents *extents)
{
  struct memory_store *s = handle;
  const uint64_t end = offset + count;
  uint64_t pos = offset & ~(PAGE_SIZE - 1);
  while (pos < end) {
    uint64_t page = pos >> PAGE_SHIFT;
    uint64_t len = PAGE_SIZE;
    uint32_t type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    char **l2 = store_l2 (s, page, false);
    if (!l2)
      len = L2_SPAN - (pos & (L2_SPAN - 1));    /* the whole empty span */
    else {
      pthread_mutex_lock (stripe_of (s, page));
      const char *p = l2[page & (L2_PAGES - 1)];
      if (p && !is_zero (p, PAGE_SIZE))
        type = 0;
      pthread_mutex_unlock (stripe_of (s, page));
    }
    if (len > s->size - pos)
      len = s->size - pos;
    if (nbdkit_add_extent (extents, pos, len, type) == -1)
      return -1;
    pos += len;
  }
  return 0;
}

#ifdef BLOCKD_BUILTIN
#include <errno.h>

/* Declared in plugins/builtin-plugins.h. */
int blockd_memory_resize (void *handle, uint64_t size);

/* blockd's resize hook (block_resize on a memory node, no request in
 * flight): the tail of the last page past the new end is zeroed and whole
 * pages and tables past it are freed, so growing again reads zeroes. */
int
blockd_memory_resize (void *handle, uint64_t size)
{
  struct memory_store *s = handle;
  if (size > MAX_SIZE)
    return -EFBIG;
  size_t new_len = (size + L2_SPAN - 1) / L2_SPAN;
  uint64_t first_gone = (size + PAGE_SIZE - 1) >> PAGE_SHIFT;
  if (size & (PAGE_SIZE - 1)) {
    char **l2 = store_l2 (s, size >> PAGE_SHIFT, false);
    char *p = l2 ? l2[(size >> PAGE_SHIFT) & (L2_PAGES - 1)] : NULL;
    if (p)
      memset (p + (size & (PAGE_SIZE - 1)), 0, PAGE_SIZE - (size & (PAGE_SIZE - 1)));
  }
  for (size_t i = first_gone >> L2_BITS; i < s->l1_len; i++) {
    if (!s->l1[i])
      continue;
    for (uint64_t j = 0; j < L2_PAGES; j++) {
      if (((uint64_t) i << L2_BITS) + j >= first_gone) {
        free (s->l1[i][j]);
        s->l1[i][j] = NULL;
      }
    }
    if (i >= new_len) {
      free (s->l1[i]);
      s->l1[i] = NULL;
    }
  }
  if (new_len > s->l1_len) {
    char ***l1 = realloc (s->l1, new_len * sizeof *l1);
    if (!l1)
      return -ENOMEM;
    memset (l1 + s->l1_len, 0, (new_len - s->l1_len) * sizeof *l1);
    s->l1 = l1;
    s->l1_len = new_len;
  }
  s->size = size;
  return 0;
}
#endif

static struct nbdkit_plugin plugin = {
  .name              = "memory",
  .longname          = "blockd memory plugin",
  .version           = "1.0",
  .description       = "a sparse RAM disk",
  .config            = memory_config,
  .config_complete   = memory_config_complete,
  .config_help       = "size=<SIZE>  (required) Size of the RAM disk.",
  .magic_config_key  = "size",
  .get_ready         = memory_get_ready,
  .cleanup           = memory_cleanup,
  .open              = memory_open,
  .close             = memory_close,
  .get_size          = memory_get_size,
  .can_write         = memory_always,
  .can_flush         = memory_always,
  .can_trim          = memory_always,
  .can_zero          = memory_always,
  .can_fast_zero     = memory_always,
  .can_fua           = memory_native,
  .can_cache         = memory_native,
  .can_extents       = memory_always,
  .can_multi_conn    = memory_always,
  .pread             = memory_pread,
  .pwrite            = memory_pwrite,
  .flush             = memory_flush,
  .trim              = memory_zero,
  .zero              = memory_zero,
  .cache             = memory_cache,
  .extents           = memory_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)

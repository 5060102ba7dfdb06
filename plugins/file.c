/* file: a disk backed by a regular file or a block device.
 *
 * Holes: trim punches them, zero uses ZERO_RANGE (or punches when the
 * client allows holes), and block status finds them with SEEK_DATA /
 * SEEK_HOLE.  SEEK_HOLE walks the page cache up to the next hole, which
 * on a large fully allocated file (tmpfs especially) costs milliseconds per
 * call, so each handle remembers the last data region it found (as QEMU's
 * block-status cache does): reporting data is always safe, since writes
 * only ever turn holes into data, and this handle's own trim and zero
 * requests forget the region.  When fallocate cannot do a zero request the callback fails
 * with ENOTSUP: the host then writes zero buffers, or reports the request
 * as not fast when the client asked for a fast zero.
 *
 * direct=true opens the file with O_DIRECT (QEMU's cache.direct=on): the
 * page cache is bypassed.  Requests whose offset and length are multiples
 * of the device's alignment go to that descriptor, through an aligned
 * bounce buffer when the caller's memory is not aligned; the others (a
 * file whose size is not a multiple, a client that ignores the advertised
 * minimum block size) go through a second, buffered descriptor of the
 * same file: the kernel keeps the two coherent (a direct write drops the
 * cached pages it covers), and unlike a read-modify-write by hand two
 * small writes into one block cannot undo each other.
 *
 * Instance safety (see null.c for the scheme): config() fills globals,
 * get_ready() builds an instance holding the file name, open() references
 * it and opens its own descriptor. */

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <fcntl.h>
#include <pthread.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

struct file_instance {
  unsigned refs;                /* atomic */
  char *filename;
  bool direct;
};

struct file_conn {
  struct file_instance *inst;
  int fd;                       /* O_DIRECT when the instance is direct */
  int fd_buffered;              /* direct only: the same file, buffered; else -1 */
  uint32_t align;               /* direct only: offset, length and memory alignment */
  bool readonly;
  bool is_block;
  bool can_seek_data;           /* SEEK_DATA/SEEK_HOLE work (not on block devices) */
  int can_punch_hole;           /* atomic: cleared on first EOPNOTSUPP */
  int can_zero_range;           /* atomic: cleared on first EOPNOTSUPP */
  pthread_mutex_t data_lock;    /* guards the three fields below */
  uint64_t data_start, data_end; /* a region known to be data, or empty */
  uint64_t data_gen;            /* bumped around every hole-making request */
};

/* Forgets the known data region: a hole may appear in it. */
static void
data_cache_forget (struct file_conn *h)
{
  pthread_mutex_lock (&h->data_lock);
  h->data_gen++;
  h->data_start = h->data_end = 0;
  pthread_mutex_unlock (&h->data_lock);
}

static char *config_filename;
static bool config_direct;
static struct file_instance *current;

static void
instance_unref (struct file_instance *inst)
{
  if (inst && __atomic_sub_fetch (&inst->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    free (inst->filename);
    free (inst);
  }
}

static int
file_config (const char *key, const char *value)
{
  if (strcmp (key, "file") == 0) {
    free (config_filename);
    config_filename = nbdkit_realpath (value);
    return config_filename ? 0 : -1;
  }
  if (strcmp (key, "direct") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1)
      return -1;
    config_direct = r;
    return 0;
  }
  nbdkit_error ("unknown parameter '%s'", key);
  return -1;
}

static int
file_config_complete (void)
{
  if (!config_filename) {
    nbdkit_error ("you must supply the file=<FILENAME> parameter");
    return -1;
  }
  return 0;
}

static int
file_get_ready (void)
{
  struct file_instance *inst = calloc (1, sizeof *inst);
  if (!inst) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  inst->refs = 1;
  inst->filename = config_filename;
  inst->direct = config_direct;
  config_filename = NULL;
  config_direct = false;
  instance_unref (current);
  current = inst;
  return 0;
}

static void
file_cleanup (void)
{
  instance_unref (current);
  current = NULL;
  free (config_filename);
  config_filename = NULL;
  config_direct = false;
}

/* The alignment O_DIRECT needs on `fd`: the logical block size of a block
 * device; for a file, the smallest of 512..4096 that a direct read at
 * offset 0 accepts (QEMU probes the same way), 4096 if none can tell. */
static uint32_t
probe_alignment (int fd, bool is_block)
{
  int ssz;
  if (is_block && ioctl (fd, BLKSSZGET, &ssz) == 0 && ssz > 0)
    return ssz;
  void *buf;
  if (posix_memalign (&buf, 4096, 4096) != 0)
    return 4096;
  uint32_t align = 4096;
  for (uint32_t a = 512; a < 4096; a *= 2) {
    if (pread (fd, buf, a, 0) >= 0) {
      align = a;
      break;
    }
  }
  free (buf);
  return align;
}

static void *
file_open (int readonly)
{
  if (!current) {
    nbdkit_error ("plugin is not configured");
    return NULL;
  }
  struct file_conn *h = calloc (1, sizeof *h);
  if (!h) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  const char *name = current->filename;
  const int mode = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  h->fd = open (name, mode | (current->direct ? O_DIRECT : 0));
  if (h->fd == -1) {
    nbdkit_error ("open: %s%s: %m", name, current->direct ? " (O_DIRECT)" : "");
    free (h);
    return NULL;
  }
  h->fd_buffered = -1;
  if (current->direct && (h->fd_buffered = open (name, mode)) == -1) {
    nbdkit_error ("open: %s: %m", name);
    close (h->fd);
    free (h);
    return NULL;
  }
  struct stat st;
  if (fstat (h->fd, &st) == -1 || !(S_ISREG (st.st_mode) || S_ISBLK (st.st_mode))) {
    nbdkit_error ("%s: not a regular file or block device", name);
    close (h->fd);
    free (h);
    return NULL;
  }
  h->readonly = readonly;
  h->is_block = S_ISBLK (st.st_mode);
  if (current->direct)
    h->align = probe_alignment (h->fd, h->is_block);
  /* Block devices answer SEEK_DATA with EINVAL: then there is no extent
   * information and the node reports everything as data, as nbdkit does. */
  h->can_seek_data = lseek (h->fd, 0, SEEK_DATA) != -1 || errno == ENXIO;
  h->can_punch_hole = h->can_zero_range = 1;
  pthread_mutex_init (&h->data_lock, NULL);
  __atomic_add_fetch (&current->refs, 1, __ATOMIC_RELAXED);
  h->inst = current;
  return h;
}

static void
file_close (void *handle)
{
  struct file_conn *h = handle;
  close (h->fd);
  if (h->fd_buffered >= 0)
    close (h->fd_buffered);
  pthread_mutex_destroy (&h->data_lock);
  instance_unref (h->inst);
  free (h);
}

static int64_t
file_get_size (void *handle)
{
  struct file_conn *h = handle;
  if (h->is_block) {
    uint64_t size;
    if (ioctl (h->fd, BLKGETSIZE64, &size) == -1) {
      nbdkit_error ("ioctl BLKGETSIZE64: %m");
      return -1;
    }
    return size;
  }
  struct stat st;
  if (fstat (h->fd, &st) == -1) {
    nbdkit_error ("fstat: %m");
    return -1;
  }
  return st.st_size;
}

static int
file_can_write (void *handle)
{
  return !((struct file_conn *) handle)->readonly;
}

static int
file_always (void *handle)
{
  return 1;
}

static int
file_native (void *handle)
{
  return NBDKIT_FUA_NATIVE; /* == NBDKIT_CACHE_NATIVE */
}

static int
sync_if_fua (struct file_conn *h, uint32_t flags)
{
  if ((flags & NBDKIT_FLAG_FUA) && fdatasync (h->fd) == -1) {
    nbdkit_error ("fdatasync: %m");
    return -1;
  }
  return 0;
}

/* Direct mode: the descriptor for [offset, offset+count) (the buffered one
 * unless both are aligned) and whether memory must be bounced. */
static int
pick_fd (struct file_conn *h, const void *buf, uint32_t count, uint64_t offset,
         bool *bounce)
{
  *bounce = false;
  if (h->fd_buffered < 0)
    return h->fd;
  const uint64_t mask = h->align - 1;
  if ((offset & mask) || (count & mask))
    return h->fd_buffered;
  *bounce = ((uintptr_t) buf & mask) != 0;
  return h->fd;
}

/* An aligned copy of count bytes (direct mode), or NULL with errno set. */
static void *
bounce_alloc (struct file_conn *h, uint32_t count)
{
  void *p;
  int err = posix_memalign (&p, h->align < 4096 ? 4096 : h->align, count);
  if (err) {
    errno = err;
    nbdkit_error ("posix_memalign: %m");
    return NULL;
  }
  return p;
}

static int read_all (int fd, char *p, uint32_t count, uint64_t offset);

static int
file_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  struct file_conn *h = handle;
  bool bounce;
  int fd = pick_fd (h, buf, count, offset, &bounce);
  if (!bounce)
    return read_all (fd, buf, count, offset);
  char *tmp = bounce_alloc (h, count);
  if (!tmp)
    return -1;
  int r = read_all (fd, tmp, count, offset);
  if (r == 0)
    memcpy (buf, tmp, count);
  free (tmp);
  return r;
}

static int
read_all (int fd, char *p, uint32_t count, uint64_t offset)
{
  while (count > 0) {
    ssize_t r = pread (fd, p, count, offset);
    if (r == -1) {
      nbdkit_error ("pread: %m");
      return -1;
    }
    if (r == 0) {
      nbdkit_error ("pread: unexpected end of file");
      errno = EIO;
      return -1;
    }
    p += r; count -= r; offset += r;
  }
  return 0;
}

static int
write_all (int fd, const char *p, uint32_t count, uint64_t offset)
{
  while (count > 0) {
    ssize_t r = pwrite (fd, p, count, offset);
    if (r == -1) {
      nbdkit_error ("pwrite: %m");
      return -1;
    }
    p += r; count -= r; offset += r;
  }
  return 0;
}

static int
file_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  struct file_conn *h = handle;
  bool bounce;
  int fd = pick_fd (h, buf, count, offset, &bounce);
  int r;
  if (bounce) {
    char *tmp = bounce_alloc (h, count);
    if (!tmp)
      return -1;
    memcpy (tmp, buf, count);
    r = write_all (fd, tmp, count, offset);
    free (tmp);
  } else {
    r = write_all (fd, buf, count, offset);
  }
  return r == -1 ? -1 : sync_if_fua (h, flags);
}

static int
file_flush (void *handle, uint32_t flags)
{
  struct file_conn *h = handle;
  if (fdatasync (h->fd) == -1) {
    nbdkit_error ("fdatasync: %m");
    return -1;
  }
  return 0;
}

static bool
is_enotsup (int err)
{
  return err == EOPNOTSUPP || err == ENOTSUP || err == ENODEV;
}

/* fallocate with `mode`; 1 done, 0 unsupported (and remembered), -1 error. */
static int
try_fallocate (struct file_conn *h, int *supported, int mode,
               uint32_t count, uint64_t offset)
{
  if (!__atomic_load_n (supported, __ATOMIC_RELAXED))
    return 0;
  if (fallocate (h->fd, mode, offset, count) == 0)
    return 1;
  if (is_enotsup (errno)) {
    __atomic_store_n (supported, 0, __ATOMIC_RELAXED);
    return 0;
  }
  nbdkit_error ("fallocate: %m");
  return -1;
}

static int
file_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct file_conn *h = handle;
  /* Trim is a hint: when holes are not supported, doing nothing is right. */
  data_cache_forget (h);
  int r = try_fallocate (h, &h->can_punch_hole,
                         FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         count, offset);
  data_cache_forget (h);        /* an extents call that ran meanwhile */
  if (r == -1)
    return -1;
  return sync_if_fua (h, flags);
}

static int
file_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct file_conn *h = handle;
  int r = 0;
  data_cache_forget (h);
  if (flags & NBDKIT_FLAG_MAY_TRIM)
    r = try_fallocate (h, &h->can_punch_hole,
                       FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       count, offset);
  if (r == 0)
    r = try_fallocate (h, &h->can_zero_range,
                       FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                       count, offset);
  data_cache_forget (h);        /* an extents call that ran meanwhile */
  if (r == -1)
    return -1;
  if (r == 0) {
    errno = ENOTSUP;            /* the host falls back to writing zeroes */
    return -1;
  }
  return sync_if_fua (h, flags);
}

static int
file_cache (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct file_conn *h = handle;
  if (flags != 0) {
    nbdkit_error ("cache: unexpected flags 0x%x", flags);
    errno = EINVAL;
    return -1;
  }
  int err = posix_fadvise (h->fd, offset, count, POSIX_FADV_WILLNEED);
  if (err) {
    errno = err;
    nbdkit_error ("posix_fadvise: %m");
    return -1;
  }
  return 0;
}

/* Direct mode advertises its alignment as the minimum block size, so
 * clients that honour it (QEMU, libnbd) never take the buffered path. */
static int
file_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                 uint32_t *maximum)
{
  struct file_conn *h = handle;
  *minimum = h->fd_buffered >= 0 ? h->align : 1;
  *preferred = h->fd_buffered >= 0 && h->align > 4096 ? h->align : 4096;
  *maximum = 0xffffffff;
  return 0;
}

static int
file_can_extents (void *handle)
{
  struct file_conn *h = handle;
  return h->can_seek_data;
}

static int
file_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
              struct nbdkit_extents *extents)
{
  struct file_conn *h = handle;
  const uint64_t end = offset + count;
  const bool req_one = flags & NBDKIT_FLAG_REQ_ONE;
  /* Where the last SEEK_DATA found data: the extent after a hole starts
   * there, and only its end needs asking (two lseeks per data extent and
   * the hole before it, not three). */
  uint64_t data_at = UINT64_MAX;
  while (offset < end) {
    pthread_mutex_lock (&h->data_lock);
    uint64_t gen = h->data_gen;
    uint64_t known_end = offset >= h->data_start && offset < h->data_end ? h->data_end : 0;
    pthread_mutex_unlock (&h->data_lock);
    if (known_end) {
      uint64_t n = (known_end < end ? known_end : end) - offset;
      if (nbdkit_add_extent (extents, offset, n, 0) == -1)
        return -1;
      offset += n;
      if (req_one)
        break;
      continue;
    }
    if (offset != data_at) {
      off_t data = lseek (h->fd, offset, SEEK_DATA);
      if (data == -1 && errno != ENXIO) {
        nbdkit_error ("lseek: SEEK_DATA: %m");
        return -1;
      }
      if (data == -1 || (uint64_t) data > offset) {
        /* A hole up to the next data, or to the end of the file. */
        uint64_t hole_end = data == -1 ? end : (uint64_t) data;
        if (nbdkit_add_extent (extents, offset, hole_end - offset,
                               NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) == -1)
          return -1;
        offset = hole_end;
        data_at = hole_end;
        if (req_one || data == -1)
          break;
        continue;
      }
    }
    off_t hole = lseek (h->fd, offset, SEEK_HOLE);
    if (hole == -1) {
      nbdkit_error ("lseek: SEEK_HOLE: %m");
      return -1;
    }
    if ((uint64_t) hole <= offset) {
      /* A trim punched the data since SEEK_DATA found it: ask again. */
      data_at = UINT64_MAX;
      continue;
    }
    pthread_mutex_lock (&h->data_lock);
    if (h->data_gen == gen) {
      h->data_start = offset;
      h->data_end = hole;
    }
    pthread_mutex_unlock (&h->data_lock);
    if (nbdkit_add_extent (extents, offset, hole - offset, 0) == -1)
      return -1;
    offset = hole;
    if (req_one)
      break;
  }
  return 0;
}

#ifdef BLOCKD_BUILTIN
/* blockd's zero-copy read hook: the bytes live in our descriptor at the
 * same offset.  Declared in plugins/builtin-plugins.h. */
int blockd_file_read_fd (void *handle, uint32_t count, uint64_t offset,
                         int *fd, uint64_t *fd_offset);

int
blockd_file_read_fd (void *handle, uint32_t count, uint64_t offset,
                     int *fd, uint64_t *fd_offset)
{
  struct file_conn *h = handle;
  *fd = h->fd;
  *fd_offset = offset;
  return 0;
}
#endif

static struct nbdkit_plugin plugin = {
  .name              = "file",
  .longname          = "blockd file plugin",
  .version           = "1.0",
  .description       = "a disk backed by a file or block device",
  .config            = file_config,
  .config_complete   = file_config_complete,
  .config_help       = "file=<FILENAME>  (required) The file or device to serve.\n"
                       "direct=BOOL       Open it with O_DIRECT (bypass the page cache).",
  .magic_config_key  = "file",
  .get_ready         = file_get_ready,
  .cleanup           = file_cleanup,
  .open              = file_open,
  .close             = file_close,
  .get_size          = file_get_size,
  .can_write         = file_can_write,
  .can_flush         = file_always,
  .can_trim          = file_always,
  .can_zero          = file_always,
  .can_fast_zero     = file_always,
  .can_fua           = file_native,
  .can_cache         = file_native,
  .can_extents       = file_can_extents,
  .block_size        = file_block_size,
  .can_multi_conn    = file_always,
  .pread             = file_pread,
  .pwrite            = file_pwrite,
  .flush             = file_flush,
  .trim              = file_trim,
  .zero              = file_zero,
  .cache             = file_cache,
  .extents           = file_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)

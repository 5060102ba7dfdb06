/* Regular files as the file driver makes and resizes them (file-create.h). */
#include "block/file-create.h"
#include "block/file-lock.h"
#include "block/node-perm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gio/gio.h>

static bool fail_errno(GError **errp, int err, const char *what)
{
    g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s", what, g_strerror(err));
    return false;
}

/* Writes zeroes over [from, to) (preallocation=full). */
static bool write_zeroes(int fd, uint64_t from, uint64_t to, GError **errp)
{
    g_autofree char *buf = g_malloc0(65536);
    while (from < to) {
        ssize_t n = pwrite(fd, buf, MIN(to - from, (uint64_t)65536), (off_t)from);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail_errno(errp, errno, "Could not write zeros for preallocation");
        from += (uint64_t)n;
    }
    if (fsync(fd) < 0)
        return fail_errno(errp, errno, "Could not flush file to disk");
    return true;
}

bool file_truncate_fd(int fd, uint64_t size, PreallocMode prealloc, GError **errp)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return fail_errno(errp, errno, "Could not stat file");
    uint64_t current = (uint64_t)st.st_size;
    if (current > size && prealloc != PREALLOC_MODE_OFF) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "Cannot use preallocation for shrinking files");
        return false;
    }
    switch (prealloc) {
    case PREALLOC_MODE_OFF:
        if (ftruncate(fd, (off_t)size) < 0)
            return fail_errno(errp, errno, "Could not resize file");
        /* QEMU allocates the first block of a file it makes non-empty (its
         * allocate_first_block: file systems then report the right
         * alignment); a failure there is not an error. */
        if (current == 0 && size > 0) {
            char zero[4096] = { 0 };
            (void)!pwrite(fd, zero, MIN(size, sizeof zero), 0);
        }
        return true;
    case PREALLOC_MODE_FALLOC: {
        int err = size > current ? posix_fallocate(fd, (off_t)current, (off_t)(size - current)) : 0;
        if (err)
            return fail_errno(errp, err, "Could not preallocate new data");
        return true;
    }
    case PREALLOC_MODE_FULL:
        if (ftruncate(fd, (off_t)size) < 0)
            return fail_errno(errp, errno, "Could not resize file");
        return write_zeroes(fd, current, size, errp);
    default:
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "Unsupported preallocation mode: %s",
                    PreallocMode_str[prealloc]);
        return false;
    }
}

/* btrfs: no copy-on-write for the new (empty) file; failures are ignored, as by QEMU. */
static void set_nocow(int fd)
{
    int attr;
    if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
        attr |= FS_NOCOW_FL;
        (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
    }
}

bool file_image_create(const BlockdevCreateOptionsFile *opts, GError **errp)
{
    int fd = open(opts->filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err), "Could not create '%s': %s", opts->filename,
                    g_strerror(err));
        return false;
    }
    /* QEMU takes write and resize and shares everything but resize: nobody
     * may change the size while it is being set. */
    FileLock *lock = file_lock_new(fd, opts->filename, ON_OFF_AUTO_AUTO);
    const uint64_t perm = BLOCK_PERM_WRITE | BLOCK_PERM_RESIZE, shared = BLOCK_PERM_ALL & ~BLOCK_PERM_RESIZE;
    bool ok = file_lock_check(lock, perm, shared, errp);
    if (ok) {
        file_lock_commit(lock, perm, shared);
        ok = file_truncate_fd(fd, 0, PREALLOC_MODE_OFF, errp);
        if (ok && opts->has_nocow && opts->nocow)
            set_nocow(fd);
        if (ok)
            ok = file_truncate_fd(fd, opts->size, opts->has_preallocation ? opts->preallocation : PREALLOC_MODE_OFF,
                                  errp);
    }
    file_lock_free(lock);
    if (close(fd) < 0 && ok)
        ok = fail_errno(errp, errno, "Could not close the new file");
    return ok;
}

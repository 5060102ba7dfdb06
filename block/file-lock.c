/* QEMU's image locks (see file-lock.h); the logic of file-posix.c's
 * raw_apply_lock_bytes, raw_check_lock_bytes and raw_handle_perm_lock. */
#include "block/file-lock.h"
#include "block/node-perm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <gio/gio.h>

#define LOCK_PERM_BASE   100
#define LOCK_SHARED_BASE 200

struct FileLock {
    int fd;
    char *filename;
    OnOffAuto mode;
    bool active;
    uint64_t perm, shared;           /* committed */
    uint64_t locked_perm;            /* bits whose byte 100+i we hold */
    uint64_t locked_unshared;        /* bits whose byte 200+i we hold */
};

FileLock *file_lock_new(int fd, const char *filename, OnOffAuto mode)
{
    FileLock *l = g_new0(FileLock, 1);
    l->fd = fd;
    l->filename = g_strdup(filename);
    l->mode = mode;
    l->active = mode != ON_OFF_AUTO_OFF;
    l->shared = BLOCK_PERM_ALL;
    return l;
}

void file_lock_free(FileLock *lock)
{
    if (lock) {
        g_free(lock->filename);
        g_free(lock);
    }
}

bool file_lock_active(const FileLock *lock)
{
    return lock->active;
}

/* F_OFD_SETLK of one byte: F_RDLCK or F_UNLCK; 0 or -errno. */
static int set_byte(int fd, int offset, short type)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = offset, .l_len = 1 };
    return fcntl(fd, F_OFD_SETLK, &fl) == -1 ? -errno : 0;
}

/* 0 if no other open file description locks the byte, -EAGAIN if one
 * does, or -errno. */
static int test_byte(int fd, int offset)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = offset, .l_len = 1 };
    if (fcntl(fd, F_OFD_GETLK, &fl) == -1)
        return -errno;
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

/* The errors of a file system (or kernel) without OFD locks. */
static bool unsupported(int err)
{
    return err == EINVAL || err == ENOLCK || err == EOPNOTSUPP || err == ENOTSUP || err == ENOSYS;
}

/* QEMU leaves out the errno when another process holds the lock. */
static void set_lock_error(GError **errp, int err, const char *msg)
{
    if (err == EAGAIN || err == EACCES)
        g_set_error_literal(errp, G_IO_ERROR, G_IO_ERROR_BUSY, msg);
    else
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s", msg, g_strerror(err));
}

/* Locks the bytes of `perm` and `unshared` not yet held; with `unlock`,
 * also unlocks the held ones not in them. */
static int apply(FileLock *l, uint64_t perm, uint64_t unshared, bool unlock, GError **errp)
{
    for (int pass = 0; pass < 2; pass++) {
        uint64_t want = pass ? unshared : perm;
        uint64_t *held = pass ? &l->locked_unshared : &l->locked_perm;
        int base = pass ? LOCK_SHARED_BASE : LOCK_PERM_BASE;
        for (int i = 0; i < BLOCK_PERM_COUNT; i++) {
            uint64_t bit = 1u << i;
            if ((want & bit) && !(*held & bit)) {
                int r = set_byte(l->fd, base + i, F_RDLCK);
                if (r < 0) {
                    g_autofree char *msg = g_strdup_printf("Failed to lock byte %d", base + i);
                    set_lock_error(errp, -r, msg);
                    return r;
                }
                *held |= bit;
            } else if (unlock && (*held & bit) && !(want & bit)) {
                int r = set_byte(l->fd, base + i, F_UNLCK);
                if (r < 0) {
                    g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "Failed to unlock byte %d: %s",
                                base + i, g_strerror(-r));
                    return r;
                }
                *held &= ~bit;
            }
        }
    }
    return 0;
}

/* Tests the bytes that (perm, shared) needs free of other processes. */
static int check(FileLock *l, uint64_t perm, uint64_t shared, GError **errp)
{
    for (int i = 0; i < BLOCK_PERM_COUNT; i++) {
        uint64_t bit = 1u << i;
        int r;
        if ((perm & bit) && (r = test_byte(l->fd, LOCK_SHARED_BASE + i)) < 0) {
            g_autofree char *msg = g_strdup_printf("Failed to get \"%s\" lock", block_perm_name(bit));
            set_lock_error(errp, -r, msg);
            return r;
        }
    }
    for (int i = 0; i < BLOCK_PERM_COUNT; i++) {
        uint64_t bit = 1u << i;
        int r;
        if (!(shared & bit) && (r = test_byte(l->fd, LOCK_PERM_BASE + i)) < 0) {
            g_autofree char *msg = g_strdup_printf("Failed to get shared \"%s\" lock", block_perm_name(bit));
            set_lock_error(errp, -r, msg);
            return r;
        }
    }
    return 0;
}

/* Unlocking cannot fail in practice (QEMU only warns). */
static void restore(FileLock *l, uint64_t perm, uint64_t shared)
{
    GError *err = NULL;
    if (apply(l, perm, ~shared & BLOCK_PERM_ALL, true, &err) < 0) {
        g_warning("%s: %s", l->filename, err->message);
        g_error_free(err);
    }
}

bool file_lock_check(FileLock *l, uint64_t perm, uint64_t shared, GError **errp)
{
    if (!l->active)
        return true;
    /* Only giving up permissions: nothing to take, nothing to test. */
    if ((l->perm | perm) == l->perm && (l->shared & shared) == l->shared)
        return true;
    GError *err = NULL;
    bool testing = false;
    int r = apply(l, l->perm | perm, (~l->shared | ~shared) & BLOCK_PERM_ALL, false, &err);
    if (r == 0) {
        testing = true;
        r = check(l, perm, shared, &err);
    }
    if (r == 0)
        return true;
    restore(l, l->perm, l->shared);
    if (l->mode == ON_OFF_AUTO_AUTO && unsupported(-r)) {
        /* auto: a file system without OFD locks means no locking. */
        g_error_free(err);
        restore(l, 0, BLOCK_PERM_ALL);
        l->active = false;
        return true;
    }
    if (testing)
        g_set_error(errp, err->domain, err->code, "%s\nIs another process using the image [%s]?",
                    err->message, l->filename);
    else
        g_propagate_error(errp, g_error_copy(err));
    g_error_free(err);
    return false;
}

void file_lock_commit(FileLock *l, uint64_t perm, uint64_t shared)
{
    if (!l->active)
        return;
    restore(l, perm, shared);
    l->perm = perm;
    l->shared = shared;
}

void file_lock_abort(FileLock *l)
{
    if (l->active)
        restore(l, l->perm, l->shared);
}

bool file_lock_move(FileLock *l, int fd, GError **errp)
{
    if (l->active) {
        /* Taken on the new descriptor while the old one still holds them:
         * no other process can slip in between (shared locks of one
         * process's two descriptors do not conflict). */
        for (int pass = 0; pass < 2; pass++) {
            uint64_t held = pass ? l->locked_unshared : l->locked_perm;
            int base = pass ? LOCK_SHARED_BASE : LOCK_PERM_BASE;
            for (int i = 0; i < BLOCK_PERM_COUNT; i++) {
                int r = (held & (1u << i)) ? set_byte(fd, base + i, F_RDLCK) : 0;
                if (r < 0) {
                    g_autofree char *msg = g_strdup_printf("Failed to lock byte %d", base + i);
                    set_lock_error(errp, -r, msg);
                    return false;
                }
            }
        }
    }
    l->fd = fd;
    return true;
}

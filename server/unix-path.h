/* Unix socket paths that several daemons may name: a path a live process
 * listens on is never taken over or removed, and at exit a daemon removes
 * only the socket file it created itself.  (QEMU unlinks whatever is at the
 * path; a second daemon that then failed to start took the first one's
 * socket with it.) */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <glib.h>

/* Which file a socket path named when it was bound. */
typedef struct UnixPathId {
    dev_t dev;
    ino_t ino;
    bool valid;
} UnixPathId;

/* Readies `path` for bind(): fails with EADDRINUSE if a process accepts
 * connections there, removes a stale socket file, leaves other files alone
 * (bind then fails on them).  errno is set on failure. */
bool unix_path_prepare(const char *path);
/* Records the file now at `path` (call right after bind). */
void unix_path_identify(const char *path, UnixPathId *id);
/* Removes `path` only if it is still the file recorded by unix_path_identify. */
void unix_path_remove_if_ours(const char *path, const UnixPathId *id);

/* The plugins linked into blockd: each built-in copy of plugins/NAME.c is
 * compiled with -Dplugin_init=blockd_plugin_NAME_init -DBLOCKD_BUILTIN. */
#pragma once

#include <stdint.h>

struct nbdkit_plugin;

/* plugin_init of the built-in file, memory and null plugins. */
struct nbdkit_plugin *blockd_plugin_file_init (void);
struct nbdkit_plugin *blockd_plugin_memory_init (void);
struct nbdkit_plugin *blockd_plugin_null_init (void);

/* Zero-copy read hook of the built-in file plugin: the descriptor and
 * offset holding [offset, offset+count) of `handle`; always 0. */
int blockd_file_read_fd (void *handle, uint32_t count, uint64_t offset,
                         int *fd, uint64_t *fd_offset);

/* Resize hook of the built-in memory plugin (no request in flight): pages
 * past the new end are dropped, so growing again reads zeroes there; 0 or
 * -errno. */
int blockd_memory_resize (void *handle, uint64_t size);

/* A read-only node reopened read-write for a job's lifetime (QEMU's
 * commit_start and stream_start reopen a read-only base or top). */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "block/node.h"

/* Reopens `node` read-write if it is read-only (*reopened says whether it
 * was), its image's persistent dirty bitmaps loaded first so that they
 * follow it: writable and tracking the job's writes meanwhile, stored
 * clean when node_restore_read_only puts it back. */
bool job_open_writable(BlockNode *node, bool *reopened, GError **errp);

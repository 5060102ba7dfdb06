/* Undo actions for what a command made in the daemon or on disk (a target
 * node, a new file, a bitmap, a job): an error exit or an interrupt runs
 * them, newest first, so the next run starts from a clean state. */
#pragma once

#include <stdbool.h>

typedef void (*CleanupFunc)(void *data);

/* Registers `fn(data)` (then `free_data(data)`, if given); returns a handle for cleanup_forget. */
unsigned cleanup_add(CleanupFunc fn, void *data, void (*free_data)(void *data));
/* Drops the action `handle` without running it (what it would undo is now wanted). */
void cleanup_forget(unsigned handle);
/* Runs the registered actions, newest first, once each; failures only warn. */
void cleanup_run(void);

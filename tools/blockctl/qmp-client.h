/* A QMP client over a Unix socket: one JSON object per line each way. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct QmpClient QmpClient;

/* Connects to the monitor at `path`, reads the greeting and negotiates capabilities; dies on failure. */
QmpClient *qmp_connect(const char *path);
/* The client qmp_connect made (for cleanup actions), or NULL before it. */
QmpClient *qmp_current(void);
/* Runs `name` (args may be NULL): its return value, or NULL with *errp = "NAME: DESC (CLASS)"
 * (also when the connection is lost); events that arrive meanwhile are dropped. */
JsonNode *qmp_try(QmpClient *c, const char *name, JsonObject *args, GError **errp);
/* Like qmp_try, but an error is fatal (die prints it). */
JsonNode *qmp_run(QmpClient *c, const char *name, JsonObject *args);
/* Runs `name` for its effect only; false (and a warning) on an error. */
bool qmp_run_quietly(QmpClient *c, const char *name, JsonObject *args, bool warn_on_error);
/* The next message from the daemon, event or reply; dies when the connection ends. */
JsonNode *qmp_receive(QmpClient *c);

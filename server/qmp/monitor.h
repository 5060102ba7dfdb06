/* QMP monitors: chardev sockets, sessions, dispatch and event delivery.
 *
 * Everything here runs on the GLib main loop (the default main context),
 * except qmp_event_emit (qapi-runtime.h), which any thread may call. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "server/qmp/qapi-runtime.h"

/* Creates a listening chardev from `--chardev` text
 * (socket,id=ID,path=P,server=on,wait=off); the socket file gets mode 0600. */
bool qmp_chardev_add(const char *text, GError **errp);
/* Starts a QMP monitor on a chardev from `--monitor` text ([chardev=]ID[,mode=control][,pretty=on|off]). */
bool qmp_monitor_add(const char *text, GError **errp);
/* Sets what `quit` does once its reply is queued (normally: stop the main loop). */
void qmp_set_quit_handler(void (*fn)(void *opaque), void *opaque);
/* Emits SHUTDOWN (unless quit already did), delivers pending events and
 * replies, closes every session and chardev and removes the socket files. */
void qmp_monitors_shutdown(void);

/* True once the session left capabilities negotiation. */
bool qmp_session_negotiated(QmpSession *session);
/* Moves the session into command mode (qmp_capabilities). */
void qmp_session_set_negotiated(QmpSession *session);
/* Asks the daemon to shut down after the current reply (the quit command). */
void qmp_request_quit(void);

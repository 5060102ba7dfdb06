/* Where blockd's log messages go (--log, -v).
 *
 * Every part logs with g_message/g_info/g_debug (g_warning for blockd's own
 * trouble) under its G_LOG_DOMAIN ("blockd-nbd", "blockd-block", ...); this
 * module only installs the GLib structured-log writer that sends them to
 * stderr, syslog(3) or the systemd journal. */
#pragma once

#include <stdbool.h>

typedef enum LogTarget {
    LOG_TARGET_DEFAULT,  /* stderr, or journal/syslog once daemonized */
    LOG_TARGET_STDERR,   /* GLib's standard-streams format (journal format if stderr is the journal) */
    LOG_TARGET_SYSLOG,   /* syslog(3): ident "blockd", LOG_DAEMON */
    LOG_TARGET_JOURNAL,  /* the journal's native protocol (GLib's journald writer) */
} LogTarget;

/* Parses "stderr", "syslog" or "journal"; false for anything else. */
bool log_target_parse(const char *text, LogTarget *target);
/* Must run before any thread exists: keeps stdout free of log lines. */
void log_init_early(void);
/* Installs the writer for `target` (DEFAULT resolved for a daemon or not);
 * verbose: debug and info messages too. */
void log_setup(LogTarget target, bool daemonize, bool verbose);

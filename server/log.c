/* The log writer (see server/log.h).  GLib formats and delivers; this file
 * only picks the destination and drops debug messages unless asked. */
#define G_LOG_DOMAIN "blockd-main"
#include "server/log.h"

#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <glib.h>

/* Where g_log_writer_journald sends; its presence means a journal runs. */
#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static LogTarget target = LOG_TARGET_STDERR;
/* One message at a time: GLib 2.74's standard-streams writer stamps each
 * line with localtime(), whose static buffer threads logging at once would
 * share (TSan reports it); serialising also keeps lines whole. */
static GMutex write_lock;

bool log_target_parse(const char *text, LogTarget *out)
{
    static const struct { const char *name; LogTarget target; } names[] = {
        { "stderr", LOG_TARGET_STDERR },
        { "syslog", LOG_TARGET_SYSLOG },
        { "journal", LOG_TARGET_JOURNAL },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].target;
            return true;
        }
    }
    return false;
}

void log_init_early(void)
{
    /* Under socket activation stdout belongs to the client, under --run to
     * the command: GLib's info and debug lines would go there otherwise. */
    g_log_writer_default_set_use_stderr(TRUE);
}

static const char *field(const GLogField *fields, gsize n, const char *key, gssize *len)
{
    for (gsize i = 0; i < n; i++) {
        if (strcmp(fields[i].key, key) == 0) {
            *len = fields[i].length;
            return fields[i].value;
        }
    }
    return NULL;
}

/* syslog(3) with the priority GLib gave the journal, "PART: message". */
static GLogWriterOutput write_syslog(const GLogField *fields, gsize n)
{
    gssize len = -1, dlen = -1, plen = -1;
    const char *msg = field(fields, n, "MESSAGE", &len);
    const char *domain = field(fields, n, "GLIB_DOMAIN", &dlen);
    const char *prio = field(fields, n, "PRIORITY", &plen);
    if (!msg)
        return G_LOG_WRITER_UNHANDLED;
    int priority = prio && plen != 0 && prio[0] >= '0' && prio[0] <= '7' ? prio[0] - '0' : LOG_NOTICE;
    int mlen = len < 0 ? (int)strlen(msg) : (int)len;
    /* "blockd-nbd" is "nbd" under the "blockd" ident; "blockd-main" is blockd itself. */
    g_autofree char *part = domain ? g_strndup(domain, dlen < 0 ? strlen(domain) : (size_t)dlen) : NULL;
    const char *shown = part && g_str_has_prefix(part, "blockd-") ? part + 7 : part;
    if (shown && strcmp(shown, "main") != 0)
        syslog(priority, "%s: %.*s", shown, mlen, msg);
    else
        syslog(priority, "%.*s", mlen, msg);
    return G_LOG_WRITER_HANDLED;
}

/* The journal, with SYSLOG_IDENTIFIER so `journalctl -t blockd` finds it. */
static GLogWriterOutput write_journal(GLogLevelFlags level, const GLogField *fields, gsize n)
{
    GLogField *all = g_newa(GLogField, n + 1);
    memcpy(all, fields, n * sizeof(*fields));
    all[n] = (GLogField){ .key = "SYSLOG_IDENTIFIER", .value = "blockd", .length = -1 };
    if (g_log_writer_journald(level, all, n + 1, NULL) == G_LOG_WRITER_HANDLED)
        return G_LOG_WRITER_HANDLED;
    /* No journal after all: as GLib's default writer, fall back to stderr. */
    return g_log_writer_standard_streams(level, fields, n, NULL);
}

static GLogWriterOutput writer(GLogLevelFlags level, const GLogField *fields, gsize n, gpointer data)
{
    gssize dlen = -1;
    const char *domain = field(fields, n, "GLIB_DOMAIN", &dlen);
    /* Honours -v (g_log_set_debug_enabled) and G_MESSAGES_DEBUG=DOMAIN. */
    if (g_log_writer_default_would_drop(level, domain))
        return G_LOG_WRITER_HANDLED;
    GLogWriterOutput out;
    g_mutex_lock(&write_lock);
    switch (target) {
    case LOG_TARGET_SYSLOG:
        out = write_syslog(fields, n);
        break;
    case LOG_TARGET_JOURNAL:
        out = write_journal(level, fields, n);
        break;
    default:
        out = g_log_writer_standard_streams(level, fields, n, NULL);
        break;
    }
    g_mutex_unlock(&write_lock);
    return out;
}

void log_setup(LogTarget wanted, bool daemonize, bool verbose)
{
    if (wanted == LOG_TARGET_DEFAULT) {
        if (!daemonize)
            wanted = LOG_TARGET_STDERR;
        else
            wanted = access(JOURNAL_SOCKET, F_OK) == 0 ? LOG_TARGET_JOURNAL : LOG_TARGET_SYSLOG;
    }
    /* A service whose stderr is connected to the journal gets fields, not text. */
    if (wanted == LOG_TARGET_STDERR && g_log_writer_is_journald(STDERR_FILENO))
        wanted = LOG_TARGET_JOURNAL;
    target = wanted;
    if (target == LOG_TARGET_SYSLOG)
        openlog("blockd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    if (verbose)
        g_log_set_debug_enabled(TRUE);
    g_log_set_writer_func(writer, NULL, NULL);
}

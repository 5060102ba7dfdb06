/* QMP monitors (see monitor.h): listening chardevs, one session per client
 * connection, the QMP envelope and dispatch, and event delivery.
 *
 * Sockets are non-blocking and watched by the main loop; replies go to a
 * per-session output buffer that is flushed when the socket is writable, so
 * a client that stops reading never blocks the daemon. */
#include "server/qmp/monitor.h"
#include "server/unix-path.h"
#include "server/qmp/json-stream.h"
#include "server/keyval.h"
#include "qapi/qapi-commands.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib-unix.h>

/* A client that lets this much output pile up is disconnected. */
#define MAX_PENDING_OUTPUT (64u << 20)

typedef struct Chardev {
    char *id;
    char *path;
    UnixPathId path_id;  /* the socket file this chardev created */
    int fd;
    guint watch;
    bool has_monitor;
    bool pretty;
} Chardev;

struct QmpSession {
    Chardev *chardev;
    int fd;
    guint in_watch, out_watch;
    JsonStream *stream;
    GString *out;
    bool negotiated;
    bool broken;      /* write failed or output overflowed: close when safe */
};

static GPtrArray *chardevs;      /* Chardev * */
static GPtrArray *sessions;      /* QmpSession * */
static void (*quit_fn)(void *);
static void *quit_opaque;
static bool shutdown_emitted;

/* Events cross threads through this queue; the main loop drains it. */
static GMutex event_lock;
static GQueue event_queue = G_QUEUE_INIT;  /* JsonObject * (complete event messages) */
static bool event_flush_scheduled;

static void session_close(QmpSession *s);
static void deliver_events(void);

/* ---------------------------------------------------------------- output */

static gboolean on_writable(gint fd, GIOCondition cond, gpointer data);

static void session_flush(QmpSession *s)
{
    while (s->out->len > 0 && !s->broken) {
        ssize_t n = send(s->fd, s->out->str, s->out->len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!s->out_watch)
                s->out_watch = g_unix_fd_add(s->fd, G_IO_OUT, on_writable, s);
            return;
        }
        if (n <= 0) {
            s->broken = true;
            return;
        }
        g_string_erase(s->out, 0, n);
    }
}

static gboolean on_writable(gint fd, GIOCondition cond, gpointer data)
{
    QmpSession *s = data;
    session_flush(s);
    if (s->broken) {
        s->out_watch = 0;
        session_close(s);
        return G_SOURCE_REMOVE;
    }
    if (s->out->len == 0) {
        s->out_watch = 0;
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

/* Queues one message (a JSON object) for the client, CRLF-terminated as QEMU does. */
static void session_send(QmpSession *s, JsonObject *msg)
{
    JsonNode *node = json_node_alloc();
    json_node_init_object(node, msg);
    g_autofree char *text = json_to_string(node, s->chardev->pretty);
    json_node_unref(node);
    g_string_append(s->out, text);
    g_string_append(s->out, "\r\n");
    if (s->out->len > MAX_PENDING_OUTPUT)
        s->broken = true;
    session_flush(s);
}

static void send_error(QmpSession *s, JsonNode *id, const char *class_name, const char *desc)
{
    JsonObject *msg = json_object_new();
    if (id)
        json_object_set_member(msg, "id", json_node_copy(id));
    JsonObject *err = json_object_new();
    json_object_set_string_member(err, "class", class_name);
    json_object_set_string_member(err, "desc", desc);
    json_object_set_object_member(msg, "error", err);
    session_send(s, msg);
    json_object_unref(msg);
}

/* ---------------------------------------------------------------- dispatch */

static const QmpCommand *command_find(const char *name)
{
    for (const QmpCommand *c = qmp_commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

/* Checks the envelope (QEMU's qmp_dispatch_check_obj); the command name or NULL + error. */
static const char *check_envelope(JsonObject *obj, GError **errp)
{
    const char *name = NULL;
    GList *members = json_object_get_members(obj);
    for (GList *l = members; l; l = l->next) {
        const char *key = l->data;
        JsonNode *v = json_object_get_member(obj, key);
        if (strcmp(key, "execute") == 0) {
            if (!JSON_NODE_HOLDS_VALUE(v) || json_node_get_value_type(v) != G_TYPE_STRING) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                            "QMP input member 'execute' must be a string");
                break;
            }
            name = json_node_get_string(v);
        } else if (strcmp(key, "arguments") == 0) {
            if (!JSON_NODE_HOLDS_OBJECT(v)) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                            "QMP input member 'arguments' must be an object");
                break;
            }
        } else if (strcmp(key, "id") != 0) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "QMP input member '%s' is unexpected", key);
            break;
        }
    }
    g_list_free(members);
    if (errp && *errp)
        return NULL;
    if (!name)
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "QMP input lacks member 'execute'");
    return name;
}

/* Runs one request object and sends its reply. */
static void dispatch(QmpSession *s, JsonObject *obj)
{
    GError *err = NULL;
    JsonNode *id = json_object_get_member(obj, "id");
    const char *name = check_envelope(obj, &err);
    const QmpCommand *cmd = NULL;
    if (name) {
        cmd = command_find(name);
        if (!s->negotiated && (!cmd || strcmp(name, "qmp_capabilities") != 0))
            g_set_error(&err, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                        "Expecting capabilities negotiation with 'qmp_capabilities'");
        else if (!cmd)
            g_set_error(&err, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                        "The command %s has not been found", name);
    }
    JsonNode *ret = NULL;
    if (!err) {
        JsonNode *args_node = json_object_get_member(obj, "arguments");
        g_autoptr(JsonObject) args = args_node ? json_object_ref(json_node_get_object(args_node))
                                               : json_object_new();
        cmd->fn(s, args, &ret, &err);
        if (!err && !ret)
            ret = qapi_node_take_object(json_object_new());
    }
    if (err) {
        /* An error's second line is a hint (QEMU's error_append_hint): the
         * command line shows it, QMP does not. */
        g_autofree char *desc = g_strndup(err->message, strcspn(err->message, "\n"));
        send_error(s, id, qmp_error_class_name(err), desc);
        g_error_free(err);
        return;
    }
    JsonObject *msg = json_object_new();
    json_object_set_member(msg, "return", ret);
    if (id)
        json_object_set_member(msg, "id", json_node_copy(id));
    session_send(s, msg);
    json_object_unref(msg);
}

/* json-glib's message without its "<data>:1:2: Parse error: " position prefix. */
static const char *parse_error_text(const GError *err)
{
    const char *p = strstr(err->message, "error: ");
    return p ? p + strlen("error: ") : err->message;
}

static void on_message(const char *text, size_t len, const char *error, void *opaque)
{
    QmpSession *s = opaque;
    if (!text) {
        g_autofree char *desc = g_strdup_printf("JSON parse error, %s", error);
        send_error(s, NULL, "GenericError", desc);
        return;
    }
    if (json_text_has_nul_escape(text, len)) {
        /* QEMU 7.2 carries U+0000 as an overlong sequence; blockd's names and
         * paths are C strings, so it refuses the message instead. */
        send_error(s, NULL, "GenericError", "JSON parse error, \\u0000 is not supported");
        return;
    }
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    GError *err = NULL;
    if (!json_parser_load_from_data(parser, text, (gssize)len, &err)) {
        g_autofree char *desc = g_strdup_printf("JSON parse error, %s", parse_error_text(err));
        send_error(s, NULL, "GenericError", desc);
        g_error_free(err);
        return;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        send_error(s, NULL, "GenericError", "QMP input must be a JSON object");
        return;
    }
    dispatch(s, json_node_get_object(root));
    /* Events the command raised follow its reply at once, not a loop turn later. */
    deliver_events();
}

/* ---------------------------------------------------------------- sessions */

static void session_close(QmpSession *s)
{
    if (s->in_watch)
        g_source_remove(s->in_watch);
    if (s->out_watch)
        g_source_remove(s->out_watch);
    close(s->fd);
    json_stream_free(s->stream);
    g_string_free(s->out, TRUE);
    g_ptr_array_remove(sessions, s);
    g_free(s);
}

static gboolean on_readable(gint fd, GIOCondition cond, gpointer data)
{
    QmpSession *s = data;
    char buf[65536];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return G_SOURCE_CONTINUE;
    if (n <= 0) {
        /* Disconnected (possibly mid-message): only this session goes away. */
        s->in_watch = 0;
        session_close(s);
        return G_SOURCE_REMOVE;
    }
    json_stream_feed(s->stream, buf, (size_t)n);
    if (s->broken) {
        s->in_watch = 0;
        session_close(s);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static void send_greeting(QmpSession *s)
{
    g_autofree char *package = g_strdup_printf("blockd %s", BLOCKD_VERSION);
    JsonObject *qemu = json_object_new();
    json_object_set_int_member(qemu, "major", 7);
    json_object_set_int_member(qemu, "minor", 2);
    json_object_set_int_member(qemu, "micro", 0);
    JsonObject *version = json_object_new();
    json_object_set_object_member(version, "qemu", qemu);
    json_object_set_string_member(version, "package", package);
    JsonObject *qmp = json_object_new();
    json_object_set_object_member(qmp, "version", version);
    json_object_set_array_member(qmp, "capabilities", json_array_new());
    JsonObject *msg = json_object_new();
    json_object_set_object_member(msg, "QMP", qmp);
    session_send(s, msg);
    json_object_unref(msg);
}

static gboolean on_accept(gint fd, GIOCondition cond, gpointer data)
{
    Chardev *cd = data;
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return G_SOURCE_CONTINUE;
    QmpSession *s = g_new0(QmpSession, 1);
    s->chardev = cd;
    s->fd = cfd;
    s->stream = json_stream_new(on_message, s);
    s->out = g_string_new(NULL);
    g_ptr_array_add(sessions, s);
    s->in_watch = g_unix_fd_add(cfd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_readable, s);
    send_greeting(s);
    if (s->broken)
        session_close(s);
    return G_SOURCE_CONTINUE;
}

bool qmp_session_negotiated(QmpSession *session)
{
    return session->negotiated;
}

void qmp_session_set_negotiated(QmpSession *session)
{
    session->negotiated = true;
}

/* ---------------------------------------------------------------- chardevs */

static void chardev_free(Chardev *cd)
{
    if (cd->watch)
        g_source_remove(cd->watch);
    if (cd->fd >= 0) {
        close(cd->fd);
        if (cd->path)
            unix_path_remove_if_ours(cd->path, &cd->path_id);
    }
    g_free(cd->id);
    g_free(cd->path);
    g_free(cd);
}

static void registry_init(void)
{
    if (!chardevs) {
        chardevs = g_ptr_array_new_with_free_func((GDestroyNotify)chardev_free);
        sessions = g_ptr_array_new();
    }
}

static Chardev *chardev_find(const char *id)
{
    registry_init();
    for (guint i = 0; i < chardevs->len; i++) {
        Chardev *cd = chardevs->pdata[i];
        if (strcmp(cd->id, id) == 0)
            return cd;
    }
    return NULL;
}

/* Parses option text whose first element may omit its key (QEMU's implied key). */
/* --chardev and --monitor are QemuOpts in QEMU: an implied first key, and
 * bare flags after it ("server,nowait" is "server=on,wait=off"). */
static JsonObject *parse_with_implied_key(const char *text, const char *implied, GError **errp)
{
    if (text[0] == '{')
        return keyval_parse(text, errp);
    g_autoptr(GString) full = g_string_new(NULL);
    const char *p = text;
    for (bool first = true; *p; first = false) {
        size_t n = 0;
        while (p[n] && !(p[n] == ',' && p[n + 1] != ',')) /* ",," is a literal comma */
            n += p[n] == ',' ? 2 : 1;
        g_autofree char *elt = g_strndup(p, n);
        p += n + (p[n] == ',');
        if (full->len)
            g_string_append_c(full, ',');
        if (strchr(elt, '='))
            g_string_append(full, elt);
        else if (first)
            g_string_append_printf(full, "%s=%s", implied, elt);
        else if (g_str_has_prefix(elt, "no") && elt[2])
            g_string_append_printf(full, "%s=off", elt + 2);
        else
            g_string_append_printf(full, "%s=on", elt);
    }
    return keyval_parse(full->str, errp);
}

/* A string option of a chardev/monitor, NULL when absent. */
static const char *opt_str(JsonObject *o, const char *key)
{
    JsonNode *n = json_object_get_member(o, key);
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
               ? json_node_get_string(n) : NULL;
}

/* A boolean option given as on/off (or true/false); `def` when absent; -1 if invalid. */
static int opt_bool(JsonObject *o, const char *key, int def)
{
    JsonNode *n = json_object_get_member(o, key);
    if (!n)
        return def;
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN)
        return json_node_get_boolean(n);
    const char *s = opt_str(o, key);
    if (s && (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "true")))
        return 1;
    if (s && (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "false")))
        return 0;
    return -1;
}

/* Fails naming the first option not in `known` (NULL-terminated). */
static bool check_known(JsonObject *o, const char *const known[], GError **errp)
{
    GList *members = json_object_get_members(o);
    bool ok = true;
    for (GList *l = members; l && ok; l = l->next) {
        ok = false;
        for (int i = 0; known[i]; i++)
            ok = ok || strcmp(known[i], l->data) == 0;
        if (!ok)
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Invalid parameter '%s'",
                        (const char *)l->data);
    }
    g_list_free(members);
    return ok;
}

static int listen_unix(const char *path, GError **errp)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr.sun_path)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Failed to create socket: %s", g_strerror(errno));
        return -1;
    }
    if (!unix_path_prepare(path) || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Failed to bind socket to %s: %s", path,
                    g_strerror(errno));
        close(fd);
        return -1;
    }
    /* Only the owner may talk to the monitor: fix the mode before listen() accepts anyone. */
    if (chmod(path, 0600) < 0 || listen(fd, SOMAXCONN) < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Failed to bind socket to %s: %s", path,
                    g_strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

/* A TCP listener for a chardev (host=, port=, as QEMU's inet chardev). */
static int listen_inet(const char *host, const char *port, GError **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *res = NULL;
    int r = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (r != 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "address resolution failed for %s:%s: %s",
                    host ? host : "", port, gai_strerror(r));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Failed to bind socket: %s", g_strerror(err ? err : EINVAL));
    return fd;
}

/* fd=N: a socket the caller already created (systemd), made to listen. */
static int listen_inherited(const char *str, GError **errp)
{
    char *end;
    long fd = strtol(str, &end, 10);
    int type = 0;
    socklen_t len = sizeof(type);
    if (*end || fd < 0 || fd > INT_MAX ||
        getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "File descriptor '%s' is not a stream socket", str);
        return -1;
    }
    if (!g_unix_set_fd_nonblocking((int)fd, TRUE, errp) || listen((int)fd, SOMAXCONN) < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Failed to listen on file descriptor %ld: %s",
                    fd, g_strerror(errno));
        return -1;
    }
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
}

bool qmp_chardev_add(const char *text, GError **errp)
{
    static const char *const known[] = { "backend", "id", "path", "server", "wait", "fd", "host", "port",
                                         "ipv4", "ipv6", "nodelay", "telnet", NULL };
    g_autoptr(JsonObject) o = parse_with_implied_key(text, "backend", errp);
    if (!o || !check_known(o, known, errp))
        return false;
    const char *backend = opt_str(o, "backend");
    const char *id = opt_str(o, "id");
    const char *path = opt_str(o, "path");
    if (!backend || strcmp(backend, "socket") != 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Parameter 'backend' does not accept value '%s' (only 'socket')",
                    backend ? backend : "");
        return false;
    }
    if (!id) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter 'id' is missing");
        return false;
    }
    const char *fd_str = opt_str(o, "fd"), *host = opt_str(o, "host"), *port = opt_str(o, "port");
    if (!path && !fd_str && !port) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "chardev: socket: no host given");
        return false;
    }
    if (opt_bool(o, "telnet", 0) != 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "chardev '%s': telnet is not supported", id);
        return false;
    }
    int server = opt_bool(o, "server", 0), wait = opt_bool(o, "wait", 1);
    if (server != 1) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "chardev '%s': only server=on is supported", id);
        return false;
    }
    if (wait < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter 'wait' expects 'on' or 'off'");
        return false;
    }
    if (chardev_find(id)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "attempt to add duplicate property '%s' to object (type 'container')", id);
        return false;
    }
    int fd = path ? listen_unix(path, errp) : fd_str ? listen_inherited(fd_str, errp)
                                                       : listen_inet(host, port, errp);
    if (fd < 0)
        return false;
    Chardev *cd = g_new0(Chardev, 1);
    cd->id = g_strdup(id);
    if (path) {
        cd->path = g_strdup(path);
        unix_path_identify(path, &cd->path_id);
    }
    cd->fd = fd;
    g_ptr_array_add(chardevs, cd);
    return true;
}

bool qmp_monitor_add(const char *text, GError **errp)
{
    static const char *const known[] = { "chardev", "mode", "pretty", "id", NULL };
    g_autoptr(JsonObject) o = parse_with_implied_key(text, "chardev", errp);
    if (!o || !check_known(o, known, errp))
        return false;
    const char *id = opt_str(o, "chardev");
    const char *mode = opt_str(o, "mode");
    int pretty = opt_bool(o, "pretty", 0);
    if (!id) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter 'chardev' is missing");
        return false;
    }
    if (mode && strcmp(mode, "control") != 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Only QMP is supported");
        return false;
    }
    if (pretty < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter 'pretty' expects 'on' or 'off'");
        return false;
    }
    Chardev *cd = chardev_find(id);
    if (!cd) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "chardev \"%s\" not found", id);
        return false;
    }
    if (cd->has_monitor) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "chardev '%s' is already in use", id);
        return false;
    }
    cd->has_monitor = true;
    cd->pretty = pretty;
    cd->watch = g_unix_fd_add(cd->fd, G_IO_IN, on_accept, cd);
    return true;
}

/* ---------------------------------------------------------------- events */

/* Sends queued events to every negotiated session (never closes one). */
static void deliver_events(void)
{
    g_mutex_lock(&event_lock);
    GQueue pending = event_queue;
    g_queue_init(&event_queue);
    event_flush_scheduled = false;
    g_mutex_unlock(&event_lock);
    JsonObject *ev;
    while ((ev = g_queue_pop_head(&pending))) {
        for (guint i = 0; sessions && i < sessions->len; i++) {
            QmpSession *s = sessions->pdata[i];
            if (s->negotiated && !s->broken)
                session_send(s, ev);
        }
        json_object_unref(ev);
    }
}

static gboolean flush_events(gpointer unused)
{
    deliver_events();
    /* Sessions whose output failed are closed here, outside their callbacks. */
    for (guint i = 0; sessions && i < sessions->len;) {
        QmpSession *s = sessions->pdata[i];
        if (s->broken && !s->out_watch)
            session_close(s);
        else
            i++;
    }
    return G_SOURCE_REMOVE;
}

void qmp_event_emit(const char *name, JsonObject *data)
{
    gint64 now = g_get_real_time();
    JsonObject *ts = json_object_new();
    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    JsonObject *ev = json_object_new();
    json_object_set_string_member(ev, "event", name);
    if (data) {
        /* A copy that shares nothing with data: events are made in job
         * threads and sent from the main loop, and json-glib's reference
         * counts are plain (non-atomic) integers, so json_node_copy (which
         * only takes a reference on objects) left both threads unref'ing the
         * same JsonObject (ThreadSanitizer: free in job_transition_to_ready
         * racing json_to_string in deliver_events). */
        JsonNode *node = json_node_alloc();
        json_node_init_object(node, data);
        g_autofree char *text = json_to_string(node, FALSE);
        json_node_unref(node);
        json_object_set_member(ev, "data", json_from_string(text, NULL));
    }
    json_object_set_object_member(ev, "timestamp", ts);

    g_mutex_lock(&event_lock);
    g_queue_push_tail(&event_queue, ev);
    bool schedule = !event_flush_scheduled;
    event_flush_scheduled = true;
    g_mutex_unlock(&event_lock);
    if (schedule)
        g_idle_add_full(G_PRIORITY_DEFAULT, flush_events, NULL, NULL);
}

/* ---------------------------------------------------------------- quit/shutdown */

void qmp_set_quit_handler(void (*fn)(void *opaque), void *opaque)
{
    quit_fn = fn;
    quit_opaque = opaque;
}

static gboolean run_quit(gpointer unused)
{
    if (quit_fn)
        quit_fn(quit_opaque);
    return G_SOURCE_REMOVE;
}

static void emit_shutdown(ShutdownCause reason)
{
    if (shutdown_emitted)
        return;
    shutdown_emitted = true;
    q_obj_SHUTDOWN_arg data = { .guest = false, .reason = reason };
    qapi_event_send_shutdown(&data);
}

void qmp_request_quit(void)
{
    emit_shutdown(SHUTDOWN_CAUSE_HOST_QMP_QUIT);
    g_idle_add(run_quit, NULL);
}

/* Writes what is left in a session's buffer, waiting briefly for a slow reader. */
static void drain_output(QmpSession *s)
{
    for (int tries = 0; s->out->len > 0 && !s->broken && tries < 20; tries++) {
        session_flush(s);
        if (s->out->len > 0) {
            struct pollfd pfd = { .fd = s->fd, .events = POLLOUT };
            poll(&pfd, 1, 50);
        }
    }
}

void qmp_monitors_shutdown(void)
{
    registry_init();
    emit_shutdown(SHUTDOWN_CAUSE_HOST_SIGNAL);
    flush_events(NULL);
    while (sessions->len > 0) {
        QmpSession *s = sessions->pdata[0];
        drain_output(s);
        session_close(s);
    }
    g_ptr_array_free(chardevs, TRUE);
    g_ptr_array_free(sessions, TRUE);
    chardevs = NULL;
    sessions = NULL;
}

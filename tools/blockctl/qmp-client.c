/* The QMP client (see qmp-client.h). */
#include "tools/blockctl/qmp-client.h"
#include "tools/blockctl/cli.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct QmpClient {
    int fd;
    char *path;
    GString *in;   /* bytes received, not yet split into lines */
};

static QmpClient *current;

G_DEFINE_QUARK(blockctl-qmp-error-quark, qmp_error)

/* The next message, or NULL with *errp set when the connection ends or sends garbage. */
static JsonNode *receive(QmpClient *c, GError **errp)
{
    for (;;) {
        char *nl = memchr(c->in->str, '\n', c->in->len);
        if (nl) {
            size_t len = (size_t)(nl - c->in->str);
            g_autoptr(JsonParser) p = json_parser_new();
            g_autoptr(GError) err = NULL;
            if (!json_parser_load_from_data(p, c->in->str, (gssize)len, &err) ||
                !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
                g_set_error(errp, qmp_error_quark(), 0, "bad reply from the daemon: %s",
                            err ? err->message : "not an object");
                return NULL;
            }
            g_string_erase(c->in, 0, (gssize)len + 1);
            return json_node_copy(json_parser_get_root(p));
        }
        char buf[65536];
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;  /* a signal: its flag is looked at by the caller's loop */
        if (n <= 0) {
            g_set_error(errp, qmp_error_quark(), 0, "the daemon closed the connection");
            return NULL;
        }
        g_string_append_len(c->in, buf, n);
    }
}

JsonNode *qmp_receive(QmpClient *c)
{
    GError *err = NULL;
    JsonNode *msg = receive(c, &err);
    if (!msg)
        die("%s", err->message);
    return msg;
}

static bool send_all(QmpClient *c, const char *text, GError **errp)
{
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = send(c->fd, text, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            g_set_error(errp, qmp_error_quark(), 0, "cannot write to %s: %s", c->path, g_strerror(errno));
            return false;
        }
        text += n;
        len -= (size_t)n;
    }
    return true;
}

JsonNode *qmp_try(QmpClient *c, const char *name, JsonObject *args, GError **errp)
{
    g_autoptr(JsonObject) msg = json_object_new();
    json_object_set_string_member(msg, "execute", name);
    if (args)
        json_object_set_object_member(msg, "arguments", json_object_ref(args));
    g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), msg);
    g_autofree char *text = json_to_string(node, FALSE);
    g_autofree char *line = g_strconcat(text, "\n", NULL);
    if (!send_all(c, line, errp))
        return NULL;
    for (;;) {
        g_autoptr(JsonNode) reply = receive(c, errp);
        if (!reply)
            return NULL;
        JsonObject *r = json_node_get_object(reply);
        if (json_object_has_member(r, "return"))
            return json_node_copy(json_object_get_member(r, "return"));
        if (json_object_has_member(r, "error")) {
            JsonObject *e = json_object_get_object_member(r, "error");
            g_set_error(errp, qmp_error_quark(), 1, "%s: %s (%s)", name,
                        json_object_get_string_member_with_default(e, "desc", "?"),
                        json_object_get_string_member_with_default(e, "class", "?"));
            return NULL;
        }
        /* an event: not for us */
    }
}

JsonNode *qmp_run(QmpClient *c, const char *name, JsonObject *args)
{
    GError *err = NULL;
    JsonNode *ret = qmp_try(c, name, args, &err);
    if (!ret)
        die("%s", err->message);
    return ret;
}

bool qmp_run_quietly(QmpClient *c, const char *name, JsonObject *args, bool warn_on_error)
{
    g_autoptr(GError) err = NULL;
    JsonNode *ret = qmp_try(c, name, args, &err);
    if (!ret) {
        if (warn_on_error)
            warn("%s", err->message);
        return false;
    }
    json_node_unref(ret);
    return true;
}

QmpClient *qmp_connect(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path)
        die("socket path too long: %s", path);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("cannot connect to %s: %s\n"
            "Is blockd running with --chardev socket,id=m0,path=%s,server=on,wait=off --monitor chardev=m0?",
            path, g_strerror(errno), path);
    static QmpClient client;  /* lives until exit */
    QmpClient *c = &client;
    c->fd = fd;
    c->path = g_strdup(path);
    c->in = g_string_new(NULL);
    JsonNode *greeting = qmp_receive(c);
    bool qmp = json_object_has_member(json_node_get_object(greeting), "QMP");
    json_node_unref(greeting);
    if (!qmp)
        die("%s does not speak QMP", path);
    json_node_unref(qmp_run(c, "qmp_capabilities", NULL));
    current = c;
    return c;
}

QmpClient *qmp_current(void)
{
    return current;
}

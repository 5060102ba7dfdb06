/* Listening sockets and the life of client connections (see nbd-server.h).
 *
 * Accepting runs on the GLib main loop (g_unix_fd_add on non-blocking
 * listening sockets); each accepted client gets its own thread, which runs
 * the handshake and then becomes the connection's receive thread. */
#define G_LOG_DOMAIN "blockd-nbd"
#include "server/nbd/nbd-server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "server/nbd/nbd-conn.h"
#include "objects/objects.h"
#include "server/unix-path.h"

/* Graceful shutdown: how long in-flight requests get before a hard disconnect. */
#define SHUTDOWN_GRACE_US (2 * G_TIME_SPAN_SECOND)
/* Send buffer asked for each client socket (the kernel caps it at wmem_max). */
#define SOCKET_BUFFER_SIZE (4 * 1024 * 1024)
/* Connections over max-connections that are told why before being closed;
 * past this many at once, further ones are closed without a word. */
#define MAX_REFUSING 8

typedef struct NbdListener {
    NbdServer *srv;
    int fd;
    guint source;
    int family;
    char *unix_path;        /* path for URIs */
    bool unlink_path;       /* we created the socket file */
    UnixPathId path_id;     /* which file that was */
    char *host;             /* numeric host for URIs (inet) */
    unsigned port;
} NbdListener;

struct NbdServer {
    unsigned max_connections;
    gint64 handshake_us;    /* 0: no limit */
    guint watchdog;         /* main-loop timer enforcing handshake_us */
    GPtrArray *listeners;   /* NbdListener * */
    GMutex lock;            /* conns, active, refusing, shutting_down, conns' deadlines */
    GCond cond;             /* signalled when a connection ends */
    GList *conns;           /* NbdConn * (running and finished, until reaped) */
    unsigned active;        /* connections counted against max_connections */
    unsigned refusing;      /* connections being told they are over the limit */
    bool shutting_down;
    TlsCreds *tls_creds;    /* acquired object; set before clients arrive */
    AuthzSimple *tls_authz; /* acquired object or NULL */
};

bool nbd_server_shutting_down(NbdServer *srv)
{
    g_mutex_lock(&srv->lock);
    bool r = srv->shutting_down;
    g_mutex_unlock(&srv->lock);
    return r;
}

void nbd_server_set_tls(NbdServer *srv, TlsCreds *creds, AuthzSimple *authz)
{
    srv->tls_creds = creds;
    srv->tls_authz = authz;
}

bool nbd_server_tls_required(NbdServer *srv)
{
    return srv->tls_creds != NULL;
}

TlsCreds *nbd_server_tls_creds(NbdServer *srv)
{
    return srv->tls_creds;
}

AuthzSimple *nbd_server_tls_authz(NbdServer *srv)
{
    return srv->tls_authz;
}

static char *too_many_connections(NbdServer *srv)
{
    return g_strdup_printf("too many connections: the server allows %u (max-connections)",
                           srv->max_connections);
}

static gpointer connection_main(gpointer opaque)
{
    NbdConn *c = opaque;
    NbdServer *srv = c->srv;
    if (c->refused) {
        g_autofree char *why = too_many_connections(srv);
        g_message("client %s refused: %s", c->peer, why);
        nbd_handshake_refuse(c, why);
    } else {
        g_debug("client %s connected", c->peer);
        bool ok = nbd_handshake(c);
        g_mutex_lock(&srv->lock);
        c->handshake_deadline = 0; /* the watchdog leaves transmission alone */
        bool timed_out = c->timed_out;
        g_mutex_unlock(&srv->lock);
        /* Once per refused client, with the reason it was last given. */
        if (!ok && timed_out)
            g_message("client %s refused: no complete handshake within %" G_GINT64_FORMAT
                      " s (handshake-max-seconds)", c->peer, srv->handshake_us / G_TIME_SPAN_SECOND);
        else if (!ok && c->refusal)
            g_message("client %s refused: %s", c->peer, c->refusal);
        if (ok)
            nbd_transmission(c);
        g_debug("client %s disconnected", c->peer);
    }
    nbd_conn_clear(c);

    g_mutex_lock(&srv->lock);
    /* Closed under the lock so nbd_server_free never shuts down a reused fd. */
    nbd_io_close(&c->io);
    c->done = true;
    if (c->refused)
        srv->refusing--;
    else
        srv->active--;
    g_cond_broadcast(&srv->cond);
    g_mutex_unlock(&srv->lock);
    return NULL;
}

/* Joins and frees finished connections (all of them when `all`). */
static void reap_connections(NbdServer *srv, bool all)
{
    GList *finished = NULL;
    g_mutex_lock(&srv->lock);
    for (GList *l = srv->conns; l;) {
        GList *next = l->next;
        NbdConn *c = l->data;
        if (all || c->done) {
            srv->conns = g_list_remove_link(srv->conns, l);
            finished = g_list_concat(l, finished);
        }
        l = next;
    }
    g_mutex_unlock(&srv->lock);
    for (GList *l = finished; l; l = l->next) {
        NbdConn *c = l->data;
        g_thread_join(c->thread);
        g_free(c->peer);
        g_free(c);
    }
    g_list_free(finished);
}

/* "127.0.0.1:40000", "[::1]:40000" or "pid 123 on /run/blockd.sock". */
static char *peer_name(int fd, const struct sockaddr_storage *ss, socklen_t len, const char *unix_path)
{
    if (ss->ss_family == AF_UNIX) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
            return g_strdup_printf("pid %d on %s", (int)cred.pid, unix_path ? unix_path : "a Unix socket");
        return g_strdup_printf("on %s", unix_path ? unix_path : "a Unix socket");
    }
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo((const struct sockaddr *)ss, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return g_strdup("(unknown address)");
    return ss->ss_family == AF_INET6 ? g_strdup_printf("[%s]:%s", host, port)
                                     : g_strdup_printf("%s:%s", host, port);
}

static void start_connection(NbdServer *srv, int fd, char *peer, int family)
{
    if (family == AF_INET || family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    /* Room for several large replies: fewer wake-ups on bulk reads. */
    int bufsize = SOCKET_BUFFER_SIZE;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
    NbdConn *c = g_new0(NbdConn, 1);
    c->srv = srv;
    c->peer = peer;
    nbd_io_init(&c->io, fd);

    g_mutex_lock(&srv->lock);
    c->refused = srv->max_connections && srv->active >= srv->max_connections;
    if (srv->shutting_down || (c->refused && srv->refusing >= MAX_REFUSING)) {
        bool refused = !srv->shutting_down;
        g_mutex_unlock(&srv->lock);
        if (refused) {
            g_autofree char *why = too_many_connections(srv);
            g_message("client %s refused: %s (closed without a reply)", peer, why);
        }
        close(fd);
        g_free(c->peer);
        g_free(c);
        return;
    }
    if (srv->handshake_us)
        c->handshake_deadline = g_get_monotonic_time() + srv->handshake_us;
    g_autoptr(GError) err = NULL;
    c->thread = g_thread_try_new("nbd-conn", connection_main, c, &err);
    if (!c->thread) {
        g_mutex_unlock(&srv->lock);
        g_warning("client %s: cannot start a connection thread: %s", peer, err->message);
        close(fd);
        g_free(c->peer);
        g_free(c);
        return;
    }
    srv->conns = g_list_prepend(srv->conns, c);
    if (c->refused)
        srv->refusing++;
    else
        srv->active++;
    g_mutex_unlock(&srv->lock);
}

/* Once a second: cuts connections still in the handshake past their
 * deadline (QEMU's handshake-max-seconds), so clients that connect and say
 * nothing, or trickle a huge option, cannot hold a slot or memory. */
static gboolean handshake_watchdog(gpointer opaque)
{
    NbdServer *srv = opaque;
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&srv->lock);
    for (GList *l = srv->conns; l; l = l->next) {
        NbdConn *c = l->data;
        if (!c->done && c->handshake_deadline && now >= c->handshake_deadline) {
            /* The connection's thread logs it, once. */
            c->timed_out = true;
            c->handshake_deadline = 0;
            nbd_io_shutdown(&c->io, SHUT_RDWR);
        }
    }
    g_mutex_unlock(&srv->lock);
    return G_SOURCE_CONTINUE;
}

static gboolean on_incoming(int fd, GIOCondition cond, gpointer opaque)
{
    NbdListener *l = opaque;
    reap_connections(l->srv, false);
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED)
                g_warning("accept: %s", g_strerror(errno));
            break;
        }
        start_connection(l->srv, cfd, peer_name(cfd, &ss, len, l->unix_path), l->family);
    }
    return G_SOURCE_CONTINUE;
}

NbdServer *nbd_server_new(unsigned max_connections, unsigned handshake_max_seconds)
{
    /* sendfile() cannot suppress SIGPIPE per call; a vanished client must
     * not kill the daemon. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);

    NbdServer *srv = g_new0(NbdServer, 1);
    srv->max_connections = max_connections;
    srv->handshake_us = (gint64)handshake_max_seconds * G_TIME_SPAN_SECOND;
    srv->listeners = g_ptr_array_new();
    g_mutex_init(&srv->lock);
    g_cond_init(&srv->cond);
    if (srv->handshake_us)
        srv->watchdog = g_timeout_add_seconds(1, handshake_watchdog, srv);
    return srv;
}

/* Fills in the URI fields from the socket's own address. */
static bool describe_listener(NbdListener *l, GError **errp)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno), "getsockname: %s", g_strerror(errno));
        return false;
    }
    l->family = ss.ss_family;
    if (ss.ss_family == AF_UNIX) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        if (!l->unix_path)
            l->unix_path = g_strndup(sun->sun_path, len - offsetof(struct sockaddr_un, sun_path));
        return true;
    }
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "unsupported socket family %d", ss.ss_family);
        return false;
    }
    char host[NI_MAXHOST], port[NI_MAXSERV];
    int r = getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                        NI_NUMERICHOST | NI_NUMERICSERV);
    if (r != 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "getnameinfo: %s", gai_strerror(r));
        return false;
    }
    l->host = g_strdup(host);
    l->port = (unsigned)atoi(port);
    return true;
}

/* Registers a listening socket (takes ownership of fd, closes it on failure). */
static bool add_listener(NbdServer *srv, int fd, const char *created_path, GError **errp)
{
    NbdListener *l = g_new0(NbdListener, 1);
    l->srv = srv;
    l->fd = fd;
    if (created_path) {
        l->unix_path = g_strdup(created_path);
        l->unlink_path = true;
        unix_path_identify(created_path, &l->path_id);
    }
    if (!g_unix_set_fd_nonblocking(fd, TRUE, errp) || !describe_listener(l, errp)) {
        if (l->unlink_path)
            unix_path_remove_if_ours(l->unix_path, &l->path_id);
        close(fd);
        g_free(l->unix_path);
        g_free(l->host);
        g_free(l);
        return false;
    }
    l->source = g_unix_fd_add(fd, G_IO_IN, on_incoming, l);
    g_ptr_array_add(srv->listeners, l);
    return true;
}

static bool fail_errno(GError **errp, int fd, const char *what, const char *where)
{
    int e = errno;
    g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(e), "%s %s: %s", what, where, g_strerror(e));
    if (fd >= 0)
        close(fd);
    return false;
}

bool nbd_server_listen_unix(NbdServer *srv, const char *path, GError **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sun.sun_path)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "socket path too long: %s", path);
        return false;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail_errno(errp, -1, "cannot create socket for", path);
    if (!unix_path_prepare(path) || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
        return fail_errno(errp, fd, "cannot bind", path);
    if (listen(fd, SOMAXCONN) < 0) {
        unlink(path);
        return fail_errno(errp, fd, "cannot listen on", path);
    }
    return add_listener(srv, fd, path, errp);
}

bool nbd_server_listen_inet(NbdServer *srv, const char *host, const char *port, GError **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *res = NULL;
    int r = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (r != 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "cannot resolve %s:%s: %s",
                    host, port, gai_strerror(r));
        return false;
    }
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
            break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(last_errno), "cannot listen on %s:%s: %s",
                    host, port, g_strerror(last_errno));
        return false;
    }
    return add_listener(srv, fd, NULL, errp);
}

bool nbd_server_listen_fd(NbdServer *srv, int fd, GError **errp)
{
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0 || !accepting) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "fd %d is not a listening socket", fd);
        return false;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return add_listener(srv, fd, NULL, errp);
}

const char *nbd_server_unix_path(NbdServer *srv)
{
    for (unsigned i = 0; i < srv->listeners->len; i++) {
        NbdListener *l = srv->listeners->pdata[i];
        if (l->family == AF_UNIX)
            return l->unix_path;
    }
    return NULL;
}

unsigned nbd_server_port(NbdServer *srv)
{
    for (unsigned i = 0; i < srv->listeners->len; i++) {
        NbdListener *l = srv->listeners->pdata[i];
        if (l->family == AF_INET || l->family == AF_INET6)
            return l->port;
    }
    return 0;
}

GPtrArray *nbd_server_uris(NbdServer *srv, const char *export_name)
{
    GPtrArray *uris = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *name = g_uri_escape_string(export_name ? export_name : "", "/", FALSE);
    const char *scheme = srv->tls_creds ? "nbds" : "nbd";
    for (unsigned i = 0; i < srv->listeners->len; i++) {
        NbdListener *l = srv->listeners->pdata[i];
        if (l->family == AF_UNIX) {
            g_autofree char *path = g_uri_escape_string(l->unix_path, "/", FALSE);
            g_ptr_array_add(uris, g_strdup_printf("%s+unix:///%s?socket=%s", scheme, name, path));
        } else if (l->family == AF_INET6) {
            g_ptr_array_add(uris, g_strdup_printf("%s://[%s]:%u/%s", scheme, l->host, l->port, name));
        } else {
            g_ptr_array_add(uris, g_strdup_printf("%s://%s:%u/%s", scheme, l->host, l->port, name));
        }
    }
    return uris;
}

void nbd_server_free(NbdServer *srv)
{
    if (!srv)
        return;
    if (srv->watchdog)
        g_source_remove(srv->watchdog);
    for (unsigned i = 0; i < srv->listeners->len; i++) {
        NbdListener *l = srv->listeners->pdata[i];
        g_source_remove(l->source);
        close(l->fd);
        if (l->unlink_path)
            unix_path_remove_if_ours(l->unix_path, &l->path_id);
        g_free(l->unix_path);
        g_free(l->host);
        g_free(l);
    }
    g_ptr_array_unref(srv->listeners);

    /* Stop reading new requests, give in-flight ones a moment to be
     * answered, then cut whoever is left. */
    g_mutex_lock(&srv->lock);
    srv->shutting_down = true;
    for (GList *l = srv->conns; l; l = l->next) {
        NbdConn *c = l->data;
        if (!c->done)
            nbd_io_shutdown(&c->io, SHUT_RD);
    }
    gint64 deadline = g_get_monotonic_time() + SHUTDOWN_GRACE_US;
    while (srv->active > 0 && g_cond_wait_until(&srv->cond, &srv->lock, deadline))
        ;
    for (GList *l = srv->conns; l; l = l->next) {
        NbdConn *c = l->data;
        if (!c->done)
            nbd_io_shutdown(&c->io, SHUT_RDWR);
    }
    g_mutex_unlock(&srv->lock);

    reap_connections(srv, true);
    object_release_tls_creds(srv->tls_creds);
    object_release_authz(srv->tls_authz);
    g_mutex_clear(&srv->lock);
    g_cond_clear(&srv->cond);
    g_free(srv);
}

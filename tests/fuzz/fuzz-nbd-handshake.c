/* Fuzz target "nbd-handshake": the NBD server's side of a connection
 * (server/nbd/): fixed newstyle handshake and option haggling, and when
 * the client gets to transmission, the request loop on top of it.
 *
 * Input: everything the client sends, starting with its 4 client flags
 * after the server's greeting.  The server runs nbd_handshake (then
 * nbd_transmission) on one end of a socketpair in this thread, exactly as
 * a connection thread does; a helper thread writes the input into the
 * other end, closes its sending side and reads every reply until the
 * server hangs up.
 *
 * Exports: "mem0", a writable 1 MiB memory node with the dirty bitmap
 * "b0" and qemu:allocation-depth as meta contexts (so base:allocation,
 * qemu:dirty-bitmap:b0 and qemu:allocation-depth all exist), and "null0",
 * a read-only 64 MiB null-co node with a description.  The memory node
 * and the bitmap are cleared after each input.
 *
 * Bit 31 of the client flags (the first 4 bytes; a real client never sets
 * it) picks a second server that requires TLS (PSK credentials): the
 * harness clears the bit and the haggling before STARTTLS runs instead.
 * A STARTTLS there gets the fuzzer's bytes as a TLS handshake, which fails. */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>
#include "bitmaps/dirty-bitmap.h"
#include "block/driver.h"
#include "block/node.h"
#include "server/export.h"
#include "server/keyval.h"
#include "server/nbd/nbd-conn.h"
#include "objects/objects.h"
#include "server/qmp/cmd-object.h"
#include "server/qmp/commands.h"

static NbdServer *server, *tls_server;

typedef struct Peer {
    int fd;
    const uint8_t *data;
    size_t size;
} Peer;

/* The client: sends the input, then reads until the server closes. */
static gpointer peer_main(gpointer opaque)
{
    Peer *p = opaque;
    size_t sent = 0;
    bool sending = true;
    char buf[65536];
    for (;;) {
        if (sending && sent == p->size) {
            shutdown(p->fd, SHUT_WR);
            sending = false;
        }
        struct pollfd pfd = { .fd = p->fd, .events = POLLIN | (sending ? POLLOUT : 0) };
        if (poll(&pfd, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            g_error("fuzz: poll: %s", g_strerror(errno));
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(p->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                return NULL; /* the server hung up */
        }
        if (sending && (pfd.revents & POLLOUT)) {
            ssize_t n = send(p->fd, p->data + sent, p->size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                sending = false; /* the server stopped reading */
        }
    }
}

static int nbd_handshake_one(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        g_error("fuzz: socketpair: %s", g_strerror(errno));
    NbdServer *srv = server;
    g_autofree uint8_t *copy = NULL;
    if (size > 0 && (data[0] & 0x80)) {
        srv = tls_server;
        data = copy = g_memdup2(data, size);
        copy[0] &= 0x7f;
    }
    Peer peer = { .fd = sv[1], .data = data, .size = size };
    GThread *t = g_thread_new("fuzz-nbd-client", peer_main, &peer);

    NbdConn c = { .srv = srv };
    nbd_io_init(&c.io, sv[0]);
    if (nbd_handshake(&c))
        nbd_transmission(&c);
    nbd_conn_clear(&c);
    nbd_io_close(&c.io);

    g_thread_join(t);
    close(sv[1]);

    /* The same starting point for the next input. */
    BlockNode *mem = node_find("mem0");
    node_zero(mem, (uint32_t)node_size(mem), 0, BLOCK_FLAG_MAY_TRIM);
    dirty_bitmap_clear(dirty_bitmap_find(mem, "b0"), NULL);
    return 0;
}

static void add_from_keyval(bool (*add)(JsonObject *, GError **), const char *text)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonObject) opts = keyval_parse(text, &err);
    if (!opts || !add(opts, &err))
        g_error("fuzz: %s: %s", text, err->message);
}

static void nbd_handshake_init(void)
{
    block_drivers_init();
    add_from_keyval(qmp_cli_blockdev, "driver=memory,node-name=mem0,size=1M");
    add_from_keyval(qmp_cli_blockdev, "driver=null-co,node-name=null0,size=67108864");
    g_autoptr(GError) err = NULL;
    if (!dirty_bitmap_create(node_find("mem0"), "b0", 4096, false, false, &err))
        g_error("fuzz: bitmap: %s", err->message);
    add_from_keyval(qmp_cli_export,
                    "type=nbd,id=mem0,node-name=mem0,writable=on,bitmaps.0=b0,allocation-depth=on");
    add_from_keyval(qmp_cli_export, "type=nbd,id=null0,node-name=null0,description=the null export");
    server = nbd_server_new(0, 0); /* no handshake limit: no main loop runs here */

    g_autofree char *psk = g_build_filename(fuzz_tmpdir(), "keys.psk", NULL);
    const char key[] = "fuzz:0123456789abcdef0123456789abcdef\n";
    fuzz_write_file(psk, (const uint8_t *)key, strlen(key));
    g_autofree char *object = g_strdup_printf("qom-type=tls-creds-psk,id=tls0,dir=%s,endpoint=server",
                                              fuzz_tmpdir());
    add_from_keyval(qmp_cli_object, object);
    TlsCreds *creds = object_acquire_tls_creds("tls0", true, &err);
    if (!creds)
        g_error("fuzz: %s", err->message);
    tls_server = nbd_server_new(0, 0);
    nbd_server_set_tls(tls_server, creds, NULL);
}

static void nbd_handshake_cleanup(void)
{
    nbd_server_free(server);
    nbd_server_free(tls_server); /* releases the credentials */
    server = tls_server = NULL;
    export_remove_all();
    qmp_block_forget_all();
    node_graph_shutdown();
    objects_remove_all();
    fuzz_tmpdir_remove();
}

const FuzzTarget fuzz_target_nbd_handshake = {
    .name = "nbd-handshake",
    .init = nbd_handshake_init,
    .one = nbd_handshake_one,
    .cleanup = nbd_handshake_cleanup,
};

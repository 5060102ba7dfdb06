/* The node layer links the nbd driver, which asks the object registry for
 * TLS credentials; these tests create no nbd nodes, so no object exists. */
#include <glib.h>
#include <gio/gio.h>
#include "server/objects/objects.h"
#include "server/objects/tls-creds.h"

TlsCreds *object_acquire_tls_creds(const char *id, bool server, GError **errp)
{
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "No TLS credentials object '%s' in this test", id);
    return NULL;
}

void object_release_tls_creds(TlsCreds *creds) { (void)creds; }
bool tls_creds_is_psk(const TlsCreds *creds) { return false; }
bool tls_creds_verify_peer(const TlsCreds *creds) { return false; }
const char *tls_creds_dir(const TlsCreds *creds) { return NULL; }
const char *tls_creds_psk_file(const TlsCreds *creds) { return NULL; }
const char *tls_creds_username(const TlsCreds *creds) { return NULL; }

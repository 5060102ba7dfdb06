/* User-creatable objects: --object, object-add and object-del.
 *
 * Objects live in one registry by id.  A user (the NBD server, an NBD
 * target node) acquires an object for as long as it needs it; object-del
 * refuses an object that is acquired, so credentials never vanish under a
 * running server (QEMU 7.2 deletes them).  Acquire and release are
 * thread-safe; add and delete run on the main thread. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "qapi/qapi-types.h"
#include "server/objects/authz-simple.h"
#include "server/objects/tls-creds.h"

/* Creates an object from validated object-add options. */
bool object_add(const ObjectOptions *options, GError **errp);
/* Deletes an object; fails if it does not exist or is in use. */
bool object_del(const char *id, GError **errp);
/* Deletes every object (at exit, after their users are gone). */
void objects_remove_all(void);

/* The tls-creds-x509/psk object `id`, marked in use until released;
 * `server` says which endpoint the caller needs. */
TlsCreds *object_acquire_tls_creds(const char *id, bool server, GError **errp);
/* Ends a use started by object_acquire_tls_creds (NULL is ignored). */
void object_release_tls_creds(TlsCreds *creds);
/* The authz-simple object `id`, marked in use until released. */
AuthzSimple *object_acquire_authz(const char *id, GError **errp);
/* Ends a use started by object_acquire_authz (NULL is ignored). */
void object_release_authz(AuthzSimple *authz);
/* The id of an acquired object (for log lines). */
const char *object_id_of(const void *impl);

/* --object: keyval or JSON options checked against the object-add schema. */
bool qmp_cli_object(JsonObject *opts, GError **errp);

/* NBD URIs (nbd://HOST[:PORT]/EXPORT, nbd+tcp://..., nbd+unix:///EXPORT?socket=PATH)
 * as the options of a driver=nbd node; shared by the daemon's drive targets
 * and blockctl. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

/* True if `s` looks like an NBD URI (nbd:, nbd+..., nbds:, nbds+...), not a node name. */
bool nbd_uri_is(const char *s);
/* {"driver": "nbd", "server": {...}, "export"?: ...} for `uri`, or NULL
 * with a message naming the URI (TLS schemes are refused: they need
 * credentials, which a URI cannot carry). */
JsonObject *nbd_uri_to_options(const char *uri, GError **errp);

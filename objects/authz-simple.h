/* authz-simple: allows exactly one identity (QEMU's authz-simple object). */
#pragma once

#include <stdbool.h>
#include <glib.h>

typedef struct AuthzSimple AuthzSimple;

/* An authorizer that allows only `identity`. */
AuthzSimple *authz_simple_new(const char *identity);
/* Frees the authorizer. */
void authz_simple_free(AuthzSimple *authz);
/* True when `identity` (NULL: the peer has none) is the allowed one. */
bool authz_simple_is_allowed(const AuthzSimple *authz, const char *identity);

/* authz-simple (see authz-simple.h). */
#include "objects/authz-simple.h"

#include <string.h>

struct AuthzSimple {
    char *identity;
};

AuthzSimple *authz_simple_new(const char *identity)
{
    AuthzSimple *a = g_new0(AuthzSimple, 1);
    a->identity = g_strdup(identity);
    return a;
}

void authz_simple_free(AuthzSimple *a)
{
    if (!a)
        return;
    g_free(a->identity);
    g_free(a);
}

bool authz_simple_is_allowed(const AuthzSimple *a, const char *identity)
{
    /* Exact match, as QEMU: a distinguished name is compared as a string. */
    return identity && strcmp(a->identity, identity) == 0;
}

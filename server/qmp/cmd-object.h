/* The --object option, through object-add's generated parser. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

/* --object: keyval or JSON options checked against the object-add schema. */
bool qmp_cli_object(JsonObject *opts, GError **errp);

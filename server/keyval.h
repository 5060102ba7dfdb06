/* Parsing of qemu-storage-daemon style option strings. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

/* Parses "key=value,a.b=value" (a literal comma is written ",,") into a JSON
 * object with string leaves, dotted keys becoming nested objects and numeric
 * keys arrays ("l.0=x,l.1.k=y" gives {"l": ["x", {"k": "y"}]}; QEMU's errors
 * for gaps and mixtures); a string starting with '{' is parsed as a JSON
 * object instead.  NULL + error if malformed. */
JsonObject *keyval_parse(const char *str, GError **errp);
/* keyval_parse with QEMU's implied first key: when the first element has
 * no '=', it is the value of `implied_key` ("file,node-name=f0" is
 * "driver=file,node-name=f0" for --blockdev). */
JsonObject *keyval_parse_implied(const char *str, const char *implied_key, GError **errp);

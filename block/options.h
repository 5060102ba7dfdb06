/* Typed, checked access to a node's options.
 *
 * Options arrive as a JSON object: from QMP with typed values, from the
 * command line (keyval) with string leaves and nested objects for dotted
 * keys.  Getters accept both forms, the way QEMU's visitors do, and remember
 * which keys were used so that leftovers can be reported by name. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct BlockOptions BlockOptions;

/* A view over `obj` (a reference is taken); `prefix` names nested keys in errors ("" at top). */
BlockOptions *block_options_new(JsonObject *obj, const char *prefix);
/* Frees the view. */
void block_options_free(BlockOptions *opts);
/* True if `key` is present (does not mark it used). */
bool block_options_has(BlockOptions *opts, const char *key);
/* A string option; NULL when absent (error only if `required`) or of the wrong type. */
const char *block_options_get_str(BlockOptions *opts, const char *key, bool required, GError **errp);
/* A boolean option ("on"/"off"/true/false); `*out` keeps its value when absent. */
bool block_options_get_bool(BlockOptions *opts, const char *key, bool *out, GError **errp);
/* A size option (number or string with k/M/G/T suffix); `*out` unchanged when absent. */
bool block_options_get_size(BlockOptions *opts, const char *key, bool required, uint64_t *out, GError **errp);
/* An unsigned integer option; `*out` unchanged when absent. */
bool block_options_get_uint(BlockOptions *opts, const char *key, uint64_t max, uint64_t *out, GError **errp);
/* A nested object option (for dotted keys); NULL when absent or not an object. */
JsonObject *block_options_get_object(BlockOptions *opts, const char *key);
/* An array option; NULL when absent or not an array. */
JsonArray *block_options_get_array(BlockOptions *opts, const char *key);
/* A signed integer option (JSON integer or decimal/hex text); `*out` unchanged when absent. */
bool block_options_get_int(BlockOptions *opts, const char *key, int64_t *out, GError **errp);
/* True if `key` is present with the JSON value null (marks it used). */
bool block_options_is_null(BlockOptions *opts, const char *key);
/* Marks `key` used without reading it. */
void block_options_mark_used(BlockOptions *opts, const char *key);
/* Fails naming the first option no getter used ("Parameter 'x' is unexpected"). */
bool block_options_check_all_used(BlockOptions *opts, GError **errp);
/* A size that the schema declares as 'int' (QEMU reads it as a size): false
 * with QEMU's "Parameter 'NAME' expects a non-negative number ..." if negative. */
bool block_option_size(const char *name, int64_t value, uint64_t *out, GError **errp);
/* Parses a size string with an optional k/M/G/T/P/E suffix (powers of 1024); false if invalid. */
bool block_parse_size(const char *str, uint64_t *out);

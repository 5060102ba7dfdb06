/* QEMU's "json:{...}" pseudo file names: what QEMU shows (and records in a
 * qcow2 header as backing file) for a node it cannot name by a path or a
 * URI, such as an rbd image opened from its options. */
#pragma once

#include <json-glib/json-glib.h>

/* "json:" and the options as QEMU's qobject_to_json writes a QDict: keys in
 * the dict's iteration order (hash bucket, later insertions first), ", " and
 * ": " between items.  `options` keeps QEMU's insertion order. */
char *block_json_filename(JsonObject *options);

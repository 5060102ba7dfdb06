/* Output for people and for scripts: JSON, sizes, table cells, lines that
 * fit the terminal. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <glib.h>
#include <json-glib/json-glib.h>

/* Prints `node` as indented JSON and a newline on stdout. */
void output_json(JsonNode *node);
/* Prints the command's return value as JSON with --json, else the sentence `what`; frees `ret`; returns 0. */
int output_done(JsonNode *ret, const char *what);
/* The string member `key` of `o`, or "-" when absent or not a string. */
const char *output_str(JsonObject *o, const char *key);
/* The integer member `key` of `o`, or 0 when absent. */
gint64 output_int(JsonObject *o, const char *key);
/* The boolean member `key` of `o`, or false when absent. */
bool output_bool(JsonObject *o, const char *key);
/* `bytes` as "1.5 MiB" in `buf`; returns buf. */
const char *output_size(double bytes, char *buf, size_t len);
/* The width of the terminal on `fd` (TIOCGWINSZ, then stdout's, then $COLUMNS), 0 if none is known. */
int output_columns(int fd);
/* Prints `text` and a newline on `f`; on a terminal, each line longer than the
 * terminal is broken at spaces (the rest indented), so nothing wraps. */
void output_fitted(FILE *f, const char *text);

/* The command line: qemu-storage-daemon style options, kept in order. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "server/log.h"

typedef enum CliKind {
    CLI_BLOCKDEV,
    CLI_NBD_SERVER,
    CLI_EXPORT,
    CLI_CHARDEV,  /* opts is NULL: the monitor code parses text (implied keys) */
    CLI_MONITOR,  /* opts is NULL, as for CLI_CHARDEV */
    CLI_OBJECT,   /* --object [qom-type=]TYPE,id=ID,... */
} CliKind;

typedef struct CliItem {
    CliKind kind;
    char *text;        /* the option as given, for error messages */
    JsonObject *opts;  /* parsed key=value list */
} CliItem;

typedef struct CliConfig {
    GPtrArray *items;  /* CliItem *, in command-line order */
    char *pidfile;
    bool daemonize;
    bool exit_with_parent;
    LogTarget log_target;  /* --log; LOG_TARGET_DEFAULT when not given */
    bool verbose;          /* -v: debug messages too */
    char *run;             /* --run COMMAND, or NULL */
} CliConfig;

/* Parses argv; prints help/version and exits for --help/--version; NULL + error on bad input. */
CliConfig *cli_parse(int argc, char **argv, GError **errp);
/* Frees a parsed configuration. */
void cli_config_free(CliConfig *cfg);
/* The option name of an item ("--blockdev", ...). */
const char *cli_kind_option(CliKind kind);

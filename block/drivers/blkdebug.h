/* The blkdebug driver's rules (QEMU's blkdebug), shared by the driver
 * (blkdebug.c: events, the state machine, injection) and the rule parser
 * (blkdebug-rules.c: inject-error/set-state options and config files). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/debug-event.h"
#include "qapi/qapi-types.h"

typedef enum BlkdebugAction { BLKDEBUG_INJECT_ERROR, BLKDEBUG_SET_STATE } BlkdebugAction;

typedef struct BlkdebugRule {
    BlkdebugEvent event;
    BlkdebugAction action;
    int state;               /* 0: any state */
    /* inject-error */
    uint64_t iotype_mask;    /* 1 << BlkdebugIOType */
    int error;               /* errno; 0 lets the request through */
    bool once;
    int64_t offset;          /* first byte of the sector, -1: any */
    /* set-state */
    int new_state;
} BlkdebugRule;

/* Every rule of a node, per event in QEMU's processing order (the rule
 * added last comes first). */
typedef struct BlkdebugRules {
    GPtrArray *by_event[BLKDBG__MAX]; /* BlkdebugRule *, owned */
} BlkdebugRules;

/* Reads the rules of the config file `opts->config` (if given), then those
 * of the inject-error and set-state options, with QEMU's error texts. */
bool blkdebug_rules_parse(BlkdebugRules *rules, const BlockdevOptionsBlkdebug *opts, GError **errp);
/* Frees every rule. */
void blkdebug_rules_clear(BlkdebugRules *rules);

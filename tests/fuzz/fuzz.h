/* The fuzz targets (docs/fuzzing.md).
 *
 * Each target is a plain function over one input, so the same harness runs
 * under libFuzzer (fuzz-main.c, the fuzz build) and in the regular test
 * suite (fuzz-replay.c replays the seed corpus and every input that once
 * crashed, in the ASan/UBSan build without libFuzzer). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct FuzzTarget {
    const char *name;                  /* directory name under corpus/ and regressions/ */
    void (*init)(void);                /* once, before the first input (may be NULL) */
    /* Runs one input: 0, or -1 when the input is not worth keeping in the
     * corpus (libFuzzer's convention).  Leaves no memory, file or node behind. */
    int (*one)(const uint8_t *data, size_t size);
    void (*cleanup)(void);             /* once, at the end (may be NULL) */
} FuzzTarget;

extern const FuzzTarget fuzz_target_nbd_handshake;
extern const FuzzTarget fuzz_target_nbd_wire;
extern const FuzzTarget fuzz_target_qmp;
extern const FuzzTarget fuzz_target_keyval;
extern const FuzzTarget fuzz_target_qcow2;
extern const FuzzTarget fuzz_target_bitmap_store;
extern const FuzzTarget fuzz_target_backing_name;

/* A private directory for the target's files (created on first use, in
 * $TMPDIR, which run-fuzz.sh points at a scratch directory). */
const char *fuzz_tmpdir(void);
/* Removes fuzz_tmpdir() and everything in it (if it was created). */
void fuzz_tmpdir_remove(void);
/* Replaces the contents of `path` with data (aborts on failure). */
void fuzz_write_file(const char *path, const uint8_t *data, size_t size);
/* Quiet glib logging below warnings (harnesses feed bad input on purpose). */
void fuzz_quiet_logging(void);

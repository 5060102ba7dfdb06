/* libFuzzer entry points for one target, chosen at compile time with
 * -DFUZZ_TARGET=fuzz_target_NAME (tests/fuzz/meson.build). */
#include <stdlib.h>
#include "tests/fuzz/fuzz.h"

static void run_cleanup(void)
{
    if (FUZZ_TARGET.cleanup)
        FUZZ_TARGET.cleanup();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logging();
    if (FUZZ_TARGET.init)
        FUZZ_TARGET.init();
    atexit(run_cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return FUZZ_TARGET.one(data, size);
}

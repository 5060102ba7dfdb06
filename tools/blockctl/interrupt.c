/* Signal flag (see interrupt.h). */
#include "tools/blockctl/interrupt.h"

#include <poll.h>
#include <signal.h>
#include <stddef.h>

static volatile sig_atomic_t caught, count;

static void on_signal(int sig)
{
    if (!caught)
        caught = sig;
    if (count < 100)
        count++;
}

void interrupt_catch(void)
{
    /* No SA_RESTART: a blocking read or poll returns EINTR and the wait loop looks at the flag. */
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int interrupt_signal(void)
{
    return caught;
}

int interrupt_count(void)
{
    return count;
}

void interrupt_sleep(int ms)
{
    if (!caught)
        poll(NULL, 0, ms);
}

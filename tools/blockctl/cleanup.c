/* Registered undo actions (see cleanup.h). */
#include "tools/blockctl/cleanup.h"

#include <glib.h>

typedef struct Action {
    unsigned handle;
    CleanupFunc fn;
    void *data;
    void (*free_data)(void *data);
} Action;

static GArray *actions;  /* of Action, oldest first */
static unsigned last_handle;

static void action_free(Action *a)
{
    if (a->free_data)
        a->free_data(a->data);
}

unsigned cleanup_add(CleanupFunc fn, void *data, void (*free_data)(void *data))
{
    if (!actions)
        actions = g_array_new(FALSE, FALSE, sizeof(Action));
    Action a = { ++last_handle, fn, data, free_data };
    g_array_append_val(actions, a);
    return a.handle;
}

void cleanup_forget(unsigned handle)
{
    for (guint i = 0; actions && i < actions->len; i++) {
        Action *a = &g_array_index(actions, Action, i);
        if (a->handle == handle) {
            action_free(a);
            g_array_remove_index(actions, i);
            return;
        }
    }
}

void cleanup_run(void)
{
    /* An action that dies (it should not) must not run the others twice. */
    while (actions && actions->len) {
        Action a = g_array_index(actions, Action, actions->len - 1);
        g_array_remove_index(actions, actions->len - 1);
        a.fn(a.data);
        action_free(&a);
    }
}

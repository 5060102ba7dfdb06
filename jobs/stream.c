/* The block-stream job (see stream.h): QEMU's stream_run loop over a
 * StreamCopier, its error policy and speed limit, then stream_prepare's
 * relink of the chain. */
#include "jobs/stream.h"
#include "jobs/open-writable.h"

#include <errno.h>
#include <gio/gio.h>

/* Bytes looked at, and copied at most, per step (QEMU's STREAM_CHUNK is
 * 512 KiB; larger steps cost a guest write no more than a longer wait). */
#define STREAM_CHUNK (1u << 20)

typedef struct Stream {
    StreamCopier *copier;
    BlockdevOnError on_error;
    char *backing_file;
    BlockNode *reopened;   /* top, read-only before the job (a reference), or NULL */
} Stream;

static int stream_run(Job *job, GError **errp)
{
    Stream *s = job_opaque(job);
    BlockNode *top = stream_copier_top(s->copier);
    /* QEMU: a node right above its base has nothing to stream (len stays 0). */
    if (chain_backing(top) == stream_copier_base(s->copier))
        return 0;
    uint64_t len = node_size(top);
    int error = 0;
    for (uint64_t offset = 0; offset < len;) {
        if (!job_pause_point(job) || job_is_cancelled(job))
            return -ECANCELED;
        uint64_t chunk = MIN(job_rate_chunk(job, 64 * 1024), STREAM_CHUNK);
        uint64_t done, copied;
        int r = stream_copier_step(s->copier, offset, chunk, &done, &copied);
        if (r < 0) {
            /* QEMU's stream reports every failure as a read (its copy-on-read). */
            BlockErrorAction a = job_handle_error(job, s->on_error, true, -r);
            if (a == BLOCK_ERROR_ACTION_STOP)
                continue;       /* paused; the pause point above waits, then it retries */
            if (!error)
                error = r;
            if (a == BLOCK_ERROR_ACTION_REPORT)
                return r;
            done = done ? done : MIN(chunk, len - offset);   /* ignore: go on past the region */
        }
        offset += done;
        job_progress_add(job, done);
        if (copied)
            job_rate_limit(job, copied);
    }
    /* An error ignored keeps the backing file (QEMU: the job fails). */
    return error;
}

static int stream_prepare(Job *job)
{
    Stream *s = job_opaque(job);
    stream_copier_detach(s->copier);
    g_autoptr(GError) err = NULL;
    if (!stream_copier_relink(s->copier, s->backing_file, &err)) {
        g_warning("stream job '%s': %s", job_id(job), err->message);
        return -EPERM;   /* QEMU's answer when the link cannot change */
    }
    return 0;
}

static void stream_clean(Job *job)
{
    Stream *s = job_opaque(job);
    if (s->copier)
        stream_copier_detach(s->copier);
    /* QEMU's stream_clean: back to read-only, after the relink. */
    if (s->reopened) {
        node_restore_read_only(s->reopened, "stream");
        node_unref(g_steal_pointer(&s->reopened));
    }
}

static void stream_free(Job *job)
{
    Stream *s = job_opaque(job);
    stream_copier_free(s->copier);
    g_assert(!s->reopened);   /* clean ran */
    g_free(s->backing_file);
    g_free(s);
}

static const JobDriver stream_driver = {
    .type = JOB_TYPE_STREAM,
    .is_block_job = true,
    .run = stream_run,
    .prepare = stream_prepare,
    .clean = stream_clean,
    .free = stream_free,
};

/* The rest of stream_job_create, with top writable (`reopened`: it was not). */
static Job *stream_start(const StreamOptions *o, const ChainStreamRange *r, bool reopened, GError **errp)
{
    if (o->filter_node_name && node_find(o->filter_node_name)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS, "Could not create node: Duplicate nodes with node-name='%s'", o->filter_node_name);
        return NULL;
    }
    if (o->speed < 0) {
        g_set_error_literal(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "Parameter 'speed' expects a non-negative value");
        return NULL;
    }
    Stream *s = g_new0(Stream, 1);
    s->on_error = o->on_error;
    s->backing_file = g_strdup(o->backing_file);
    Job *job = job_create(o->job_id, &stream_driver, s, NULL, o->auto_finalize, o->auto_dismiss, errp);
    if (!job) {
        g_free(s->backing_file);
        g_free(s);
        return NULL;
    }
    s->reopened = reopened ? node_ref(r->top) : NULL;   /* stream_clean restores it */
    /* After the job's ID was accepted, as QEMU claims in block_job_create;
     * the job then ends at once (created, null), as there. */
    s->copier = stream_copier_new(r, o->job_id, errp);
    if (!s->copier) {
        job_early_fail(job);   /* restores top's mode, frees s */
        return NULL;
    }
    job_set_speed(job, o->speed, NULL);   /* validated above */
    /* Known before the job runs (QEMU's coroutine gets that far at once). */
    if (chain_backing(r->top) != r->base)
        job_progress_set_total(job, node_size(r->top));
    return job;
}

Job *stream_job_create(const StreamOptions *o, GError **errp)
{
    ChainStreamRange range;
    if (!chain_resolve_stream(o->device, o->base, o->base_node, o->bottom, o->backing_file, &range, errp))
        return NULL;
    /* QEMU's stream_start reopens a read-only top before anything else
     * (no job exists yet when that fails) and back in stream_clean. */
    bool reopen;
    if (!job_open_writable(range.top, &reopen, errp))
        return NULL;
    Job *job = stream_start(o, &range, reopen, errp);
    if (!job && reopen)
        node_restore_read_only(range.top, "stream");
    return job;
}

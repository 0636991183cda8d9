/* The meeting point of the loop thread and the training thread.
 *
 * Two one-way queues of small messages under a mutex. The loop thread is
 * woken by a uv_async_t (which coalesces, so the loop drains everything on
 * each wake-up); the training thread polls its queue between steps, and
 * blocks on a condition variable only when it has nothing else to do. No
 * lock is held across I/O or a training step. */
#ifndef MM_MAILBOX_H
#define MM_MAILBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef enum {
    /* loop -> trainer */
    MB_WANT_SNAPSHOT, /* copy the live parameters for exchange xid (into ptr: a spare buffer, if not NULL) */
    MB_MERGE,         /* x += w * (peer - snap), or x = peer when snap is NULL */
    MB_STOP,          /* finish: checkpoint and exit the thread */
    /* trainer -> loop */
    MB_SNAPSHOT,      /* snapshot for xid at ptr (malloc'd; the loop frees it on RELEASE) */
    MB_MERGE_DONE,
    MB_AVERAGE,       /* time to average with a peer */
    MB_PROGRESS,      /* counters for the progress line and metrics */
    MB_EPOCH,         /* an epoch ended: test accuracy */
    MB_TRAINED,       /* all epochs done */
    MB_EXITED,        /* the thread is about to return */
    MB_DIVERGED,      /* the parameters are no longer finite: fetch them again */
} mb_kind;

typedef struct mb_msg {
    mb_kind kind;
    uint32_t xid;
    float *ptr;
    const float *peer, *snap;
    float weight;
    uint64_t step, samples;
    double loss, rate, acc;
    uint32_t epoch;
    struct mb_msg *next;
} mb_msg;

typedef struct {
    uv_mutex_t mu;
    uv_cond_t cv;
    mb_msg *head, *tail;
    uv_async_t *wake; /* set for the loop's queue */
} mailbox;

int mb_init(mailbox *mb, uv_async_t *wake);
void mb_destroy(mailbox *mb);
/* Post a copy of m; false if out of memory. */
bool mb_post(mailbox *mb, const mb_msg *m);
/* Take the oldest message (caller frees), or NULL. wait: block until one comes. */
mb_msg *mb_take(mailbox *mb, bool wait);

#endif

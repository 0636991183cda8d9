#include "mailbox.h"

#include <stdlib.h>

int mb_init(mailbox *mb, uv_async_t *wake)
{
    mb->head = mb->tail = NULL;
    mb->wake = wake;
    if (uv_mutex_init(&mb->mu) != 0) return -1;
    if (uv_cond_init(&mb->cv) != 0) {
        uv_mutex_destroy(&mb->mu);
        return -1;
    }
    return 0;
}

void mb_destroy(mailbox *mb)
{
    mb_msg *m;
    while ((m = mb_take(mb, false)) != NULL) {
        if (m->kind == MB_SNAPSHOT || m->kind == MB_WANT_SNAPSHOT) free(m->ptr);
        free(m);
    }
    uv_cond_destroy(&mb->cv);
    uv_mutex_destroy(&mb->mu);
}

bool mb_post(mailbox *mb, const mb_msg *src)
{
    mb_msg *m = malloc(sizeof *m);
    if (!m) return false;
    *m = *src;
    m->next = NULL;
    uv_mutex_lock(&mb->mu);
    if (mb->tail)
        mb->tail->next = m;
    else
        mb->head = m;
    mb->tail = m;
    uv_cond_signal(&mb->cv);
    uv_mutex_unlock(&mb->mu);
    if (mb->wake) uv_async_send(mb->wake);
    return true;
}

mb_msg *mb_take(mailbox *mb, bool wait)
{
    uv_mutex_lock(&mb->mu);
    while (wait && !mb->head) uv_cond_wait(&mb->cv, &mb->mu);
    mb_msg *m = mb->head;
    if (m) {
        mb->head = m->next;
        if (!mb->head) mb->tail = NULL;
    }
    uv_mutex_unlock(&mb->mu);
    return m;
}

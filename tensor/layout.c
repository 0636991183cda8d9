#include "layout.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

void mm_layout_init(mm_layout *l, const char *model)
{
    memset(l, 0, sizeof *l);
    snprintf(l->model, sizeof l->model, "%s", model);
}

int mm_layout_add(mm_layout *l, const char *name, uint32_t ndim, const uint32_t *shape)
{
    if (l->n >= MM_LAYOUT_MAX || ndim == 0 || ndim > MM_LAYOUT_MAX_DIM || strlen(name) >= MM_LAYOUT_NAME)
        return -1;
    mm_tensor_info *t = &l->t[l->n];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->count = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] == 0) return -1;
        t->shape[i] = shape[i];
        t->count *= shape[i];
    }
    t->offset = l->total;
    l->total += (t->count + MM_LAYOUT_ALIGN - 1) / MM_LAYOUT_ALIGN * MM_LAYOUT_ALIGN;
    return (int)l->n++;
}

/* Little-endian u64, so the hash does not depend on the host's byte order. */
static void put_u64(crypto_generichash_state *h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(h, b, sizeof b);
}

void mm_layout_finish(mm_layout *l)
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, (const uint8_t *)"murmur-layout-v1", 16, MM_FINGERPRINT_BYTES);
    crypto_generichash_update(&h, (const uint8_t *)l->model, strlen(l->model) + 1);
    put_u64(&h, l->n);
    for (uint32_t i = 0; i < l->n; i++) {
        const mm_tensor_info *t = &l->t[i];
        crypto_generichash_update(&h, (const uint8_t *)t->name, strlen(t->name) + 1);
        put_u64(&h, t->ndim);
        for (uint32_t d = 0; d < t->ndim; d++) put_u64(&h, t->shape[d]);
        put_u64(&h, t->offset);
    }
    put_u64(&h, l->total);
    crypto_generichash_final(&h, l->fingerprint, MM_FINGERPRINT_BYTES);
}

int mm_layout_find(const mm_layout *l, const char *name)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (strcmp(l->t[i].name, name) == 0) return (int)i;
    return -1;
}

void mm_layout_fingerprint_hex(const mm_layout *l, char out[2 * MM_FINGERPRINT_BYTES + 1])
{
    sodium_bin2hex(out, 2 * MM_FINGERPRINT_BYTES + 1, l->fingerprint, MM_FINGERPRINT_BYTES);
}

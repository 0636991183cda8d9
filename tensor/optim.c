#include "optim.h"

#include <math.h>
#include <string.h>

mm_opt_config mm_opt_defaults(void)
{
    return (mm_opt_config){.kind = MM_OPT_SGD,
                           .lr = 0.05f,
                           .momentum = 0.9f,
                           .nesterov = true,
                           .weight_decay = 5e-4f,
                           .beta1 = 0.9f,
                           .beta2 = 0.999f,
                           .eps = 1e-8f,
                           .warmup_steps = 0,
                           .total_steps = 0,
                           .final_frac = 0.0f};
}

int mm_optimizer_init(mm_optimizer *o, const mm_opt_config *cfg, mm_backend *be, size_t n, mm_error *err)
{
    memset(o, 0, sizeof *o);
    if (!(cfg->lr > 0.0f) || !isfinite(cfg->lr))
        return mm_error_set(err, MM_ERR_INVALID, "learning rate must be positive");
    o->cfg = *cfg;
    o->be = be;
    o->n = n;
    o->v = be->ops->alloc(be, n * sizeof(float));
    if (cfg->kind == MM_OPT_ADAMW) o->m = be->ops->alloc(be, n * sizeof(float));
    if (!o->v || (cfg->kind == MM_OPT_ADAMW && !o->m)) {
        mm_optimizer_free(o);
        return mm_error_set(err, MM_ERR_NOMEM, "out of memory for optimizer state");
    }
    return MM_OK;
}

void mm_optimizer_free(mm_optimizer *o)
{
    if (!o->be) return;
    o->be->ops->release(o->be, o->m);
    o->be->ops->release(o->be, o->v);
    memset(o, 0, sizeof *o);
}

float mm_opt_lr(const mm_opt_config *c, uint64_t t)
{
    if (t < c->warmup_steps) return c->lr * (float)(t + 1) / (float)c->warmup_steps;
    if (c->total_steps <= c->warmup_steps) return c->lr;
    double span = (double)(c->total_steps - c->warmup_steps), done = (double)(t - c->warmup_steps) / span;
    if (done > 1.0) done = 1.0;
    double cosine = 0.5 * (1.0 + cos(3.141592653589793 * done));
    return (float)((double)c->lr * ((double)c->final_frac + (1.0 - (double)c->final_frac) * cosine));
}

void mm_optimizer_step(mm_optimizer *o, float *params, const float *grads)
{
    const mm_opt_config *c = &o->cfg;
    mm_opt_step s = {.lr = mm_opt_lr(c, o->t),
                     .momentum = c->momentum,
                     .weight_decay = c->weight_decay,
                     .nesterov = c->nesterov,
                     .beta1 = c->beta1,
                     .beta2 = c->beta2,
                     .eps = c->eps,
                     .grad_scale = 1.0f};
    if (c->clip_norm > 0.0f) {
        double norm = sqrt(o->be->ops->sumsq(o->be, grads, o->n));
        if (norm > (double)c->clip_norm) s.grad_scale = (float)((double)c->clip_norm / norm);
    }
    o->t++;
    if (c->kind == MM_OPT_ADAMW) {
        s.bias1 = 1.0f - powf(c->beta1, (float)o->t);
        s.bias2 = 1.0f - powf(c->beta2, (float)o->t);
        o->be->ops->adamw_step(o->be, params, grads, o->m, o->v, o->n, &s);
    } else {
        o->be->ops->sgd_step(o->be, params, grads, o->v, o->n, &s);
    }
}

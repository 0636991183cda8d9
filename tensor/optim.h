/* Optimizers over the flat parameter vector, and the learning-rate schedule.
 *
 * State (momentum, Adam moments) has the model's layout, so it is one buffer
 * per role and the step is one pass over it. */
#ifndef MM_OPTIM_H
#define MM_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "mm_error.h"

typedef enum { MM_OPT_SGD, MM_OPT_ADAMW } mm_opt_kind;

typedef struct {
    mm_opt_kind kind;
    float lr;           /* peak learning rate */
    float momentum;     /* SGD */
    bool nesterov;      /* SGD */
    float weight_decay; /* SGD: coupled L2; AdamW: decoupled */
    float beta1, beta2, eps;
    /* Schedule: linear warm-up from 0 over warmup_steps, then cosine decay to
     * lr * final_frac at total_steps (0 = constant after warm-up). */
    uint64_t warmup_steps, total_steps;
    float final_frac;
    /* Global-norm gradient clipping: scale the gradient so its L2 norm is at
     * most clip_norm (0 = off). */
    float clip_norm;
} mm_opt_config;

typedef struct {
    mm_opt_config cfg;
    mm_backend *be;
    size_t n;
    float *m, *v; /* SGD uses v only */
    uint64_t t;   /* steps taken */
} mm_optimizer;

/* Defaults: SGD, Nesterov momentum 0.9, the schedule of the default recipe. */
mm_opt_config mm_opt_defaults(void);
int mm_optimizer_init(mm_optimizer *o, const mm_opt_config *cfg, mm_backend *be, size_t n, mm_error *err);
void mm_optimizer_free(mm_optimizer *o);
/* The learning rate for step t (0-based). */
float mm_opt_lr(const mm_opt_config *cfg, uint64_t t);
/* One step: params -= update(grads). */
void mm_optimizer_step(mm_optimizer *o, float *params, const float *grads);

#endif

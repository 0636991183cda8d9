/* The training workload (see workload_train.h): node/'s trainer, one per
 * virtual node, driven step by step in virtual time by sim.c. */
#include "workload_train.h"

#include <stdlib.h>
#include <string.h>

#include "trainer.h"

struct mm_sim_train {
    mm_sim_workload wl;
    uint32_t n, epochs, average_every;
    mm_dataset train, eval; /* views of the caller's datasets (their first examples) */
    mm_trainer *t;
    mm_gossip_tensor tensors[MM_LAYOUT_MAX];
};

static float *wl_params(void *ctx, uint32_t i)
{
    mm_sim_train *w = ctx;
    return w->t[i].model->params;
}

static void wl_step(void *ctx, uint32_t i, mm_sim_step_result *r)
{
    mm_sim_train *w = ctx;
    mm_trainer *t = &w->t[i];
    if (t->epoch >= w->epochs) return; /* r->more stays false */
    if (mm_trainer_step(t) == 0) { /* the epoch ended: node/ evaluates on the test set */
        double loss = 0;
        r->evaluated = true;
        r->acc = mm_trainer_evaluate(t, &w->eval, &loss);
        r->loss = loss;
        r->epoch = t->epoch;
        r->step = t->step;
        if (t->epoch >= w->epochs) return;
    } else {
        r->average = w->average_every && t->step % w->average_every == 0;
    }
    r->more = true;
    r->next_eval = t->loader.pos >= t->loader.count;
}

static double wl_evaluate(void *ctx, uint32_t i, double *loss)
{
    mm_sim_train *w = ctx;
    return mm_trainer_evaluate(&w->t[i], &w->eval, loss);
}

static uint64_t wl_samples(void *ctx, uint32_t i)
{
    mm_sim_train *w = ctx;
    return w->t[i].samples;
}

/* As node/ after a state sync: the network's parameters, momentum restarted. */
static void wl_synced(void *ctx, uint32_t i)
{
    mm_sim_train *w = ctx;
    mm_trainer *t = &w->t[i];
    mm_backend *be = &t->be;
    if (t->opt.v) be->ops->fill(be, t->opt.v, t->model->layout.total, 0.0f);
    if (t->opt.m) be->ops->fill(be, t->opt.m, t->model->layout.total, 0.0f);
}

int mm_sim_train_new(mm_scenario *s, const mm_dataset *train, const mm_dataset *test, mm_sim_train **out,
                     mm_error *err)
{
    *out = NULL;
    if (s->workload == MM_SIM_WL_SURROGATE) return mm_error_set(err, MM_ERR_INVALID, "the surrogate is not trained");
    mm_sim_train *w = calloc(1, sizeof *w);
    if (!w || !(w->t = calloc(s->nodes, sizeof *w->t))) {
        free(w);
        return mm_error_set(err, MM_ERR_NOMEM, "out of memory for %u trainers", s->nodes);
    }
    w->n = s->nodes;
    w->epochs = s->epochs;
    w->average_every = s->average_every;
    w->train = *train;
    if (s->train_samples && s->train_samples < w->train.n) w->train.n = s->train_samples;
    w->eval = *test;
    if (s->eval_samples && s->eval_samples < w->eval.n) w->eval.n = s->eval_samples;
    mm_train_config c;
    memset(&c, 0, sizeof c);
    /* murmur train's defaults for a networked node (cmd_train.c) */
    c.model = mm_sim_workload_names[s->workload];
    c.optimizer = "sgd";
    c.epochs = (int)s->epochs;
    c.batch = (int)s->batch;
    c.threads = 1;
    c.device = "cpu";
    c.seed = s->seed;
    c.lr = (float)s->lr;
    c.momentum = (float)s->momentum;
    c.nesterov = true;
    c.weight_decay = -1.0f;
    c.warmup_epochs = -1.0f;
    c.clip_norm = 5.0f;
    c.nshards = s->nodes;
    c.partition = s->partition ? MM_PART_LABEL : MM_PART_IID;
    c.skew = (float)s->skew;
    int rc = 0;
    for (uint32_t i = 0; i < s->nodes && !rc; i++) {
        c.shard = i;
        rc = mm_trainer_init_data(&w->t[i], &c, &w->train, test, err);
    }
    if (rc) {
        mm_sim_train_free(w);
        return rc;
    }
    if (w->t[0].model->layout.total > (1u << 26)) {
        mm_sim_train_free(w);
        return mm_error_set(err, MM_ERR_INVALID, "model too large");
    }
    s->dim = (uint32_t)w->t[0].model->layout.total;
    const mm_layout *lay = &w->t[0].model->layout;
    for (uint32_t k = 0; k < lay->n; k++) w->tensors[k] = (mm_gossip_tensor){lay->t[k].offset, lay->t[k].count};
    w->wl = (mm_sim_workload){.ctx = w, .dim = s->dim, .params = wl_params, .step = wl_step,
                              .evaluate = wl_evaluate, .synced = wl_synced, .samples = wl_samples,
                              .tensors = w->tensors, .ntensors = lay->n};
    *out = w;
    return 0;
}

const mm_sim_workload *mm_sim_train_workload(const mm_sim_train *w) { return &w->wl; }

void mm_sim_train_free(mm_sim_train *w)
{
    if (!w) return;
    for (uint32_t i = 0; w->t && i < w->n; i++)
        if (w->t[i].model || w->t[i].loader.order) mm_trainer_free(&w->t[i]);
    free(w->t);
    free(w);
}

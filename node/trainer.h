/* The training engine of one node: model, optimizer, data and counters.
 *
 * Used by solo training and (later) by the networked node's training thread.
 * It owns everything it trains with; nothing here does network I/O. */
#ifndef MM_TRAINER_H
#define MM_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "data.h"
#include "model.h"
#include "optim.h"

typedef struct {
    const char *model;    /* "mlp" | "cnn" */
    const char *data_dir;
    const char *optimizer; /* "sgd" | "adamw" */
    int epochs;
    int batch;
    int threads;
    const char *device;   /* "cpu" (or NULL) | "cuda" | "cuda:N" */
    bool tf32;            /* GPU matrix products on TF32 tensor cores (the backend's set_tf32) */
    uint64_t seed;
    float lr;            /* 0: the model's default */
    float momentum;
    float weight_decay;  /* < 0: the optimizer's default */
    float warmup_epochs; /* < 0: the model's default */
    bool nesterov;
    float clip_norm;     /* global gradient-norm bound (0 = off) */
    uint32_t shard, nshards;
    mm_partition partition;
    float skew;          /* label partition: the fraction of the shard from its own classes (0 = 1, all) */
} mm_train_config;

/* The default recipe for a model (learning rate etc.), applied where the
 * config leaves a value at "default". */
void mm_train_config_defaults(mm_train_config *c);

typedef struct {
    mm_train_config cfg;
    mm_backend be;
    mm_model *model;
    mm_optimizer opt;
    mm_dataset train, test;
    mm_loader loader;
    float *xbuf;    /* host staging when the backend is not host-visible */
    int32_t *ybuf;
    /* The training set kept on a backend with gather_u8 (a GPU): a step uploads only its batch's
     * indices, and the device converts the pixels. NULL: batches are converted on the host. */
    uint8_t *d_images, *d_labels;
    uint32_t *d_idx, *h_idx;
    float *d_table;
    float *d_peer, *d_snap; /* mm_trainer_merge's operands on a device backend (allocated at first use) */
    uint64_t step, samples;
    uint64_t loss_examples; /* examples behind model->stats */
    uint32_t epoch; /* completed epochs */
    uint32_t steps_per_epoch;
    bool data_borrowed; /* train and test belong to the caller (mm_trainer_init_data) */
} mm_trainer;

/* Load data (train set sharded as configured, test set), build the model and
 * optimizer, initialise parameters from cfg->seed. */
int mm_trainer_init(mm_trainer *t, const mm_train_config *cfg, mm_error *err);
/* The same over datasets the caller has loaded and keeps until
 * mm_trainer_free (cfg->data_dir is not read): many trainers in one process
 * (the simulator's nodes) share one copy; each holds only its shard's
 * indices. */
int mm_trainer_init_data(mm_trainer *t, const mm_train_config *cfg, const mm_dataset *train,
                         const mm_dataset *test, mm_error *err);
/* A trainer with no data and no optimizer around a bare parameter vector of
 * `params` floats (split into up to MM_LAYOUT_MAX equal tensors, values from
 * seed): for the exchange benchmark, which measures the node's networking
 * with a model of any size. mm_trainer_step must not be called on it. */
int mm_trainer_init_vector(mm_trainer *t, uint64_t params, uint64_t seed, mm_error *err);
void mm_trainer_free(mm_trainer *t);
/* One optimizer step on the next batch; returns its example count, or 0 when
 * the epoch just ended (t->epoch was incremented; the next call starts the
 * next epoch). */
uint32_t mm_trainer_step(mm_trainer *t);
/* Read and reset the loss accumulated since the last call: mean loss per
 * example and the number of examples (0 if none). */
double mm_trainer_take_loss(mm_trainer *t, uint64_t *count);
/* The averaging merge into the live parameters: params += w * (peer - snap), peer and snap host
 * vectors of the layout's total floats. On a device backend both are uploaded to buffers kept for
 * the next merge and the merge runs there. -1 (nothing merged) if device memory for them is short. */
int mm_trainer_merge(mm_trainer *t, const float *peer, const float *snap, float w);
/* Accuracy in [0,1] of the current parameters on ds; mean loss into *loss. */
double mm_trainer_evaluate(mm_trainer *t, const mm_dataset *ds, double *loss);

/* Open the backend named by device ("cpu", "cuda", "cuda:N"). */
int mm_backend_open(mm_backend *be, const char *device, int threads, mm_error *err);
/* A sticky backend failure (a GPU error), as an mm_error; 0 if none. */
int mm_trainer_backend_error(const mm_trainer *t, mm_error *err);

/* Evaluate a model (parameters already in m) on ds. */
double mm_model_evaluate(mm_model *m, const mm_dataset *ds, double *loss);

#endif

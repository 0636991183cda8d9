#include "trainer.h"

#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

#include <stdlib.h>
#include <string.h>

#include "mm_rng.h"

void mm_train_config_defaults(mm_train_config *c)
{
    const bool cnn = c->model && strcmp(c->model, "cnn") == 0;
    if (!c->optimizer) c->optimizer = "sgd";
    const bool adamw = strcmp(c->optimizer, "adamw") == 0;
    if (c->lr <= 0.0f) c->lr = adamw ? 1e-3f : (cnn ? 0.05f : 0.1f);
    if (c->weight_decay < 0.0f) c->weight_decay = adamw ? 0.05f : 5e-4f;
    if (c->warmup_epochs < 0.0f) c->warmup_epochs = 0.5f;
    if (c->batch <= 0) c->batch = 128;
    if (c->nshards == 0) c->nshards = 1;
}

/* Copy bytes to the device in pieces, so that the backend's pinned staging stays small. */
static void upload(mm_backend *be, void *dst, const void *src, size_t bytes)
{
    const size_t piece = 4u << 20;
    for (size_t off = 0; off < bytes; off += piece)
        be->ops->to_device(be, (uint8_t *)dst + off, (const uint8_t *)src + off, bytes - off < piece ? bytes - off : piece);
}

/* Give back the device buffers the trainer holds besides the model's (the held training set, the
 * merge operands) and the host index buffer; every pointer is left NULL. */
static void release_device_data(mm_trainer *t)
{
    void **dev[] = {(void **)&t->d_images, (void **)&t->d_labels, (void **)&t->d_idx,
                    (void **)&t->d_table,  (void **)&t->d_peer,   (void **)&t->d_snap};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) {
        if (*dev[i]) t->be.ops->release(&t->be, *dev[i]);
        *dev[i] = NULL;
    }
    free(t->h_idx);
    t->h_idx = NULL;
}

/* Keep the training set on the device when the backend can gather batches there (a GPU): 47 MB
 * for Fashion-MNIST, and each step then uploads 4 bytes an example instead of 3 KiB converted on
 * the host. Without device memory for it, batches stay on the host path. */
static void trainer_device_data(mm_trainer *t)
{
    mm_backend *be = &t->be;
    if (be->ops->host_visible || !be->ops->gather_u8 || t->train.n == 0) return;
    const size_t pixels = (size_t)t->train.rows * t->train.cols, batch = (size_t)t->cfg.batch;
    t->d_images = be->ops->alloc(be, (size_t)t->train.n * pixels);
    t->d_labels = be->ops->alloc(be, t->train.n);
    t->d_idx = be->ops->alloc(be, batch * sizeof *t->d_idx);
    t->d_table = be->ops->alloc(be, sizeof t->loader.table);
    t->h_idx = malloc(batch * sizeof *t->h_idx);
    if (!t->d_images || !t->d_labels || !t->d_idx || !t->d_table || !t->h_idx) {
        release_device_data(t);
        return;
    }
    upload(be, t->d_images, t->train.images, (size_t)t->train.n * pixels);
    upload(be, t->d_labels, t->train.labels, t->train.n);
    upload(be, t->d_table, t->loader.table, sizeof t->loader.table);
}

/* The rest of mm_trainer_init, once t->train and t->test are in place. */
static int trainer_setup(mm_trainer *t, mm_error *err)
{
    const mm_train_config *c = &t->cfg;
    int rc;
    uint32_t *idx = NULL, count = t->train.n;
    if (c->nshards > 1 &&
        (rc = mm_dataset_shard_mixed(&t->train, c->shard, c->nshards, c->partition, c->skew > 0 ? (double)c->skew : 1.0,
                                     c->seed, &idx, &count, err)))
        goto fail;
    rc = mm_loader_init(&t->loader, &t->train, idx, count, c->seed);
    free(idx);
    if (rc) {
        mm_error_set(err, rc, "out of memory for the data loader");
        goto fail;
    }
    mm_loader_set_normalization(&t->loader, MM_INPUT_MEAN, MM_INPUT_STD);
    if ((rc = mm_backend_open(&t->be, c->device, c->threads, err)) ||
        (rc = mm_model_create(&t->model, c->model, &t->be, c->batch, err)))
        goto fail;
    if (c->tf32 && !t->be.ops->set_tf32) {
        rc = mm_error_set(err, MM_ERR_INVALID, "--tf32: the %s backend has no TF32 (it needs --device cuda:N)",
                          t->be.ops->name);
        goto fail;
    }
    if (c->tf32 && t->be.ops->set_tf32(&t->be, true) != 0) {
        rc = mm_error_set(err, MM_ERR_INVALID, "--tf32: the device refused TF32 math");
        goto fail;
    }
    if ((int)t->train.rows * (int)t->train.cols != t->model->in_size) {
        rc = mm_error_set(err, MM_ERR_MISMATCH, "%s: images are %ux%u, model %s wants %d pixels", c->data_dir,
                          t->train.rows, t->train.cols, c->model, t->model->in_size);
        goto fail;
    }
    t->steps_per_epoch = (count + (uint32_t)c->batch - 1) / (uint32_t)c->batch;
    mm_opt_config oc = mm_opt_defaults();
    oc.kind = strcmp(c->optimizer, "adamw") == 0 ? MM_OPT_ADAMW : MM_OPT_SGD;
    oc.lr = c->lr;
    oc.momentum = c->momentum;
    oc.nesterov = c->nesterov;
    oc.weight_decay = c->weight_decay;
    oc.clip_norm = c->clip_norm;
    oc.warmup_steps = (uint64_t)(c->warmup_epochs * (float)t->steps_per_epoch);
    oc.total_steps = (uint64_t)t->steps_per_epoch * (uint64_t)(c->epochs > 0 ? c->epochs : 0);
    if ((rc = mm_optimizer_init(&t->opt, &oc, &t->be, t->model->layout.total, err))) goto fail;
    if (!t->be.ops->host_visible) {
        t->xbuf = malloc((size_t)c->batch * (size_t)t->model->in_size * sizeof(float));
        t->ybuf = malloc((size_t)c->batch * sizeof(int32_t));
        if (!t->xbuf || !t->ybuf) {
            rc = mm_error_set(err, MM_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    trainer_device_data(t);
    mm_model_init_params(t->model, c->seed);
    return MM_OK;
fail:
    mm_trainer_free(t);
    return rc;
}

int mm_trainer_init(mm_trainer *t, const mm_train_config *cfg, mm_error *err)
{
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    mm_train_config_defaults(&t->cfg);
    int rc;
    if ((rc = mm_dataset_load(&t->train, t->cfg.data_dir, "train", err)) ||
        (rc = mm_dataset_load(&t->test, t->cfg.data_dir, "t10k", err))) {
        mm_trainer_free(t);
        return rc;
    }
    return trainer_setup(t, err);
}

int mm_trainer_init_data(mm_trainer *t, const mm_train_config *cfg, const mm_dataset *train,
                         const mm_dataset *test, mm_error *err)
{
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    mm_train_config_defaults(&t->cfg);
    t->train = *train;
    t->test = *test;
    t->data_borrowed = true;
    return trainer_setup(t, err);
}

int mm_trainer_init_vector(mm_trainer *t, uint64_t params, uint64_t seed, mm_error *err)
{
    memset(t, 0, sizeof *t);
    t->cfg.model = "vector";
    t->cfg.seed = seed;
    t->cfg.nshards = 1;
    if (params == 0 || params > (1ull << 32))
        return mm_error_set(err, MM_ERR_INVALID, "a vector of %llu floats: must be 1 to 2^32",
                            (unsigned long long)params);
    int rc = mm_backend_cpu_init(&t->be, 1);
    if (rc) return mm_error_set(err, rc, "cannot start the CPU backend");
    mm_model *m = calloc(1, sizeof *m);
    if (!m) {
        mm_trainer_free(t);
        return mm_error_set(err, MM_ERR_NOMEM, "out of memory");
    }
    t->model = m;
    m->be = &t->be;
    snprintf(m->name, sizeof m->name, "vector");
    mm_layout_init(&m->layout, "vector");
    /* Equal tensors of at most 2^32-1 floats, so per-tensor checks see a realistic shape. */
    uint64_t nt = params < MM_LAYOUT_MAX ? params : MM_LAYOUT_MAX, per = (params + nt - 1) / nt;
    for (uint64_t i = 0, left = params; left > 0; i++) {
        char name[MM_LAYOUT_NAME];
        uint32_t shape[1] = {(uint32_t)(left < per ? left : per)};
        snprintf(name, sizeof name, "v%llu", (unsigned long long)i);
        if (mm_layout_add(&m->layout, name, 1, shape) < 0) {
            mm_trainer_free(t);
            return mm_error_set(err, MM_ERR_INVALID, "cannot lay out %llu floats", (unsigned long long)params);
        }
        left -= shape[0];
    }
    mm_layout_finish(&m->layout);
    m->params = t->be.ops->alloc(&t->be, m->layout.total * sizeof(float));
    if (!m->params) {
        mm_trainer_free(t);
        return mm_error_set(err, MM_ERR_NOMEM, "out of memory for %llu floats", (unsigned long long)params);
    }
    mm_rng rng;
    mm_rng_seed(&rng, seed);
    t->be.ops->fill(&t->be, m->params, m->layout.total, 0.0f); /* the gaps between tensors stay zero */
    for (uint32_t k = 0; k < m->layout.n; k++)
        for (size_t i = 0; i < m->layout.t[k].count; i++)
            m->params[m->layout.t[k].offset + i] = (float)mm_rng_uniform(&rng) - 0.5f;
    return MM_OK;
}

void mm_trainer_free(mm_trainer *t)
{
    mm_optimizer_free(&t->opt);
    mm_model_free(t->model);
    if (t->be.ops) release_device_data(t);
    free(t->h_idx);
    if (t->be.ops) mm_backend_free(&t->be);
    mm_loader_free(&t->loader);
    if (!t->data_borrowed) {
        mm_dataset_free(&t->train);
        mm_dataset_free(&t->test);
    }
    free(t->xbuf);
    free(t->ybuf);
    memset(t, 0, sizeof *t);
}

/* Draw up to max examples from the loader into the model's input buffers. */
static uint32_t load_batch(mm_model *m, mm_loader *ld, float *xbuf, int32_t *ybuf, uint32_t max)
{
    mm_backend *be = m->be;
    float *x = be->ops->host_visible ? m->x : xbuf;
    int32_t *y = be->ops->host_visible ? m->y : ybuf;
    uint32_t n = mm_loader_next(ld, x, y, max);
    if (n && !be->ops->host_visible) {
        be->ops->to_device(be, m->x, x, (size_t)n * (size_t)m->in_size * sizeof(float));
        be->ops->to_device(be, m->y, y, (size_t)n * sizeof(int32_t));
    }
    return n;
}

uint32_t mm_trainer_step(mm_trainer *t)
{
    uint32_t n;
    if (t->d_images) {
        mm_backend *be = &t->be;
        mm_model *m = t->model;
        n = mm_loader_next_indices(&t->loader, t->h_idx, (uint32_t)t->cfg.batch);
        if (n) {
            be->ops->to_device(be, t->d_idx, t->h_idx, (size_t)n * sizeof *t->h_idx);
            be->ops->gather_u8(be, m->x, m->y, t->d_images, t->d_labels, t->d_idx, n, (uint32_t)m->in_size, t->d_table);
        }
    } else {
        n = load_batch(t->model, &t->loader, t->xbuf, t->ybuf, (uint32_t)t->cfg.batch);
    }
    if (n == 0) {
        t->epoch++;
        return 0;
    }
    mm_model_forward(t->model, (int)n);
    mm_model_backward(t->model, (int)n);
    mm_optimizer_step(&t->opt, t->model->params, t->model->grads);
    t->step++;
    t->samples += n;
    t->loss_examples += n;
    return n;
}

int mm_trainer_merge(mm_trainer *t, const float *peer, const float *snap, float w)
{
    mm_backend *be = &t->be;
    const size_t total = t->model->layout.total;
    if (be->ops->host_visible) {
        be->ops->merge(be, t->model->params, peer, snap, w, total);
        return 0;
    }
    if (!t->d_peer) t->d_peer = be->ops->alloc(be, total * sizeof(float));
    if (!t->d_snap) t->d_snap = be->ops->alloc(be, total * sizeof(float));
    if (!t->d_peer || !t->d_snap) return -1;
    be->ops->to_device(be, t->d_peer, peer, total * sizeof(float));
    be->ops->to_device(be, t->d_snap, snap, total * sizeof(float));
    be->ops->merge(be, t->model->params, t->d_peer, t->d_snap, w, total);
    return 0;
}

double mm_trainer_take_loss(mm_trainer *t, uint64_t *count)
{
    static const float zero[2] = {0.0f, 0.0f};
    float stats[2];
    mm_backend *be = &t->be;
    be->ops->to_host(be, stats, t->model->stats, sizeof stats);
    be->ops->to_device(be, t->model->stats, zero, sizeof zero);
    *count = t->loss_examples;
    double mean = t->loss_examples ? (double)stats[0] / (double)t->loss_examples : 0.0;
    t->loss_examples = 0;
    return mean;
}

double mm_model_evaluate(mm_model *m, const mm_dataset *ds, double *loss)
{
    static const float zero[2] = {0.0f, 0.0f};
    mm_backend *be = m->be;
    float saved[2], stats[2];
    be->ops->to_host(be, saved, m->stats, sizeof saved);
    be->ops->to_device(be, m->stats, zero, sizeof zero);
    mm_loader ld;
    if (mm_loader_init(&ld, ds, NULL, ds->n, 0) != 0) return -1.0;
    mm_loader_set_normalization(&ld, MM_INPUT_MEAN, MM_INPUT_STD);
    float *xbuf = NULL;
    int32_t *ybuf = NULL;
    if (!be->ops->host_visible) {
        xbuf = malloc((size_t)m->max_batch * (size_t)m->in_size * sizeof(float));
        ybuf = malloc((size_t)m->max_batch * sizeof(int32_t));
    }
    uint32_t n, total = 0;
    if (be->ops->host_visible || (xbuf && ybuf))
        while ((n = load_batch(m, &ld, xbuf, ybuf, (uint32_t)m->max_batch)) > 0) {
            mm_model_eval_batch(m, (int)n);
            total += n;
        }
    be->ops->to_host(be, stats, m->stats, sizeof stats);
    be->ops->to_device(be, m->stats, saved, sizeof saved);
    mm_loader_free(&ld);
    free(xbuf);
    free(ybuf);
    if (total == 0) return -1.0;
    if (loss) *loss = (double)stats[0] / total;
    return (double)stats[1] / total;
}

double mm_trainer_evaluate(mm_trainer *t, const mm_dataset *ds, double *loss)
{
    return mm_model_evaluate(t->model, ds, loss);
}

/* The CUDA backend lives in a plug-in next to the executable, loaded only
 * when asked for, so CPU nodes never map the CUDA libraries. */
typedef int (*cuda_init_fn)(mm_backend *, int, char *, size_t);
typedef int (*cuda_error_fn)(const mm_backend *, char *, size_t);
static cuda_error_fn cuda_error;

static void *load_cuda_plugin(char *why, size_t len)
{
    char exe[4096], path[4200];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(why, len, "cannot find the murmur executable");
        return NULL;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(path, sizeof path, "%s/libmurmur_cuda.so", exe);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) snprintf(why, len, "this murmur has no CUDA backend (%s)", dlerror());
    return h;
}

int mm_backend_open(mm_backend *be, const char *device, int threads, mm_error *err)
{
    if (!device || strcmp(device, "cpu") == 0) return mm_backend_cpu_init(be, threads);
    if (strcmp(device, "cpu-staged") == 0) return mm_backend_cpu_staged_init(be, threads);
    if (strcmp(device, "auto") == 0) { /* the first GPU if one is usable, else the CPU, saying why */
        mm_error why = {0};
        if (mm_backend_open(be, "cuda:0", threads, &why) == MM_OK) return MM_OK;
        fprintf(stderr, "murmur: --device auto: no usable GPU (%s); training on the CPU\n", why.msg);
        return mm_backend_cpu_init(be, threads);
    }
    long idx = 0;
    char *end = NULL;
    if (strncmp(device, "cuda", 4) != 0 || (device[4] && device[4] != ':') ||
        (device[4] == ':' &&
         ((idx = strtol(device + 5, &end, 10)), end == device + 5 || *end || idx < 0 || idx > 1024)))
        return mm_error_set(err, MM_ERR_INVALID, "--device '%s': expected cpu, cuda:N, auto or cpu-staged", device);
    char msg[256];
    void *h = load_cuda_plugin(msg, sizeof msg);
    if (!h) return mm_error_set(err, MM_ERR_INVALID, "--device %s: %s", device, msg);
    cuda_init_fn init;
    *(void **)&init = dlsym(h, "mm_backend_cuda_init");
    *(void **)&cuda_error = dlsym(h, "mm_backend_cuda_error");
    if (!init || !cuda_error) return mm_error_set(err, MM_ERR_INVALID, "--device %s: a broken CUDA plug-in", device);
    if (init(be, (int)idx, msg, sizeof msg) != 0) return mm_error_set(err, MM_ERR_INVALID, "--device %s: %s", device, msg);
    return MM_OK;
}

int mm_trainer_backend_error(const mm_trainer *t, mm_error *err)
{
    char msg[256];
    if (cuda_error && t->be.ops && strcmp(t->be.ops->name, "cuda") == 0 && cuda_error(&t->be, msg, sizeof msg) != 0)
        return mm_error_set(err, MM_ERR_STATE, "GPU: %s", msg);
    return MM_OK;
}

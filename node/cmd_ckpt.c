/* murmur eval / murmur inspect: reading checkpoints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "checkpoint.h"
#include "cli.h"
#include "commands.h"
#include "data.h"
#include "model.h"
#include "trainer.h"

/* Read a checkpoint whole: metadata, the model's layout, host parameters. */
static int load_any(const char *cmd, const char *path, mm_ckpt_meta *meta, mm_layout *layout, float **params)
{
    mm_error err = {0};
    *params = NULL;
    if (mm_checkpoint_read_meta(path, meta, &err) != 0 || mm_model_layout(layout, meta->model, &err) != 0) {
        fprintf(stderr, "murmur %s: %s\n", cmd, err.msg);
        return 1;
    }
    *params = calloc(layout->total, sizeof **params);
    if (!*params) {
        fprintf(stderr, "murmur %s: out of memory\n", cmd);
        return 1;
    }
    if (mm_checkpoint_load(path, layout, *params, meta, &err) != 0) {
        fprintf(stderr, "murmur %s: %s\n", cmd, err.msg);
        free(*params);
        *params = NULL;
        return 1;
    }
    return 0;
}

int mm_cmd_eval(int argc, char **argv)
{
    const char *data = MM_DATA_DEFAULT_DIR, *pos[1] = {NULL};
    int threads = 1;
    bool json = false;
    const mm_cli_opt opts[] = {
        {"data", MM_OPT_STRING, &data, "DIR", "Fashion-MNIST directory (default " MM_DATA_DEFAULT_DIR ")", 0, 0, NULL},
        {"threads", MM_OPT_INT, &threads, "T", "compute threads (default 1)", 1, 256, NULL},
        {"json", MM_OPT_FLAG, &json, NULL, "print one JSON line", 0, 0, NULL},
    };
    mm_cli cli = {.command = "eval",
                  .usage = "murmur eval CHECKPOINT [options]",
                  .summary = "Print the test accuracy of the parameters in CHECKPOINT on the test set.",
                  .opts = opts,
                  .nopts = (int)(sizeof opts / sizeof opts[0]),
                  .min_pos = 1,
                  .max_pos = 1,
                  .pos_name = "CHECKPOINT",
                  .pos = pos};
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;

    mm_ckpt_meta meta;
    mm_layout layout;
    float *params;
    if (load_any("eval", pos[0], &meta, &layout, &params)) return 1;
    mm_error err = {0};
    mm_dataset test = {0};
    mm_backend be = {0};
    mm_model *m = NULL;
    int status = 1;
    if (mm_dataset_load(&test, data, "t10k", &err) != 0 || mm_backend_cpu_init(&be, threads) != 0 ||
        mm_model_create(&m, meta.model, &be, 1000, &err) != 0) {
        fprintf(stderr, "murmur eval: %s\n", err.msg);
        goto out;
    }
    be.ops->to_device(&be, m->params, params, layout.total * sizeof *params);
    double loss = 0, acc = mm_model_evaluate(m, &test, &loss);
    if (acc < 0) {
        fprintf(stderr, "murmur eval: the test set is empty\n");
        goto out;
    }
    if (json)
        printf("{\"event\":\"eval\",\"model\":\"%s\",\"test_acc\":%.4f,\"test_loss\":%.4f,\"step\":%llu,\"samples\":%llu}\n",
               meta.model, acc, loss, (unsigned long long)meta.step, (unsigned long long)meta.samples);
    else
        printf("%s: model %s, step %llu: test accuracy %.2f %% (%u examples), test loss %.4f\n", pos[0], meta.model,
               (unsigned long long)meta.step, acc * 100, test.n, loss);
    status = 0;
out:
    mm_model_free(m);
    if (be.ops) mm_backend_free(&be);
    mm_dataset_free(&test);
    free(params);
    return status;
}

int mm_cmd_inspect(int argc, char **argv)
{
    const char *pos[1] = {NULL};
    mm_cli cli = {.command = "inspect",
                  .usage = "murmur inspect CHECKPOINT",
                  .summary = "Print a checkpoint's metadata, its layout and statistics of every tensor.",
                  .opts = NULL,
                  .nopts = 0,
                  .min_pos = 1,
                  .max_pos = 1,
                  .pos_name = "CHECKPOINT",
                  .pos = pos};
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    mm_ckpt_meta meta;
    mm_layout layout;
    float *params;
    if (load_any("inspect", pos[0], &meta, &layout, &params)) return 1;
    size_t count = 0;
    for (uint32_t i = 0; i < layout.n; i++) count += layout.t[i].count;
    printf("%s\n  model %s, format version %u, fingerprint %s\n  step %llu, samples seen %llu, seed %llu\n"
           "  %u tensors, %zu parameters\n\n",
           pos[0], meta.model, meta.version, meta.fingerprint, (unsigned long long)meta.step,
           (unsigned long long)meta.samples, (unsigned long long)meta.seed, layout.n, count);
    printf("  %-14s %-16s %9s %11s %11s %11s %11s %11s\n", "tensor", "shape", "count", "min", "max", "mean", "std",
           "l2 norm");
    for (uint32_t i = 0; i < layout.n; i++) {
        const mm_tensor_info *t = &layout.t[i];
        const float *v = params + t->offset;
        double mn = INFINITY, mx = -INFINITY, sum = 0, sq = 0;
        for (size_t j = 0; j < t->count; j++) {
            double x = (double)v[j];
            mn = x < mn ? x : mn;
            mx = x > mx ? x : mx;
            sum += x;
            sq += x * x;
        }
        double mean = sum / (double)t->count, var = sq / (double)t->count - mean * mean;
        char shape[48];
        int off = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->ndim && off < (int)sizeof shape; d++)
            off += snprintf(shape + off, sizeof shape - (size_t)off, d ? ",%u" : "%u", t->shape[d]);
        if (off < (int)sizeof shape) snprintf(shape + off, sizeof shape - (size_t)off, "]");
        printf("  %-14s %-16s %9zu %11.4g %11.4g %11.4g %11.4g %11.4g\n", t->name, shape, t->count, mn, mx, mean,
               sqrt(var > 0 ? var : 0), sqrt(sq));
    }
    free(params);
    return 0;
}

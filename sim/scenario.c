/* Scenario files (see scenario.h and docs/simulator.md): YAML through
 * libyaml's document API, every key checked, unknown keys refused. */
#include "scenario.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "wire.h"

static const char *const enc_names[] = {"f32", "f16", "bf16", "q8", NULL};
const char *const mm_sim_workload_names[] = {"surrogate", "mlp", "cnn", NULL};
const char *const mm_sim_attack_names[] = {"mix", "signflip", "noise", "constant", "alie", "ipm", "stale", NULL};

const char *mm_encoding_name(uint8_t enc) { return enc < 4 ? enc_names[enc] : "?"; }

void mm_scenario_defaults(mm_scenario *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "scenario");
    s->seed = 1;
    s->nodes = 16;
    s->dim = 16;
    s->duration = 60;
    s->period = 1;
    s->report_every = 1;
    s->encoding = MM_ENC_F32;
    s->nregions = 1;
    snprintf(s->regions[0].name, sizeof s->regions[0].name, "all");
    s->regions[0].nodes = 16;
    s->regions[0].up = s->regions[0].down = 10e6;
    s->latency[0][0] = 0.010;
    s->mean_down = 30;
    s->k = 4;
    s->skew = 1;
    s->epochs = 10;
    s->average_every = 20;
    s->momentum = 0.9;
    s->join_sync = true;
}

uint32_t mm_scenario_region_of(const mm_scenario *s, uint32_t i)
{
    for (uint32_t r = 0; r < s->nregions; r++)
        if (i < s->regions[r].first + s->regions[r].nodes) return r;
    return s->nregions - 1;
}

bool mm_sim_set_has(const mm_scenario *s, const mm_sim_set *set, uint32_t i)
{
    for (uint32_t k = 0; k < set->n; k++) {
        const mm_sim_sel *e = &set->s[k];
        if (e->region >= 0 ? mm_scenario_region_of(s, i) == (uint32_t)e->region : (i >= e->lo && i <= e->hi))
            return true;
    }
    return false;
}

void mm_scenario_list_free(mm_scenario_list *l)
{
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* ------------------------------------------------------------ the loader */

typedef struct {
    yaml_document_t *doc;
    const char *origin;
    mm_error *err;
    const char *sweep_key; /* the key a sweep overrides, or NULL */
    yaml_node_t *sweep_val;
} ld;

__attribute__((format(printf, 3, 4))) static int fail(ld *l, const yaml_node_t *at, const char *fmt, ...)
{
    char text[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (at)
        return mm_error_set(l->err, MM_ERR_INVALID, "%s:%zu: %s", l->origin, at->start_mark.line + 1, text);
    return mm_error_set(l->err, MM_ERR_INVALID, "%s: %s", l->origin, text);
}

static yaml_node_t *node_at(ld *l, int i) { return yaml_document_get_node(l->doc, i); }

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static size_t seq_len(const yaml_node_t *n)
{
    return n && n->type == YAML_SEQUENCE_NODE ? (size_t)(n->data.sequence.items.top - n->data.sequence.items.start)
                                              : 0;
}

static yaml_node_t *seq_item(ld *l, const yaml_node_t *n, size_t i)
{
    return node_at(l, n->data.sequence.items.start[i]);
}

/* The value of key in map (path: where map is, "" at the top), or the
 * sweep's value if the sweep overrides this key. */
static yaml_node_t *get(ld *l, yaml_node_t *map, const char *path, const char *key)
{
    char full[96];
    snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", key);
    if (l->sweep_key && strcmp(l->sweep_key, full) == 0) return l->sweep_val;
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *k = scalar(node_at(l, p->key));
        if (k && strcmp(k, key) == 0) return node_at(l, p->value);
    }
    return NULL;
}

/* map must be a mapping whose keys are all in keys (NULL-terminated), once each. */
static int check_keys(ld *l, yaml_node_t *map, const char *what, const char *const *keys)
{
    if (!map || map->type != YAML_MAPPING_NODE) return fail(l, map, "%s must be a mapping of keys to values", what);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = node_at(l, p->key);
        const char *k = scalar(kn);
        if (!k) return fail(l, kn, "%s: keys must be plain names", what);
        bool known = false;
        for (const char *const *q = keys; *q && !known; q++) known = strcmp(*q, k) == 0;
        if (!known) {
            char list[400] = "";
            for (const char *const *q = keys; *q; q++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", q == keys ? "" : ", ", *q);
            return fail(l, kn, "unknown key '%s' in %s (known: %s)", k, what, list);
        }
        for (yaml_node_pair_t *o = map->data.mapping.pairs.start; o < p; o++)
            if (strcmp(scalar(node_at(l, o->key)) ? scalar(node_at(l, o->key)) : "", k) == 0)
                return fail(l, kn, "key '%s' given twice in %s", k, what);
    }
    return 0;
}

/* A number in [lo, hi] (ex_lo: lo itself excluded). v == NULL: keep *dst. */
static int num(ld *l, yaml_node_t *v, const char *key, double lo, double hi, bool ex_lo, double *dst)
{
    if (!v) return 0;
    const char *s = scalar(v);
    char *end;
    errno = 0;
    double x = s ? strtod(s, &end) : 0;
    if (!s || !*s || errno || *end || !isfinite(x))
        return fail(l, v, "key '%s': '%s' is not a number", key, s ? s : "(not a scalar)");
    if (x < lo || x > hi || (ex_lo && x == lo))
        return fail(l, v, "key '%s': %g is out of range (%s %g .. %g)", key, x, ex_lo ? "above" : "from", lo, hi);
    *dst = x;
    return 0;
}

static int uint_(ld *l, yaml_node_t *v, const char *key, uint64_t lo, uint64_t hi, uint64_t *dst)
{
    if (!v) return 0;
    const char *s = scalar(v);
    char *end;
    errno = 0;
    unsigned long long x = s && *s != '-' ? strtoull(s, &end, 10) : 0;
    if (!s || !*s || *s == '-' || errno || *end)
        return fail(l, v, "key '%s': '%s' is not a non-negative integer", key, s ? s : "(not a scalar)");
    if (x < lo || x > hi)
        return fail(l, v, "key '%s': %llu is out of range (%llu .. %llu)", key, x, (unsigned long long)lo,
                    (unsigned long long)hi);
    *dst = x;
    return 0;
}

static int u32(ld *l, yaml_node_t *v, const char *key, uint32_t lo, uint32_t hi, uint32_t *dst)
{
    uint64_t x = *dst;
    int rc = uint_(l, v, key, lo, hi, &x);
    *dst = (uint32_t)x;
    return rc;
}

static int boolean(ld *l, yaml_node_t *v, const char *key, bool *dst)
{
    if (!v) return 0;
    const char *s = scalar(v);
    if (s && strcmp(s, "true") == 0)
        *dst = true;
    else if (s && strcmp(s, "false") == 0)
        *dst = false;
    else
        return fail(l, v, "key '%s': '%s' is not true or false", key, s ? s : "(not a scalar)");
    return 0;
}

/* One of choices (NULL-terminated): its index in *dst. */
static int choice(ld *l, yaml_node_t *v, const char *key, const char *const *choices, int *dst)
{
    if (!v) return 0;
    const char *s = scalar(v);
    for (int i = 0; s && choices[i]; i++)
        if (strcmp(s, choices[i]) == 0) {
            *dst = i;
            return 0;
        }
    char list[200] = "";
    for (int i = 0; choices[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", choices[i]);
    return fail(l, v, "key '%s': '%s' is not one of %s", key, s ? s : "(not a scalar)", list);
}

static int name_(ld *l, yaml_node_t *v, const char *key, char *dst, size_t cap)
{
    if (!v) return 0;
    const char *s = scalar(v);
    if (!s || !*s || strlen(s) >= cap) return fail(l, v, "key '%s': needs a name of 1 to %zu characters", key, cap - 1);
    for (const char *c = s; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            return fail(l, v, "key '%s': '%s' may not hold quotes, backslashes or control characters", key, s);
    snprintf(dst, cap, "%s", s);
    return 0;
}

/* A file system path (no quotes or control characters: it may be echoed in JSON). */
static int name_path(ld *l, yaml_node_t *v, char *dst, size_t cap)
{
    if (!v) return 0;
    const char *s = scalar(v);
    if (!s || !*s || strlen(s) >= cap) return fail(l, v, "key 'data': needs a path of 1 to %zu characters", cap - 1);
    for (const char *c = s; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            return fail(l, v, "key 'data': '%s' may not hold quotes, backslashes or control characters", s);
    snprintf(dst, cap, "%s", s);
    return 0;
}

/* ------------------------------------------------------------ node sets */

/* One selector: a node index, a range "A-B", or a region's name. */
static int selector(ld *l, const mm_scenario *s, yaml_node_t *v, const char *key, mm_sim_sel *out)
{
    const char *t = scalar(v);
    if (!t) return fail(l, v, "key '%s': a node set lists node indices, ranges \"A-B\" or region names", key);
    for (uint32_t r = 0; r < s->nregions; r++)
        if (strcmp(t, s->regions[r].name) == 0) {
            *out = (mm_sim_sel){(int32_t)r, 0, 0};
            return 0;
        }
    unsigned long a, b;
    int used = 0;
    if (sscanf(t, "%lu-%lu%n", &a, &b, &used) == 2 && t[used] == '\0' && t[0] >= '0' && t[0] <= '9') {
    } else if (sscanf(t, "%lu%n", &a, &used) == 1 && t[used] == '\0' && t[0] >= '0' && t[0] <= '9') {
        b = a;
    } else {
        return fail(l, v, "key '%s': '%s' is neither a node index, a range A-B nor a region", key, t);
    }
    if (a > b || b >= s->nodes)
        return fail(l, v, "key '%s': nodes %lu-%lu are not within 0-%u", key, a, b, s->nodes - 1);
    *out = (mm_sim_sel){-1, (uint32_t)a, (uint32_t)b};
    return 0;
}

static int node_set(ld *l, const mm_scenario *s, yaml_node_t *v, const char *key, mm_sim_set *out)
{
    memset(out, 0, sizeof *out);
    if (v && v->type == YAML_SCALAR_NODE) {
        out->n = 1;
        return selector(l, s, v, key, &out->s[0]);
    }
    size_t n = seq_len(v);
    if (n == 0 || n > MM_SIM_MAX_SEL)
        return fail(l, v, "key '%s': a node set is a selector or a list of 1 to %d selectors", key, MM_SIM_MAX_SEL);
    for (size_t i = 0; i < n; i++)
        if (selector(l, s, seq_item(l, v, i), key, &out->s[i]) != 0) return MM_ERR_INVALID;
    out->n = (uint32_t)n;
    return 0;
}

/* ------------------------------------------------------------ sections */

static int load_regions(ld *l, yaml_node_t *root, mm_scenario *s, double step_ms, double up, double down)
{
    yaml_node_t *v = get(l, root, "", "regions");
    uint32_t total = s->nodes;
    bool nodes_given = get(l, root, "", "nodes") != NULL;
    if (!v) {
        s->nregions = 1;
        s->regions[0] = (mm_sim_region){.nodes = total, .up = up, .down = down, .step = step_ms / 1e3,
                                        .train_delay = s->train_delay};
        snprintf(s->regions[0].name, sizeof s->regions[0].name, "all");
        return 0;
    }
    size_t n = seq_len(v);
    if (n == 0 || n > MM_SIM_MAX_REGIONS)
        return fail(l, v, "key 'regions': a list of 1 to %d regions ({name, nodes, ...})", MM_SIM_MAX_REGIONS);
    static const char *const keys[] = {"name", "nodes", "up", "down", "step_ms", "train_delay", NULL};
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *r = seq_item(l, v, i);
        mm_sim_region *g = &s->regions[i];
        double rs = step_ms, ru = up / 1e6, rd = down / 1e6, rt = s->train_delay;
        *g = (mm_sim_region){0};
        if (check_keys(l, r, "a region", keys) != 0) return MM_ERR_INVALID;
        if (!get(l, r, "regions", "name") || !get(l, r, "regions", "nodes"))
            return fail(l, r, "key 'regions': every region needs a name and nodes");
        if (name_(l, get(l, r, "regions", "name"), "regions.name", g->name, sizeof g->name) ||
            u32(l, get(l, r, "regions", "nodes"), "regions.nodes", 1, MM_SIM_MAX_NODES, &g->nodes) ||
            num(l, get(l, r, "regions", "up"), "regions.up", 0, 1e6, true, &ru) ||
            num(l, get(l, r, "regions", "down"), "regions.down", 0, 1e6, true, &rd) ||
            num(l, get(l, r, "regions", "step_ms"), "regions.step_ms", 0, 1e6, false, &rs) ||
            num(l, get(l, r, "regions", "train_delay"), "regions.train_delay", 0, 1e7, false, &rt))
            return MM_ERR_INVALID;
        for (size_t k = 0; k < i; k++)
            if (strcmp(s->regions[k].name, g->name) == 0)
                return fail(l, r, "key 'regions': two regions are named '%s'", g->name);
        g->up = ru * 1e6;
        g->down = rd * 1e6;
        g->step = rs / 1e3;
        g->train_delay = rt;
        g->first = (uint32_t)sum;
        sum += g->nodes;
    }
    if (sum > MM_SIM_MAX_NODES)
        return fail(l, v, "key 'regions': %llu nodes in all, at most %u", (unsigned long long)sum, MM_SIM_MAX_NODES);
    if (nodes_given && sum != total)
        return fail(l, v, "key 'nodes' says %u but the regions hold %llu nodes", total, (unsigned long long)sum);
    s->nregions = (uint32_t)n;
    s->nodes = (uint32_t)sum;
    return 0;
}

static int load_latency(ld *l, yaml_node_t *root, mm_scenario *s)
{
    yaml_node_t *v = get(l, root, "", "latency");
    if (!v) {
        for (uint32_t a = 0; a < s->nregions; a++)
            for (uint32_t b = 0; b < s->nregions; b++) s->latency[a][b] = 0.010;
        return 0;
    }
    if (v->type == YAML_SCALAR_NODE) {
        double ms = 0;
        if (num(l, v, "latency", 0, 1e6, false, &ms)) return MM_ERR_INVALID;
        for (uint32_t a = 0; a < s->nregions; a++)
            for (uint32_t b = 0; b < s->nregions; b++) s->latency[a][b] = ms / 1e3;
        return 0;
    }
    if (seq_len(v) != s->nregions)
        return fail(l, v, "key 'latency': a number (ms) or a %u x %u matrix (one row per region)", s->nregions,
                    s->nregions);
    for (uint32_t a = 0; a < s->nregions; a++) {
        yaml_node_t *row = seq_item(l, v, a);
        if (seq_len(row) != s->nregions)
            return fail(l, row, "key 'latency': row %u needs %u entries (one per region)", a + 1, s->nregions);
        for (uint32_t b = 0; b < s->nregions; b++) {
            double ms = 0;
            if (num(l, seq_item(l, row, b), "latency", 0, 1e6, false, &ms)) return MM_ERR_INVALID;
            s->latency[a][b] = ms / 1e3;
        }
    }
    return 0;
}

static int load_partitions(ld *l, yaml_node_t *root, mm_scenario *s)
{
    yaml_node_t *v = get(l, root, "", "partitions");
    if (!v) return 0;
    size_t n = seq_len(v);
    if (v->type != YAML_SEQUENCE_NODE || n > MM_SIM_MAX_PARTITIONS)
        return fail(l, v, "key 'partitions': a list of at most %d {at, heal, groups}", MM_SIM_MAX_PARTITIONS);
    static const char *const keys[] = {"at", "heal", "groups", NULL};
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *p = seq_item(l, v, i);
        mm_sim_partition *q = &s->partitions[i];
        memset(q, 0, sizeof *q);
        if (check_keys(l, p, "a partition", keys) != 0) return MM_ERR_INVALID;
        yaml_node_t *at = get(l, p, "partitions", "at"), *heal = get(l, p, "partitions", "heal"),
                    *groups = get(l, p, "partitions", "groups");
        if (!at || !heal || !groups) return fail(l, p, "key 'partitions': every partition needs at, heal and groups");
        if (num(l, at, "partitions.at", 0, 1e9, false, &q->at) ||
            num(l, heal, "partitions.heal", 0, 1e9, false, &q->heal))
            return MM_ERR_INVALID;
        if (q->heal <= q->at) return fail(l, heal, "key 'partitions.heal': %g is not after at (%g)", q->heal, q->at);
        size_t ng = seq_len(groups);
        if (ng < 2 || ng > MM_SIM_MAX_GROUPS)
            return fail(l, groups, "key 'partitions.groups': a list of 2 to %d node sets", MM_SIM_MAX_GROUPS);
        for (size_t g = 0; g < ng; g++)
            if (node_set(l, s, seq_item(l, groups, g), "partitions.groups", &q->groups[g]) != 0) return MM_ERR_INVALID;
        q->ngroups = (uint32_t)ng;
    }
    s->npartitions = (uint32_t)n;
    return 0;
}

static int load_crashes(ld *l, yaml_node_t *root, mm_scenario *s)
{
    yaml_node_t *v = get(l, root, "", "crashes");
    if (!v) return 0;
    size_t n = seq_len(v);
    if (v->type != YAML_SEQUENCE_NODE || n > MM_SIM_MAX_CRASHES)
        return fail(l, v, "key 'crashes': a list of at most %d {at, nodes, down}", MM_SIM_MAX_CRASHES);
    static const char *const keys[] = {"at", "nodes", "down", NULL};
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *c = seq_item(l, v, i);
        mm_sim_crash *q = &s->crashes[i];
        memset(q, 0, sizeof *q);
        q->down = -1;
        if (check_keys(l, c, "a crash", keys) != 0) return MM_ERR_INVALID;
        yaml_node_t *at = get(l, c, "crashes", "at"), *nodes = get(l, c, "crashes", "nodes");
        if (!at || !nodes) return fail(l, c, "key 'crashes': every crash needs at and nodes");
        if (num(l, at, "crashes.at", 0, 1e9, false, &q->at) ||
            num(l, get(l, c, "crashes", "down"), "crashes.down", 0, 1e9, false, &q->down) ||
            node_set(l, s, nodes, "crashes.nodes", &q->nodes))
            return MM_ERR_INVALID;
    }
    s->ncrashes = (uint32_t)n;
    return 0;
}

static const char *const top_keys[] = {"name", "seed", "nodes", "dim", "duration", "period", "encoding", "topology",
                                       "regions", "latency", "jitter", "bandwidth", "loss", "partitions", "churn",
                                       "crashes", "report_every", "start_spread", "step_ms", "clip", "bootstrap",
                                       "warmup", "quiesce", "sweep", "k", "campaign", "workload", "partition",
                                       "skew", "epochs", "batch", "lr", "momentum", "average_every",
                                       "train_samples", "eval_samples", "eval_every", "eval_ms", "train_delay",
                                       "join_sync", "data", "sybil", "view_per_prefix", "attack", "eclipse",
                                       "view_anchors", NULL};

/* Keys a sweep may vary. */
static const char *const sweep_keys[] = {"seed", "nodes", "dim", "duration", "period", "encoding", "latency",
                                         "jitter", "loss", "report_every", "start_spread", "step_ms", "clip",
                                         "bootstrap", "warmup", "quiesce", "bandwidth.up", "bandwidth.down",
                                         "churn.crash_rate", "churn.mean_down", "partition", "skew", "lr",
                                         "batch", "average_every", "train_delay", NULL};

/* One scenario from the document's root (with the sweep's override, if any). */
static int load_one(ld *l, yaml_node_t *root, mm_scenario *s)
{
    mm_scenario_defaults(s);
    if (check_keys(l, root, "the scenario", top_keys) != 0) return MM_ERR_INVALID;
    uint64_t seed = s->seed;
    double jitter = 0, up = 10, down = 10, step_ms = 0, report = -1;
    int enc = MM_ENC_F32, boot = 0, topo = 0;
    static const char *const topologies[] = {"protocol", "complete", "ring", "torus", "kregular",
                                                          "exponential", NULL}, *const boots[] = {"first", "random", NULL};
    if (name_(l, get(l, root, "", "name"), "name", s->name, sizeof s->name) ||
        uint_(l, get(l, root, "", "seed"), "seed", 0, UINT64_MAX, &seed) ||
        u32(l, get(l, root, "", "nodes"), "nodes", 1, MM_SIM_MAX_NODES, &s->nodes) ||
        u32(l, get(l, root, "", "dim"), "dim", 1, 1u << 26, &s->dim) ||
        num(l, get(l, root, "", "duration"), "duration", 0, 1e7, true, &s->duration) ||
        num(l, get(l, root, "", "period"), "period", 0, 1e6, true, &s->period) ||
        choice(l, get(l, root, "", "encoding"), "encoding", enc_names, &enc) ||
        choice(l, get(l, root, "", "topology"), "topology", topologies, &topo) ||
        u32(l, get(l, root, "", "k"), "k", 2, 64, &s->k) ||
        u32(l, get(l, root, "", "campaign"), "campaign", 1, 100000000, &s->campaign) ||
        num(l, get(l, root, "", "jitter"), "jitter", 0, 1e6, false, &jitter) ||
        num(l, get(l, root, "", "loss"), "loss", 0, 1, false, &s->loss) ||
        num(l, get(l, root, "", "report_every"), "report_every", 0, 1e7, true, &report) ||
        num(l, get(l, root, "", "start_spread"), "start_spread", 0, 1e7, false, &s->start_spread) ||
        num(l, get(l, root, "", "warmup"), "warmup", 0, 1e7, false, &s->warmup) ||
        num(l, get(l, root, "", "quiesce"), "quiesce", 0, 1e7, false, &s->quiesce) ||
        num(l, get(l, root, "", "step_ms"), "step_ms", 0, 1e6, false, &step_ms) ||
        boolean(l, get(l, root, "", "clip"), "clip", &s->clip) ||
        choice(l, get(l, root, "", "bootstrap"), "bootstrap", boots, &boot))
        return MM_ERR_INVALID;
    int wl = 0, part = 0;
    double eval_ms = 0;
    static const char *const parts[] = {"iid", "label", NULL};
    if (choice(l, get(l, root, "", "workload"), "workload", mm_sim_workload_names, &wl) ||
        choice(l, get(l, root, "", "partition"), "partition", parts, &part) ||
        num(l, get(l, root, "", "skew"), "skew", 0, 1, true, &s->skew) ||
        u32(l, get(l, root, "", "epochs"), "epochs", 1, 10000, &s->epochs) ||
        u32(l, get(l, root, "", "batch"), "batch", 1, 65536, &s->batch) ||
        num(l, get(l, root, "", "lr"), "lr", 0, 100, true, &s->lr) ||
        num(l, get(l, root, "", "momentum"), "momentum", 0, 0.9999, false, &s->momentum) ||
        u32(l, get(l, root, "", "average_every"), "average_every", 0, 1000000, &s->average_every) ||
        u32(l, get(l, root, "", "train_samples"), "train_samples", 1, 10000000, &s->train_samples) ||
        u32(l, get(l, root, "", "eval_samples"), "eval_samples", 1, 10000000, &s->eval_samples) ||
        num(l, get(l, root, "", "eval_every"), "eval_every", 0, 1e7, false, &s->eval_every) ||
        num(l, get(l, root, "", "eval_ms"), "eval_ms", 0, 1e7, false, &eval_ms) ||
        num(l, get(l, root, "", "train_delay"), "train_delay", 0, 1e7, false, &s->train_delay) ||
        boolean(l, get(l, root, "", "join_sync"), "join_sync", &s->join_sync) ||
        u32(l, get(l, root, "", "view_per_prefix"), "view_per_prefix", 1, 32, &s->view_per_prefix) ||
        name_path(l, get(l, root, "", "data"), s->data, sizeof s->data))
        return MM_ERR_INVALID;
    s->workload = (uint8_t)wl;
    s->partition = (uint8_t)part;
    if (wl != MM_SIM_WL_SURROGATE && !get(l, root, "", "clip")) s->clip = true; /* node/'s default */
    s->eval_time = eval_ms / 1e3;
    if (s->loss >= 1) return fail(l, get(l, root, "", "loss"), "key 'loss': must be below 1");
    if (s->k % 2) return fail(l, get(l, root, "", "k"), "key 'k': must be even");
    s->topology = (uint8_t)topo;
    yaml_node_t *bw = get(l, root, "", "bandwidth");
    static const char *const bw_keys[] = {"up", "down", NULL};
    if (bw && check_keys(l, bw, "bandwidth", bw_keys) != 0) return MM_ERR_INVALID;
    if (num(l, get(l, bw, "bandwidth", "up"), "bandwidth.up", 0, 1e6, true, &up) ||
        num(l, get(l, bw, "bandwidth", "down"), "bandwidth.down", 0, 1e6, true, &down))
        return MM_ERR_INVALID;
    yaml_node_t *churn = get(l, root, "", "churn");
    static const char *const churn_keys[] = {"crash_rate", "mean_down", NULL};
    if (churn && check_keys(l, churn, "churn", churn_keys) != 0) return MM_ERR_INVALID;
    if (num(l, get(l, churn, "churn", "crash_rate"), "churn.crash_rate", 0, 1e3, false, &s->crash_rate) ||
        num(l, get(l, churn, "churn", "mean_down"), "churn.mean_down", 0, 1e7, true, &s->mean_down))
        return MM_ERR_INVALID;
    s->seed = seed;
    s->encoding = (uint8_t)enc;
    s->bootstrap = (mm_sim_boot)boot;
    s->jitter = jitter / 1e3;
    s->report_every = report > 0 ? report : s->period;
    if (load_regions(l, root, s, step_ms, up * 1e6, down * 1e6) || load_latency(l, root, s) ||
        load_partitions(l, root, s) || load_crashes(l, root, s))
        return MM_ERR_INVALID;
    yaml_node_t *at = get(l, root, "", "attack");
    if (at) {
        static const char *const keys[] = {"kind", "nodes", "from", "scale", NULL};
        int kind = 0;
        if (check_keys(l, at, "attack", keys) != 0) return MM_ERR_INVALID;
        if (!get(l, at, "attack", "kind") || !get(l, at, "attack", "nodes"))
            return fail(l, at, "key 'attack': needs kind and nodes");
        if (choice(l, get(l, at, "attack", "kind"), "attack.kind", mm_sim_attack_names, &kind) ||
            node_set(l, s, get(l, at, "attack", "nodes"), "attack.nodes", &s->byz) ||
            num(l, get(l, at, "attack", "from"), "attack.from", 0, 1e7, false, &s->byz_from) ||
            num(l, get(l, at, "attack", "scale"), "attack.scale", 0, 1e12, true, &s->attack_scale))
            return MM_ERR_INVALID;
        s->attack = (uint8_t)kind;
        s->byz_until = 1e9; /* to the end (the longest duration is 1e7 s) */
    }
    yaml_node_t *ec = get(l, root, "", "eclipse");
    s->eclipse_target = -1;
    if (ec) {
        static const char *const keys[] = {"colluders", "target", NULL};
        uint32_t target = 0;
        if (check_keys(l, ec, "eclipse", keys) != 0) return MM_ERR_INVALID;
        if (!get(l, ec, "eclipse", "colluders") || !get(l, ec, "eclipse", "target"))
            return fail(l, ec, "key 'eclipse': needs colluders and target");
        if (node_set(l, s, get(l, ec, "eclipse", "colluders"), "eclipse.colluders", &s->colluders) ||
            u32(l, get(l, ec, "eclipse", "target"), "eclipse.target", 0, s->nodes - 1, &target))
            return MM_ERR_INVALID;
        if (mm_sim_set_has(s, &s->colluders, target))
            return fail(l, ec, "key 'eclipse': the target cannot be one of the colluders");
        s->eclipse_target = target;
    }
    bool anchors = true;
    if (boolean(l, get(l, root, "", "view_anchors"), "view_anchors", &anchors)) return MM_ERR_INVALID;
    s->no_view_anchors = !anchors;
    yaml_node_t *sy = get(l, root, "", "sybil");
    if (sy && node_set(l, s, sy, "sybil", &s->sybil)) return MM_ERR_INVALID;
    if (s->workload != MM_SIM_WL_SURROGATE) {
        if (s->topology != MM_SIM_TOPO_PROTOCOL)
            return fail(l, get(l, root, "", "topology"), "key 'topology': a training workload runs the protocol");
        for (uint32_t r = 0; r < s->nregions; r++)
            if (!(s->regions[r].step > 0))
                return fail(l, get(l, root, "", "workload"),
                            "key 'workload': training needs step_ms > 0 (the virtual time of a step) in every region");
        if (s->nodes > 1000)
            return fail(l, get(l, root, "", "nodes"), "key 'nodes': a training workload runs at most 1000 nodes");
        if (s->campaign)
            return fail(l, get(l, root, "", "campaign"), "key 'campaign': fault campaigns run the surrogate, not training");
    }
    return 0;
}

/* One YAML document: a scenario, or a sweep of one over a key's values. */
static int load_document(ld *l, yaml_node_t *root, int index, mm_scenario_list *out)
{
    yaml_node_t *sweep = root && root->type == YAML_MAPPING_NODE ? get(l, root, "", "sweep") : NULL;
    yaml_node_t *values = NULL;
    const char *key = NULL;
    size_t nruns = 1;
    if (sweep) {
        static const char *const keys[] = {"key", "values", NULL};
        if (check_keys(l, sweep, "sweep", keys) != 0) return MM_ERR_INVALID;
        key = scalar(get(l, sweep, "sweep", "key"));
        values = get(l, sweep, "sweep", "values");
        bool ok = false;
        for (const char *const *k = sweep_keys; key && *k && !ok; k++) ok = strcmp(*k, key) == 0;
        if (!ok) {
            char list[400] = "";
            for (const char *const *k = sweep_keys; *k; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k == sweep_keys ? "" : ", ", *k);
            return fail(l, sweep, "key 'sweep.key': '%s' cannot be swept (one of: %s)", key ? key : "", list);
        }
        nruns = seq_len(values);
        if (nruns == 0 || nruns > 10000) return fail(l, sweep, "key 'sweep.values': a list of 1 to 10000 values");
    }
    mm_scenario *v = realloc(out->v, (out->n + nruns) * sizeof *v);
    if (!v) return mm_error_set(l->err, MM_ERR_NOMEM, "out of memory");
    out->v = v;
    for (size_t i = 0; i < nruns; i++) {
        mm_scenario *s = &out->v[out->n];
        l->sweep_key = key;
        l->sweep_val = values ? seq_item(l, values, i) : NULL;
        int rc = load_one(l, root, s);
        l->sweep_key = NULL;
        if (rc) return rc;
        if (!get(l, root, "", "name")) { /* default: the file's name, and the document's number if not the first */
            const char *base = strrchr(l->origin, '/');
            base = base ? base + 1 : l->origin;
            size_t len = strcspn(base, ".");
            if (len > 40) len = 40;
            if (index)
                snprintf(s->name, sizeof s->name, "%.*s-%d", (int)len, base, index + 1);
            else
                snprintf(s->name, sizeof s->name, "%.*s", (int)len, base);
            for (char *c = s->name; *c; c++) /* it goes into JSON strings */
                if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = '_';
        }
        if (key) {
            const char *val = scalar(l->sweep_val);
            snprintf(s->sweep_key, sizeof s->sweep_key, "%s", key);
            snprintf(s->sweep_value, sizeof s->sweep_value, "%s", val ? val : "(list)");
            for (char *c = s->sweep_value; *c; c++)
                if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = '_';
        }
        s->run = (int)out->n;
        out->n++;
    }
    return 0;
}

int mm_scenario_parse(const char *text, size_t len, const char *origin, mm_scenario_list *out, mm_error *err)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return mm_error_set(err, MM_ERR_NOMEM, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    size_t first = out->n;
    int rc = 0;
    for (int index = 0;; index++) {
        yaml_document_t doc;
        if (!yaml_parser_load(&parser, &doc)) {
            rc = mm_error_set(err, MM_ERR_FORMAT, "%s:%zu: not valid YAML: %s%s%s", origin,
                              parser.problem_mark.line + 1, parser.problem ? parser.problem : "parse error",
                              parser.context ? " " : "", parser.context ? parser.context : "");
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) { /* the end of the stream */
            yaml_document_delete(&doc);
            break;
        }
        ld l = {.doc = &doc, .origin = origin, .err = err};
        rc = load_document(&l, root, index, out);
        yaml_document_delete(&doc);
        if (rc) break;
    }
    yaml_parser_delete(&parser);
    if (!rc && out->n == first) rc = mm_error_set(err, MM_ERR_INVALID, "%s: holds no scenario", origin);
    return rc;
}

int mm_scenario_load(const char *path, mm_scenario_list *out, mm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return mm_error_set(err, MM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > (64u << 20)) {
                free(buf);
                fclose(f);
                return mm_error_set(err, MM_ERR_LIMIT, "%s: larger than 64 MiB", path);
            }
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                return mm_error_set(err, MM_ERR_NOMEM, "out of memory");
            }
            buf = b;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    bool bad = ferror(f) != 0;
    fclose(f);
    int rc = bad ? mm_error_set(err, MM_ERR_IO, "cannot read %s", path) : mm_scenario_parse(buf, len, path, out, err);
    free(buf);
    return rc;
}

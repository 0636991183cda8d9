/* The murmur node runtime (see netnode.h). Layout: the training thread;
 * carrying out the core's actions over libuv; connections; the node's life
 * (join, train, finish, leave); metrics and status; mm_node_run. */
#include "netnode.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "checkpoint.h"
#include "gossip.h"
#include "keys.h"
#include "mailbox.h"
#include "mm_pool.h"
#include "util.h"

#define MAX_SNAPS 16
#define FINISH_WAIT_S 5.0
#define FINAL_ROUNDS 3 /* exchanges after the last epoch */
#define LINGER_PEERS 64 /* partners whose trained-examples count a node remembers */
#define LINGER_STALE_S 30.0 /* a partner not met in an exchange for this long no longer keeps us */

typedef enum { ST_JOINING, ST_TRAINING, ST_FINISHING, ST_STOPPING, ST_LEAVING, ST_DONE } node_state;

typedef struct nconn {
    uv_tcp_t tcp;
    struct netnode *n;
    mm_conn_id id;
    bool closing;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    struct nconn *next;
} nconn;

typedef struct {
    uv_write_t req;
    struct netnode *n;
    mm_conn_id id;
    size_t len;
    uint8_t data[];
} wreq;

typedef struct netnode {
    mm_node_config cfg;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t core_timer, tick_timer;
    uv_async_t wake;
    uv_signal_t sigint, sigterm;
    mm_gossip *g;
    nconn *conns;
    mailbox to_trainer, to_loop;
    uv_thread_t thread;
    bool thread_started;
    mm_trainer tr; /* the training thread's, after start */
    mm_pool *pool; /* crypto workers (--crypto-threads), used from the loop thread */
    struct {
        uint32_t xid;
        float *p;
    } snaps[MAX_SNAPS];
    float *spare_snap; /* a released snapshot buffer, lent again (saves page faults) */
    int pending_merges;
    node_state state;
    double state_since, start;
    bool synced, resumed, sync_requested;
    uint64_t ex_mark;
    /* Lingering (--linger, docs/decisions.md): a node that has trained its epochs keeps averaging,
     * without training, while its partners still train, so that a fast node (a GPU among CPUs) ends
     * at the network's consensus instead of its own early model. A partner "still trains" when the
     * examples count it sends grew since our last exchange with it. */
    struct {
        uint8_t id[MM_ID_BYTES];
        uint64_t samples;
        double at;   /* when we last completed an exchange with it */
        bool trains; /* its count grew between our last two exchanges with it */
    } seen[LINGER_PEERS];
    int nseen, seen_next;
    double linger_every;    /* seconds between our exchanges while lingering: training's own cadence */
    double last_avg_t, train_t0;
    uint64_t train_ex0;
    char ckpt_path[4096], status_path[4096];
    FILE *metrics;
    char id_hex[17];
    char listen_addr[MM_ADDR_MAX];
    char advertise[MM_ADDR_MAX]; /* where other nodes reach us (--advertise, else listen_addr) */
    /* latest counters from the trainer */
    uint64_t step, samples;
    double loss, rate, acc, last_progress;
    uint32_t epoch;
    mm_gossip_stats st, st_prev;
    double st_prev_t, mbps_in, mbps_out;
    int exit_code;
    bool tty;
    /* exchange benchmark */
    struct {
        bool running, logged;
        int done;       /* rounds finished, the warm-up included */
        int failed;     /* rounds that failed (the benchmark gives up after a few) */
        double t0, secs[64];
        uint64_t bytes_out;
    } bench;
    int64_t wall_offset; /* what the core was last told (mm_gossip_set_wall_offset) */
} netnode;

static uint64_t now_ns(void) { return uv_hrtime(); }

/* Unix time in ns minus the loop's monotonic clock: the core's wall time
 * (mm_gossip_config.wall_offset_ns). */
static int64_t wall_offset(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - (int64_t)now_ns();
}

/* ------------------------------------------------------------ logging */

static void metric(netnode *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void metric(netnode *n, const char *fmt, ...)
{
    if (!n->metrics) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(n->metrics, "{\"t\":%.3f,\"node\":\"%s\",", mm_now_s() - n->start, n->id_hex);
    vfprintf(n->metrics, fmt, ap);
    fputs("}\n", n->metrics);
    va_end(ap);
    fflush(n->metrics);
}

static void say(netnode *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(netnode *n, const char *fmt, ...)
{
    if (n->cfg.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    if (n->tty) fprintf(stderr, "\r%100s\r", "");
    fprintf(stderr, "[%s %7.2fs] ", n->id_hex, mm_now_s() - n->start);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* JSON string escaping for the short texts the core produces. */
static void json_text(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (; *in && o + 7 < cap; in++) {
        unsigned char ch = (unsigned char)*in;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
}

/* ------------------------------------------------------ training thread */

static void trainer_checkpoint(netnode *n)
{
    mm_error berr = {0};
    if (!n->cfg.checkpoint_dir) return;
    if (mm_trainer_backend_error(&n->tr, &berr) != 0) { /* never checkpoint what a failed device returns */
        fprintf(stderr, "murmur train: no checkpoint: %s\n", berr.msg);
        return;
    }
    mm_trainer *t = &n->tr;
    const mm_model *m = t->model;
    float *host = malloc(m->layout.total * sizeof *host);
    if (!host) return;
    m->be->ops->to_host(m->be, host, m->params, m->layout.total * sizeof *host);
    mm_ckpt_meta meta = {.step = t->step, .samples = t->samples, .seed = t->cfg.seed, .version = MM_CKPT_VERSION};
    mm_error err = {0};
    if (mm_checkpoint_save(n->ckpt_path, &m->layout, host, &meta, &err) != 0)
        fprintf(stderr, "murmur train: checkpoint: %s\n", err.msg);
    free(host);
}

/* Serve one message from the loop. Returns false on STOP. */
static bool trainer_handle(netnode *n, mb_msg *m)
{
    mm_trainer *t = &n->tr;
    mm_backend *be = t->model->be;
    const size_t total = t->model->layout.total;
    mb_msg r = {0};
    bool go_on = true;
    switch (m->kind) {
    case MB_WANT_SNAPSHOT:
        r.kind = MB_SNAPSHOT;
        r.xid = m->xid;
        r.samples = t->samples;
        if (mm_trainer_backend_error(t, NULL) == 0) { /* a failed device lends nothing */
            r.ptr = m->ptr ? m->ptr : malloc(total * sizeof(float)); /* the loop may give a spare buffer */
            if (r.ptr) be->ops->to_host(be, r.ptr, t->model->params, total * sizeof(float));
        } else {
            free(m->ptr);
        }
        mb_post(&n->to_loop, &r);
        break;
    case MB_MERGE:
        if (m->snap) {
            if (mm_trainer_merge(t, m->peer, m->snap, m->weight) != 0)
                fprintf(stderr, "murmur: no device memory for a merge: this exchange's average is skipped\n");
        } else { /* state sync: take the network's parameters, restart momentum */
            be->ops->to_device(be, t->model->params, m->peer, total * sizeof(float));
            if (t->opt.v) be->ops->fill(be, t->opt.v, total, 0.0f);
            if (t->opt.m) be->ops->fill(be, t->opt.m, total, 0.0f);
        }
        r.kind = MB_MERGE_DONE;
        r.xid = m->xid;
        mb_post(&n->to_loop, &r);
        break;
    case MB_STOP:
        go_on = false;
        break;
    default:
        break;
    }
    return go_on;
}

static void trainer_main(void *arg)
{
    netnode *n = arg;
    mm_trainer *t = &n->tr;
    const int epochs = n->cfg.tc.epochs;
    double last_progress = mm_now_s(), last_ckpt = mm_now_s(), last_avg = mm_now_s();
    uint64_t prog_samples = t->samples;
    bool trained = t->epoch >= (uint32_t)epochs, started = false;
    mb_msg *m;
    for (;;) {
        /* Between two steps: serve the loop. Block only when there is
         * nothing to train (before START, after the last epoch). */
        bool wait = trained || !started;
        bool stop = false;
        while ((m = mb_take(&n->to_trainer, wait)) != NULL) {
            if (m->kind == MB_AVERAGE) started = true; /* START reuses this kind */
            else if (!trainer_handle(n, m)) stop = true;
            free(m);
            if (stop) break;
            wait = false;
        }
        if (stop) break;
        if (trained || !started) continue;
        double s0 = mm_now_s();
        uint32_t k = mm_trainer_step(t);
        if (k == 0) { /* epoch done */
            double loss = 0;
            mb_msg e = {.kind = MB_EPOCH, .epoch = t->epoch, .step = t->step, .samples = t->samples};
            e.acc = mm_trainer_evaluate(t, &t->test, &loss);
            e.loss = loss;
            mb_post(&n->to_loop, &e);
            trainer_checkpoint(n);
            last_ckpt = mm_now_s();
            if (t->epoch >= (uint32_t)epochs) {
                trained = true;
                mb_msg d = {.kind = MB_TRAINED, .step = t->step, .samples = t->samples};
                mb_post(&n->to_loop, &d);
            }
            continue;
        }
        if (n->cfg.throttle > 1.0f) { /* emulate a slower machine */
            double dt = (mm_now_s() - s0) * (double)(n->cfg.throttle - 1.0f);
            struct timespec ts = {(time_t)dt, (long)((dt - (double)(time_t)dt) * 1e9)};
            nanosleep(&ts, NULL);
        }
        double now = mm_now_s();
        bool by_steps = n->cfg.average_every > 0 && t->step % (uint64_t)n->cfg.average_every == 0;
        bool by_time = n->cfg.average_seconds > 0 && now - last_avg >= (double)n->cfg.average_seconds;
        if (by_steps || by_time) {
            mb_msg a = {.kind = MB_AVERAGE};
            mb_post(&n->to_loop, &a);
            last_avg = now;
        }
        if (now - last_progress >= 0.5) {
            uint64_t cnt;
            mb_msg p = {.kind = MB_PROGRESS, .step = t->step, .samples = t->samples, .epoch = t->epoch};
            p.loss = mm_trainer_take_loss(t, &cnt);
            p.rate = (double)(t->samples - prog_samples) / (now - last_progress);
            if (!isfinite(p.loss)) { /* diverged: ask the network for its parameters */
                mb_msg d = {.kind = MB_DIVERGED, .step = t->step};
                mb_post(&n->to_loop, &d);
            }
            prog_samples = t->samples;
            last_progress = now;
            mb_post(&n->to_loop, &p);
        }
        if (n->cfg.checkpoint_seconds > 0 && now - last_ckpt >= (double)n->cfg.checkpoint_seconds) {
            trainer_checkpoint(n);
            last_ckpt = now;
        }
    }
    double loss = 0;
    mb_msg x = {.kind = MB_EXITED, .step = t->step, .samples = t->samples, .epoch = t->epoch};
    if (t->test.n) x.acc = mm_trainer_evaluate(t, &t->test, &loss);
    x.loss = loss;
    trainer_checkpoint(n);
    mb_post(&n->to_loop, &x);
}

/* ------------------------------------------------------- connections */

static void set_state(netnode *n, node_state s);
static void stop_trainer(netnode *n);

static nconn *conn_find(netnode *n, mm_conn_id id)
{
    for (nconn *c = n->conns; c; c = c->next)
        if (c->id == id) return c;
    return NULL;
}

static void flush(netnode *n);

static void on_closed(uv_handle_t *h)
{
    nconn *c = h->data;
    netnode *n = c->n;
    for (nconn **p = &n->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    if (n->g) mm_gossip_closed(n->g, c->id, now_ns());
    free(c);
    if (n->g) flush(n);
}

static void conn_close(nconn *c)
{
    if (c->closing) return;
    c->closing = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char space[1 << 16]; /* the loop thread's only; the core copies what it keeps */
    *buf = uv_buf_init(space, sizeof space);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    nconn *c = s->data;
    netnode *n = c->n;
    if (nread > 0) {
        mm_gossip_received(n->g, c->id, (const uint8_t *)buf->base, (size_t)nread, now_ns());
        flush(n);
    } else if (nread < 0) {
        conn_close(c);
    }
}

static void on_written(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    netnode *n = w->n;
    if (n->g) {
        mm_gossip_sent(n->g, w->id, w->len, now_ns());
        if (status < 0) {
            nconn *c = conn_find(n, w->id);
            if (c) conn_close(c);
        }
        flush(n);
    }
    free(w);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_close(req->data);
}

static void on_connect(uv_connect_t *req, int status)
{
    nconn *c = req->data;
    netnode *n = c->n;
    if (c->closing) return;
    if (status < 0) {
        mm_gossip_connect_failed(n->g, c->id, now_ns());
        c->id = 0; /* the core forgot it already */
        conn_close(c);
    } else {
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        mm_gossip_connected(n->g, c->id, now_ns());
    }
    flush(n);
}

/* "a.b.c.d:port", "[v6]:port" or "localhost:port" to a socket address. */
static int parse_addr(const char *addr, struct sockaddr_storage *sa)
{
    char host[MM_ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof host) return -1;
    const char *h = addr;
    size_t hlen = (size_t)(colon - addr);
    bool v6 = addr[0] == '[';
    if (v6) { /* "[...]" right before the port's colon */
        if (hlen < 3 || colon[-1] != ']') return -1;
        h++, hlen -= 2;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 0 || port > 65535) return -1;
    memset(sa, 0, sizeof *sa);
    if (v6) return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa);
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa);
}

/* Whether sa is the unspecified address (0.0.0.0 or ::): every interface. */
static bool wildcard(const struct sockaddr_storage *sa)
{
    static const uint8_t any6[16] = {0};
    if (sa->ss_family == AF_INET) return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    return sa->ss_family == AF_INET6 && memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr, any6, 16) == 0;
}

static int port_of(const struct sockaddr_storage *sa)
{
    return ntohs(sa->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                           : ((const struct sockaddr_in *)sa)->sin_port);
}

static void set_port(struct sockaddr_storage *sa, int port)
{
    if (sa->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

/* A socket address as the core writes addresses: "a.b.c.d:port" or
 * "[v6]:port" (an IPv4-mapped one stays in brackets; gossip/addr.h maps it). */
static void format_addr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char ip[48]; /* INET6_ADDRSTRLEN is 46 */
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(out, cap, "[%s]:%d", ip, ntohs(a->sin6_port));
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(out, cap, "%s:%d", ip, ntohs(a->sin_port));
    } else if (cap) {
        out[0] = '\0';
    }
}

static void do_connect(netnode *n, mm_conn_id id, const char *addr)
{
    struct sockaddr_storage sa;
    nconn *c = calloc(1, sizeof *c);
    if (!c || parse_addr(addr, &sa) != 0) {
        free(c);
        mm_gossip_connect_failed(n->g, id, now_ns());
        return;
    }
    c->n = n;
    c->id = id;
    c->tcp.data = c;
    c->creq.data = c;
    uv_tcp_init(&n->loop, &c->tcp);
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = n->conns;
    n->conns = c;
    if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, on_connect) != 0) {
        mm_gossip_connect_failed(n->g, id, now_ns());
        c->id = 0;
        conn_close(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    netnode *n = server->data;
    if (status < 0) return;
    nconn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->n = n;
    c->tcp.data = c;
    uv_tcp_init(&n->loop, &c->tcp);
    c->next = n->conns;
    n->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char from[MM_ADDR_MAX] = "";
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) format_addr(&ss, from, sizeof from);
    c->id = mm_gossip_accepted(n->g, from, now_ns());
    if (!c->id) {
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    flush(n);
}

/* ------------------------------------------------- carrying out actions */

/* Record a partner's examples count after an exchange: it still trains if the count grew since our
 * last exchange with it, or if it is new to us. */
static void partner_seen(netnode *n, const uint8_t *id, uint64_t samples)
{
    const double now = mm_now_s();
    for (int i = 0; i < n->nseen; i++)
        if (memcmp(n->seen[i].id, id, MM_ID_BYTES) == 0) {
            n->seen[i].trains = samples > n->seen[i].samples;
            n->seen[i].samples = samples;
            n->seen[i].at = now;
            return;
        }
    int i = n->nseen < LINGER_PEERS ? n->nseen++ : n->seen_next++ % LINGER_PEERS;
    memcpy(n->seen[i].id, id, MM_ID_BYTES);
    n->seen[i].samples = samples;
    n->seen[i].at = now;
    n->seen[i].trains = true;
}

/* A partner left or was declared dead: it no longer keeps a lingering node. */
static void partner_gone(netnode *n, const uint8_t *id)
{
    for (int i = 0; i < n->nseen; i++)
        if (memcmp(n->seen[i].id, id, MM_ID_BYTES) == 0) n->seen[i].trains = false;
}

/* Partners that still train, met in an exchange within LINGER_STALE_S (one that crashed or stopped
 * answering, and was not yet declared dead, does not keep us until --linger runs out). */
static int partners_training(const netnode *n)
{
    const double now = mm_now_s();
    int k = 0;
    for (int i = 0; i < n->nseen; i++) k += n->seen[i].trains && now - n->seen[i].at < LINGER_STALE_S;
    return k;
}

static void on_log(netnode *n, const mm_action *a)
{
    char peer[17], text[400];
    sodium_bin2hex(peer, sizeof peer, a->peer_id, 8);
    json_text(text, sizeof text, a->text);
    switch (a->log) {
    case MM_LOG_EXCHANGE:
        metric(n,
               "\"event\":\"exchange\",\"peer\":\"%s\",\"ok\":%s,\"bytes_in\":%llu,\"bytes_out\":%llu,"
               "\"duration_ms\":%.2f,\"encoding\":\"%s\",\"text\":\"%s\"",
               peer, a->ok ? "true" : "false", (unsigned long long)a->bytes_in, (unsigned long long)a->bytes_out,
               (double)a->duration / 1e6, n->cfg.encoding, text);
        if (!a->ok) say(n, "%s", a->text);
        if (a->ok && a->peer_samples > 0) partner_seen(n, a->peer_id, a->peer_samples);
        if (n->bench.running) {
            n->bench.logged = true;
            if (!a->ok) n->bench.running = false; /* bench_next tries again */
            n->bench.bytes_out = a->bytes_out;
        }
        break;
    case MM_LOG_PEER_UP:
        metric(n, "\"event\":\"peer_up\",\"peer\":\"%s\",\"text\":\"%s\"", peer, text);
        say(n, "%s", a->text);
        break;
    case MM_LOG_PEER_DOWN:
        metric(n, "\"event\":\"peer_down\",\"peer\":\"%s\",\"text\":\"%s\"", peer, text);
        partner_gone(n, a->peer_id);
        say(n, "%s", a->text);
        if (n->cfg.bench_params && n->cfg.bootstrap.n == 0 && n->state == ST_TRAINING) /* served: done */
            stop_trainer(n);
        break;
    case MM_LOG_REFUSED:
        metric(n, "\"event\":\"refused\",\"peer\":\"%s\",\"text\":\"%s\"", peer, text);
        say(n, "refused: %s", a->text);
        break;
    case MM_LOG_SYNCED:
        metric(n, "\"event\":\"synced\",\"text\":\"%s\"", text);
        say(n, "%s", a->text);
        n->synced = true;
        break;
    default:
        metric(n, "\"event\":\"info\",\"text\":\"%s\"", text);
        break;
    }
}

static void on_core_timer(uv_timer_t *t);

/* Drain the core's actions, then re-arm its timer. */
static void flush(netnode *n)
{
    mm_action a;
    while (mm_gossip_next(n->g, &a)) {
        switch (a.kind) {
        case MM_ACT_CONNECT:
            do_connect(n, a.conn, a.addr);
            break;
        case MM_ACT_SEND: {
            nconn *c = conn_find(n, a.conn);
            if (!c || c->closing) {
                mm_gossip_sent(n->g, a.conn, a.len, now_ns());
                break;
            }
            /* Write what the socket takes now, without copying; queue only
             * the rest (a copy: the core's bytes are only valid until its
             * next call). Nothing may overtake bytes already queued. */
            size_t done = 0;
            if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
                uv_buf_t b = uv_buf_init((char *)(uintptr_t)a.data, (unsigned)a.len); /* libuv only reads it */
                int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
                if (r > 0) done = (size_t)r;
            }
            if (done == a.len) {
                mm_gossip_sent(n->g, a.conn, a.len, now_ns());
                break;
            }
            wreq *w = malloc(sizeof *w + (a.len - done));
            if (!w) {
                mm_gossip_sent(n->g, a.conn, a.len, now_ns());
                conn_close(c);
                break;
            }
            w->n = n;
            w->id = a.conn;
            w->len = a.len - done;
            memcpy(w->data, a.data + done, a.len - done);
            /* Only now: the call ends the lending of a.data. */
            if (done) mm_gossip_sent(n->g, a.conn, done, now_ns());
            uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
            if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
                free(w);
                conn_close(c);
            }
            break;
        }
        case MM_ACT_CLOSE: {
            nconn *c = conn_find(n, a.conn);
            if (c && !c->closing) {
                c->sreq.data = c;
                if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
            }
            break;
        }
        case MM_ACT_WANT_SNAPSHOT: {
            mb_msg m = {.kind = MB_WANT_SNAPSHOT, .xid = a.xid, .ptr = n->spare_snap};
            n->spare_snap = NULL;
            mb_post(&n->to_trainer, &m);
            break;
        }
        case MM_ACT_MERGE: {
            mb_msg m = {.kind = MB_MERGE, .xid = a.xid, .peer = a.peer, .snap = a.snap, .weight = a.weight};
            n->pending_merges++;
            mb_post(&n->to_trainer, &m);
            break;
        }
        case MM_ACT_RELEASE:
            for (int i = 0; i < MAX_SNAPS; i++)
                if (n->snaps[i].p && n->snaps[i].xid == a.xid) {
                    if (!n->spare_snap)
                        n->spare_snap = n->snaps[i].p;
                    else
                        free(n->snaps[i].p);
                    n->snaps[i].p = NULL;
                }
            break;
        case MM_ACT_LOG:
            on_log(n, &a);
            break;
        default:
            break;
        }
    }
    uint64_t d = mm_gossip_deadline(n->g), now = now_ns();
    /* At least 1 ms: libuv runs a timer re-armed with 0 from its own callback
     * again at once, without polling I/O, so a deadline that stayed in the
     * past would spin the loop. */
    uint64_t ms = d == UINT64_MAX ? 60000 : d <= now ? 1 : (d - now + 999999) / 1000000;
    uv_timer_start(&n->core_timer, on_core_timer, ms, 0);
}

static void on_core_timer(uv_timer_t *t)
{
    netnode *n = t->data;
    mm_gossip_tick(n->g, now_ns());
    flush(n);
}

/* --------------------------------------------------------- the node's life */

static void set_state(netnode *n, node_state s)
{
    n->state = s;
    n->state_since = mm_now_s();
}

static void start_training(netnode *n)
{
    mb_msg m = {.kind = MB_AVERAGE}; /* START */
    mb_post(&n->to_trainer, &m);
    set_state(n, ST_TRAINING);
    mm_gossip_get_stats(n->g, &n->st);
    n->train_t0 = mm_now_s();
    n->train_ex0 = n->st.exchanges_ok;
}

static void stop_trainer(netnode *n)
{
    mb_msg m = {.kind = MB_STOP};
    mb_post(&n->to_trainer, &m);
    set_state(n, ST_STOPPING);
}

/* ------------------------------------------------ the exchange benchmark */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Raw AEAD throughput of this process, GB/s of plaintext, 1 MiB messages:
 * the crypto-bound ceiling the exchange is compared with. */
static void bench_aead(bool aes, double *enc, double *dec)
{
    enum { LEN = 1 << 20, REPS = 5 };
    uint8_t *m = malloc(LEN), *c = malloc(LEN + 16), key[32], nonce[12] = {0};
    *enc = *dec = 0.0;
    if (!m || !c) goto out;
    randombytes_buf(key, sizeof key);
    randombytes_buf(m, LEN);
    double e[REPS], d[REPS];
    for (int r = 0; r < REPS; r++) {
        unsigned long long cl = 0, ml = 0;
        int iters = 64;
        double t0 = mm_now_s();
        for (int i = 0; i < iters; i++)
            aes ? crypto_aead_aes256gcm_encrypt(c, &cl, m, LEN, NULL, 0, NULL, nonce, key)
                : crypto_aead_chacha20poly1305_ietf_encrypt(c, &cl, m, LEN, NULL, 0, NULL, nonce, key);
        e[r] = (double)LEN * iters / (mm_now_s() - t0) / 1e9;
        t0 = mm_now_s();
        for (int i = 0; i < iters; i++)
            if ((aes ? crypto_aead_aes256gcm_decrypt(m, &ml, NULL, c, cl, NULL, 0, nonce, key)
                     : crypto_aead_chacha20poly1305_ietf_decrypt(m, &ml, NULL, c, cl, NULL, 0, nonce, key)) != 0)
                goto out;
        d[r] = (double)LEN * iters / (mm_now_s() - t0) / 1e9;
    }
    qsort(e, REPS, sizeof e[0], cmp_double);
    qsort(d, REPS, sizeof d[0], cmp_double);
    *enc = e[REPS / 2];
    *dec = d[REPS / 2];
out:
    free(m);
    free(c);
}

static void bench_report(netnode *n)
{
    int r = n->bench.done - 1; /* the warm-up is not timed */
    if (r > 64) r = 64;
    qsort(n->bench.secs, (size_t)r, sizeof n->bench.secs[0], cmp_double);
    const double med = n->bench.secs[r / 2], N = (double)n->cfg.bench_params;
    const bool aes = crypto_aead_aes256gcm_is_available() != 0;
    double enc, dec;
    bench_aead(aes, &enc, &dec);
    /* Each side seals its whole f32 payload and opens the peer's, on one core. */
    const double ceiling = 1e9 / (1.0 / enc + 1.0 / dec) / 4.0;
    printf("{\"event\":\"exchange_bench\",\"peer\":\"murmur\",\"elements\":%llu,\"encoding\":\"%s\","
           "\"cipher\":\"%s\",\"rounds\":%d,\"median_s\":%.4f,\"min_s\":%.4f,\"max_s\":%.4f,"
           "\"elements_per_s\":%.0f,\"bytes_out\":%llu,\"aead_enc_gbps\":%.3f,\"aead_dec_gbps\":%.3f,"
           "\"ceiling_elements_per_s\":%.0f,\"of_ceiling\":%.3f,\"peak_rss_kib\":%ld}\n",
           (unsigned long long)n->cfg.bench_params, n->cfg.encoding ? n->cfg.encoding : "f32",
           aes ? "aes256gcm" : "chacha20poly1305", r, med, n->bench.secs[0], n->bench.secs[r - 1], N / med,
           (unsigned long long)n->bench.bytes_out, enc, dec, ceiling, N / med / ceiling, mm_peak_rss_kib());
    fflush(stdout);
}


/* The benchmarking node, after every merge and tick: time the round that
 * ended (the merge is applied on our side), then start the next. */
static void bench_next(netnode *n)
{
    if (!n->cfg.bench_params || n->cfg.bootstrap.n == 0 || n->state != ST_TRAINING) return;
    if (n->bench.running) {
        if (!n->bench.logged || n->pending_merges > 0) return;
        n->bench.running = false;
        n->bench.logged = false; /* a success, not a failure to retry */
        if (n->bench.done > 0 && n->bench.done <= 64) n->bench.secs[n->bench.done - 1] = mm_now_s() - n->bench.t0;
        n->bench.done++;
    }
    if (n->bench.done > n->cfg.bench_rounds) {
        bench_report(n);
        stop_trainer(n);
        return;
    }
    if (n->bench.logged) { /* a failed round: the next tick tries again, a few times */
        n->bench.logged = false;
        if (++n->bench.failed >= 5) {
            fprintf(stderr, "murmur exchange-bench: %d exchanges failed; giving up (--verbose says why)\n",
                    n->bench.failed);
            n->exit_code = 1;
            stop_trainer(n);
        }
        return;
    }
    mm_gossip_get_stats(n->g, &n->st);
    if (n->st.sessions == 0) return;
    double t0 = mm_now_s();
    if (mm_gossip_average_now(n->g, now_ns()) == 0) {
        n->bench.running = true;
        n->bench.t0 = t0;
        flush(n);
    }
}

static void write_status(netnode *n)
{
    if (!n->cfg.checkpoint_dir) return;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", n->status_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    static const char *const names[] = {"joining", "training", "finishing", "stopping", "leaving", "done"};
    fprintf(f,
            "{\"id\":\"%s\",\"listen\":\"%s\",\"state\":\"%s\",\"step\":%llu,\"samples\":%llu,\"epoch\":%u,"
            "\"loss\":%.4f,\"samples_per_s\":%.0f,\"peers\":%u,\"sessions\":%u,\"exchanges_ok\":%llu,"
            "\"exchanges_failed\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,\"uptime_s\":%.1f,\"view\":[",
            n->id_hex, n->listen_addr, names[n->state], (unsigned long long)n->step, (unsigned long long)n->samples,
            n->epoch, n->loss, n->rate, n->st.view, n->st.sessions, (unsigned long long)n->st.exchanges_ok,
            (unsigned long long)n->st.exchanges_failed, (unsigned long long)n->st.bytes_in,
            (unsigned long long)n->st.bytes_out, mm_now_s() - n->start);
    mm_gossip_peer_info peers[MM_VIEW_SIZE];
    uint32_t np = mm_gossip_peers(n->g, peers, MM_VIEW_SIZE);
    for (uint32_t i = 0; i < np; i++) {
        char id[17], addr[2 * MM_ADDR_MAX];
        sodium_bin2hex(id, sizeof id, peers[i].id, 8);
        json_text(addr, sizeof addr, peers[i].addr);
        fprintf(f, "%s{\"id\":\"%s\",\"addr\":\"%s\",\"state\":\"%s\",\"session\":%s}", i ? "," : "", id, addr,
                peers[i].suspect ? "suspect" : "alive", peers[i].session ? "true" : "false");
    }
    fputs("]}\n", f);
    if (fclose(f) == 0) rename(tmp, n->status_path);
}

static void progress_line(netnode *n)
{
    if (!n->tty || n->cfg.quiet) return;
    fprintf(stderr, "\r[%s] step %llu  epoch %u  loss %.4f  %5.0f samples/s  peers %u  exch %llu ok / %llu failed  "
                    "in %.1f MB/s out %.1f MB/s ",
            n->id_hex, (unsigned long long)n->step, n->epoch, n->loss, n->rate, n->st.view,
            (unsigned long long)n->st.exchanges_ok, (unsigned long long)n->st.exchanges_failed, n->mbps_in,
            n->mbps_out);
}

static void close_all(netnode *n)
{
    for (nconn *c = n->conns; c; c = c->next) conn_close(c);
    uv_close((uv_handle_t *)&n->listener, NULL);
    uv_close((uv_handle_t *)&n->core_timer, NULL);
    uv_close((uv_handle_t *)&n->tick_timer, NULL);
    uv_close((uv_handle_t *)&n->wake, NULL);
    uv_close((uv_handle_t *)&n->sigint, NULL);
    uv_close((uv_handle_t *)&n->sigterm, NULL);
}

/* Every 100 ms: counters, status, and the transitions that wait on time. */
static void on_tick(uv_timer_t *t)
{
    netnode *n = t->data;
    double now = mm_now_s();
    int64_t off = wall_offset(); /* the system clock was set (NTP) or the machine slept: tell the core */
    if (off - n->wall_offset > 1000000000 || n->wall_offset - off > 1000000000) {
        n->wall_offset = off;
        mm_gossip_set_wall_offset(n->g, off, now_ns());
        flush(n);
    }
    mm_gossip_get_stats(n->g, &n->st);
    if (now - n->st_prev_t >= 1.0) {
        double dt = now - n->st_prev_t;
        n->mbps_in = (double)(n->st.bytes_in - n->st_prev.bytes_in) / dt / 1e6;
        n->mbps_out = (double)(n->st.bytes_out - n->st_prev.bytes_out) / dt / 1e6;
        n->st_prev = n->st;
        n->st_prev_t = now;
        write_status(n);
        progress_line(n);
    }
    switch (n->state) {
    case ST_JOINING:
        if (n->synced && n->pending_merges == 0) {
            start_training(n);
        } else if (!n->sync_requested && n->st.sessions > 0) {
            mm_gossip_request_sync(n->g, now_ns());
            n->sync_requested = true;
            flush(n);
        } else if (now - n->state_since > (double)n->cfg.join_timeout && n->st.sessions == 0) {
            fprintf(stderr,
                    "murmur train: could not join: no bootstrap peer answered within %.0f s (tried",
                    (double)n->cfg.join_timeout);
            for (int i = 0; i < n->cfg.bootstrap.n; i++) fprintf(stderr, " %s", n->cfg.bootstrap.v[i]);
            fprintf(stderr, "). Check that a node listens there and that both use the same --network-key.\n");
            n->exit_code = 1;
            stop_trainer(n);
        } else if (now - n->state_since > 3 * (double)n->cfg.join_timeout) {
            say(n, "state sync did not finish; training from our own parameters");
            start_training(n);
        }
        break;
    case ST_TRAINING:
        bench_next(n);
        /* The serving side of the benchmark: its client is gone (a leave we
         * missed looks like a closed connection). */
        if (n->cfg.bench_params && n->cfg.bootstrap.n == 0 && n->st.exchanges_ok > 0 && n->st.sessions == 0)
            stop_trainer(n);
        break;
    case ST_FINISHING: {
        /* A few last exchanges with random peers, so the node ends at the
         * network's consensus rather than just after its own last steps. */
        if (n->ex_mark == UINT64_MAX) { /* a signal: only wait for merges in flight */
            if (n->pending_merges == 0 || now - n->state_since > FINISH_WAIT_S) stop_trainer(n);
            break;
        }
        /* With --linger, also until no partner we know of still trains, exchanging at the cadence
         * of our own training's exchanges. */
        const bool linger = n->cfg.linger > 0;
        bool rounds = n->st.exchanges_ok >= n->ex_mark + FINAL_ROUNDS, quiet = !linger || partners_training(n) == 0;
        double cap = linger ? (double)n->cfg.linger : FINISH_WAIT_S;
        if ((rounds && quiet && n->pending_merges == 0) || now - n->state_since > cap || n->st.view == 0) {
            if (linger && !quiet) say(n, "partners still train after --linger %.0f s: leaving", (double)n->cfg.linger);
            stop_trainer(n);
        } else if (n->pending_merges == 0 && now - n->last_avg_t >= (linger ? n->linger_every : 0)) {
            if (mm_gossip_average_now(n->g, now_ns()) == 0) n->last_avg_t = now; /* refused while one runs: fine */
            flush(n);
        }
        break;
    }
    case ST_LEAVING:
        if (now - n->state_since > 0.3) {
            set_state(n, ST_DONE);
            close_all(n);
        }
        break;
    default:
        break;
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    netnode *n = s->data;
    say(n, "signal %d: finishing the current exchange, then leaving", signum);
    if (n->state == ST_JOINING || n->state == ST_TRAINING) {
        n->ex_mark = UINT64_MAX; /* do not wait for a new exchange, only for merges in flight */
        set_state(n, ST_FINISHING);
        if (n->pending_merges == 0) stop_trainer(n);
    } else if (n->state == ST_FINISHING) {
        stop_trainer(n);
    }
}

static void print_final(netnode *n, const mb_msg *m)
{
    mm_gossip_get_stats(n->g, &n->st);
    double wall = mm_now_s() - n->start;
    metric(n, "\"event\":\"final\",\"test_acc\":%.4f,\"step\":%llu,\"samples\":%llu,\"exchanges_ok\":%llu", m->acc,
           (unsigned long long)m->step, (unsigned long long)m->samples, (unsigned long long)n->st.exchanges_ok);
    if (n->tty && !n->cfg.quiet) fprintf(stderr, "\r%100s\r", "");
    if (n->cfg.json)
        printf("{\"event\":\"final\",\"id\":\"%s\",\"model\":\"%s\",\"backend\":\"%s\",\"test_acc\":%.4f,\"epochs\":%u,\"samples\":%llu,"
               "\"steps\":%llu,\"wall_s\":%.2f,\"exchanges_ok\":%llu,\"exchanges_failed\":%llu,\"bytes_in\":%llu,"
               "\"bytes_out\":%llu,\"peak_rss_kib\":%ld}\n",
               n->id_hex, n->cfg.tc.model, n->tr.be.ops->name, m->acc, m->epoch, (unsigned long long)m->samples,
               (unsigned long long)m->step, wall, (unsigned long long)n->st.exchanges_ok,
               (unsigned long long)n->st.exchanges_failed, (unsigned long long)n->st.bytes_in,
               (unsigned long long)n->st.bytes_out, mm_peak_rss_kib());
    else if (!n->cfg.quiet)
        printf("node %s: test accuracy %.2f %% after %u epochs (%llu samples), %llu exchanges ok, %llu failed, %.1f s\n",
               n->id_hex, m->acc * 100, m->epoch, (unsigned long long)m->samples,
               (unsigned long long)n->st.exchanges_ok, (unsigned long long)n->st.exchanges_failed, wall);
    fflush(stdout);
}

/* Messages from the training thread. */
static void on_wake(uv_async_t *a)
{
    netnode *n = a->data;
    mb_msg *m;
    while ((m = mb_take(&n->to_loop, false)) != NULL) {
        switch (m->kind) {
        case MB_SNAPSHOT: {
            int slot = -1;
            for (int i = 0; i < MAX_SNAPS && slot < 0; i++)
                if (!n->snaps[i].p) slot = i;
            if (slot < 0 || !m->ptr) { /* cannot lend: the core aborts when the snapshot never comes */
                free(m->ptr);
                break;
            }
            n->snaps[slot].p = m->ptr;
            n->snaps[slot].xid = m->xid;
            mm_gossip_snapshot_ready(n->g, m->xid, m->ptr, m->samples, now_ns());
            flush(n);
            break;
        }
        case MB_MERGE_DONE:
            n->pending_merges--;
            mm_gossip_merge_done(n->g, m->xid, now_ns());
            flush(n);
            bench_next(n);
            break;
        case MB_AVERAGE:
            if (n->state == ST_TRAINING) {
                mm_gossip_average_now(n->g, now_ns());
                flush(n);
            }
            break;
        case MB_PROGRESS:
            n->step = m->step;
            n->samples = m->samples;
            n->loss = m->loss;
            n->rate = m->rate;
            n->epoch = m->epoch;
            metric(n, "\"event\":\"step\",\"step\":%llu,\"samples\":%llu,\"loss\":%.5f,\"samples_per_s\":%.1f",
                   (unsigned long long)m->step, (unsigned long long)m->samples, m->loss, m->rate);
            break;
        case MB_EPOCH:
            n->epoch = m->epoch;
            n->acc = m->acc;
            metric(n, "\"event\":\"epoch\",\"epoch\":%u,\"step\":%llu,\"test_acc\":%.4f,\"test_loss\":%.4f", m->epoch,
                   (unsigned long long)m->step, m->acc, m->loss);
            say(n, "epoch %u: test accuracy %.2f %%", m->epoch, m->acc * 100);
            break;
        case MB_TRAINED:
            if (n->state == ST_TRAINING) {
                /* One last average so the network ends close together. */
                mm_gossip_get_stats(n->g, &n->st);
                n->ex_mark = n->st.exchanges_ok;
                double trained_s = mm_now_s() - n->train_t0;
                uint64_t ex = n->st.exchanges_ok - n->train_ex0;
                n->linger_every = trained_s / (double)(ex ? ex : 1);
                if (n->linger_every < 0.2) n->linger_every = 0.2; /* partners still training pay for each */
                if (n->linger_every > 2.0) n->linger_every = 2.0;
                n->last_avg_t = mm_now_s();
                set_state(n, ST_FINISHING);
                if (n->cfg.linger > 0 && partners_training(n) > 0)
                    say(n, "trained: averaging while %d partner(s) still train (at most %.0f s)", partners_training(n),
                        (double)n->cfg.linger);
                if (mm_gossip_average_now(n->g, now_ns()) != 0 && (n->cfg.linger <= 0 || n->st.view == 0))
                    stop_trainer(n);
                flush(n);
            }
            break;
        case MB_DIVERGED:
            say(n, "the loss is no longer finite at step %llu: fetching parameters from peers",
                (unsigned long long)m->step);
            metric(n, "\"event\":\"diverged\",\"step\":%llu", (unsigned long long)m->step);
            mm_gossip_request_sync(n->g, now_ns());
            flush(n);
            break;
        case MB_EXITED:
            if (n->exit_code == 0 && !n->cfg.bench_params) print_final(n, m);
            if (n->cfg.bench_params && n->cfg.bootstrap.n == 0)
                printf("{\"event\":\"exchange_bench_server\",\"elements\":%llu,\"peak_rss_kib\":%ld}\n",
                       (unsigned long long)n->cfg.bench_params, mm_peak_rss_kib());
            mm_gossip_leave(n->g, now_ns());
            flush(n);
            set_state(n, ST_LEAVING);
            break;
        default:
            break;
        }
        free(m);
    }
}

/* ----------------------------------------------------------------- run */

static int encoding_of(const char *s)
{
    static const char *const names[] = {"f32", "f16", "bf16", "q8"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

static void env_random(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    randombytes_buf(buf, len);
}
static void *env_alloc(void *ctx, size_t len)
{
    (void)ctx;
    return malloc(len);
}
static void env_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static void utc(uint64_t t, char out[40])
{
    time_t tt = (time_t)t;
    strftime(out, 40, "%Y-%m-%d %H:%M:%S UTC", gmtime(&tt));
}

/* Certs mode: the owner key, our certificate (which must be the owner's,
 * ours and valid now) and a revocation list. */
static int load_certs(netnode *n, mm_gossip_config *gc)
{
    mm_error err = {0};
    const char *cf = n->cfg.cert_file;
    if (mm_key_parse_pub(n->cfg.owner_pub, gc->owner_pk) != 0) {
        fprintf(stderr, "murmur train: --owner-pub '%s' is not a public key (64 hex digits)\n", n->cfg.owner_pub);
        return 1;
    }
    if (mm_key_read_cert(cf, gc->cert, &err) != 0) {
        fprintf(stderr, "murmur train: %s\n", err.msg);
        return 1;
    }
    mm_cert c;
    mm_cert_decode(&c, gc->cert);
    char when[40], mine[65], theirs[65];
    mm_cert_status st = mm_cert_check(&c, gc->owner_pk, NULL, (int64_t)time(NULL));
    if (st == MM_CERT_OK && memcmp(c.member_pk, gc->identity_sk + 32, 32) != 0) {
        sodium_bin2hex(mine, sizeof mine, gc->identity_sk + 32, 32);
        sodium_bin2hex(theirs, sizeof theirs, c.member_pk, 32);
        fprintf(stderr, "murmur train: %s is the certificate of member %s, but this node is %s (give its --key)\n", cf,
                theirs, mine);
        return 1;
    }
    if (st == MM_CERT_EXPIRED || st == MM_CERT_NOT_YET_VALID) {
        utc(st == MM_CERT_EXPIRED ? c.not_after : c.not_before, when);
        fprintf(stderr, "murmur train: %s: %s (%s %s); ask the network owner for a new one\n", cf, mm_cert_why(st),
                st == MM_CERT_EXPIRED ? "since" : "until", when);
        return 1;
    }
    if (st != MM_CERT_OK) {
        fprintf(stderr, "murmur train: %s: %s%s\n", cf, mm_cert_why(st),
                st == MM_CERT_NOT_OWNER || st == MM_CERT_OTHER_NETWORK ? " given with --owner-pub" : "");
        return 1;
    }
    if (n->cfg.revocations_file) {
        static mm_revlist l;
        if (mm_key_read_revocations(n->cfg.revocations_file, &l, &err) != 0) {
            fprintf(stderr, "murmur train: %s\n", err.msg);
            return 1;
        }
        if (!mm_revlist_sig_ok(&l, gc->owner_pk)) {
            fprintf(stderr, "murmur train: %s: revocation list not signed by the network owner given with --owner-pub\n",
                    n->cfg.revocations_file);
            return 1;
        }
        if (mm_revlist_revokes(&l, &c.serial, c.member_pk)) {
            fprintf(stderr, "murmur train: %s revokes this node's certificate (serial %llu)\n", n->cfg.revocations_file,
                    (unsigned long long)c.serial);
            return 1;
        }
        gc->revocations = &l;
    }
    gc->certs = true;
    utc(c.not_after, when);
    say(n, "certs mode: certificate serial %llu valid until %s", (unsigned long long)c.serial, when);
    return 0;
}

/* Identity and network key, from files or defaults. */
static int load_keys(netnode *n, mm_gossip_config *gc)
{
    mm_error err = {0};
    const char *kf = n->cfg.key_file;
    char auto_key[4200];
    if (!kf && n->cfg.checkpoint_dir) { /* one identity per checkpoint directory, made on first use */
        snprintf(auto_key, sizeof auto_key, "%s/identity.key", n->cfg.checkpoint_dir);
        if (access(auto_key, F_OK) != 0 && mm_key_write_identity(auto_key, &err) != 0) {
            fprintf(stderr, "murmur train: %s\n", err.msg);
            return 1;
        }
        kf = auto_key;
    }
    if (kf) {
        if (mm_key_read_identity(kf, gc->identity_sk, &err) != 0) {
            fprintf(stderr, "murmur train: %s\n", err.msg);
            return 1;
        }
    } else {
        uint8_t pk[32];
        crypto_sign_keypair(pk, gc->identity_sk);
    }
    if (n->cfg.netkey_files.n > MM_NETKEYS_MAX) {
        fprintf(stderr, "murmur train: at most %d --network-key files (a key ring)\n", MM_NETKEYS_MAX);
        return 1;
    }
    for (int i = 0; i < n->cfg.netkey_files.n; i++) { /* the first is the primary */
        uint8_t *k = i == 0 ? gc->network_key : gc->network_keys_more[i - 1];
        if (mm_key_read_netkey(n->cfg.netkey_files.v[i], k, &err) != 0) {
            fprintf(stderr, "murmur train: %s\n", err.msg);
            return 1;
        }
        if (i > 0) gc->nkeys_more = (uint32_t)i;
    }
    if (n->cfg.network_id) {
        size_t bin_len = 0;
        if (strlen(n->cfg.network_id) != 64 ||
            sodium_hex2bin(gc->network_id, 32, n->cfg.network_id, 64, NULL, &bin_len, NULL) != 0 || bin_len != 32) {
            fprintf(stderr, "murmur train: --network-id wants 64 hex digits (the id a node logs at start)\n");
            return 1;
        }
        gc->network_id_set = true;
    }
    if (n->cfg.netkey_files.n == 0) { /* the open default network: anyone running murmur can join it */
        crypto_generichash(gc->network_key, 32, (const uint8_t *)"murmur-open-network-v1", 22, NULL, 0);
    }
    return n->cfg.owner_pub ? load_certs(n, gc) : 0;
}

/* Resume from <checkpoint-dir>/node.safetensors if it is there. */
static int maybe_resume(netnode *n)
{
    if (!n->cfg.checkpoint_dir || access(n->ckpt_path, F_OK) != 0) return 0;
    mm_trainer *t = &n->tr;
    mm_layout *l = &t->model->layout;
    float *host = calloc(l->total, sizeof *host);
    mm_ckpt_meta meta;
    mm_error err = {0};
    if (!host) return 1;
    if (mm_checkpoint_load(n->ckpt_path, l, host, &meta, &err) != 0) {
        fprintf(stderr, "murmur train: cannot resume: %s\n(move the file away to start afresh)\n", err.msg);
        free(host);
        return 1;
    }
    t->be.ops->to_device(&t->be, t->model->params, host, l->total * sizeof *host);
    free(host);
    t->step = meta.step;
    t->samples = meta.samples;
    t->opt.t = meta.step;
    t->epoch = t->loader.count ? (uint32_t)(meta.samples / t->loader.count) : 0;
    mm_loader_start_epoch(&t->loader, t->epoch);
    n->resumed = true;
    say(n, "resumed from %s at step %llu (epoch %u)", n->ckpt_path, (unsigned long long)meta.step, t->epoch);
    return 0;
}

int mm_node_run(const mm_node_config *cfg)
{
    if (sodium_init() < 0) return 1;
    /* A peer that closes while we write must cost us that connection (the
     * write fails with EPIPE), not the process. */
    signal(SIGPIPE, SIG_IGN);
    netnode *n = calloc(1, sizeof *n);
    if (!n) return 1;
    n->cfg = *cfg;
    n->start = mm_now_s();
    n->tty = isatty(STDERR_FILENO) && !cfg->quiet;
    int enc = encoding_of(cfg->encoding ? cfg->encoding : "f32");
    int rc = 1;
    mm_gossip_config gc;
    memset(&gc, 0, sizeof gc);
    mm_error err = {0};
    if (enc < 0) {
        fprintf(stderr, "murmur train: unknown encoding\n");
        free(n);
        return 2;
    }
    if (cfg->checkpoint_dir) {
        if (mkdir(cfg->checkpoint_dir, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "murmur train: cannot create %s: %s\n", cfg->checkpoint_dir, strerror(errno));
            free(n);
            return 1;
        }
        snprintf(n->ckpt_path, sizeof n->ckpt_path, "%s/node.safetensors", cfg->checkpoint_dir);
        snprintf(n->status_path, sizeof n->status_path, "%s/status.json", cfg->checkpoint_dir);
    }
    if (load_keys(n, &gc) != 0) goto out_free;
    sodium_bin2hex(n->id_hex, sizeof n->id_hex, gc.identity_sk + 32, 8);
    if ((cfg->bench_params ? mm_trainer_init_vector(&n->tr, cfg->bench_params, randombytes_random(), &err)
                           : mm_trainer_init(&n->tr, &cfg->tc, &err)) != 0) {
        fprintf(stderr, "murmur train: %s\n", err.msg);
        goto out_free;
    }
    if (maybe_resume(n) != 0) goto out_trainer;
    if (cfg->metrics_file && !(n->metrics = fopen(cfg->metrics_file, "a"))) {
        fprintf(stderr, "murmur train: cannot open %s: %s\n", cfg->metrics_file, strerror(errno));
        goto out_trainer;
    }

    uv_loop_init(&n->loop);
    uv_tcp_init(&n->loop, &n->listener);
    n->listener.data = n;
    struct sockaddr_storage sa, adv;
    if (parse_addr(cfg->listen, &sa) != 0) {
        fprintf(stderr, "murmur train: --listen '%s' is not IPV4:PORT or [IPV6]:PORT\n", cfg->listen);
        rc = 2;
        goto out_loop;
    }
    if (cfg->advertise && parse_addr(cfg->advertise, &adv) != 0) {
        fprintf(stderr, "murmur train: --advertise '%s' is not IPV4:PORT or [IPV6]:PORT\n", cfg->advertise);
        rc = 2;
        goto out_loop;
    }
    if (!cfg->advertise && wildcard(&sa)) { /* its record would send every peer to 0.0.0.0 */
        fprintf(stderr,
                "murmur train: --listen %s takes connections on every interface, but other nodes need one "
                "address to reach this node at: add --advertise HOST:PORT\n",
                cfg->listen);
        rc = 2;
        goto out_loop;
    }
    int e = uv_tcp_bind(&n->listener, (const struct sockaddr *)&sa, 0);
    if (!e) e = uv_listen((uv_stream_t *)&n->listener, 128, on_connection);
    if (e) {
        fprintf(stderr, "murmur train: cannot listen on %s: %s\n", cfg->listen, uv_strerror(e));
        goto out_loop;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    uv_tcp_getsockname(&n->listener, (struct sockaddr *)&ss, &sl);
    format_addr(&ss, n->listen_addr, sizeof n->listen_addr);
    snprintf(n->advertise, sizeof n->advertise, "%s", n->listen_addr);
    if (cfg->advertise) { /* port 0 there: the port we are bound to */
        if (port_of(&adv) == 0) set_port(&adv, port_of(&ss));
        format_addr(&adv, n->advertise, sizeof n->advertise);
    }
    if (cfg->ready_fd > 0) {
        char line[MM_ADDR_MAX + 2];
        int len = snprintf(line, sizeof line, "%s\n", n->listen_addr);
        if (write(cfg->ready_fd, line, (size_t)len) != len) say(n, "cannot report the listening address");
    }

    /* The core: the model's layout for validation, our address, the schedule. */
    mm_gossip_tensor tensors[MM_LAYOUT_MAX];
    const mm_layout *l = &n->tr.model->layout;
    for (uint32_t i = 0; i < l->n; i++) tensors[i] = (mm_gossip_tensor){l->t[i].offset, l->t[i].count};
    memcpy(gc.fingerprint, l->fingerprint, MM_FP_BYTES);
    gc.params = l->total;
    gc.tensors = tensors;
    gc.ntensors = l->n;
    snprintf(gc.advertise, sizeof gc.advertise, "%s", n->advertise);
    gc.view_per_prefix = (uint32_t)cfg->view_per_prefix; /* 0: the core's defaults */
    gc.conns_per_prefix = (uint32_t)cfg->conns_per_prefix;
    gc.incarnation = (uint64_t)time(NULL);
    gc.wall_offset_ns = n->wall_offset = wall_offset();
    gc.encoding = (uint8_t)enc;
    gc.weighting = cfg->weight_samples ? MM_WEIGHT_SAMPLES : MM_WEIGHT_EQUAL;
    gc.clip = !cfg->no_clip;
    if (cfg->crypto_threads > 0 && !(n->pool = mm_pool_new(cfg->crypto_threads))) {
        fprintf(stderr, "murmur train: cannot start %d crypto threads\n", cfg->crypto_threads);
        goto out_loop;
    }
    mm_gossip_env env = {.random = env_random, .alloc = env_alloc, .free = env_free,
                         .parallel = n->pool ? mm_pool_run : NULL, .parallel_ctx = n->pool};
    n->g = mm_gossip_new(&gc, &env, now_ns());
    sodium_memzero(&gc.identity_sk, sizeof gc.identity_sk);
    if (!n->g) {
        fprintf(stderr, "murmur train: cannot create the gossip core\n");
        goto out_loop;
    }
    if (mb_init(&n->to_loop, &n->wake) != 0 || mb_init(&n->to_trainer, NULL) != 0) goto out_core;
    uv_async_init(&n->loop, &n->wake, on_wake);
    n->wake.data = n;
    uv_timer_init(&n->loop, &n->core_timer);
    n->core_timer.data = n;
    uv_timer_init(&n->loop, &n->tick_timer);
    n->tick_timer.data = n;
    uv_timer_start(&n->tick_timer, on_tick, 100, 100);
    uv_signal_init(&n->loop, &n->sigint);
    uv_signal_init(&n->loop, &n->sigterm);
    n->sigint.data = n->sigterm.data = n;
    uv_signal_start(&n->sigint, on_signal, SIGINT);
    uv_signal_start(&n->sigterm, on_signal, SIGTERM);

    char fp[33];
    mm_layout_fingerprint_hex(l, fp);
    say(n, "node %s listening on %s%s%s, model %s (fingerprint %.16s), shard %u/%u, %u examples", n->id_hex,
        n->listen_addr, strcmp(n->advertise, n->listen_addr) ? ", reached at " : "",
        strcmp(n->advertise, n->listen_addr) ? n->advertise : "", cfg->tc.model, fp, n->tr.cfg.shard,
        n->tr.cfg.nshards, n->tr.loader.count);
    char nid[65];
    sodium_bin2hex(nid, sizeof nid, mm_gossip_network_id(n->g), 32);
    say(n, "network id %s (%d network key%s; --network-id keeps it through a key rotation)", nid,
        cfg->netkey_files.n ? cfg->netkey_files.n : 1, cfg->netkey_files.n > 1 ? "s" : "");
    metric(n, "\"event\":\"start\",\"listen\":\"%s\",\"model\":\"%s\",\"shard\":%u,\"nshards\":%u", n->listen_addr,
           cfg->tc.model, n->tr.cfg.shard, n->tr.cfg.nshards);
    for (int i = 0; i < cfg->bootstrap.n; i++)
        if (mm_gossip_bootstrap(n->g, cfg->bootstrap.v[i], now_ns()) != 0)
            say(n, "bootstrap address '%s' refused", cfg->bootstrap.v[i]);
    flush(n);

    if (uv_thread_create(&n->thread, trainer_main, n) != 0) goto out_mb;
    n->thread_started = true;
    /* A newcomer syncs state first; the first node, or one resuming, trains at once. */
    if (cfg->bootstrap.n > 0 && !n->resumed && !cfg->bench_params) {
        set_state(n, ST_JOINING);
        mm_gossip_request_sync(n->g, now_ns()); /* the core syncs as soon as it has sessions */
        n->sync_requested = true;
        flush(n);
    } else
        start_training(n);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    rc = n->exit_code;

    uv_thread_join(&n->thread);
    n->thread_started = false;
out_mb:
    if (n->thread_started) { /* never reached with a live thread, kept for symmetry */
        stop_trainer(n);
        uv_thread_join(&n->thread);
    }
    mb_destroy(&n->to_loop);
    mb_destroy(&n->to_trainer);
out_core:
    mm_gossip_free(n->g);
    n->g = NULL;
    for (int i = 0; i < MAX_SNAPS; i++) free(n->snaps[i].p);
    free(n->spare_snap);
out_loop:
    if (!uv_is_closing((uv_handle_t *)&n->listener)) uv_close((uv_handle_t *)&n->listener, NULL);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    uv_loop_close(&n->loop);
    mm_pool_free(n->pool);
    if (n->metrics) fclose(n->metrics);
out_trainer:
    mm_trainer_free(&n->tr);
out_free:
    free(n);
    return rc;
}

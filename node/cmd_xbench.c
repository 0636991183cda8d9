/* murmur exchange-bench: the time of one complete exchange between two
 * nodes over loopback, with a parameter vector of any size.
 *
 * Two processes (as PyTorch's gloo benchmark uses two): this one forks a
 * serving node, then runs the node that starts the exchanges. Both are the
 * real runtime (node/netnode.c): libuv sockets, the gossip core's handshake,
 * record layer and chunked transfer, snapshots and merges through the
 * training thread's mailbox. Only the model is a bare vector. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "netnode.h"
#include "util.h"

static const char *const enc_choices[] = {"f32", "f16", "bf16", "q8", NULL};

/* Read the server's "HOST:PORT\n" within timeout_ms. */
static int read_addr(int fd, char *out, size_t cap, int timeout_ms)
{
    size_t len = 0;
    double end = mm_now_s() + timeout_ms / 1000.0;
    while (len + 1 < cap) {
        int left = (int)((end - mm_now_s()) * 1000.0);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0) return -1;
        ssize_t r = read(fd, out + len, 1);
        if (r <= 0) return -1;
        if (out[len] == '\n') {
            out[len] = '\0';
            return 0;
        }
        len++;
    }
    return -1;
}

/* Wait for pid up to timeout seconds, then kill it. Returns its exit status,
 * or -1 (and says why) if it did not exit by itself. */
static int reap(pid_t pid, double timeout)
{
    double end = mm_now_s() + timeout;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid && WIFEXITED(st)) return WEXITSTATUS(st);
        if (r == pid) {
            fprintf(stderr, "murmur exchange-bench: the serving node was killed by signal %d\n", WTERMSIG(st));
            return -1;
        }
        if (r < 0) break;
        if (mm_now_s() > end) {
            if (timeout > 0)
                fprintf(stderr, "murmur exchange-bench: the serving node did not exit in %.0f s\n", timeout);
            break;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

int mm_cmd_xbench(int argc, char **argv)
{
    uint64_t params = 1u << 20;
    int rounds = 5;
    const char *encoding = "f32";
    bool verbose = false;
    int crypto_threads = 0;
    const char *listen = "127.0.0.1:0";
    const mm_cli_opt opts[] = {
        {"params", MM_OPT_U64, &params, "N", "floats in the vector (default 1048576)", 1, 4294967296.0, NULL},
        {"rounds", MM_OPT_INT, &rounds, "R", "timed exchanges, after one warm-up (default 5)", 1, 64, NULL},
        {"encoding", MM_OPT_CHOICE, &encoding, "f32|f16|bf16|q8", "encoding on the wire (default f32)", 0, 0,
         enc_choices},
        {"crypto-threads", MM_OPT_INT, &crypto_threads, "T",
         "extra threads per node sealing outgoing frames (default 0)", 0, 64, NULL},
        {"listen", MM_OPT_STRING, &listen, "HOST:PORT",
         "where both nodes listen, IPV4:PORT or [IPV6]:PORT with port 0 (default 127.0.0.1:0)", 0, 0, NULL},
        {"verbose", MM_OPT_FLAG, &verbose, NULL, "the nodes' log lines on stderr", 0, 0, NULL},
    };
    mm_cli cli = {.command = "exchange-bench",
                  .usage = "murmur exchange-bench [--params N] [--rounds R] [--encoding E]",
                  .summary = "Time complete exchanges (both directions, encrypted, merged) between two nodes\n"
                             "on 127.0.0.1, with a bare vector of N floats as the model. Prints one JSON line:\n"
                             "the median time, elements averaged per second, and the crypto-bound ceiling\n"
                             "measured in the same process (1 / (1/seal + 1/open) per core, f32 bytes).",
                  .opts = opts,
                  .nopts = (int)(sizeof opts / sizeof opts[0])};
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;

    mm_node_config nc;
    memset(&nc, 0, sizeof nc);
    nc.tc.model = "vector";
    nc.listen = listen;
    nc.encoding = encoding;
    nc.bench_params = params;
    nc.bench_rounds = rounds;
    nc.throttle = 1.0f;
    nc.join_timeout = 10.0f;
    nc.quiet = !verbose;
    nc.crypto_threads = crypto_threads;
    nc.no_clip = false;

    int fds[2];
    if (pipe(fds) != 0) {
        fprintf(stderr, "murmur exchange-bench: pipe: %s\n", strerror(errno));
        return 1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "murmur exchange-bench: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) { /* the serving node */
        close(fds[0]);
        nc.ready_fd = fds[1];
        int status = mm_node_run(&nc);
        fflush(stdout);
        _exit(status);
    }
    close(fds[1]);
    char addr[128];
    if (read_addr(fds[0], addr, sizeof addr, 60000) != 0) {
        fprintf(stderr, "murmur exchange-bench: the serving node did not start\n");
        close(fds[0]);
        reap(pid, 0);
        return 1;
    }
    close(fds[0]);
    nc.bootstrap.v[0] = addr;
    nc.bootstrap.n = 1;
    int status = mm_node_run(&nc);
    int served = reap(pid, 30.0);
    if (served != 0) fprintf(stderr, "murmur exchange-bench: the serving node ended badly (status %d)\n", served);
    return status ? status : served ? 1 : 0;
}

#!/bin/bash
# gossip/ must do no I/O and hold no global state (DESIGN.md, "The one rule"):
# no sockets, clocks, threads, files, environment, or global randomness.
# Fails, naming each line, if any of these appears in gossip/*.c or *.h.
set -u
dir="${1:-$(dirname "$0")/../gossip}"
pattern='#include *<(uv\.h|sys/socket\.h|netinet/[a-z_]*\.h|arpa/inet\.h|netdb\.h|pthread\.h|threads\.h|time\.h|sys/time\.h|unistd\.h|fcntl\.h|sys/stat\.h|dirent\.h|signal\.h)>|(^|[^.>a-zA-Z0-9_])(clock_gettime|gettimeofday|time|clock|getenv|secure_getenv|rand|srand|random|srandom|drand48|fopen|freopen|open|read|write|close|socket|connect|accept|bind|listen|send|recv|sendto|recvfrom|sleep|usleep|nanosleep|pthread_create|thrd_create|randombytes_buf|randombytes_random|randombytes_uniform|printf|fprintf|puts|perror|exit|abort)\('
# MM_PURITY_EXCLUDE: a regex of files that may do I/O (a command-line entry point).
files=$(ls "$dir"/*.c "$dir"/*.h | grep -vE "${MM_PURITY_EXCLUDE:-^$}")
# shellcheck disable=SC2086
hits=$(grep -nE "$pattern" $files | grep -v 'purity-ok')
if [ -n "$hits" ]; then
    echo "$dir reaches for I/O or global state:" >&2
    echo "$hits" >&2
    exit 1
fi
echo "$dir is free of I/O, clocks, threads, files, getenv and global randomness"

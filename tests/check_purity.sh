#!/bin/bash
# gossip/ must do no I/O and hold no global state (DESIGN.md, "The one rule"):
# no sockets, clocks, threads, files, environment, or global randomness.
# Fails, naming each line, if any of these appears in gossip/*.c or *.h.
set -u
dir="${1:-$(dirname "$0")/../gossip}"
pattern='#include *<(uv\.h|sys/socket\.h|netinet/[a-z_]*\.h|arpa/inet\.h|netdb\.h|pthread\.h|threads\.h|time\.h|sys/time\.h|unistd\.h|fcntl\.h|sys/stat\.h|dirent\.h|signal\.h)>|(^|[^.>a-zA-Z0-9_])(clock_gettime|gettimeofday|time|clock|getenv|secure_getenv|rand|srand|random|srandom|drand48|fopen|freopen|open|read|write|close|socket|connect|accept|bind|listen|send|recv|sendto|recvfrom|sleep|usleep|nanosleep|pthread_create|thrd_create|randombytes_buf|randombytes_random|randombytes_uniform|printf|fprintf|puts|perror|exit|abort)\('
hits=$(grep -nE "$pattern" "$dir"/*.c "$dir"/*.h | grep -v 'purity-ok')
if [ -n "$hits" ]; then
    echo "gossip/ reaches for I/O or global state:" >&2
    echo "$hits" >&2
    exit 1
fi
echo "gossip/ is free of I/O, clocks, threads, files, getenv and global randomness"

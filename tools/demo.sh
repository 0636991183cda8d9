#!/bin/bash
# The README's first command: set up (install what is missing, build), then
# run the main job on its built-in defaults: a local network of 4 nodes on
# 127.0.0.1, each training mlp on its own quarter of Fashion-MNIST and
# averaging with random peers; it ends with every node's test accuracy and
# the spread between their parameters. Extra arguments go to `murmur demo`.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$top/tools/setup.sh"
exec "$top/build/murmur" demo "$@"

#!/bin/bash
# The README's first command: set up, build, and run the main job on its
# built-in defaults. Extra arguments go to `murmur train`.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$top/tools/setup.sh"
exec "$top/build/murmur" train --solo --model mlp --epochs 10 "$@"

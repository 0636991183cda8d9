#!/bin/bash
# The README's second command: set up, build, and run the whole test suite.
# MM_SANITIZE=address|thread runs it in a separate sanitizer build instead.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$top/tools/setup.sh"
build="$top/build"
if [ -n "${MM_SANITIZE:-}" ]; then
    build="$top/build-$MM_SANITIZE"
    cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DMM_SANITIZE="$MM_SANITIZE" >/dev/null
    cmake --build "$build" -j"$(nproc)"
fi
cd "$build"
# shellcheck disable=SC2086
ctest --output-on-failure -j"$(nproc)" --timeout 900 ${MM_CTEST_ARGS:-}

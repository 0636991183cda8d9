#!/bin/bash
# Install what murmur needs from Debian's archive (only what is missing) and
# build it into build/. Sourced by tools/demo.sh and tools/test.sh; safe to
# run again. Usage: tools/setup.sh [extra cmake args...]
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(build-essential cmake pkg-config clang libclang-rt-14-dev
          libuv1-dev libsodium-dev libmsgpack-dev libopenblas-dev libcmocka-dev zlib1g-dev libyaml-dev
          dataset-fashion-mnist)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$top/build" -j"$jobs"

#!/bin/bash
# Prepare .dev/ for a lent GPU machine that has the CUDA toolkit and PyTorch but none of murmur's
# libraries and no network (the `device` tool of this workplace): a portable build (x86-64-v3, not
# -march=native) of murmur, the CUDA plug-in, the parity test and the merge bench; the shared
# libraries they need from this Debian machine (OpenBLAS gzipped, ~46 MB in all with the data);
# Fashion-MNIST; the peer scripts of ../shared/bench. .dev/ is git-ignored; the device run must
# carry it.
#
# Usage: tools/bench/gpu_bundle.sh        then, on the device: tools/bench/gpu_device_run.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
shared="${MM_SHARED:-$root/../shared}"
data="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
exclude="$(git rev-parse --git-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.dev/' "$exclude" 2>/dev/null || echo '/.dev/' >>"$exclude"

cmake -S . -B build-dev -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMM_NATIVE=OFF -DCMAKE_C_FLAGS="-march=x86-64-v3" >/dev/null
cmake --build build-dev -j"$(nproc)" --target murmur murmur_cuda test_gpu_parity mm_gpu_merge_bench >/dev/null

rm -rf .dev
mkdir -p .dev/b/tests .dev/b/gpu .dev/lib .dev/data .dev/shared/bench
cp build-dev/murmur build-dev/libmurmur_cuda.so .dev/b/
cp build-dev/tests/test_gpu_parity .dev/b/tests/
cp build-dev/gpu/mm_gpu_merge_bench .dev/b/gpu/
strip --strip-debug .dev/b/murmur .dev/b/tests/test_gpu_parity .dev/b/gpu/mm_gpu_merge_bench
# Every library of ours that is not glibc's, libstdc++/libgcc's, zlib or CUDA's (the device has those).
for f in .dev/b/murmur .dev/b/tests/test_gpu_parity; do
    ldd "$f" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
    case "$name" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libstdc++* | libgcc_s* | libz.so* | libcu*) ;;
    *) cp -L "$path" ".dev/lib/$name" ;;
    esac
done
gzip -9 .dev/lib/libopenblas.so.0
cp "$data"/*-ubyte.gz .dev/data/
cp "$shared/bench/torch_train.py" "$shared/bench/fmnist_data.py" .dev/shared/bench/
du -sh .dev

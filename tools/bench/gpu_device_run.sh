#!/bin/bash
# On a lent GPU machine, with .dev/ from tools/bench/gpu_bundle.sh carried along: put the bundle's
# libraries and data in place and run tools/bench/gpu_checks.sh, every log into $OUT/gc.tgz.
#
# Usage (the device tool's run, carry [".dev"]): tools/bench/gpu_device_run.sh [LIMIT_S] [--quick]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
D="$root/.dev"
limit="${1:-330}"
[ -d "$D/b" ] || { echo "gpu_device_run.sh: no $D (run tools/bench/gpu_bundle.sh, carry .dev)" >&2; exit 1; }
mkdir -p /usr/share/datasets
[ -e /usr/share/datasets/fashion-mnist ] || ln -s "$D/data" /usr/share/datasets/fashion-mnist
python3 -c "import gzip, shutil; shutil.copyfileobj(gzip.open('$D/lib/libopenblas.so.0.gz'), open('$D/lib/libopenblas.so.0', 'wb'))"
cublas="$(ldconfig -p | awk '/libcublas\.so\.13/ {print $NF; exit}')"
[ -n "$cublas" ] || cublas="$(find /usr/local /opt /usr/lib -name 'libcublas.so.13' 2>/dev/null | head -1)"
cudnn="$(ldconfig -p | awk '/libcudnn\.so\.9/ {print $NF; exit}')" # MM_CUDA_CONV=cudnn dlopens it
[ -n "$cudnn" ] || cudnn="$(find /usr/local /opt /usr/lib -name 'libcudnn.so.9' 2>/dev/null | head -1)"
echo "cublas: ${cublas:-none}; cudnn: ${cudnn:-none}" >&2
export LD_LIBRARY_PATH="$D/lib:$(dirname "${cublas:-/usr/local/cuda/lib64/x}"):$(dirname "${cudnn:-/usr/local/cuda/lib64/x}"):/usr/local/cuda/lib64"
export MM_SHARED="$D/shared" PYTHON="$(command -v python3)"
timeout "$limit" "$root/tools/bench/gpu_checks.sh" "$D/b" /tmp/gc ${2:-}
tar czf "${OUT:-/tmp}/gc.tgz" --exclude='*.safetensors*' -C /tmp gc

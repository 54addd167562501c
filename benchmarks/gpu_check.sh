#!/usr/bin/env bash
# The GPU checks in one go, well inside ten minutes on one GPU:
#   1. what is installed (and, from wheels in .whl/ when present, what was missing),
#   2. the GPU tests (tests/test_gpu.py: kernels, conv, layers, training steps vs the CPU),
#   3. the convolution benchmark on the GPU against torch's cuDNN, synchronized,
#   4. DCGAN-28 and ConvVAE-28 training throughput on the GPU, tinygen beside torch,
# then a summary. Logs and JSON go to $OUT when it is set (the device tool), else
# benchmarks/results/. Run from anywhere:  bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
RESULTS="${OUT:-benchmarks/results}"
mkdir -p "$RESULTS"
# A GPU machine may reach no package registry: run from the checkout, no editable install.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

echo "== 1. environment"
missing=$("$PY" - <<'PYEOF'
import importlib
names = ["numpy", "numba", "PIL", "tqdm", "sklearn", "pytest", "hypothesis", "cupy"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "missing: $missing"
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
            && export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c "import json, tinygen; print(json.dumps(tinygen.info(), indent=1))"

echo "== 2. GPU tests"
timeout 300 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -rs tests/test_gpu.py \
    2>&1 | tee "$RESULTS/gpu_tests.log"
tests_status=${PIPESTATUS[0]}

echo "== 3. conv benchmark on the GPU"
timeout 200 "$PY" -m benchmarks.conv --gpu-only --repeats 10 --out "$RESULTS/conv_gpu.json" \
    2>&1 | tee "$RESULTS/conv_gpu.log"
bench_status=${PIPESTATUS[0]}

echo "== 4. training throughput on the GPU"
timeout 120 "$PY" -m benchmarks.train_throughput --device cuda --steps 50 \
    --out "$RESULTS/train_gpu.json" 2>&1 | tee "$RESULTS/train_gpu.log"
train_status=${PIPESTATUS[0]}

echo "== summary"
echo "GPU tests: $(tail -n 1 "$RESULTS/gpu_tests.log") (exit $tests_status)"
echo "conv benchmark: exit $bench_status, table in $RESULTS/conv_gpu.log"
echo "training throughput: exit $train_status"
cat "$RESULTS/train_gpu.log" 2>/dev/null | tail -n 3
[ "$tests_status" = 0 ] && [ "$bench_status" = 0 ] && [ "$train_status" = 0 ]

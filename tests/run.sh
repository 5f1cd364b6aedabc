#!/usr/bin/env bash
# README's test command: the three test groups, each in its own pytest process.
#   1. tests/            the library on the CPU (and on CUDA when a GPU is usable);
#   2. tests/cuda_sim    every numba.cuda kernel under NUMBA_ENABLE_CUDASIM=1 (set before
#                        numba is imported, hence its own process), and the cuda-sim backend
#                        (the CUDA backend's code on the CuPy contract) feature by feature;
#   3. tests/cuda_compile  every CUDA kernel compiled to PTX for sm_90/sm_80 and checked by ptxas.
# With FASTNET_COVERAGE=1 (CI sets it) every group runs under coverage.py, and the line
# coverage of the CUDA glue (fastnet/backend.py, gemm_cublas.py, kernels/cuda.py) across the three groups
# must be >= 95%; the report lists the lines no group ran.
# Extra arguments go to every pytest run.  Exit status: non-zero if any group failed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
status=0
runner=("$PY" -m pytest)
if [ "${FASTNET_COVERAGE:-0}" = "1" ]; then
    "$PY" -m coverage erase
    runner=("$PY" -m coverage run --parallel-mode -m pytest)
fi

run_group() {
    local name=$1; shift
    echo "=== $name: $*"
    "$@"
    local rc=$?
    if [ $rc -eq 5 ]; then
        # pytest's "no tests collected": a group that tests nothing is a failure.
        echo "=== $name: no tests collected (pytest exit 5)"
    fi
    [ $rc -eq 0 ] || { echo "=== $name: FAILED (exit $rc)"; status=1; }
}

run_group "library" env -u NUMBA_ENABLE_CUDASIM "${runner[@]}" tests \
    --ignore=tests/cuda_sim --ignore=tests/cuda_compile -q "$@"
run_group "cuda simulator" env NUMBA_ENABLE_CUDASIM=1 "${runner[@]}" tests/cuda_sim -q "$@"
run_group "cuda compile" env -u NUMBA_ENABLE_CUDASIM "${runner[@]}" tests/cuda_compile -q "$@"

if [ "${FASTNET_COVERAGE:-0}" = "1" ]; then
    echo "=== coverage of the CUDA glue across the three groups"
    "$PY" -m coverage combine -q
    "$PY" -m coverage report --include='*/fastnet/backend.py,*/fastnet/gemm_cublas.py,*/kernels/cuda.py' --fail-under=95 \
        || { echo "=== coverage: FAILED (below 95%)"; status=1; }
fi
exit $status

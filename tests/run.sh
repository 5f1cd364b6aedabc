#!/usr/bin/env bash
# README's test command: the three test groups, each in its own pytest process.
#   1. tests/            the library on the CPU (and on CUDA when a GPU is usable);
#   2. tests/cuda_sim    every numba.cuda kernel under NUMBA_ENABLE_CUDASIM=1 (set before
#                        numba is imported, hence its own process) + a cuda-sim training;
#   3. tests/cuda_compile  every CUDA kernel compiled to PTX for sm_90/sm_80 and checked by ptxas.
# Extra arguments go to every pytest run.  Exit status: non-zero if any group failed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
status=0

run_group() {
    local name=$1; shift
    echo "=== $name: $*"
    "$@"
    local rc=$?
    if [ $rc -eq 5 ]; then
        # pytest's "no tests collected": say so, but do not fail the whole run for it.
        echo "=== $name: no tests collected (pytest exit 5)"
        rc=0
    fi
    [ $rc -eq 0 ] || { echo "=== $name: FAILED (exit $rc)"; status=1; }
}

run_group "library" env -u NUMBA_ENABLE_CUDASIM "$PY" -m pytest tests \
    --ignore=tests/cuda_sim --ignore=tests/cuda_compile -q "$@"
run_group "cuda simulator" env NUMBA_ENABLE_CUDASIM=1 "$PY" -m pytest tests/cuda_sim -q "$@"
run_group "cuda compile" env -u NUMBA_ENABLE_CUDASIM "$PY" -m pytest tests/cuda_compile -q "$@"
exit $status

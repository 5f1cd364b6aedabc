#!/usr/bin/env bash
# README's test command: the test groups, each in its own pytest process.
#   1. tests/backends    the backend layer (devices, precisions, GEMM providers, the CuPy
#                        contract, the GPU install contract);
#   2. core              tests/core, kernels, doctor, plots, datasets: the network, its kernels and
#                        what reads it;
#   3. library           the rest of tests/ (training runs, integrations, the CLI, the project's
#                        files) on the CPU, and on CUDA when a GPU is usable;
#   4. tests/cuda_sim    every numba.cuda kernel under NUMBA_ENABLE_CUDASIM=1 (set before
#                        numba is imported, hence its own process), and the cuda-sim backend
#                        (the CUDA backend's code on the CuPy contract) feature by feature;
#   5. tests/cuda_compile  every CUDA kernel compiled to PTX for sm_90/sm_80 and checked by ptxas.
# The groups are independent and run side by side when the machine has more than one core
# (FASTNET_TEST_JOBS=1 runs them one after the other); each group's output is printed whole
# when it ends.
# With FASTNET_COVERAGE=1 (CI sets it) the groups that run the CUDA glue (fastnet/backends/devices.py,
# gemm_cublas.py, kernels/cuda.py) run under coverage.py: backends, cuda simulator and cuda
# compile; their line coverage of the glue must be >= 95%, and the report lists the lines no
# group ran.  The core and library groups run untraced: coverage.py's tracer sees every Python call, not
# only those into the traced files, and slowed it by about 40% (measured: 10.6 -> 15.0 CPU
# seconds for tests/doctor, tests/train/test_exact_values.py and tests/core/test_pickling.py).
# FASTNET_COVERAGE_DATA=FILE (set by the README test for its run of this script inside a fresh
# clone) writes the data beside FILE for the outer run to combine, and leaves the report to it.
# Extra arguments go to every pytest run.  Exit status: non-zero if any group failed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
status=0
plain=("$PY" -m pytest)
runner=("${plain[@]}")
if [ "${FASTNET_COVERAGE:-0}" = "1" ]; then
    if [ -n "${FASTNET_COVERAGE_DATA:-}" ]; then
        export COVERAGE_FILE=$FASTNET_COVERAGE_DATA
    else
        "$PY" -m coverage erase
    fi
    runner=("$PY" -m coverage run --parallel-mode -m pytest)
fi

jobs=${FASTNET_TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
names=()

group_done() {  # print a finished group's output and its verdict
    local name=$1 rc=$2
    cat "$logs/$name.out"
    if [ "$rc" -eq 5 ]; then
        # pytest's "no tests collected": a group that tests nothing is a failure.
        echo "=== $name: no tests collected (pytest exit 5)"
    fi
    [ "$rc" -eq 0 ] || { echo "=== $name: FAILED (exit $rc)"; status=1; }
}

run_group() {
    local name=$1; shift
    echo "=== $name: $*" > "$logs/$name.out"
    if [ "$jobs" -gt 1 ]; then
        echo "=== $name: started"
        ( "$@" >> "$logs/$name.out" 2>&1; echo $? > "$logs/$name.rc" ) &
        names+=("$name")
    else
        "$@" >> "$logs/$name.out" 2>&1
        group_done "$name" $?
    fi
}

core=(tests/core tests/kernels tests/doctor tests/plots tests/datasets)
others=(--ignore=tests/backends --ignore=tests/cuda_sim --ignore=tests/cuda_compile)
for folder in "${core[@]}"; do others+=(--ignore="$folder"); done
if [ "${FASTNET_CI_SPLIT:-0}" = "1" ]; then
    # CI's outer run: the README test (which runs the rest of the suite in a fresh clone) is
    # the longest; it runs beside the library's other outer tests, not after them.
    # (-rP: its output, with the nested run's groups and their times, is printed though it passes)
    run_group "readme" env -u NUMBA_ENABLE_CUDASIM "${runner[@]}" tests/test_readme_commands.py -q -rP "$@"
    others+=(--ignore=tests/test_readme_commands.py)
fi
run_group "backends" env -u NUMBA_ENABLE_CUDASIM "${runner[@]}" tests/backends -q "$@"
run_group "core" env -u NUMBA_ENABLE_CUDASIM "${plain[@]}" "${core[@]}" -q "$@"
run_group "library" env -u NUMBA_ENABLE_CUDASIM "${plain[@]}" tests "${others[@]}" -q "$@"
run_group "cuda simulator" env NUMBA_ENABLE_CUDASIM=1 "${runner[@]}" tests/cuda_sim -q "$@"
run_group "cuda compile" env -u NUMBA_ENABLE_CUDASIM "${runner[@]}" tests/cuda_compile -q "$@"

# Side by side: report each group as it ends, in the order they end.
while [ ${#names[@]} -gt 0 ]; do
    wait -n 2>/dev/null || sleep 1
    left=()
    for name in "${names[@]}"; do
        if [ -s "$logs/$name.rc" ]; then
            group_done "$name" "$(cat "$logs/$name.rc")"
        else
            left+=("$name")
        fi
    done
    names=("${left[@]+"${left[@]}"}")
done

if [ "${FASTNET_COVERAGE:-0}" = "1" ] && [ -z "${FASTNET_COVERAGE_DATA:-}" ]; then
    echo "=== coverage of the CUDA glue across the traced groups"
    "$PY" -m coverage combine -q
    "$PY" -m coverage report --include='*/fastnet/backends/devices.py,*/fastnet/backends/gemm_cublas.py,*/kernels/cuda.py' --fail-under=95 \
        || { echo "=== coverage: FAILED (below 95%)"; status=1; }
fi
exit $status

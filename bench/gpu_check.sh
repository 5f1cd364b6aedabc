#!/usr/bin/env bash
# One-command GPU check of fastnet (sections and time budget: bench/gpu_check.py's docstring).
#
#   bash bench/gpu_check.sh [--json PATH] [--table PATH] [--data-dir DIR] [--budget SECONDS]
#   bash bench/gpu_check.sh --dry ...     # no GPU: numba's simulator on cuda-sim (sets NUMBA_ENABLE_CUDASIM=1)
#
# 1. Install: skipped when CuPy, NVIDIA's numba-cuda, mpi4py and fastnet already import;
#    otherwise `pip install -e ".[cuda13,mpi]"` (mpi: for the NCCL data-parallel section; a
#    machine without internet: the failure is printed and the check goes on with what is
#    importable).  Never in dry mode.
# 2. Runs bench/gpu_check.py with the same arguments; its exit status is this script's
#    (non-zero when a check failed).  PYTHON picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GPU_CHECK_T0="${GPU_CHECK_T0:-$(date +%s.%N)}"  # the budget counts from here, install included
PY="${PYTHON:-$(command -v python || command -v python3)}"

dry=0
for arg in "$@"; do
    if [ "$arg" = "--dry" ]; then dry=1; fi
done
case "${NUMBA_ENABLE_CUDASIM:-0}" in "" | 0) ;; *) dry=1 ;; esac

if [ "$dry" = 1 ]; then
    export NUMBA_ENABLE_CUDASIM=1  # before Python starts: numba reads it at import
    install="skipped: dry mode"
elif "$PY" -c 'import sys, cupy, numba.cuda, mpi4py, fastnet.kernels; sys.exit(numba.cuda.implementation != "NVIDIA")' \
        >/dev/null 2>&1; then
    install="skipped: cupy, NVIDIA numba-cuda, mpi4py and fastnet already importable"
else
    echo "== installing fastnet[cuda13,mpi] (CuPy, numba-cuda, NCCL, mpi4py, MPICH) with pip"
    log="$(mktemp)"
    if timeout 180 "$PY" -m pip install --disable-pip-version-check --timeout 15 --retries 1 \
            -e ".[cuda13,mpi]" >"$log" 2>&1; then
        install="installed fastnet[cuda13,mpi]"
    else
        rc=$?
        install="pip install -e .[cuda13,mpi] failed (exit $rc): $(tail -n 1 "$log")"
        echo "== $install"
        tail -n 15 "$log" | sed 's/^/   pip: /'
        if ! "$PY" -c 'import fastnet.kernels' >/dev/null 2>&1; then
            # fastnet itself is not importable: install it alone, offline, with what is here.
            if "$PY" -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . \
                    >>"$log" 2>&1; then
                install="$install; installed fastnet alone (--no-deps, offline)"
            else
                install="$install; fastnet alone failed too: $(tail -n 1 "$log")"
            fi
        fi
        echo "== continuing with what is importable"
    fi
    rm -f "$log"
fi
export GPU_CHECK_INSTALL="$install"
exec "$PY" bench/gpu_check.py "$@"

#!/usr/bin/env bash
# One-command GPU check of fastnet on a bare machine: this repository, Python >= 3.10 and the
# package index are all it needs (sections and time budget: bench/gpu_check.py's docstring).
#
#   bash bench/gpu_check.sh [--json PATH] [--table PATH] [--data-dir DIR] [--budget SECONDS]
#   bash bench/gpu_check.sh --dry ...        # no GPU: numba's simulator on cuda-sim (sets NUMBA_ENABLE_CUDASIM=1)
#   bash bench/gpu_check.sh --setup-only ... # steps 1, 2 and the MNIST download only
#
# 1. A virtual environment of its own: GPU_CHECK_VENV (default .gpu-check-venv/ in the repository
#    root, git-ignored), made by PYTHON (default python3) with `-m venv`; where ensurepip is
#    missing (Debian/Ubuntu without python3-venv): `-m venv --without-pip`, then pip's wheel from
#    the package index.  Nothing is ever installed outside it (PEP 668's "externally-managed-
#    environment" refuses that on Debian/Ubuntu's Pythons).
# 2. `pip install --no-compile -e ".[cuda13,mpi]"` into it (modules byte-compiled on first import, not all now): CuPy, NVIDIA's numba-cuda and the CUDA 13 libraries
#    (cuBLAS, NVRTC, NVVM, nvJitLink, NCCL), mpi4py and MPICH (mpiexec) for the NCCL section.  Dry
#    mode installs the same.  GPU_CHECK_EXTRAS=cuda13,mpi,bench adds PyTorch (section 5 compares
#    with it when it imports; a few GB more).  Editable (kernels/ is mapped to fastnet.kernels by
#    pyproject's package-dir; the editable finder does that mapping), so that one copy of the code
#    runs, the checkout's: the sections' subprocesses start in the repository root, where `import
#    fastnet` finds the checkout's fastnet/ before any installed copy, and an edit or a `git pull`
#    needs no reinstall.  Reused without running pip when the environment's stamp
#    (pyproject.toml's hash, the extras, Python's version) matches and numpy, fastnet,
#    fastnet.kernels, CuPy, numba-cuda, mpi4py and mpiexec are there: a few seconds.
# 3. bench/gpu_check.py, run by that environment's Python with the same arguments: it downloads
#    MNIST (--data-dir, else $FASTNET_DATA, else ~/.cache/fastnet), runs every section, writes the
#    JSON and the table.  Its exit status is this script's: non-zero when a section failed or
#    could not run (the JSON's "not_run" says which and why).
# When no environment with fastnet can be had, this script writes the JSON (and the table) itself,
# with section "install" failed and the reason, and exits 1.
set -euo pipefail

EXTRAS="${GPU_CHECK_EXTRAS:-cuda13,mpi}"  # cuda13,mpi,bench adds PyTorch for the throughput comparison
STAMP_VERSION=1  # bump when the install step changes, so that every environment is redone

say() { echo "== $*"; }

# Empty when the package index answers, else why not (pip's own errors do not tell a dead
# network from a missing package).
index_problem() {  # python
    "$1" - <<'EOF' 2>/dev/null || true
import os, subprocess, sys, urllib.error, urllib.request
index = os.environ.get("PIP_INDEX_URL") or subprocess.run(
    [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
).stdout.strip() or "https://pypi.org/simple/"
try:
    urllib.request.urlopen(index.rstrip("/") + "/pip/", timeout=15).close()
except urllib.error.HTTPError:
    pass  # it answers
except Exception as exc:
    print(f"the package index {index} does not answer ({getattr(exc, 'reason', exc)}): no network, "
          "or it needs a proxy (https_proxy) or another index (PIP_INDEX_URL)")
EOF
}

# pip's error lines, and whether the package index answers.
pip_reason() {  # python log
    local why net
    why="$(grep -E '^[[:space:]]*(ERROR|error):' "$2" | sed 's/^[[:space:]]*//' | awk '!seen[$0]++' | tail -n 4 \
        | tr '\n' ' ' || true)"
    [ -n "$why" ] || why="$(grep -v '^[[:space:]]*$' "$2" | tail -n 2 | tr '\n' ' ' || true)"
    net="$(index_problem "$1")"
    echo "$why${net:+; $net}"
}

# pip into a venv made --without-pip: the base's pip downloads pip's wheel if it can (`pip
# download` is allowed under PEP 668), else the standard library fetches it from PyPI's JSON API;
# the wheel then installs itself.
bootstrap_pip() {  # base venv log
    local base=$1 venv=$2 log=$3 tmp
    tmp="$(mktemp -d)"
    if ! "$base" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
            --dest "$tmp" pip >>"$log" 2>&1; then
        echo "(the base Python has no working pip: pip's wheel from PyPI's JSON API)" >>"$log"
        "$base" - "$tmp" >>"$log" 2>&1 <<'EOF' || true
import hashlib, json, sys, urllib.parse, urllib.request
api = "https://pypi.org/pypi/pip/json"
with urllib.request.urlopen(api, timeout=30) as r:
    info = json.load(r)
wheel = next(u for u in info["urls"] if u["packagetype"] == "bdist_wheel")
with urllib.request.urlopen(urllib.parse.urljoin(api, wheel["url"]), timeout=60) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit("pip's wheel does not match PyPI's sha256")
open(f"{sys.argv[1]}/{wheel['filename']}", "wb").write(data)
print("downloaded", wheel["filename"])
EOF
    fi
    local whl
    whl="$(ls "$tmp"/pip-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -z "$whl" ] || ! "$venv/bin/python" "$whl/pip" install --disable-pip-version-check --no-index \
            "$whl" >>"$log" 2>&1; then
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$tmp"
}

# A virtual environment at $2 made by $1, with pip.  Prints how it was made; non-zero on failure.
make_venv() {  # base venv log
    local base=$1 venv=$2 log=$3
    if "$base" -m venv "$venv" >>"$log" 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        echo "created $venv with $base -m venv"
        return 0
    fi
    # Debian/Ubuntu without python3-venv: ensurepip is missing (and the half-made venv has no pip).
    rm -rf "$venv"
    if ! "$base" -m venv --without-pip "$venv" >>"$log" 2>&1; then
        return 1
    fi
    if ! bootstrap_pip "$base" "$venv" "$log" || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        return 1
    fi
    echo "created $venv with $base -m venv --without-pip (no ensurepip here) and pip from the package index"
}

# What the environment lacks for the check, one "; "-separated line; empty when nothing.
env_problems() {  # venv-python
    "$1" - <<'EOF' 2>&1 || true
import importlib, importlib.metadata, os, sys
missing = []
for mod in ("numpy", "fastnet", "fastnet.kernels", "cupy", "mpi4py"):
    try:
        importlib.import_module(mod)
    except Exception as exc:
        missing.append(f"{mod} does not import ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
try:
    importlib.metadata.version("numba-cuda")
except importlib.metadata.PackageNotFoundError:
    missing.append("NVIDIA's numba-cuda is not installed")
if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "mpiexec")):
    missing.append("no mpiexec beside the environment's python (the mpich wheel)")
print("; ".join(missing))
EOF
}

stamp_of() {  # venv-python
    "$1" -c 'import hashlib, sys
print("gpu-check", sys.argv[1], sys.argv[2], sys.version.split()[0],
      hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())' "$STAMP_VERSION" "$EXTRAS"
}

json_str() {  # text -> a JSON string
    local s
    s="$(printf '%s' "$1" | tr -d '\000-\010\013\014\016-\037')"
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/}
    printf '"%s"' "$s"
}

# No environment with fastnet: the JSON and the table say so (gpu_check.py cannot run).
fail_early() {  # reason
    local reason=$1 secs mode
    secs="$(awk -v a="$GPU_CHECK_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
    mode=$([ "$dry" = 1 ] && echo dry || echo gpu)
    say "FAIL: $reason"
    {
        printf '{"mode": "%s", "backend": "%s", "passed": false, "failed": ["install"],\n' "$mode" \
            "$([ "$dry" = 1 ] && echo cuda-sim || echo cuda)"
        printf ' "not_run": {"all other sections": "no Python environment with fastnet"},\n'
        printf ' "wall_s": %s, "sections": {"install": {"status": "fail", "reason": %s, "venv": %s, "log": %s, "seconds": %s}}}\n' \
            "$secs" "$(json_str "$reason")" "$(json_str "$venv")" "$(json_str "$log")" "$secs"
    } >"$json_out"
    if [ -n "$table_out" ]; then
        printf '## fastnet GPU check (%s): FAIL\n\n| section | status | seconds | summary |\n|---|---|---:|---|\n| install | fail | %s | %s |\n' \
            "$([ "$dry" = 1 ] && echo 'dry mode, cuda-sim' || echo GPU)" "$secs" "${reason//|//}" >"$table_out"
    fi
    echo "wrote $json_out; FAIL: install"
    exit 1
}

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    export GPU_CHECK_T0="${GPU_CHECK_T0:-$(date +%s.%N)}"  # the budget counts from here, install included

    dry=0 json_out=gpu_check.json table_out=""
    local prev=""
    for arg in "$@"; do
        case "$prev" in --json) json_out=$arg ;; --table) table_out=$arg ;; esac
        case "$arg" in
            --dry) dry=1 ;;
            --json=*) json_out=${arg#--json=} ;;
            --table=*) table_out=${arg#--table=} ;;
            -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        esac
        prev=$arg
    done
    case "${NUMBA_ENABLE_CUDASIM:-0}" in "" | 0) ;; *) dry=1 ;; esac
    [ "$dry" = 1 ] && export NUMBA_ENABLE_CUDASIM=1  # before Python starts: numba reads it at import

    venv="${GPU_CHECK_VENV:-$PWD/.gpu-check-venv}"
    case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
    local vpy="$venv/bin/python" base t_install install status
    log="$(mktemp)"  # until the environment exists: then $venv/gpu-check-install.log
    t_install="$(date +%s.%N)"

    # 1. the virtual environment
    if "$vpy" -m pip --version >/dev/null 2>&1; then
        install="reused $venv"
    else
        base="${PYTHON:-$(command -v python3 || command -v python || true)}"
        [ -n "$base" ] || fail_early "no Python: install Python >= 3.10 (or set PYTHON=/path/to/python3)"
        if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
            fail_early "$base is not Python >= 3.10 ($("$base" --version 2>&1 | head -n 1 || true)): set PYTHON=/path/to/python3.10+"
        fi
        if [ -e "$venv" ]; then
            [ -f "$venv/pyvenv.cfg" ] || fail_early "$venv exists and is not a virtual environment: move it, or set GPU_CHECK_VENV"
            say "$venv is broken (no working pip): making it again"
            rm -rf "$venv"
        fi
        say "creating the virtual environment $venv with $base"
        if ! install="$(make_venv "$base" "$venv" "$log")"; then
            local net
            net="$(index_problem "$base")"
            fail_early "could not create a virtual environment with $base -m venv (log: $log): $(tail -n 3 "$log" | tr '\n' ' ')${net:+; $net}
(without ensurepip, pip's wheel comes from the package index; or, on Debian/Ubuntu: apt install python3-venv)"
        fi
        # An old ensurepip's pip (Python 3.10.0 to 3.10.2: 21.2) predates editable pyproject installs.
        if ! "$vpy" -c 'import sys, pip; sys.exit(int(pip.__version__.split(".")[0]) < 22)' 2>/dev/null; then
            "$vpy" -m pip install --disable-pip-version-check --no-input --upgrade pip >>"$log" 2>&1 || true
        fi
    fi
    cat "$log" >>"$venv/gpu-check-install.log"
    rm -f "$log"
    log="$venv/gpu-check-install.log"
    echo "== $(date '+%F %T') gpu_check.sh $*" >>"$log"

    # 2. the install
    local want problems
    want="$(stamp_of "$vpy")"
    problems="$(env_problems "$vpy")"
    if [ "$want" = "$(cat "$venv/.gpu-check-stamp" 2>/dev/null || true)" ] && [ -z "$problems" ]; then
        status=reused
        install="$install: fastnet-mlp[$EXTRAS] already installed (stamp matches pyproject.toml), pip not run"
        say "$install"
    else
        say "installing fastnet-mlp[$EXTRAS] (CuPy, numba-cuda, cuBLAS, NCCL, mpi4py, MPICH) into $venv (log: $log)"
        local cmd=("$vpy" -m pip install --disable-pip-version-check --no-input --no-compile -e ".[$EXTRAS]") plog rc=0
        command -v timeout >/dev/null && cmd=(timeout "${GPU_CHECK_INSTALL_TIMEOUT:-1800}" "${cmd[@]}")
        rm -f "$venv/.gpu-check-stamp"
        plog="$(mktemp)"
        "${cmd[@]}" >"$plog" 2>&1 || rc=$?
        cat "$plog" >>"$log"
        if [ $rc = 0 ]; then
            problems="$(env_problems "$vpy")"
            if [ -z "$problems" ]; then
                echo "$want" >"$venv/.gpu-check-stamp"
                status=installed
                install="$install; installed fastnet-mlp[$EXTRAS]: $(grep '^Successfully installed' "$plog" | cut -c 1-600 || true)"
            else
                status=fail
                install="$install; pip install -e .[$EXTRAS] succeeded, but: $problems"
            fi
        else
            status=fail
            install="$install; pip install -e .[$EXTRAS] failed (exit $rc$([ $rc != 124 ] || echo ', timed out')): $(pip_reason "$vpy" "$plog")"
            tail -n 15 "$plog" | sed 's/^/   pip: /'
        fi
        rm -f "$plog"
        say "$install"
    fi
    if [ -n "$problems" ] && ! "$vpy" -c 'import numpy, fastnet' >/dev/null 2>&1; then
        fail_early "$install (fastnet does not import in $venv; log: $log)"
    fi

    export GPU_CHECK_INSTALL="$install" GPU_CHECK_INSTALL_STATUS="$status" GPU_CHECK_VENV="$venv" \
        GPU_CHECK_INSTALL_LOG="$log" \
        GPU_CHECK_INSTALL_SECONDS="$(awk -v a="$t_install" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
    # 3. the check, by the environment's Python
    exec "$vpy" bench/gpu_check.py "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi

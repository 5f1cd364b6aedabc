"""Interleaved epochs with and without a competing CPU-bound process (``fastnet bench --load``).

Every system trains one epoch in turn per round (A B C ... A B C ...) on the same
shuffled arrays; each round gives a ratio ``baseline seconds / system seconds``
(above 1: the system is faster than the baseline), and the table reports the
median of those per-round ratios, never a ratio of medians.

Conditions: ``"none"`` (the machine as it is) and ``"core"``: a child
``python -c 'while True: pass'`` spins for the whole measurement (started before
the warm-up epochs, pinned to the last core this process may run on, killed in a
``finally``; on Linux it also dies with its parent).

``fastnet-1thread`` / ``fastnet-Nthreads`` train with the GEMMs' pools pinned to a fixed
thread count (``threadpoolctl.threadpool_limits``, and oneDNN's where it loads:
``fastnet.backends.threads.gemm_threads``) and fastnet's thread tuner off
(``FASTNET_THREADS=fixed``), so the table can compare fastnet's default (the
tuner on, unless the environment says otherwise) against the best fixed count.
"""
from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

from fastnet.cli.bench import systems as bench_systems

#: The baselines every system is compared with, round by round.
BASELINES = ("pytorch", "pytorch-tuned", "numpy-scratch")
#: The default configurations: relu512x2-adam at batch 128 and 1024, sigmoid128-sgd at 128.
CONFIGS = ("relu512x2-adam", "relu512x2-adam-b1024", "sigmoid128-sgd")
CONDITIONS = ("none", "core")
LOAD_CODE = "while True: pass"


# ------------------------------------------------------------------ the load
def _die_with_parent():  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass


@contextlib.contextmanager
def cpu_load(condition):
    """``"none"``: nothing, yields None.  ``"core"``: a spinning child process for the
    duration of the block; yields ``{"pid", "core"}`` and kills and reaps it on exit."""
    if condition == "none":
        yield None
        return
    if condition != "core":
        raise ValueError(f"load condition must be one of {CONDITIONS}, got {condition!r}")
    extra = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}
    proc = subprocess.Popen([sys.executable, "-c", LOAD_CODE], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **extra)
    try:
        core = None
        if hasattr(os, "sched_setaffinity"):
            core = max(os.sched_getaffinity(0))
            try:
                os.sched_setaffinity(proc.pid, {core})
            except OSError:
                core = None
        yield {"pid": proc.pid, "core": core, "code": LOAD_CODE}
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ systems
@contextlib.contextmanager
def fixed_threads(k):
    """Every BLAS and oneDNN's pool (where fastnet's GEMMs may run) on ``k`` threads, and
    fastnet's thread tuner off (``FASTNET_THREADS=fixed``)."""
    from threadpoolctl import threadpool_limits

    from fastnet.backends.threads import gemm_threads

    with _tuner_off(), threadpool_limits(k, user_api="blas"), gemm_threads(k):
        yield


@contextlib.contextmanager
def _tuner_off():
    """``FASTNET_THREADS=fixed`` (``fastnet.backends.threads``: the BLAS thread tuner of ``fit`` off)
    for the duration of the block; the variable is put back as it was."""
    from fastnet.backends.threads import ENV

    old = os.environ.get(ENV)
    os.environ[ENV] = "fixed"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


class FastnetFixedThreads(bench_systems.FastnetSystem):
    """fastnet-fused with BLAS pinned to ``threads`` threads around every epoch."""

    def __init__(self, threads):
        super().__init__("cpu", "fused")
        self.threads = threads
        self.name = f"fastnet-{threads}thread" + ("s" if threads > 1 else "")

    def epoch(self, X, y):
        with fixed_threads(self.threads):
            super().epoch(X, y)


class FastnetDefault(bench_systems.FastnetSystem):
    """fastnet-fused as a user runs it (thread tuner as configured); keeps what the tuner
    reports after each epoch (``history.params["threads"]``, when fastnet has a tuner)."""

    def __init__(self):
        super().__init__("cpu", "fused")
        self.thread_summaries = []

    def epoch(self, X, y):
        c = self.config
        history = self.model.fit(X, y, epochs=1, batch_size=c["batch_size"], optimizer=c["optimizer"], lr=c["lr"],
                                 shuffle=False, diagnose=False, verbose=0)
        self.thread_summaries.append(getattr(history, "params", {}).get("threads"))


def default_fixed_threads():
    n = os.cpu_count() or 1
    return [1] if n == 1 else [1, n]


def default_systems(fixed=None):
    """fastnet-fused, its fixed-thread variants, pytorch, pytorch-tuned, numpy-scratch."""
    systems = [FastnetDefault()]
    systems += [FastnetFixedThreads(k) for k in (fixed if fixed is not None else default_fixed_threads())]
    systems += [bench_systems.TorchSystem(tuned=False), bench_systems.TorchSystem(tuned=True), bench_systems.NumpyScratchSystem()]
    return systems


# ------------------------------------------------------------------ measuring
#: One untimed warm-up epoch per system, then interleaved timed rounds (``fastnet.cli.bench.systems``).
measure = bench_systems.measure


def round_ratios(baseline_seconds, system_seconds):
    """Per round: baseline seconds / system seconds (above 1: the system is faster)."""
    if len(baseline_seconds) != len(system_seconds):
        raise ValueError("the two systems ran a different number of rounds")
    return [b / s for b, s in zip(baseline_seconds, system_seconds)]


def _ratio(baseline_seconds, system_seconds):
    per_round = round_ratios(baseline_seconds, system_seconds)
    return {"per_round": per_round, "median": statistics.median(per_round)}


def summarize(times, baselines=BASELINES, fixed_names=()):
    """Per system: its epoch seconds, their median, and against each baseline present
    (and the best fixed-thread fastnet) the per-round ratios and their median."""
    fixed = [n for n in fixed_names if n in times]
    best_fixed = min(fixed, key=lambda n: statistics.median(times[n])) if fixed else None
    out = {}
    for name, t in times.items():
        entry = {"epoch_seconds": list(t), "median_epoch_seconds": statistics.median(t), "vs": {}}
        for b in baselines:
            if b in times:
                entry["vs"][b] = _ratio(times[b], t)
        if best_fixed is not None:
            entry["vs_best_fixed"] = _ratio(times[best_fixed], t)
        out[name] = entry
    return out, best_fixed


def run_interleaved(X, y, configs=CONFIGS, conditions=CONDITIONS, rounds=7, seed=0, make_systems=None,
                    progress=None):
    """Every config under every condition: a list of blocks, each
    ``{config, condition, load, rounds, best_fixed, systems: summarize(...)}``.
    ``configs``: names of ``fastnet.core.recipes``' bench configurations, or ``{name: config}``."""
    make_systems = make_systems or default_systems
    table = configs if isinstance(configs, dict) else {c: bench_systems.CONFIGS[c] for c in configs}
    rng = np.random.default_rng(seed)
    blocks = []
    for condition in conditions:
        for cname, config in table.items():
            systems = make_systems()
            with cpu_load(condition) as load:  # before the warm-ups, until the last round
                times = measure(systems, X, y, config, rounds, rng, seed,
                                bench_systems.labelled(progress, f"{cname} [{condition}]"))
            fixed_names = [s.name for s in systems if isinstance(s, FastnetFixedThreads)]
            summary, best = summarize(times, fixed_names=fixed_names)
            tuner = {s.name: s.thread_summaries for s in systems if hasattr(s, "thread_summaries")}
            blocks.append({"config": cname, "condition": condition, "load": load, "rounds": rounds,
                           "rows": len(X), "batch_size": config["batch_size"], "best_fixed": best,
                           "systems": summary, "thread_tuner": tuner or None})
    return blocks


def format_interleaved(blocks):
    """Markdown: per config and load, each system's median epoch and its speed-up
    (median of per-round ratios: other's seconds / this system's) against each baseline."""
    head = ["config", "load", "system", "median epoch s", *(f"vs {b}" for b in BASELINES), "vs best fixed threads"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    notes = []
    for blk in blocks:
        for name, e in blk["systems"].items():
            cells = [f"{e['vs'][b]['median']:.2f}x" if b in e["vs"] else "-" for b in BASELINES]
            cells.append(f"{e['vs_best_fixed']['median']:.2f}x" if "vs_best_fixed" in e else "-")
            lines.append(f"| {blk['config']} | {blk['condition']} | {name} | {e['median_epoch_seconds']:.3f} | "
                         + " | ".join(cells) + " |")
        f = blk["systems"].get("fastnet-fused")
        if f and "vs_best_fixed" in f:
            notes.append(f"{blk['config']} [{blk['condition']}]: fastnet-fused default vs best fixed "
                         f"({blk['best_fixed']}): {f['vs_best_fixed']['median']:.2f}x "
                         f"(1/1.2 = 0.83x or more is within 1.2x)")
    return "\n".join(lines + [""] + notes)


# ------------------------------------------------------------------ run description
def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_dirty():
    """True when the working tree differs from the commit (``git status --porcelain``), None without git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def run_info():
    """Machine, thread settings (threadpoolctl, PyTorch, environment, CPU affinity) and git commit."""
    info = {"machine": bench_systems.machine_description(), "git_commit": git_commit(), "git_dirty": git_dirty(),
            "cpu_count": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if hasattr(os, "sched_getaffinity"):
        info["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    info["env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                  "NUMBA_NUM_THREADS", "FASTNET_THREADS") if k in os.environ}
    try:
        from threadpoolctl import threadpool_info

        # each library by its file's name: where it is installed on this machine is no figure of the run
        info["threadpool_info"] = [{**pool, "filepath": os.path.basename(pool["filepath"])} if pool.get("filepath")
                                   else pool for pool in threadpool_info()]
    except ImportError:
        info["threadpool_info"] = None
    try:
        import torch

        info["torch"] = {"version": torch.__version__, "num_threads": torch.get_num_threads(),
                         "num_interop_threads": torch.get_num_interop_threads()}
    except ImportError:
        pass
    return info

"""Predictions of a few rows on the CPU: the forward pass on one or more OpenMP threads.

A call of one row (a request served one at a time) spends its time reading the weights:
three GEMVs through NumPy's BLAS read the 2.6 MB of a 784-512-512-10 network from the
shared L3 cache on one core (69 µs measured, Intel Xeon with AMX, 2 cores).  Here the
weights are cut into one block of rows per core and each thread of an OpenMP team
reads its own blocks, which stay in its core's L2 cache from call to call
(``fastnet.kernels.cpu.PoolForward``; 17.5 µs for the same three layers on that
machine, both cores).  Whether that pays, and on how many threads, depends on the CPU,
its caches and the model.  At the first call of each row count the kernel (on each thread
count) is timed against NumPy's GEMMs (:func:`_kernel_wins`), and where NumPy's are
faster those calls run through them, weighed again at the 64th call, 512 and then 4,096
calls later (:data:`WEIGH_AGAIN`); where the kernel wins, for good, each thread count (the
calling thread alone, or 2, 4, ... threads of the pool) is timed on the first calls, then the
fastest runs (:class:`Fastest`).  Every thread count computes the same sums, so which one runs never
changes a result; a row's outputs change at most once in a process, when a weighing done
again moves its calls from the BLAS's sums to the kernel's (the last bits).

The pool is the process's ``libgomp.so.1`` (oneDNN's OpenMP runtime where fastnet loads
oneDNN: the same library), loaded with ctypes; without it, or for a model this cannot
run (a layer other than ``Dense`` and ``Dropout``, an activation the kernel does not
apply, float64, ``kernels="reference"``), :func:`outputs` returns None and ``predict``
runs as for many rows.
``FASTNET_SMALL_BATCH=0`` turns it off.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
import weakref
from typing import Any, Callable, Optional

import numpy as np

from fastnet.backends import gomp_forked

#: Calls of at most this many rows run here; more rows run through the BLAS's GEMMs (whose
#: kernels reuse each weight across rows, which the one-row kernel does not).
MAX_ROWS = 16

_runner: Any = None
_runner_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # libgomp's threads do not survive a fork, and its first parallel region in the child of
    # a process that ran one (fastnet's, oneDNN's, MKL's on GNU OpenMP) waits for them forever:
    # where libgomp was loaded before the fork (fastnet.backends.gomp_forked, whose handler
    # ran first), the child predicts through the BLAS
    global _runner
    if gomp_forked():
        _runner = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def runner() -> Any:
    """A :class:`fastnet.backends.gemm_onednn.PoolRunner` on the process's ``libgomp.so.1``,
    or None where it does not load, in a process forked after libgomp was loaded, or with
    ``FASTNET_SMALL_BATCH=0`` (read until the first few-row ``predict`` makes the runner)."""
    global _runner
    if os.environ.get("FASTNET_SMALL_BATCH", "1").strip() == "0":
        return None
    if _runner is None and gomp_forked():
        _runner = False
    if _runner is None:
        with _runner_lock:
            if _runner is None:
                from fastnet.backends.gemm_onednn import PoolRunner

                try:
                    omp = ctypes.CDLL("libgomp.so.1")
                    _runner = PoolRunner(omp)
                except (OSError, AttributeError):
                    _runner = False
    return _runner or None


class Fastest:
    """Of several ways to do the same work, the one measured fastest here, per ``key`` (a
    row count): each way runs ``TRIES`` times, in turn, on the first calls of a key; then
    the one with the lowest best time runs for a while, and the key is measured again (a
    load that came or went since).  The while is ``KEEP_FIRST`` calls after a decision
    that changed the way, twice as long after each one that kept it, up to ``KEEP_MOST``:
    a way chosen under a passing load (another library's threads still spinning after a
    large call: fastnet's 2-thread way measured 75 µs there, 20 µs after) is soon measured
    again, a steady choice seldom."""

    TRIES = 4
    KEEP_FIRST = 64
    KEEP_MOST = 4096

    def __init__(self, ways: list[Any]) -> None:
        self.ways = list(ways)
        self.chosen: dict[Any, Any] = {}
        self._last: dict[Any, tuple[Any, int]] = {}   # key -> (way, calls it is kept)
        self._times: dict[Any, list[list[float]]] = {}
        self._calls: dict[Any, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: Any, run: Callable[[Any], Any]) -> Any:
        """``run(way)`` with the way chosen for ``key`` (or the next one to time)."""
        way = self.chosen.get(key)
        if way is not None:
            calls = self._calls[key] = self._calls.get(key, 0) + 1  # (a count lost to a race: harmless)
            if calls >= self._last[key][1]:
                with self._lock:
                    self.chosen.pop(key, None)
            return run(way)
        with self._lock:
            times = self._times.setdefault(key, [[] for _ in self.ways])
            i = min(range(len(self.ways)), key=lambda j: len(times[j]))
        start = time.perf_counter()
        result = run(self.ways[i])
        elapsed = time.perf_counter() - start
        with self._lock:
            if self._times.get(key) is not times:  # decided meanwhile by another thread
                return result
            times[i].append(elapsed)
            if key not in self.chosen and all(len(t) >= self.TRIES for t in times):
                best = self.ways[min(range(len(self.ways)), key=lambda j: min(times[j]))]
                last, keep = self._last.get(key, (None, 0))
                keep = min(2 * keep, self.KEEP_MOST) if best == last else self.KEEP_FIRST
                self._last[key] = (best, keep)
                self.chosen[key], self._calls[key] = best, 0
                del self._times[key]
        return result


def thread_counts(parts: int) -> list[int]:
    """The ways timed: 1 (the calling thread), 2, 4, ... threads, and ``parts`` (one block each)."""
    counts, t = [1], 2
    while t < parts:
        counts.append(t)
        t *= 2
    return counts + [parts] if parts > 1 else counts


class _Entry:
    """A model's :class:`fastnet.kernels.cpu.PoolForward` (None where the kernel cannot run
    it) and its :class:`Fastest`, for the layers and arrays it was built on."""

    def __init__(self, model: Any, forward: Any, threads: int) -> None:
        self.backend = model.backend_
        self.layers = list(model.layers)
        self.arrays = [(layer, layer.W, layer.b) for layer in self.layers if hasattr(layer, "W")]
        self.forward = forward
        #: the thread counts timed: up to the blocks, and up to OpenMP's count (``OMP_NUM_THREADS``,
        #: ``omp_set_num_threads``: whoever pinned the process's threads)
        self.ways = [t for t in thread_counts(forward.parts) if t <= max(1, threads)] if forward is not None else []
        self.fastest: Optional[Fastest] = Fastest(self.ways) if forward is not None else None
        #: what the weighing against NumPy's GEMMs is kept by (:func:`_kernel_wins`): the layers'
        #: shapes and activations, the blocks and the thread counts
        self.shapes = None if forward is None else (
            tuple((W.shape, act) for W, _, act in forward.layers), forward.parts, tuple(self.ways))

    def current(self, model: Any) -> bool:
        """Whether ``model`` still has the backend, layers and arrays this was built on."""
        if model.backend_ is not self.backend or model.layers != self.layers:
            return False
        for layer, W, b in self.arrays:
            if layer.W is not W or layer.b is not b:
                return False
        return True


_entries: "weakref.WeakKeyDictionary[Any, _Entry]" = weakref.WeakKeyDictionary()
_entries_lock = threading.Lock()


def _cores() -> int:
    """The cores this process may run on: one block of the weights per core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def blocks(inputs: int) -> int:
    """The weights' blocks for a first layer of ``inputs`` inputs: one per core, at most one
    per input."""
    return min(_cores(), inputs)


def _plan(model: Any) -> Optional[list[tuple[Any, Any, str]]]:
    """``(W, b, activation)`` per Dense layer of ``model`` (the last one's the loss's output
    activation where the kernel applies it: probabilities out), or None where the kernel
    cannot run it."""
    from fastnet.core.layers import Dense, Dropout
    from fastnet.kernels import cpu

    backend = model.backend_
    if backend.name != "cpu" or backend.dtype != np.float32 or backend.kernels_name != "fused":
        return None  # (kernels="reference": the table's plain NumPy versions, as asked)
    plan = []
    for layer in model.layers:
        if isinstance(layer, Dropout):
            continue  # identity at inference
        if type(layer) is not Dense or layer.kernel_activation not in cpu.FORWARD_ACTIVATIONS:
            return None
        W, b = layer.W, layer.b
        if not all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous for a in (W, b)):
            return None  # (a layer's arrays replaced by others: the kernel reads C-contiguous float32)
        plan.append((W, b, layer.kernel_activation))
    fused = getattr(model.loss_, "fused_activation", None)
    if plan and fused is not None:
        W, b, act = plan[-1]
        if act != "identity" or fused not in cpu.FORWARD_ACTIVATIONS:
            return None
        plan[-1] = (W, b, fused)
    return plan or None


def _entry(model: Any, pool: Any) -> _Entry:
    """``model``'s entry, made again where its layers or arrays are not those it was made on."""
    entry = _entries.get(model)
    if entry is None or not entry.current(model):
        from fastnet.kernels import cpu

        plan = _plan(model)
        forward = None if plan is None else cpu.PoolForward(
            plan, MAX_ROWS, blocks(plan[0][0].shape[0]), (*pool.thread_functions, pool.barrier), pool.run)
        entry = _Entry(model, forward, pool.max_threads())
        with _entries_lock:
            _entries[model] = entry
    return entry


#: Timed calls of each way when the kernel is weighed against NumPy's GEMMs.
GATE_TRIES = 5


def best_way(ways: dict[Any, Callable[[], Any]], tries: int = GATE_TRIES) -> tuple[Any, float]:
    """The key of ``ways`` whose best of ``tries`` timed calls (in turn, after one untimed
    call of each) is the lowest, and that best time."""
    for run in ways.values():
        run()
    best = {key: float("inf") for key in ways}
    for _ in range(tries):
        for key, run in ways.items():
            start = time.perf_counter()
            run()
            best[key] = min(best[key], time.perf_counter() - start)
    key = min(best, key=lambda k: best[k])
    return key, best[key]


#: Per (layers' shapes and activations, blocks, thread counts) and row count: whether the
#: kernel beat NumPy's GEMMs (:func:`_kernel_wins`), for every model of those shapes in this
#: process (scikit-learn's estimators make a new network per fit).
_gates: dict[Any, bool] = {}
_gates_lock = threading.Lock()

#: Where NumPy's GEMMs won, the weighing is done again at the 64th call of that key (the first
#: counted), 512 calls later and 4,096 calls after that: a first weighing that a passing load
#: disturbed does not decide for the process's life (``fastnet bench --inference``, Intel Xeon
#: with AMX: NumPy's GEMMs chosen at a worker's first call, its 2,000 single-row calls took
#: 148 µs each where another run's kernel took 25).  Once the kernel wins it runs from then on,
#: so a row's outputs change at most once in a process: from the BLAS's sums to the kernel's.
WEIGH_AGAIN = (64, 512, 4096)
#: Per key where NumPy's GEMMs won: [calls since the last weighing, weighings done again].
_again: dict[Any, list[int]] = {}


def _kernel_wins(model: Any, entry: _Entry, rows: int) -> bool:
    """Whether the kernel, on its fastest thread count, beats NumPy's GEMMs on calls of
    ``rows`` rows here: timed once per process, shapes and row count, on rows of ones, after
    the process's other threads have gone idle (a BLAS's threads spin for a while after a
    large call, and a kernel timed beside them measures the contention): first the kernel's
    thread counts, in turn, then, once its own threads have gone idle, NumPy's GEMMs (the two
    pools are not interleaved: on 48 rows, NumPy's GEMMs timed between the kernel's calls
    lost to it, yet took 356 µs against its 395 when each ran alone).  Decided once where the
    kernel wins, so that a row's outputs do not change from call to call (the kernel's sums are
    not the BLAS's); where NumPy's win, weighed again after :data:`WEIGH_AGAIN`'s calls."""
    from fastnet.backends import gemm_choice

    forward = entry.forward
    x = np.ones((rows, forward.layers[0][0].shape[0]), dtype=np.float32)
    gemm_choice.settle()
    _, kernel = best_way({threads: functools.partial(forward, x, threads) for threads in entry.ways})
    gemm_choice.settle()
    _, blas = best_way({"numpy": lambda: model._infer(x)})
    return kernel < blas


def _weigh_again(model: Any, entry: _Entry, rows: int, key: Any) -> bool:
    """For a key where NumPy's GEMMs won: count this call, and at :data:`WEIGH_AGAIN`'s next
    count weigh the kernel against them again.  True from the weighing the kernel wins on
    (and for good: :data:`_gates` then says so)."""
    state = _again.get(key)
    if state is None or state[1] >= len(WEIGH_AGAIN):
        return False
    state[0] += 1  # (a count lost to a race between threads: a weighing a call later)
    if state[0] < WEIGH_AGAIN[state[1]]:
        return False
    with _gates_lock:
        if _gates.get(key):
            return True  # (another thread's weighing, meanwhile)
        if state[1] >= len(WEIGH_AGAIN) or state[0] < WEIGH_AGAIN[state[1]]:
            return False
        state[0], state[1] = 0, state[1] + 1
        wins = _gates[key] = _kernel_wins(model, entry, rows)
    return wins


def outputs(model: Any, X: np.ndarray) -> Optional[np.ndarray]:
    """The network's outputs after the loss's output activation (the probabilities of a
    classifier, as ``model.loss_.outputs`` makes them) for the rows of ``X`` (a float32
    host array of at most :data:`MAX_ROWS` rows), or None where this does not run (see the
    module docstring)."""
    if not 0 < X.shape[0] <= MAX_ROWS or X.dtype != np.float32:
        return None
    pool = _runner if _runner is not None else runner()
    if not pool:
        return None
    entry = _entry(model, pool)
    forward, fastest = entry.forward, entry.fastest
    if forward is None or fastest is None:
        return None
    rows = X.shape[0]
    key = (entry.shapes, rows)
    wins = _gates.get(key)
    if wins is None:
        with _gates_lock:  # decided by one thread
            wins = _gates.get(key)
            if wins is None:
                wins = _gates[key] = _kernel_wins(model, entry, rows)
                if not wins:
                    _again[key] = [0, 0]
    if not wins and not _weigh_again(model, entry, rows, key):
        return None
    x = np.ascontiguousarray(X)
    return fastest(x.shape[0], lambda threads: forward(x, threads))


def choices(model: Any) -> dict[int, Any]:
    """Per row count seen so far: the kernel's thread count chosen, or ``"numpy"`` where
    NumPy's GEMMs were faster (empty before any call, and for a model the kernel cannot run)."""
    entry = _entries.get(model)
    if entry is None or entry.fastest is None:
        return {}
    chosen: dict[int, Any] = {rows: "numpy" for (shapes, rows), wins in list(_gates.items())
                              if shapes == entry.shapes and not wins}
    chosen.update(entry.fastest.chosen)
    return chosen

"""Fused CPU kernels against the reference kernels, timed side by side.

Run ``python bench/bench_kernels.py`` (``--help`` for options).  For every case
the Numba kernel (``fastnet.kernels.cpu``) and the plain NumPy kernel
(``fastnet.kernels.reference``) run on identical inputs in the same process:
warm-up first (JIT compile or cache load, page faults, caches), then rounds
that alternate which of the two goes first; each round restores the arrays a
kernel modifies in place (untimed) and times ``reps`` calls with
``time.perf_counter``.  The table reports the median time per call and the
ratio of medians.  ``bench/test_bench_kernels.py`` runs the same cases under
pytest-benchmark.

The reference times include NumPy's temporaries: allocating them (page faults
for large arrays) is part of what fusing saves, and it varies between
processes more than the fused times do.  Compare ratios from one run.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from fastnet.kernels import cpu, reference

#: Acceptance criteria: (case id, minimum speed-up of fused over reference).
CRITERIA = [
    ("softmax_xent 128x10 float32", 3.0),
    ("softmax_xent 1024x10 float32", 3.0),
    ("sigmoid_fwd 128x512 float32", 2.0),
    ("sigmoid_bwd 128x512 float32 dz=dy", 2.0),
    ("sigmoid_bwd 128x512 float32", 2.0),
    ("adam_update 784x512 float32", 3.0),
]


@dataclass
class Case:
    """One micro-benchmark: ``kernel(*args)`` on fresh copies of ``arrays``."""

    kernel: str
    shape: tuple
    dtype: type
    make: object  # (rng) -> (list of arrays, list of scalars, indices of arrays written in place)
    note: str = ""
    #: Calls per timed round are capped where repeated in-place calls would
    #: drift the data into denormals (dz = dy * a(1-a) applied over and over).
    max_reps: int = 1000
    group: str = field(init=False)

    def __post_init__(self):
        shape = "x".join(map(str, self.shape))
        self.group = f"{self.kernel} {shape} {np.dtype(self.dtype).name}" + (f" {self.note}" if self.note else "")

    def instantiate(self, module, seed=0):
        arrays, scalars, inplace = self.make(np.random.default_rng(seed))
        fn = getattr(module, self.kernel)
        pristine = [arrays[i].copy() for i in inplace]

        def restore():
            for i, saved in zip(inplace, pristine):
                np.copyto(arrays[i], saved)

        args = list(arrays) + list(scalars)
        return (lambda: fn(*args)), restore


def _fwd(shape, dtype):
    def make(rng):
        n, k = shape
        z = (rng.standard_normal((n, k)) * 3).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        return [z, b], [], [0]

    return make


def _bwd(act, shape, dtype, alias):
    def make(rng):
        n, k = shape
        z = (rng.standard_normal((n, k)) * 3).astype(dtype)
        getattr(reference, f"{act}_fwd")(z, np.zeros(k, dtype))
        dy = rng.standard_normal((n, k)).astype(dtype)
        db = np.empty(k, dtype)
        if alias:  # as fastnet's Dense layer calls it: dz is dy
            arrays = [z, dy, dy, db]
            return arrays, [], [1]
        return [z, dy, np.empty_like(dy), db], [], []

    return make


def _loss(kind, shape, dtype):
    def make(rng):
        n, k = shape
        logits = (rng.standard_normal((n, k)) * 3).astype(dtype)
        if kind == "softmax_xent":
            y = rng.integers(0, k, n)
        else:
            y = rng.random((n, k)).astype(dtype)
        return [logits, y, np.empty(n, dtype), np.empty((n, k), dtype)], [1.0 / n], []

    return make


_HYPER = {
    "sgd_update": (0.01, 1e-4),
    "momentum_update": (0.01, 0.9, 1e-4),
    "nesterov_update": (0.01, 0.9, 1e-4),
    "adam_update": (1e-3, 0.9, 0.999, 1e-8, 0.0, 1 - 0.9**10, 1 - 0.999**10),
    "adamw_update": (1e-3, 0.9, 0.999, 1e-8, 1e-2, 1 - 0.9**10, 1 - 0.999**10),
    "rmsprop_update": (1e-3, 0.9, 1e-8, 1e-4),
}
_N_STATE = {"sgd_update": 0, "adam_update": 2, "adamw_update": 2}


def _optimizer(name, shape, dtype):
    def make(rng):
        size = int(np.prod(shape))
        # Flat views, as fastnet's optimizers pass them; realistic magnitudes
        # (no denormals: this measures the kernels, not the FTZ setting).
        w = (rng.standard_normal(size) * 0.05).astype(dtype)
        g = (rng.standard_normal(size) * 1e-2).astype(dtype)
        state = [(np.abs(rng.standard_normal(size)) * 1e-3).astype(dtype) for _ in range(_N_STATE.get(name, 1))]
        arrays = [w, g, *state]
        return arrays, list(_HYPER[name]), [0] + list(range(2, len(arrays)))

    return make


def cases(dtypes=(np.float32,)):
    out = []
    for dtype in dtypes:
        for act in reference.ACTIVATIONS:
            out.append(Case(f"{act}_fwd", (128, 512), dtype, _fwd((128, 512), dtype)))
        for act in reference.ACTIVATIONS:
            out.append(Case(f"{act}_bwd", (128, 512), dtype, _bwd(act, (128, 512), dtype, True), "dz=dy", max_reps=5))
        out.append(Case("sigmoid_bwd", (128, 512), dtype, _bwd("sigmoid", (128, 512), dtype, False)))
        for shape in [(128, 10), (1024, 10)]:
            for kind in ("softmax_xent", "sigmoid_bce", "squared_error"):
                out.append(Case(kind, shape, dtype, _loss(kind, shape, dtype)))
        for name in _HYPER:
            out.append(Case(name, (784, 512), dtype, _optimizer(name, (784, 512), dtype)))
    return out


def time_pair(case, rounds=30, target_s=2e-4):
    """Median seconds per call of (reference, fused) on ``case``."""
    runs = {}
    for label, module in (("reference", reference), ("fused", cpu)):
        runs[label] = case.instantiate(module)
    # Warm-up: JIT (or cache load), first-touch page faults, caches.
    for fn, restore in runs.values():
        for _ in range(3):
            restore()
            fn()
    # Calls per round: enough to make the faster kernel's round ~target_s.
    fn, restore = runs["fused"]
    restore()
    t0 = time.perf_counter()
    fn()
    single = max(time.perf_counter() - t0, 1e-7)
    reps = int(min(case.max_reps, max(1, round(target_s / single))))
    times = {label: [] for label in runs}
    order = list(runs)
    for r in range(rounds):
        for label in order if r % 2 == 0 else order[::-1]:
            fn, restore = runs[label]
            restore()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[label].append((time.perf_counter() - t0) / reps)
    return statistics.median(times["reference"]), statistics.median(times["fused"]), reps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="timed rounds per kernel (>= 20; default 30)")
    p.add_argument("--float64", action="store_true", help="also time float64 arrays")
    p.add_argument("-k", "--filter", default="", help="only cases whose id contains this text")
    args = p.parse_args(argv)
    if args.rounds < 20:
        p.error(f"--rounds must be >= 20, got {args.rounds}")
    import numba

    print("# fused (Numba) vs reference (NumPy) kernels")
    print()
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, Numba {numba.__version__}; median of {args.rounds} rounds "
        "after warm-up, ratio of medians (> 1: fused faster)."
    )
    print()
    print("| kernel | shape | dtype | reference µs | fused µs | speed-up |")
    print("|---|---|---|---:|---:|---:|")
    dtypes = (np.float32, np.float64) if args.float64 else (np.float32,)
    results = {}
    for case in cases(dtypes):
        if args.filter not in case.group:
            continue
        ref, fused, reps = time_pair(case, rounds=args.rounds)
        results[case.group] = ref / fused
        name = case.kernel + (f" ({case.note})" if case.note else "")
        shape = "x".join(map(str, case.shape))
        print(
            f"| {name} | {shape} | {np.dtype(case.dtype).name} | {ref * 1e6:.1f} | {fused * 1e6:.1f} "
            f"| {ref / fused:.1f}x |",
            flush=True,
        )
    failed = [(c, need, results[c]) for c, need in CRITERIA if c in results and results[c] < need]
    checked = [c for c, _ in CRITERIA if c in results]
    if checked:
        print()
        for c, need in CRITERIA:
            if c in results:
                verdict = "ok" if results[c] >= need else "BELOW TARGET"
                print(f"- {c}: {results[c]:.1f}x (target >= {need:g}x) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

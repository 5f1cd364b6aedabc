"""The training step's GEMMs timed three ways: inside the step, alone, and alone after a
cache sweep.

``fastnet bench --profile`` compares an epoch's GEMM time with the provider's speed on the
step's shapes, timed alone (each GEMM repeated: its operands stay in the caches).  Inside a
step they are not: between two steps the optimizer sweeps the parameters and their state
(Adam: 28 bytes per parameter, 19 MB per step for 784-512-512-10), and the batch is new.
This script trains a model through ``fit`` (one warm-up epoch, then one timed epoch with
``backend.matmul`` wrapped), then times every GEMM shape seen, on the arrays of its last
call: alone (repeated), and after writing ``--sweep-mb`` MB before each call (on the calling
thread).  The table gives the medians per shape and the epoch's sums.

    python bench/gemm_in_step.py                      # 784-512-512-10 ReLU Adam, batch 128
    python bench/gemm_in_step.py --batch 1024 --sweep-mb 12
"""
from __future__ import annotations

import argparse
import collections
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--rows", type=int, default=0, help="the first N training images (default: all)")
    parser.add_argument("--sweep-mb", type=float, default=12.0, help="MB written before each 'after sweep' call")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)

    import fastnet
    from fastnet.backends import gemm_choice
    from fastnet.cli import load_mnist_arrays

    (X, y), _ = load_mnist_arrays(subset=args.rows or None)
    model = fastnet.MLP([X.shape[1], *args.hidden, 10], activation="relu", seed=0)
    fit = dict(batch_size=args.batch, optimizer="adam", lr=1e-3, verbose=0, diagnose=False)
    history = model.fit(X, y, epochs=1, **fit)   # warm-up: the provider chosen, kernels compiled
    backend = model.backend_
    real = backend.matmul
    seen = collections.defaultdict(list)
    last = {}

    def timed(a, b, out):
        start = time.perf_counter()
        result = real(a, b, out)
        key = (a.shape, not a.flags.c_contiguous, b.shape, not b.flags.c_contiguous)
        seen[key].append(time.perf_counter() - start)
        last[key] = (a, b, out)
        return result

    backend.matmul = timed
    try:
        model.fit(X, y, epochs=1, **fit)
    finally:
        del backend.matmul   # (the instance attribute: the class's method again)
    sweep = np.zeros(int(args.sweep_mb * 2 ** 20 / 4), np.float32)
    rows, totals = [], [0.0, 0.0, 0.0]
    for key, times in sorted(seen.items(), key=lambda kv: -sum(kv[1])):
        a, b, out = last[key]
        for _ in range(3):
            real(a, b, out)
        alone, after = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            real(a, b, out)
            alone.append(time.perf_counter() - start)
        for _ in range(args.repeats):
            sweep += 1.0
            start = time.perf_counter()
            real(a, b, out)
            after.append(time.perf_counter() - start)
        calls = len(times)
        figures = (np.median(times), np.median(alone), np.median(after))
        for i, f in enumerate(figures):
            totals[i] += calls * f
        (m, k), n = a.shape, b.shape[1]
        rows.append(f"| {'a.T' if key[1] else 'a'} ({m}x{k}) @ {'b.T' if key[3] else 'b'} ({k}x{n}) | {calls} | "
                    + " | ".join(f"{1e6 * f:.0f}" for f in figures) + " |")
    gemm = history.params.get("gemm") or {}
    print(f"{'-'.join(map(str, [X.shape[1], *args.hidden, 10]))} ReLU Adam, batch {args.batch}, {len(X):,} rows; "
          f"CPU {gemm_choice.cpu_model()}; provider {gemm.get('provider', 'numpy')}; sweep {args.sweep_mb:g} MB\n")
    print("| GEMM (a.T, b.T: transposed views) | calls per epoch | in the step, µs | alone, µs | after the sweep, µs |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"| the epoch's GEMMs, s | | {totals[0]:.6f} | {totals[1]:.6f} | {totals[2]:.6f} |")


if __name__ == "__main__":
    main()

"""The fixed cost of one ``fit``: the time it spends outside its training steps.

``fit`` checks its arguments and the data (dtype, shape, NaN/inf), encodes the
labels, builds the model and its buffers, copies the data to the device, and at
the end runs the training doctor on a sample of rows.  This script trains
784-128-10 (sigmoid, SGD, lr 0.1, batch 128) for one epoch on the 60,000 MNIST
training rows, as a user would call it (shuffle and the doctor on), and reports

    fixed share = (whole fit - its steps) / whole fit

where "its steps" is ``history.params["step_seconds"]`` (the epoch's steps,
measured inside ``fit``), median over rounds; and the same with ``diagnose=False``.
The kernels are compiled before the first round (not a per-fit cost).

    python bench/fixed_cost.py --rounds 7 --json fixed_cost.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def measure(X, y, rounds=7, diagnose=True, hidden=(128,)):
    import fastnet

    shares, totals = [], []
    for r in range(rounds):
        model = fastnet.MLP([X.shape[1], *hidden, 10], activation="sigmoid", seed=r)
        t0 = time.perf_counter()
        history = model.fit(X, y, epochs=1, batch_size=128, optimizer="sgd", lr=0.1, diagnose=diagnose, verbose=0)
        total = time.perf_counter() - t0
        steps = history.params["step_seconds"]
        totals.append(total)
        shares.append((total - steps) / total)
    return {"diagnose": diagnose, "rounds": rounds, "fit_seconds": totals, "fixed_share": shares,
            "median_fixed_share": statistics.median(shares),
            "median_fixed_seconds": statistics.median(t * s for t, s in zip(totals, shares))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    import fastnet
    from fastnet.cli.bench.systems import machine_description
    from fastnet.cli import load_mnist_arrays

    (X, y), _ = load_mnist_arrays()
    fastnet.MLP([784, 128, 10], activation="sigmoid", seed=0).fit(X[:512], y[:512], epochs=1, optimizer="sgd", verbose=0)
    results = [measure(X, y, args.rounds, diagnose=d) for d in (True, False)]
    print(f"machine: {machine_description()}")
    print("| fit of one epoch, 784-128-10, 60,000 rows | whole fit (median) | outside the steps | share |")
    print("|---|---:|---:|---:|")
    for r in results:
        label = "default (doctor on)" if r["diagnose"] else "diagnose=False"
        print(f"| {label} | {statistics.median(r['fit_seconds']):.3f} s | "
              f"{1e3 * r['median_fixed_seconds']:.1f} ms | {100 * r['median_fixed_share']:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""fastnet ``precision="bf16"`` against PyTorch's bfloat16 autocast, on the CPU.

MNIST 784-512-512-10 ReLU, Adam (lr 1e-3), batch 128 and 1024 (``--config``: another of
fastnet's bench configurations, e.g. ``sigmoid128-sgd``), all 60,000 training images in a
fixed order (shuffled once per run, the same for every system).  Systems:

* ``fastnet-float32``       fastnet as it trains by default (``FASTNET_CPU_GEMM`` unset:
                            OpenBLAS's float32 GEMMs; thread tuner on);
* ``fastnet-float32-openblas``, ``fastnet-float32-onednn``  fastnet float32 with the GEMM
                            provider chosen (``FASTNET_CPU_GEMM=openblas`` / ``onednn``; the
                            provider's thread pool tuned);
* ``fastnet-float32-fixed`` the default with the thread tuner off (``FASTNET_THREADS=fixed``:
                            the GEMMs' pool keeps its configured count);
* ``fastnet-bf16``          ``MLP(..., precision="bf16")``: oneDNN bf16 GEMMs, float32 rest;
* ``pytorch-autocast``      ``torch.autocast("cpu", dtype=torch.bfloat16)`` around forward
                            and loss, Adam;
* ``pytorch-autocast-tuned`` the same with ``Adam(fused=True)`` and ``set_flush_denormal(True)``.

Each system runs in a process of its own per round (one OpenMP/BLAS thread pool per
process: pools of different libraries idling in one process slow each other down),
trains one untimed warm-up epoch and one timed epoch; a round runs every system in turn,
and the figure is the median over rounds of each system's per-round time ratio to
``--baseline`` (default ``pytorch-autocast``).  Test accuracy after the timed epoch is
reported too.

    python bench/bf16_throughput.py --rounds 7 --json bench/results/bf16.json
    python bench/bf16_throughput.py --systems fastnet-float32-openblas fastnet-float32-onednn \
        --baseline fastnet-float32-openblas --rounds 7 --json bench/results/float32-gemm.json
    python bench/bf16_throughput.py --config sigmoid128-sgd --batches 128 --systems \
        fastnet-float32-openblas fastnet-float32-onednn fastnet-float32-fixed \
        --baseline fastnet-float32-openblas --rounds 7 --json bench/results/float32-gemm-sigmoid.json

Under the table, where fastnet's oneDNN epochs go: seconds inside oneDNN's GEMMs (and their
rate over the epoch's multiply-adds), rounding operands to bfloat16, the rest; and the epoch
a system must reach to be 1.3x the baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = "pytorch-autocast"
SYSTEMS = ["fastnet-float32", "fastnet-bf16", BASELINE, "pytorch-autocast-tuned"]  # the default run
PROVIDERS = {"fastnet-float32-openblas": "openblas", "fastnet-float32-onednn": "onednn"}
#: fastnet float32 with the thread tuner off (the GEMMs' pool at its configured count)
FIXED = "fastnet-float32-fixed"
CONFIG = "relu512x2-adam"


def config_of(name):
    """A bench configuration of fastnet.core.recipes with its layer sizes (MNIST: 784 in, 10 out)."""
    sys.path.insert(0, ROOT)
    from fastnet.core.recipes import BENCH_CONFIGS

    config = dict(BENCH_CONFIGS[name])
    config["sizes"] = [784, *config["hidden"], 10]
    return config


def worker(system, batch, rows, config_name=CONFIG):
    """One process: warm-up epoch, timed epoch; prints JSON {seconds, accuracy}."""
    sys.path.insert(0, ROOT)
    import numpy as np

    from fastnet.cli import load_mnist_arrays

    config = config_of(config_name)
    sizes, train = config["sizes"], dict(optimizer=config["optimizer"], lr=config["lr"])

    (X, y), (Xt, yt) = load_mnist_arrays(subset=rows)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    inside = {"gemm_seconds": 0.0, "round_seconds": 0.0}  # of the timed epoch
    if system.startswith("fastnet"):
        import fastnet
        from fastnet.backends import gemm_onednn

        model = fastnet.MLP(sizes, activation=config["activation"], seed=0, backend="cpu",
                            precision="bf16" if system.endswith("bf16") else "float32")
        # time inside oneDNN's GEMMs and the bf16 rounding (16 calls a step: under 1 us each)
        gemm_onednn.matmul = timed(gemm_onednn.matmul, inside, "gemm_seconds")
        if hasattr(model.backend_._matmul, "_round"):
            model.backend_._matmul._round = timed(model.backend_._matmul._round, inside, "round_seconds")

        def epoch():
            model.fit(X, y, epochs=1, batch_size=batch, shuffle=False, diagnose=False, **train, verbose=0)

        def accuracy():
            return model.score(Xt, yt)
    else:
        from fastnet.cli.bench.systems import TorchSystem

        torch_system = TorchSystem(tuned=system.endswith("tuned"), autocast=True)
        torch_system.setup(X, y, {"hidden": sizes[1:-1], "activation": config["activation"], **train,
                                  "batch_size": batch}, 0)

        def epoch():
            torch_system.epoch(X, y)

        def accuracy():
            return torch_system.accuracy(Xt, yt)
    epoch()
    inside.update(gemm_seconds=0.0, round_seconds=0.0)
    t0 = time.perf_counter()
    epoch()
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "accuracy": accuracy(), **inside}))


def timed(function, totals, key):
    """``function`` adding the seconds of each call to ``totals[key]``."""
    def call(*args, **kwargs):
        t = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t
    return call


def epoch_flops(rows, sizes):
    """Multiply-adds x 2 of a training epoch: forward, weights' gradients, and the inputs'
    gradients of every layer but the first."""
    pairs = [a * b for a, b in zip(sizes, sizes[1:])]
    return 2 * rows * (2 * sum(pairs) + sum(pairs[1:]))


def run_system(system, batch, rows, config=CONFIG):
    env = dict(os.environ)
    env.pop("FASTNET_CPU_GEMM", None)
    env.pop("FASTNET_THREADS", None)
    if system in PROVIDERS:
        env["FASTNET_CPU_GEMM"] = PROVIDERS[system]
    if system == FIXED:
        env["FASTNET_THREADS"] = "fixed"
    p = subprocess.run([sys.executable, __file__, "--worker", system, str(batch), str(rows), config],
                       capture_output=True, text=True, timeout=900, env=env)
    if p.returncode:
        raise RuntimeError(f"{system} batch {batch} exited {p.returncode}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) or None, sys.argv[5])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--rows", type=int, default=0, help="MNIST training rows (default: all)")
    every = SYSTEMS + list(PROVIDERS) + [FIXED]
    p.add_argument("--systems", nargs="+", choices=every, default=SYSTEMS)
    p.add_argument("--baseline", choices=every, default=BASELINE,
                   help="the ratios' reference (default: %(default)s)")
    p.add_argument("--config", default=CONFIG, help="a bench configuration of fastnet.core.recipes (default: "
                   "%(default)s; the batch sizes are --batches')")
    p.add_argument("--json")
    args = p.parse_args(argv)
    systems = args.systems if args.baseline in args.systems else [args.baseline] + args.systems
    sys.path.insert(0, ROOT)
    from fastnet.cli.bench.systems import machine_description

    config = config_of(args.config)
    model = "-".join(map(str, config["sizes"])) + f" {config['activation']} {config['optimizer']}"
    results = {"machine": machine_description(), "model": model, "config": args.config, "rounds": args.rounds,
               "baseline": args.baseline, "rows": args.rows or 60000, "configs": []}
    print(f"machine: {results['machine']}")
    for batch in args.batches:
        runs = {s: [] for s in systems}
        for r in range(args.rounds):
            for s in systems:
                runs[s].append(run_system(s, batch, args.rows, args.config))
            print(f"  batch {batch} round {r + 1}/{args.rounds}: "
                  + ", ".join(f"{s} {v[-1]['seconds']:.2f}s" for s, v in runs.items()), file=sys.stderr, flush=True)
        for s in systems:
            ratios = [b["seconds"] / x["seconds"] for b, x in zip(runs[args.baseline], runs[s])]
            results["configs"].append({
                "system": s, "batch": batch, "speed_vs_baseline": statistics.median(ratios),
                "ratio_min": min(ratios), "ratio_max": max(ratios),
                "epoch_seconds": [x["seconds"] for x in runs[s]], "runs": runs[s],
                "baseline_runs": runs[args.baseline],
                "test_accuracy": statistics.median(x["accuracy"] for x in runs[s])})
    print(f"\n| batch | system | epoch s (median) | speed vs {args.baseline} (median of rounds) | range | test accuracy "
          "after 2 epochs |\n|---:|---|---:|---:|---|---:|")
    for row in results["configs"]:
        print(f"| {row['batch']} | {row['system']} | {statistics.median(row['epoch_seconds']):.2f} "
              f"| {row['speed_vs_baseline']:.2f}x | {row['ratio_min']:.2f}-{row['ratio_max']:.2f} "
              f"| {row['test_accuracy']:.4f} |")
    # Where fastnet's oneDNN epochs go, against the epoch a 1.3x lead over the baseline needs
    flops = epoch_flops(results["rows"], config["sizes"])
    print(f"\n| batch | system | epoch s | in oneDNN's GEMMs s (GFLOP/s) | rounding to bf16 s | rest s "
          f"| epoch of 1.3x {args.baseline} s |\n|---:|---|---:|---:|---:|---:|---:|")
    for row in results["configs"]:
        runs_ = dict(zip(("seconds", "gemm_seconds", "round_seconds"),
                         (statistics.median(x[k] for x in row["runs"]) for k in ("seconds", "gemm_seconds",
                                                                                 "round_seconds"))))
        if not runs_["gemm_seconds"]:
            continue
        base = statistics.median(x["seconds"] for x in row["baseline_runs"])
        rest = runs_["seconds"] - runs_["gemm_seconds"] - runs_["round_seconds"]
        print(f"| {row['batch']} | {row['system']} | {runs_['seconds']:.3f} | {runs_['gemm_seconds']:.3f} "
              f"({flops / runs_['gemm_seconds'] / 1e9:.0f}) | {runs_['round_seconds']:.3f} | {rest:.3f} "
              f"| {base / 1.3:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

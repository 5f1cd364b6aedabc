"""Data-parallel throughput on one machine: 2 MPI ranks x 1 BLAS thread against one
process with 2 BLAS threads (and one process with fastnet's thread tuner).

MNIST 784-512-512-10 ReLU, Adam, the same global batch for every system (one process at
``B``, two ranks at ``B/2`` each).  A round runs each system in turn as a fresh process
(``tests/mpi_worker.py``) that trains one warm-up epoch (kernels compiled, caches filled)
and one timed epoch; the figure of a round is the timed epoch's seconds (inside ``fit``,
rank 0's: the ranks wait for each other every step), so process start-up is not
counted.  Reported: samples/s (median over rounds) and, per system, the median over
rounds of its per-round time ratio to the 2-thread process.

    python bench/distributed_throughput.py --rounds 7 --json bench/results/distributed.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "mpi_worker.py")
BASELINE = "1 process x 2 threads"
#: name -> (ranks or None, environment)
SYSTEMS = {
    BASELINE: (None, {"OPENBLAS_NUM_THREADS": "2", "FASTNET_THREADS": "fixed"}),
    "1 process, thread tuner": (None, {"OPENBLAS_NUM_THREADS": "2", "FASTNET_THREADS": "auto"}),
    "2 ranks x 1 thread (MPI)": (2, {"OPENBLAS_NUM_THREADS": "1", "FASTNET_THREADS": "fixed"}),
}


def mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def epoch_seconds(ranks, env, batch, rows, hidden, tmp):
    out = tempfile.mkdtemp(dir=tmp)
    spec = {"out": out, "distributed": ranks is not None, "subset": rows, "epochs": 2, "hidden": hidden,
            "batch_size": batch // (ranks or 1), "seed": 0, "validation": False}
    with open(os.path.join(out, "spec.json"), "w") as f:
        json.dump(spec, f)
    cmd = [sys.executable, WORKER, os.path.join(out, "spec.json")]
    if ranks:
        cmd = [mpiexec(), "-n", str(ranks)] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")
    with open(os.path.join(out, "rank0.json")) as f:
        return json.load(f)["history"]["seconds"][-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--rows", type=int, default=60000, help="MNIST training rows (default: all)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    from fastnet.cli.bench.systems import machine_description

    hidden = [512, 512]
    results = {"machine": machine_description(), "model": "784-512-512-10 relu adam", "rows": args.rows,
               "rounds": args.rounds, "baseline": BASELINE, "configs": []}
    print(f"machine: {results['machine']}")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batches:
            times = {name: [] for name in SYSTEMS}
            for r in range(args.rounds):
                for name, (ranks, env) in SYSTEMS.items():
                    times[name].append(epoch_seconds(ranks, env, batch, args.rows, hidden, tmp))
                print(f"  batch {batch} round {r + 1}/{args.rounds}: "
                      + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), file=sys.stderr, flush=True)
            rows = []
            for name in SYSTEMS:
                ratios = [b / t for b, t in zip(times[BASELINE], times[name])]
                rows.append({"system": name, "batch": batch, "samples_per_s": args.rows / statistics.median(times[name]),
                             "speed_vs_baseline": statistics.median(ratios), "ratio_min": min(ratios),
                             "ratio_max": max(ratios), "epoch_seconds": times[name]})
            results["configs"].extend(rows)
    print("\n| global batch | system | samples/s (median) | speed vs 1 process x 2 threads (median of rounds) "
          "| range |\n|---:|---|---:|---:|---|")
    for row in results["configs"]:
        print(f"| {row['batch']} | {row['system']} | {row['samples_per_s']:,.0f} | {row['speed_vs_baseline']:.2f}x "
              f"| {row['ratio_min']:.2f}-{row['ratio_max']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

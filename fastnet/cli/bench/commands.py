"""The modes of ``fastnet bench`` beyond the throughput table: ``--load``, ``--sweep``,
``--inference``, ``--tta``, ``--processes``, ``--profile``.  Each prints a markdown table
and, with ``--json``, writes the raw figures (every round) with the run's description
(machine, thread settings, git commit)."""
from __future__ import annotations

import json
import sys

from fastnet.core.recipes import RECIPES

DEFAULT_ROUNDS = {"load": 7, "sweep": 5, "inference": 10, "processes": 5, "profile": 3}
SWEEP_ROWS = 10_000
#: --tta: sets of fresh workers, set i on seed i (an odd count: the median is one set's).
DEFAULT_TTA_SETS = 3


def _progress(label, system, r, rounds):
    print(f"  {label}: {system} round {r}/{rounds}", file=sys.stderr, flush=True)


def _write(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {path}")


def interleaved(args, X, y):
    from fastnet.cli.bench import interleaved as bench_interleaved

    rounds = args.rounds or DEFAULT_ROUNDS["load"]
    if rounds < 7:
        print(f"note: {rounds} rounds; the published table uses 7 or more", file=sys.stderr)
    conditions = list(bench_interleaved.CONDITIONS) if args.load == "both" else [args.load]
    fixed = args.fixed_threads or bench_interleaved.default_fixed_threads()
    info = bench_interleaved.run_info()
    blocks = bench_interleaved.run_interleaved(X, y, configs=args.configs or bench_interleaved.CONFIGS, conditions=conditions, rounds=rounds,
                               make_systems=lambda: bench_interleaved.default_systems(fixed), progress=_progress)
    print(bench_interleaved.format_interleaved(blocks))
    _write(args.json, {"kind": "interleaved", **info, "conditions": conditions, "fixed_threads": fixed,
                       "ratio": "baseline seconds / system seconds per round; median over rounds",
                       "blocks": blocks})
    return 0


def sweep(args, X, y):
    from fastnet.cli.bench import interleaved as bench_interleaved
    from fastnet.cli.bench import sweep as bench_sweep

    info = bench_interleaved.run_info()
    result = bench_sweep.run_sweep(X, y, rounds=args.rounds or DEFAULT_ROUNDS["sweep"], progress=_progress)
    print(bench_sweep.format_sweep(result))
    if args.png:
        print(f"wrote {bench_sweep.plot_sweep(result, args.png)}")
    _write(args.json, {"kind": "sweep", **info, **result})
    return 0


def inference(args, X, y, Xt):
    from fastnet.cli.bench import inference as bench_inference
    from fastnet.cli.bench import interleaved as bench_interleaved

    info = bench_interleaved.run_info()
    result = bench_inference.run_inference(X, y, Xt, bench_inference.Settings(
        rounds=args.rounds or DEFAULT_ROUNDS["inference"], calls=args.calls,
        **({"sets": args.sets} if args.sets else {})))
    print(bench_inference.format_inference(result))
    _write(args.json, {"kind": "inference", **info, **result})
    return 0


def tta(args, X, y, Xt, yt):
    from fastnet.cli.bench import interleaved as bench_interleaved
    from fastnet.cli.bench import systems as bench_systems
    from fastnet.cli.bench import tta as bench_tta

    info = bench_interleaved.run_info()
    data = bench_systems.TrainTest(X, y, Xt, yt)
    result = bench_tta.run_tta_sets(data, sets=args.sets or DEFAULT_TTA_SETS, target=args.tta, recipe=RECIPES["default"],
                                    progress=lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    for i, run in enumerate(result["sets"]):
        print(f"set {i + 1} (seed {run['seed']}):")
        if run.get("same_recipe") or run.get("best_vs_best"):
            print(bench_tta.format_tta(run.get("same_recipe"), run.get("best_vs_best")) + "\n")
    print(bench_tta.format_summary(result))
    if result["not_run"]:
        print("not run: " + "; ".join(f"{k} ({v})" for k, v in result["not_run"].items()))
    _write(args.json, {"kind": "tta", **info, **result})
    return 0


def processes(args):
    from fastnet.cli.bench import interleaved as bench_interleaved
    from fastnet.cli.bench import processes as bench_processes

    info = bench_interleaved.run_info()
    settings = bench_processes.Settings(rounds=args.rounds or DEFAULT_ROUNDS["processes"], rows=args.rows,
                                        data_dir=args.data_dir, load="core" if args.busy_core else "none",
                                        **({"sets": args.sets} if args.sets else {}))
    which = (dict(systems=bench_processes.BF16_SYSTEMS, baselines=bench_processes.BF16_BASELINES)
             if args.bf16 else {})
    blocks = []
    for config in args.configs or bench_interleaved.CONFIGS:
        result = bench_processes.run(config, settings=settings, **which,
                                     progress=lambda text: print(f"  {text}", file=sys.stderr, flush=True))
        print(bench_processes.format_table(result) + "\n")
        blocks.append(result)
    _write(args.json, {"kind": "processes", **info, "load": settings.load, "bf16": bool(args.bf16),
                       "ratio": "baseline seconds / system seconds per round; median over rounds", "blocks": blocks})
    return 0


def profile(args, X, y):
    from fastnet.backends.gemm_choice import cpu_model
    from fastnet.cli.bench import interleaved as bench_interleaved
    from fastnet.cli.bench import profile as bench_profile
    from fastnet.cli.bench import systems as bench_systems

    info = bench_interleaved.run_info()
    rounds = args.rounds or DEFAULT_ROUNDS["profile"]
    results = {}
    for name in args.configs or bench_interleaved.CONFIGS:
        results[name] = bench_profile.profile_config(
            X, y, bench_systems.CONFIGS[name], rounds=rounds, precision="bf16" if args.bf16 else "float32",
            progress=lambda text, name=name: print(f"  {name}: {text}", file=sys.stderr, flush=True))
        print(bench_profile.format_profile(name, results[name]) + "\n")
    _write(args.json, {"kind": "profile", **info, "cpu": cpu_model(), "rows": len(X), "rounds": rounds,
                       "precision": "bf16" if args.bf16 else "float32", "parts": bench_profile.PARTS,
                       "configs": results})
    return 0

"""The modes of ``fastnet bench`` beyond the throughput table: ``--load``, ``--sweep``,
``--inference``, ``--tta``.  Each prints a markdown table and, with ``--json``, writes
the raw figures (every round) with the run's description (machine, thread
settings, git commit)."""
from __future__ import annotations

import json
import sys

from fastnet.core.recipes import RECIPES

DEFAULT_ROUNDS = {"load": 7, "sweep": 5, "inference": 10}
SWEEP_ROWS = 10_000


def _progress(label, system, r, rounds):
    print(f"  {label}: {system} round {r}/{rounds}", file=sys.stderr, flush=True)


def _write(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {path}")


def interleaved(args, X, y):
    from fastnet.cli.bench import interleaved as IL

    rounds = args.rounds or DEFAULT_ROUNDS["load"]
    if rounds < 7:
        print(f"note: {rounds} rounds; the published table uses 7 or more", file=sys.stderr)
    conditions = list(IL.CONDITIONS) if args.load == "both" else [args.load]
    fixed = args.fixed_threads or IL.default_fixed_threads()
    info = IL.run_info()
    blocks = IL.run_interleaved(X, y, configs=args.configs or IL.CONFIGS, conditions=conditions, rounds=rounds,
                               make_systems=lambda: IL.default_systems(fixed), progress=_progress)
    print(IL.format_interleaved(blocks))
    _write(args.json, {"kind": "interleaved", **info, "conditions": conditions, "fixed_threads": fixed,
                       "ratio": "baseline seconds / system seconds per round; median over rounds",
                       "blocks": blocks})
    return 0


def sweep(args, X, y):
    from fastnet.cli.bench import interleaved as IL
    from fastnet.cli.bench import sweep as S

    info = IL.run_info()
    result = S.run_sweep(X, y, rounds=args.rounds or DEFAULT_ROUNDS["sweep"], progress=_progress)
    print(S.format_sweep(result))
    if args.png:
        print(f"wrote {S.plot_sweep(result, args.png)}")
    _write(args.json, {"kind": "sweep", **info, **result})
    return 0


def inference(args, X, y, Xt):
    from fastnet.cli.bench import inference as N
    from fastnet.cli.bench import interleaved as IL

    info = IL.run_info()
    result = N.run_inference(X, y, Xt, rounds=args.rounds or DEFAULT_ROUNDS["inference"], calls=args.calls)
    print(N.format_inference(result))
    _write(args.json, {"kind": "inference", **info, **result})
    return 0


def tta(args, X, y, Xt, yt):
    from fastnet.cli.bench import interleaved as IL
    from fastnet.cli.bench import tta as T

    info = IL.run_info()
    same = T.same_recipe(X, y, Xt, yt, target=args.tta)
    best = T.best_vs_best(X, y, Xt, yt, RECIPES["default"], target=args.tta)
    print(T.format_tta(same, best))
    _write(args.json, {"kind": "tta", **info, "same_recipe": same, "best_vs_best": best})
    return 0

"""Time to a test accuracy (``fastnet bench --tta 0.98``): two clearly separate comparisons.

* **same recipe**: PyTorch's recipe on both sides (784-512-512-10 ReLU, Adam 1e-3
  constant, batch 128), both starting from the *same weights* (fastnet's
  initialisation copied into the PyTorch model), the same shuffled order every
  epoch, epochs interleaved (fastnet epoch e, PyTorch epoch e, then both evaluated);
* **best recipe vs best recipe**: fastnet's ``default`` recipe (its own schedule
  and epochs) against the same PyTorch recipe from PyTorch's own initialisation.

Only training is timed; the test evaluation after each epoch is not, for either.
Before the timing, each framework trains a small throwaway model (kernel
compilation, first-call costs).
"""
from __future__ import annotations

import numpy as np

from fastnet.cli.bench import systems as bench_systems
from fastnet.cli.bench.inference import torch_copy

SAME_RECIPE = dict(hidden=[512, 512], activation="relu", optimizer="adam", lr=1e-3, batch_size=128)
INIT_FASTNET = ("fastnet's: He-normal weights for the ReLU layers, Xavier-uniform for the output layer, "
                "zero biases")
INIT_TORCH = "PyTorch's nn.Linear default: Kaiming-uniform(a=sqrt(5)) weights, uniform(+-1/sqrt(fan_in)) biases"


def _warm_up(systems, X, y, config, seed):
    n = min(len(X), 2048)
    for s in systems:
        s.setup(X[:n], y[:n], config, seed)
        s.epoch(X[:n], y[:n])
        s.synchronize()


def same_recipe(data, target=0.98, max_epochs=15, seed=0, config=None, torch_tuned=False):
    """PyTorch's recipe on both sides, same initial weights, epochs interleaved, on ``data``
    (a ``fastnet.cli.bench.systems.TrainTest``).
    Returns ``{"fastnet": {...}, "pytorch": {...}, "ratio", "init", "config"}``."""
    X, y, Xt, yt = data.X, data.y, data.Xt, data.yt
    config = dict(config or SAME_RECIPE)
    f, t = bench_systems.FastnetSystem("cpu", "fused"), bench_systems.TorchSystem(tuned=torch_tuned)
    _warm_up([bench_systems.FastnetSystem("cpu", "fused"), bench_systems.TorchSystem(tuned=torch_tuned)], X, y, config, seed)
    f.setup(X, y, config, seed)
    f.model.build(X.shape[1])
    t.setup(X, y, config, seed)
    _copy_into(t.net, torch_copy(f.model))  # the same initial weights
    rng = np.random.default_rng(seed)
    runs = {"fastnet": (f, {"epoch_seconds": [], "accuracies": [], "seconds": None, "epochs": None}),
            t.name: (t, {"epoch_seconds": [], "accuracies": [], "seconds": None, "epochs": None})}
    for epoch in range(1, max_epochs + 1):
        order = rng.permutation(len(X))
        Xo, yo = X[order], y[order]
        active = [(s, r) for s, r in runs.values() if r["seconds"] is None]
        if not active:
            break
        for s, r in active:
            r["epoch_seconds"].append(_timed_epoch(s, Xo, yo))
        for s, r in active:  # not timed
            r["accuracies"].append(s.accuracy(Xt, yt))
            if r["accuracies"][-1] >= target:
                r["seconds"], r["epochs"] = sum(r["epoch_seconds"]), epoch
    out = {name: r for name, (_, r) in runs.items()}
    fs, ts = out["fastnet"]["seconds"], out[t.name]["seconds"]
    out.update(ratio=(fs / ts if fs and ts else None), init=f"both from {INIT_FASTNET} (seed {seed})",
               config=config, target=target, torch_system=t.name)
    return out


def _copy_into(net, source):
    import torch

    with torch.no_grad():
        for dst, src in zip(net.parameters(), source.parameters(), strict=True):
            dst.copy_(src)


def _timed_epoch(system, X, y):
    import time

    t0 = time.perf_counter()
    system.epoch(X, y)
    system.synchronize()
    return time.perf_counter() - t0


def best_vs_best(data, recipe, target=0.98, seed=0):
    """fastnet's recipe against PyTorch's on ``data`` (a ``fastnet.cli.bench.systems.TrainTest``):
    ``{"fastnet": ..., "pytorch": ..., "ratio"}``."""
    X, y, Xt, yt = data.X, data.y, data.Xt, data.yt
    unused = [k for k in ("weight_decay", "augment") if recipe.get(k)]
    if unused:  # fastnet_time_to_accuracy would train without them: the label would be wrong
        raise ValueError(f"best_vs_best: the recipe sets {unused}, which fastnet_time_to_accuracy does not apply")
    fs, fe, fa = bench_systems.fastnet_time_to_accuracy(X, y, Xt, yt, recipe, target, seed=seed)
    _warm_up([bench_systems.TorchSystem()], X, y, SAME_RECIPE, seed)
    ts, te, ta = bench_systems.time_to_accuracy(bench_systems.TorchSystem(), data, SAME_RECIPE, target=target,
                                                seed=seed)
    return {"fastnet": {"seconds": fs, "epochs": fe if fs else None, "accuracies": fa, "recipe": recipe,
                        "init": INIT_FASTNET},
            "pytorch": {"seconds": ts, "epochs": te if ts else None, "accuracies": ta, "recipe": SAME_RECIPE,
                        "init": INIT_TORCH},
            "ratio": fs / ts if fs and ts else None, "target": target}


def _recipe_text(r):
    text = (f"784-{'-'.join(map(str, r['hidden']))}-10 {r['activation']}, {r['optimizer']} {r['lr']:g} "
            f"{r.get('schedule', 'constant')}")
    if r.get("epochs", 1) > 1:
        text += f" over {r['epochs']} epochs"
    if r.get("dropout"):
        text += f", dropout {r['dropout']}"
    return text + f", batch {r['batch_size']}"


def format_tta(same, best):
    def cell(r):
        return (f"{r['epochs']} | {r['seconds']:.1f}" if r["seconds"] is not None
                else f"not reached in {len(r['accuracies'])} | -")

    def ratio(x):
        return f"{x:.2f}x" if x is not None else "-"

    target = (same or best)["target"]
    lines = [f"| comparison | system | recipe | initial weights | epochs to {target:g} | training seconds | "
             "fastnet / PyTorch |", "|---|---|---|---|---:|---:|---:|"]
    if same:
        for name in ("fastnet", same["torch_system"]):
            lines.append(f"| same recipe | {name} | {_recipe_text(same['config'])} | same for both (fastnet's init) | "
                         f"{cell(same[name])} | {ratio(same['ratio']) if name == 'fastnet' else ''} |")
    if best:
        lines.append(f"| best recipe vs best recipe | fastnet | default: {_recipe_text(best['fastnet']['recipe'])} | "
                     f"fastnet's init | {cell(best['fastnet'])} | {ratio(best['ratio'])} |")
        lines.append(f"| best recipe vs best recipe | pytorch | {_recipe_text(best['pytorch']['recipe'])} | "
                     f"PyTorch's init | {cell(best['pytorch'])} |  |")
    notes = [f"initial weights: fastnet's init = {INIT_FASTNET}; PyTorch's init = {INIT_TORCH}",
             "training time only: the test evaluation after each epoch is not timed"]
    return "\n".join(lines + [""] + notes)

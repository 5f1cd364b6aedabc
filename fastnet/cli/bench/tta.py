"""Time to a test accuracy (``fastnet bench --tta 0.98``): two clearly separate comparisons,
each system in a worker process of its own.

* **same recipe** (``fastnet-same`` against ``pytorch-same``): PyTorch's recipe on both
  sides (784-512-512-10 ReLU, Adam 1e-3 constant, batch 128), both starting from the
  *same weights* (fastnet's initialisation, copied into the PyTorch model; each worker
  reports a SHA-256 of its starting weights and the run stops if they differ), the same
  shuffled order every epoch (each worker draws it from the same seed);
* **best recipe vs best recipe** (``fastnet-best`` against ``pytorch-best``): fastnet's
  ``default`` recipe (one ``fit`` with its own schedule over its own epochs) against the
  same PyTorch recipe from PyTorch's own initialisation.

In one process, one library's thread pool spins while another's works (see ``fastnet
bench --processes``), so each system runs in a process of its own, started once and
warmed up on a small throwaway model (kernel compilation, first-call costs) before anything
is timed; the warm-ups never overlap.  Epochs are interleaved: each round, every system
still short of the target trains one epoch in turn (the others wait on a blocking read)
and reports the epoch's training seconds and then, untimed, its test accuracy.  Only
training is timed: a system's time is the sum of its epochs' seconds up to the first
epoch at or above the target.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from fastnet.cli.bench import systems as bench_systems

SAME_RECIPE = dict(hidden=[512, 512], activation="relu", optimizer="adam", lr=1e-3, batch_size=128)
INIT_FASTNET = ("fastnet's: He-normal weights for the ReLU layers, Xavier-uniform for the output layer, "
                "zero biases")
INIT_TORCH = "PyTorch's nn.Linear default: Kaiming-uniform(a=sqrt(5)) weights, uniform(+-1/sqrt(fan_in)) biases"
#: The systems, in the order of their turns; the comparisons, as (fastnet's system, PyTorch's).
SYSTEMS = ("fastnet-same", "pytorch-same", "fastnet-best", "pytorch-best")
COMPARISONS = {"same_recipe": ("fastnet-same", "pytorch-same"), "best_vs_best": ("fastnet-best", "pytorch-best")}
_NEEDS = {"pytorch-same": "torch", "pytorch-best": "torch"}
#: Seconds the coordinator waits after a system's epoch before the next system's.
SETTLE_SECONDS = 0.3
#: Rows of the throwaway warm-up model's epoch.
WARM_ROWS = 2048


def initial_weights_sha(arrays):
    """SHA-256 of weights as float32 in fastnet's layout (``W`` (in, out), then ``b``, per layer)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()


def _torch_weights(net):
    import torch

    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    return [a for m in linear for a in (m.weight.detach().numpy().T, m.bias.detach().numpy())]


def _copy_into(net, source):
    import torch

    with torch.no_grad():
        for dst, src in zip(net.parameters(), source.parameters(), strict=True):
            dst.copy_(src)


class _Epochs:
    """A system trained one epoch per turn (``bench.systems``' ``setup``/``epoch``), on the rows
    in the order of the next permutation drawn from ``seed``."""

    def __init__(self, name, data, config, seed):
        from fastnet.cli.bench.inference import torch_copy

        X, y = data
        self.X, self.y, self.rng = X, y, np.random.default_rng(seed)
        make = ((lambda: bench_systems.FastnetSystem("cpu", "fused")) if name.startswith("fastnet")
                else bench_systems.TorchSystem)
        warm = make()   # a throwaway model: compilation and first calls, not timed
        n = min(len(X), WARM_ROWS)
        warm.setup(X[:n], y[:n], config, seed)
        warm.epoch(X[:n], y[:n])
        warm.synchronize()
        self.system = system = make()
        system.setup(X, y, config, seed)
        if name == "fastnet-same":
            system.model.build(X.shape[1])
            self.init = list(system.model.get_weights().values())
            return
        if name == "pytorch-same":   # the weights fastnet-same starts from
            fastnet_start = bench_systems.FastnetSystem("cpu", "fused")
            fastnet_start.setup(X, y, config, seed)
            _copy_into(system.net, torch_copy(fastnet_start.model.build(X.shape[1])))
        self.init = _torch_weights(system.net)

    def epoch(self):
        order = self.rng.permutation(len(self.X))
        Xo, yo = self.X[order], self.y[order]
        t0 = time.perf_counter()
        self.system.epoch(Xo, yo)
        self.system.synchronize()
        return time.perf_counter() - t0

    def accuracy(self, Xt, yt):
        return self.system.accuracy(Xt, yt)


def _fastnet_recipe(recipe, seed):
    import fastnet

    unused = [k for k in ("weight_decay", "augment") if recipe.get(k)]
    if unused:  # the worker would train without them: the label would be wrong
        raise ValueError(f"the tta recipe sets {unused}, which fastnet-best does not apply")
    return fastnet.MLP([784, *recipe["hidden"], 10], activation=recipe["activation"],
                       dropout=recipe.get("dropout", 0.0), backend="cpu", seed=seed)


def _recipe_turns(recipe, seed, data, test, answer, next_command):
    """fastnet's recipe: one ``fit`` over the recipe's epochs (its schedule), paused at the end
    of each epoch: the epoch's seconds (from the turn's start: the first one includes
    ``fit``'s set-up), then the test accuracy (untimed) are answered and the next command
    waited for; anything but ``epoch`` stops the fit."""
    import fastnet

    X, y = data
    fit = dict(batch_size=recipe["batch_size"], optimizer=recipe["optimizer"], diagnose=False, verbose=0)
    _fastnet_recipe(recipe, seed).fit(X[:WARM_ROWS], y[:WARM_ROWS], epochs=1, **fit)   # warm-up, not timed
    model = _fastnet_recipe(recipe, seed)
    model.build(X.shape[1])
    print(json.dumps({"ready": "fastnet-best", "pid": os.getpid(),
                      "init_sha": initial_weights_sha(model.get_weights().values())}), file=answer, flush=True)

    class Turns(fastnet.Callback):
        epochs, resumed, command = 0, 0.0, ""

        def on_epoch_end(self, model, epoch, logs):
            seconds = time.perf_counter() - self.resumed
            self.epochs += 1
            reply = {"seconds": seconds, "accuracy": model.score(*test), "last": self.epochs == recipe["epochs"]}
            print(json.dumps(reply), file=answer, flush=True)
            self.command = next_command()
            model.stop_training = self.command != "epoch"
            self.resumed = time.perf_counter()

    turns = Turns()
    turns.command = next_command()
    if turns.command == "epoch":
        turns.resumed = time.perf_counter()
        model.fit(X, y, epochs=recipe["epochs"], lr=recipe["lr"], lr_schedule=recipe["schedule"], callbacks=[turns],
                  **fit)
    while turns.command == "epoch":  # asked past the recipe's epochs
        print(json.dumps({"error": f"fastnet's recipe trains {recipe['epochs']} epochs"}), file=answer, flush=True)
        turns.command = next_command()


def worker(name, workdir):
    """A worker's life: load the rows (``workdir/{X,y,Xt,yt}.npy``) and the settings
    (``settings.json``), warm up, say ready (with the SHA-256 of its starting weights), then
    one JSON answer per ``epoch`` read from stdin (``seconds``, ``accuracy``, ``last``: the
    last epoch this system can train); an empty line or the end of input ends it."""
    with open(os.path.join(workdir, "settings.json")) as f:
        settings = json.load(f)
    data = tuple(np.load(os.path.join(workdir, f"{k}.npy")) for k in ("X", "y"))
    test = tuple(np.load(os.path.join(workdir, f"{k}.npy")) for k in ("Xt", "yt"))
    answer = sys.stdout
    sys.stdout = sys.stderr  # (libraries' prints stay off the answer channel)
    seed = settings["seed"]

    def next_command():
        return sys.stdin.readline().strip()

    if name == "fastnet-best":
        _recipe_turns(settings["recipe"], seed, data, test, answer, next_command)
        return
    if name not in SYSTEMS:
        raise ValueError(f"system must be one of {', '.join(SYSTEMS)}, got {name!r}")
    runner = _Epochs(name, data, settings["same_config"], seed)
    print(json.dumps({"ready": name, "pid": os.getpid(), "init_sha": initial_weights_sha(runner.init)}),
          file=answer, flush=True)
    epochs = 0
    while next_command() == "epoch":
        seconds = runner.epoch()
        epochs += 1
        print(json.dumps({"seconds": seconds, "accuracy": runner.accuracy(*test),
                          "last": epochs == settings["max_epochs"]}), file=answer, flush=True)


def check_same_start(ready):
    """RuntimeError unless the same-recipe systems among ``ready`` (name -> ready message)
    start from the same weights (their ``init_sha``)."""
    same = [ready[n]["init_sha"] for n in COMPARISONS["same_recipe"] if n in ready]
    if len(set(same)) > 1:
        raise RuntimeError(f"the same-recipe systems do not start from the same weights (SHA-256 {' vs '.join(same)})")


def installed(name):
    from fastnet.cli.bench import processes as bench_processes

    return bench_processes.installed(name, _NEEDS)


def run_tta(data, target=0.98, recipe=None, systems=SYSTEMS, max_epochs=15, seed=0, same_config=None,
            progress=None):
    """Time to ``target`` test accuracy, each system of ``systems`` in its own process (see the
    module docstring), on ``data`` (a ``fastnet.cli.bench.systems.TrainTest``); ``recipe``:
    fastnet-best's (``RECIPES["default"]`` when None).  Returns ``{"same_recipe": {...},
    "best_vs_best": {...}, "not_run": {...}}``: per comparison, per framework (``fastnet``,
    ``pytorch``) its epoch seconds, accuracies, ``seconds`` (None: not reached) and
    ``epochs``, and ``ratio`` = fastnet's seconds / PyTorch's.  RuntimeError when the
    same-recipe systems do not start from the same weights.  The workers are started, and take
    their turns, in the systems' order for an even ``seed`` and in the reverse order for an odd
    one (:func:`run_tta_sets` runs seeds 0, 1, 2...)."""
    from fastnet.cli.bench import processes as bench_processes
    from fastnet.core.recipes import RECIPES

    recipe = dict(recipe or RECIPES["default"])
    same_config = dict(same_config or SAME_RECIPE)
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"systems must be among {', '.join(SYSTEMS)}, got {unknown!r}")
    missing = {s: f"{_NEEDS[s]} is not installed" for s in systems if not installed(s)}
    names = [s for s in SYSTEMS if s in systems and s not in missing]
    if seed % 2:
        names.reverse()
    runs = {n: {"epoch_seconds": [], "accuracies": [], "seconds": None, "epochs": None} for n in names}
    procs, ready = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, a in zip(("X", "y", "Xt", "yt"), (data.X, data.y, data.Xt, data.yt)):
            np.save(os.path.join(tmp, f"{key}.npy"), np.ascontiguousarray(a))
        with open(os.path.join(tmp, "settings.json"), "w") as f:
            json.dump({"seed": seed, "recipe": recipe, "same_config": same_config, "max_epochs": max_epochs}, f)
        try:
            for name in names:  # one at a time: the warm-ups never overlap
                procs[name] = subprocess.Popen([sys.executable, "-m", "fastnet.cli.bench.tta", "--worker", name, tmp],
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                ready[name] = bench_processes._read(procs[name], name)
                if progress:
                    progress(f"{name} ready (pid {ready[name]['pid']})")
            check_same_start(ready)
            active = list(names)
            for epoch in range(1, max_epochs + 1):
                for name in list(active):
                    bench_processes._send(procs[name], name, "epoch")
                    reply = bench_processes._read(procs[name], name)
                    if "error" in reply:
                        raise RuntimeError(f"the {name} worker: {reply['error']}")
                    r = runs[name]
                    r["epoch_seconds"].append(reply["seconds"])
                    r["accuracies"].append(reply["accuracy"])
                    if reply["accuracy"] >= target:
                        r["seconds"], r["epochs"] = sum(r["epoch_seconds"]), epoch
                    if reply["accuracy"] >= target or reply["last"]:
                        active.remove(name)
                        bench_processes._send(procs[name], name, "")
                    if progress:
                        progress(f"epoch {epoch}: {name} {reply['seconds']:.2f} s, "
                                 f"test accuracy {reply['accuracy']:.4f}")
                    time.sleep(SETTLE_SECONDS)
                if not active:
                    break
        finally:
            bench_processes.end_workers(procs, timeout=30)
    cpu, flags = bench_processes.cpu_description()
    result = {"processes": "each system in its own", "cpu": cpu, "cpu_flags": flags,
              "machine": bench_systems.machine_description(), "not_run": missing, "target": target,
              "seed": seed, "order": names}
    for comparison, (fast, torch) in COMPARISONS.items():
        if fast not in runs and torch not in runs:
            continue
        part = {"target": target, "torch_system": "pytorch"}
        for framework, name in (("fastnet", fast), ("pytorch", torch)):
            if name in runs:
                part[framework] = {**runs[name], "system": name, "pid": ready[name]["pid"],
                                   "init_sha": ready[name]["init_sha"]}
        fs = part.get("fastnet", {}).get("seconds")
        ts = part.get("pytorch", {}).get("seconds")
        part["ratio"] = fs / ts if fs and ts else None
        if comparison == "same_recipe":
            part.update(init=f"both from {INIT_FASTNET} (seed {seed})", config=same_config)
        else:
            if "fastnet" in part:
                part["fastnet"].update(recipe=recipe, init=INIT_FASTNET)
            if "pytorch" in part:
                part["pytorch"].update(recipe=same_config, init=INIT_TORCH)
        result[comparison] = part
    return result


def run_tta_sets(data, sets=3, progress=None, **kw):
    """:func:`run_tta` ``sets`` times, each time with fresh worker processes and its own seed (set
    ``i``: seed ``i``, so its own initial weights and data order; odd seeds start the workers and
    take turns in the reverse order).  One seed's crossing of the target is luck as much as speed:
    at a constant learning rate the test accuracy sits near 98% for epochs, and the two
    frameworks' curves, within a few hundredths of a point of each other, cross it an epoch
    apart or not.  Returns the last set's machine fields, ``sets`` (each set's
    :func:`run_tta` result) and per comparison :func:`summary`."""
    from fastnet.cli.bench import processes as bench_processes

    bench_processes.check_sets(sets)
    runs = []
    for i in range(sets):
        if progress:
            progress(f"set {i + 1} of {sets}: seed {i}, fresh workers")
        runs.append(run_tta(data, seed=i, progress=progress, **kw))
    last = runs[-1]
    result = {k: last[k] for k in ("processes", "cpu", "cpu_flags", "machine", "not_run", "target")}
    result["sets"] = runs
    for comparison in COMPARISONS:
        parts = [r.get(comparison) for r in runs]
        if any(p is not None for p in parts):
            result[comparison] = summary(parts)
    return result


def _median(values):
    return float(np.median(values)) if values else None


def summary(parts):
    """One comparison over the sets (``parts``: each set's, or None): ``ratios`` (fastnet's
    seconds to the target / PyTorch's, None where either fell short), ``ratio``: their median
    over the sets where both reached it, ``reached`` (how many), and ``epoch_ratio``: the median
    over the sets of fastnet's median epoch seconds / PyTorch's (the speed alone, whatever the
    epochs)."""
    ratios = [p.get("ratio") if p else None for p in parts]
    reached = [r for r in ratios if r is not None]
    epoch_ratios = []
    for p in parts:
        if p and "fastnet" in p and "pytorch" in p:
            epoch_ratios.append(float(np.median(p["fastnet"]["epoch_seconds"]) / np.median(p["pytorch"]["epoch_seconds"])))
    epochs = {f: [p[f]["epochs"] if p and f in p else None for p in parts] for f in ("fastnet", "pytorch")}
    return {"ratios": ratios, "ratio": _median(reached), "reached": len(reached), "sets": len(parts),
            "epoch_ratio": _median(epoch_ratios), "epochs": epochs}


def format_summary(result):
    """The sets' table: per comparison the epochs to the target in each set, each set's ratio,
    their median, and the epoch-time ratio."""
    def num(x, fmt="{:.2f}x"):
        return fmt.format(x) if x is not None else "-"

    lines = [f"| comparison | sets | fastnet epochs to {result['target']:g} | PyTorch epochs | fastnet / PyTorch "
             "per set | median | epoch time, fastnet / PyTorch |", "|---|---:|---|---|---|---:|---:|"]
    for comparison, label in (("same_recipe", "same recipe"), ("best_vs_best", "best recipe vs best recipe")):
        s = result.get(comparison)
        if s is None:
            continue
        lines.append(f"| {label} | {s['sets']} | {', '.join(num(e, '{}') for e in s['epochs']['fastnet'])} | "
                     f"{', '.join(num(e, '{}') for e in s['epochs']['pytorch'])} | "
                     f"{', '.join(num(r) for r in s['ratios'])} | {num(s['ratio'])} | {num(s['epoch_ratio'])} |")
    return "\n".join(lines + ["", "set i: seed i (its own initial weights and data order), fresh workers; median "
                               "over the sets where both reached the target"])


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
        for name in ("fastnet", "pytorch"):
            if name in same:
                lines.append(f"| same recipe | {name} | {_recipe_text(same['config'])} | same for both (fastnet's "
                             f"init) | {cell(same[name])} | {ratio(same['ratio']) if name == 'fastnet' else ''} |")
    if best:
        if "fastnet" in best:
            lines.append(f"| best recipe vs best recipe | fastnet | default: {_recipe_text(best['fastnet']['recipe'])} "
                         f"| fastnet's init | {cell(best['fastnet'])} | {ratio(best['ratio'])} |")
        if "pytorch" in best:
            lines.append(f"| best recipe vs best recipe | pytorch | {_recipe_text(best['pytorch']['recipe'])} | "
                         f"PyTorch's init | {cell(best['pytorch'])} |  |")
    notes = [f"initial weights: fastnet's init = {INIT_FASTNET}; PyTorch's init = {INIT_TORCH}",
             "each system in its own process, epochs interleaved; training time only: the test evaluation "
             "after each epoch is not timed"]
    return "\n".join(lines + [""] + notes)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m fastnet.cli.bench.tta --worker SYSTEM WORKDIR "
                 "(the coordinator is fastnet bench --tta)")

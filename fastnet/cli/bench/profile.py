"""Where a training epoch's time goes, against its GEMMs' own (``fastnet bench --profile``).

Per configuration, one model with fastnet's defaults on the CPU backend (fused kernels,
float32, the GEMM provider chosen by measurement, the BLAS thread tuner, a shuffle per
epoch), one ``fit`` call per stage:

1. one warm-up epoch, not timed (Numba compilation, the GEMM provider's choice, the
   thread tuner's first probe);
2. ``rounds`` plain epochs, nothing wrapped: each epoch's seconds as ``fit`` records them
   (``history["seconds"]``), and their median;
3. ``rounds`` instrumented epochs: the parts of a step timed by wrapping, on this model's
   instances only (its backend, optimizer and loss objects and the model's own passes;
   no library code changes, and the wrappers are removed when the ``fit`` returns).  A
   wrapped call's seconds exclude those of the wrapped calls inside it: the GEMMs of a
   forward pass count as GEMMs, not as forward.  "The rest" is the epoch's seconds less
   every part: the step loop in Python, the batch loss sums, the schedule and ``fit``'s
   per-epoch bookkeeping;
4. the chosen provider's speed on the step's own GEMM shapes, at the configured thread
   count: the figure ``fit`` recorded when it chose (``history.params["gemm"]``; only where
   it timed the GEMMs alone: fit's own choice times each step with the optimizer's update,
   a figure of the whole step, left out) and ``GEMM_REPEATS`` measurements now (:func:`fastnet.backends.gemm_choice.measure`, the
   best step of each); the best of them is the provider's speed.

The GEMM floor is the epoch's GEMM FLOPs (2 m n k per ``backend.matmul`` call, counted
from the operands' shapes) at that speed: the epoch's time were it nothing but its
GEMMs, each as fast as the provider's best measured step.  ``epoch / floor`` is the
figure to hold to 1.3x.

``precision="bf16"`` (``fastnet bench --profile --bf16``) profiles the same model training
in bfloat16 (``fastnet.backends.precision``): its GEMMs are oneDNN's bfloat16 ones, the
rounding of their float32 operands to bfloat16 is a part of its own ("rounding", taken out
of the GEMM and forward parts it happens in; the weights' rounding is the optimizer's where
its update on the pool rounds them as it writes them: those operands are counted in the
epoch's ``calls`` as ``FROM_STEPS``, not as "rounding" calls), and the floor is the epoch's FLOPs at
oneDNN's bfloat16 speed on operands already rounded.

Where the step's GEMMs run on oneDNN's OpenMP pool, the optimizer's update and the bf16
rounding may run on that pool's threads too (``fastnet.kernels.cpu.PoolUpdate``,
``PoolRound``), each where it was measured faster: ``on_pool`` in the result (and a line
under the table) says which ran where, per thread count (and operand size).
"""
from __future__ import annotations

import contextlib
import functools
import statistics
import time

from fastnet.cli.bench import systems as bench_systems
from fastnet.core.callbacks import Callback

#: The parts of an epoch, in the table's order; every one but "rest" is a wrapped call.
PARTS = {
    "gemm": "GEMMs (backend.matmul)",
    "forward": "forward, not GEMM (bias + activation kernels)",
    "loss": "loss (output activation + loss kernel)",
    "backward": "backward, not GEMM (activation derivative + bias gradient kernels)",
    "optimizer": "optimizer step (its update; with precision='bf16' it also writes the weights' bfloat16 bits)",
    "correct": "correct count (model._correct)",
    "rounding": "bf16 rounding of the GEMMs' operands (precision='bf16')",
    "gather": "batch gather (backend.gather)",
    "shuffle": "the epoch's permutation (backend.permutation)",
    "tuner": "thread tuner (step_done, mark)",
    "rest": "the rest: step loop, batch loss sums, schedule, fit's epoch bookkeeping",
}
TIMED = tuple(p for p in PARTS if p != "rest")
#: bf16: operands that were the bits an optimizer step had rounded (a count, not a timed part).
FROM_STEPS = "rounded by the optimizer's step"
#: Measurements of the provider's speed made by the profile (each the best step of a short run).
GEMM_REPEATS = 5
GOAL = 1.3


class Recorder:
    """Seconds and calls per part of the calls wrapped by :meth:`timed` and :meth:`gemm`,
    and the FLOPs of the GEMMs.  A call's seconds are its own: the seconds of the wrapped
    calls made inside it are taken off (and counted in their own part).  ``counters``: name ->
    a running count read at :meth:`reset` and :meth:`epoch` (the epoch's calls get the difference)."""

    def __init__(self, clock=time.perf_counter, counters=None):
        self.clock = clock
        self.counters = dict(counters or {})
        self._open = []  # per wrapped call under way: [part, seconds of the wrapped calls inside it]
        self.reset()

    def reset(self):
        self.seconds = dict.fromkeys(TIMED, 0.0)
        self.calls = dict.fromkeys(TIMED, 0)
        self.flops = 0
        self._counted = {name: count() for name, count in self.counters.items()}

    def timed(self, part, fn):
        """``fn`` with its calls' own seconds added to ``part``."""
        if part not in self.seconds:
            raise ValueError(f"part must be one of {', '.join(TIMED)}, got {part!r}")

        def call(*args, **kwargs):
            frame = [part, 0.0]
            self._open.append(frame)
            t0 = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                took = self.clock() - t0
                self._open.pop()
                self.seconds[part] += took - frame[1]
                self.calls[part] += 1
                if self._open:
                    self._open[-1][1] += took

        return call

    def gemm(self, matmul):
        """``matmul(a, b, out)`` timed as part "gemm", with ``2 m n k`` FLOPs for ``a`` (m, k)
        and ``b`` (k, n) (a GEMM inside a timed GEMM adds none: it is the outer one's work)."""
        timed = self.timed("gemm", matmul)

        def call(a, b, out):
            if not any(part == "gemm" for part, _ in self._open):
                (m, k), n = a.shape, b.shape[1]
                self.flops += 2 * m * n * k
            return timed(a, b, out)

        return call

    def epoch(self, seconds):
        """The parts of an epoch of ``seconds``: the wrapped calls' own seconds and the rest."""
        parts = dict(self.seconds)
        parts["rest"] = seconds - sum(self.seconds.values())
        calls = dict(self.calls)
        calls.update({name: count() - self._counted[name] for name, count in self.counters.items()})
        return {"seconds": seconds, "parts": parts, "calls": calls, "gemm_flops": self.flops}


class _TimedLoss:
    """The model's loss with its call timed; every other attribute is the loss's own
    (``fit`` calls ``model.loss_(...)``, which Python looks up on the type, not the instance)."""

    def __init__(self, loss, recorder):
        self._loss = loss
        self._call = recorder.timed("loss", loss.__call__)

    def __call__(self, *args):
        return self._call(*args)

    def __getattr__(self, name):
        return getattr(self._loss, name)


class _TimedTuner:
    """A thread tuner (``fastnet.backends.threads``) with its per-step calls timed."""

    def __init__(self, tuner, recorder):
        self._tuner = tuner
        # looked up at each call: a tuner that fails replaces its own step_done
        self.step_done = recorder.timed("tuner", lambda full: self._tuner.step_done(full))
        self.mark = recorder.timed("tuner", lambda: self._tuner.mark())

    def __getattr__(self, name):
        return getattr(self._tuner, name)


_MISSING = object()


@contextlib.contextmanager
def instrumented(model, recorder):
    """Wrap the parts of ``model``'s training step (built, its optimizer attached) for the
    block: instance attributes that shadow the methods, put back as they were on exit."""
    b, opt = model.backend_, model.optimizer_
    tuner = b.thread_tuner
    # precision="bf16": the float32 -> bfloat16 rounding inside the GEMM and gemm_operand calls
    rounding = getattr(b._matmul, "_round", None)
    patches = [(b._matmul, "_round", recorder.timed("rounding", rounding))] if rounding is not None else []
    patches += [(b, "matmul", recorder.gemm(b.matmul)),
               (b, "gather", recorder.timed("gather", b.gather)),
               (b, "permutation", recorder.timed("shuffle", b.permutation)),
               (b, "thread_tuner", lambda *args, **kwargs: _TimedTuner(tuner(*args, **kwargs), recorder)),
               (model, "_forward", recorder.timed("forward", model._forward)),
               (model, "_backward", recorder.timed("backward", model._backward)),
               (model, "_correct", recorder.timed("correct", model._correct)),
               (opt, "step", recorder.timed("optimizer", opt.step)),
               (model, "loss_", _TimedLoss(model.loss_, recorder))]
    saved = [(obj, name, vars(obj).get(name, _MISSING)) for obj, name, _ in patches]
    try:
        for obj, name, wrapped in patches:
            setattr(obj, name, wrapped)
        yield recorder
    finally:
        for obj, name, before in saved:
            if before is _MISSING:
                vars(obj).pop(name, None)
            else:
                setattr(obj, name, before)


class _EachEpoch(Callback):
    """Each epoch's parts: the recorder emptied as the epoch begins, read as it ends."""

    def __init__(self, recorder):
        self.recorder, self.epochs = recorder, []

    def on_epoch_begin(self, model, epoch, logs):
        self.recorder.reset()

    def on_epoch_end(self, model, epoch, logs):
        self.epochs.append(self.recorder.epoch(logs["seconds"]))


def _mean_parts(epochs):
    return {p: statistics.fmean(e["parts"][p] for e in epochs) for p in PARTS}


def provider_speed(choice, problems, threads, repeats=GEMM_REPEATS, measure=None):
    """The chosen provider's GFLOP/s on ``problems`` (the step's GEMMs) at ``threads``:
    ``{"provider", "recorded", "measured": [...], "best"}``; ``recorded`` is what ``fit``'s
    choice measured of the GEMMs alone (None when it measured nothing, a set or a lone
    provider, or timed its steps with the optimizer's update: not the GEMMs' speed)."""
    from fastnet.backends import gemm_choice

    measure = measure or gemm_choice.measure
    provider = choice.get("provider", "numpy")
    recorded = None if choice.get("update") else (choice.get("gflops") or {}).get(provider)
    measured = [float(measure(provider, problems, threads)) for _ in range(repeats)]
    return {"provider": provider, "recorded": recorded, "measured": measured,
            "best": max(measured + ([recorded] if recorded else []))}


def profile_config(X, y, config, rounds=3, seed=0, progress=None, precision="float32"):
    """Profile one bench configuration (``fastnet.core.recipes``: hidden, activation,
    optimizer, lr, batch_size) on ``X, y``, its training GEMMs in ``precision`` (``"float32"``
    or ``"bf16"``); returns the figures as a dict (see the module docstring)."""
    import fastnet
    from fastnet.backends import gemm_choice
    from fastnet.backends import threads as blas

    say = progress or (lambda text: None)
    layer_sizes = bench_systems.sizes(config, n_in=X.shape[1])
    model = fastnet.MLP(layer_sizes, activation=config["activation"], backend="cpu", seed=seed,
                        precision=precision)
    # verbose=0: no progress bar (output, not training); diagnose=False: the doctor runs after the
    # last epoch, outside every figure here
    fit = dict(batch_size=config["batch_size"], optimizer=config["optimizer"], lr=config["lr"], verbose=0,
               diagnose=False)
    say("warm-up epoch")
    warm = model.fit(X, y, epochs=1, **fit)
    count = f"{rounds} epoch{'s' * (rounds != 1)}"
    say(f"{count}, plain")
    plain = model.fit(X, y, epochs=rounds, **fit)
    say(f"{count}, instrumented")
    # bf16: the weights' bits the optimizer's update rounded, taken by the next forward pass
    # instead of a "rounding" call (``gemm_onednn.Bf16Matmul.operand``)
    matmul = model.backend_._matmul
    recorder = Recorder(counters={FROM_STEPS: lambda: matmul.from_steps} if hasattr(matmul, "from_steps") else None)
    keep = _EachEpoch(recorder)
    with instrumented(model, recorder):
        model.fit(X, y, epochs=rounds, callbacks=[keep], **fit)
    choice = plain.params.get("gemm") or warm.params.get("gemm") or {}
    batch = min(config["batch_size"], len(X))
    problems = ([tuple(p) for p in choice["problems"]] if choice.get("problems")
                else gemm_choice.step_problems(batch, [a.shape for _, a in model.parameters()]))
    pool = getattr(model.backend_._matmul, "pool", None)  # (bf16: oneDNN's; its choice records no count)
    threads = choice.get("threads") or (pool[1]() if pool else blas.blas_threads()) or 1
    say("the GEMM provider's speed")
    speed = provider_speed(choice, problems, threads,
                           measure=functools.partial(gemm_choice.measure, precision=precision))
    epochs = keep.epochs
    parts = _mean_parts(epochs)
    flops = epochs[0]["gemm_flops"]
    epoch = statistics.median(plain["seconds"])
    instrumented_epoch = statistics.median(e["seconds"] for e in epochs)
    floor = flops / (speed["best"] * 1e9)
    return {
        "config": config, "precision": precision, "layer_sizes": layer_sizes, "rows": len(X),
        "batch_size": config["batch_size"],
        "steps": plain.params["steps"], "rounds": rounds, "seed": seed,
        "epoch_seconds": list(plain["seconds"]), "median_epoch_seconds": epoch,
        "instrumented": epochs, "parts_mean_seconds": parts,
        "instrumented_mean_seconds": statistics.fmean(e["seconds"] for e in epochs),
        "instrumentation_overhead": instrumented_epoch / epoch - 1,
        "gemm_flops": flops, "gemm_gflops_in_epoch": flops / parts["gemm"] / 1e9 if parts["gemm"] else None,
        "epoch_gflops": flops / epoch / 1e9,
        "gemm_choice": choice, "gemm_problems": [list(p) for p in problems], "gemm_threads": threads,
        "provider_gflops": speed, "gemm_floor_seconds": floor, "epoch_over_floor": epoch / floor,
        "goal": GOAL, "threads": {"plain": plain.params.get("threads"), "warm_up": warm.params.get("threads")},
        "cpu": gemm_choice.cpu_model(),
        "on_pool": on_pool(model),
    }


def on_pool(model):
    """Where the work that may share the GEMMs' OpenMP pool ran, as measured during the fit
    (``fastnet.backends.gemm_onednn.FasterOf``): ``{"optimizer": {threads: "pool" or "here"},
    "rounding": {"<elements> x <threads>": ...}}``, empty where the pool was not used."""
    found = {}
    optimizer = getattr(getattr(model.optimizer_, "_where", None), "chosen", None)
    if optimizer:
        found["optimizer"] = {str(k): v for k, v in optimizer.items()}
    rounding = getattr(getattr(model.backend_._matmul, "where", None), "chosen", None)
    if rounding:
        found["rounding"] = {f"{n} x {t}": v for (n, t), v in sorted(rounding.items())}
    return found


def shown_parts(result):
    """The parts a profile's table shows: every one, but the bf16 rounding only where the
    GEMMs were bfloat16."""
    bf16 = result.get("precision", "float32") == "bf16"
    return {p: label for p, label in PARTS.items() if p != "rounding" or bf16}


def format_profile(name, result):
    """Markdown: one row per part (seconds per epoch, share, GFLOP/s for the GEMMs), the
    plain epoch, the GEMM floor and the ratio to it."""
    c, parts = result["config"], result["parts_mean_seconds"]
    total = result["instrumented_mean_seconds"]
    calls = result["instrumented"][0]["calls"]
    speed = result["provider_gflops"]
    steps = f"{result['steps']} step{'s' * (result['steps'] != 1)}"
    head = (f"{name}: {'-'.join(map(str, result['layer_sizes']))} {c['activation']}, {c['optimizer']} "
            f"lr {c['lr']:g}, batch {result['batch_size']}, {result['rows']:,} rows ({steps}); "
            f"CPU {result['cpu']}; {result.get('precision', 'float32')} GEMMs, provider {speed['provider']} "
            f"({result['gemm_choice'].get('source', 'not chosen')}), {result['gemm_threads']} threads")
    lines = [head, "", "| part | s per epoch | share | GFLOP/s |", "|---|---:|---:|---:|"]
    for part, label in shown_parts(result).items():
        rate = f"{result['gemm_gflops_in_epoch']:.0f}" if part == "gemm" and result["gemm_gflops_in_epoch"] else ""
        count = f", {calls[part]:,} call{'s' * (calls[part] != 1)}" if part in calls else ""
        if part == "rounding" and calls.get(FROM_STEPS):
            count += f" (and {calls[FROM_STEPS]:,} weights {FROM_STEPS})"
        lines.append(f"| {label}{count} | {parts[part]:.4f} | {100 * parts[part] / total:.1f}% | {rate} |")
    n = len(result["instrumented"])
    lines.append(f"| instrumented epoch (mean of {n}) | {total:.4f} | 100% | "
                 f"{result['gemm_flops'] / total / 1e9:.0f} |")
    lines.append(f"| plain epoch (median of {result['rounds']}) | {result['median_epoch_seconds']:.4f} | | "
                 f"{result['epoch_gflops']:.0f} |")
    recorded = f", {speed['recorded']:.0f} when fit chose it" if speed["recorded"] else ""
    ratio = result["epoch_over_floor"]
    gap = max((p for p in PARTS if p != "gemm"), key=lambda p: parts[p])
    lines += ["", f"GEMM FLOPs per epoch {result['gemm_flops'] / 1e9:.2f} G; {speed['provider']} on the step's "
              f"shapes: best {speed['best']:.0f} GFLOP/s (measured now {min(speed['measured']):.0f}-"
              f"{max(speed['measured']):.0f}{recorded}); GEMM floor {result['gemm_floor_seconds']:.4f} s",
              f"plain epoch / GEMM floor = {ratio:.2f}x (goal <= {result['goal']}x: "
              f"{'met' if ratio <= result['goal'] else 'not met'}); GEMMs in the epoch / floor = "
              f"{parts['gemm'] / result['gemm_floor_seconds']:.2f}x; largest other part: {gap} "
              f"({100 * parts[gap] / total:.1f}%); instrumentation overhead "
              f"{100 * result['instrumentation_overhead']:+.1f}%"]
    for part, where in (result.get("on_pool") or {}).items():
        label = "elements x threads" if part == "rounding" else "threads"
        lines.append(f"{part} on the GEMMs' OpenMP pool (measured faster) or the calling thread, by "
                     f"{label}: " + ", ".join(f"{k}: {v}" for k, v in where.items()))
    tuner = result["threads"]["plain"]
    if tuner and tuner.get("steps_with"):
        steps = ", ".join(f"{k} thread{'s' * (k != '1')}: {v}" for k, v in tuner["steps_with"].items() if v)
        lines.append(f"thread tuner over the plain epochs: steps with {steps}")
    return "\n".join(lines)

"""Each system in its own process (``fastnet bench --processes``): interleaved rounds, the
median of per-round ratios.

In one process, one library's thread pool spins while another's works (PyTorch's float32
GEMM measured 31 GFLOP/s instead of 297 beside NumPy's OpenBLAS), so here every system
is a worker process of its own, started once: it loads the data, builds its network,
trains one untimed warm-up epoch (JIT compilation, ``torch.compile``, thread pools), then
waits on its stdin.  Each round the coordinator sends every worker in turn the round's
shuffle seed; the worker trains one epoch on the rows in that order and answers with the
epoch's seconds (its own clock, around the epoch alone) and what the epoch ran with where
that can change between epochs (``epoch_details``: fastnet's steps per BLAS thread count,
the thread tuner's choices).  The others sleep on a blocking
read meanwhile, and the coordinator pauses after each epoch, so the last worker's spinning
threads settle before the next system starts.
A round's ratio is ``baseline seconds / system seconds``; the table is the median of
those per-round ratios, never a ratio of medians.

A process keeps its own few percent of luck through all its rounds (where its memory lies,
which core its threads start on): two workers of the same system and settings, 5 rounds
each, were 0.96-1.07x apart in six pairs (bf16, batch 1024, Intel Xeon, 2026-12-05). So the
rounds are shared by ``Settings.sets`` sets of workers (default 2), each set started afresh
after the last one's workers are gone, in turn in the systems' order and the reverse: round
``r`` is set ``r % sets``'s, with the same shuffle seed as in a single set.  Within a round
the systems take turns from a point that moves on one system each round.

Conditions (``Settings.load``): ``"none"`` (the machine as it is) and ``"core"``: the
busy loop of ``fastnet bench --load core`` (:func:`fastnet.cli.bench.interleaved.cpu_load`)
takes one core from after the last warm-up until the last timed round, so the warm-ups
(compilation, untimed) keep the machine to themselves; it is killed and reaped on an error
or Ctrl-C too.  Its pid, core, lifetime and CPU seconds are in the result.

Systems: ``fastnet`` (``fit``, one epoch per call, with the thread tuner and the GEMM
choice on; the doctor off, as it runs once per ``fit`` and every epoch here is a fit),
``pytorch``, ``pytorch-tuned`` (fused Adam, flushed denormals), ``torch-compile``
(``torch.compile`` of the tuned network), ``jax`` (a ``jax.jit`` step with optax), and
``numpy-scratch`` (the tutorials' loop); peers that are not installed are left out and
named in the result.  bfloat16 (``fastnet bench --processes --bf16``, ``BF16_SYSTEMS``):
``fastnet-bf16`` (``precision="bf16"``: oneDNN's bfloat16 GEMMs, float32 weights),
``pytorch-autocast-tuned`` (the tuned loop, forward and loss under
``torch.autocast("cpu", dtype=torch.bfloat16)``) and ``fastnet`` in float32, whose
accuracy is the bf16 runs' reference.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from fastnet.cli.bench import interleaved as bench_interleaved
from fastnet.cli.bench import systems as bench_systems

SYSTEMS = ("fastnet", "pytorch", "pytorch-tuned", "torch-compile", "jax", "numpy-scratch")
#: ``--bf16``: the systems, and the baselines of their ratios.
BF16_SYSTEMS = ("fastnet-bf16", "pytorch-autocast-tuned", "fastnet")
BF16_BASELINES = ("pytorch-autocast-tuned", "fastnet")
#: Seconds the coordinator waits after an epoch before the next system's epoch starts.
SETTLE_SECONDS = 0.3
_NEEDS = {"pytorch": "torch", "pytorch-tuned": "torch", "torch-compile": "torch", "jax": "optax",
          "pytorch-autocast-tuned": "torch"}


@dataclass(frozen=True)
class Settings:
    """How :func:`run` measures: ``rounds`` timed rounds, on the first ``rows`` training images
    (None: all 60,000), shuffled from ``seed``, MNIST cached in ``data_dir`` (None: the
    default folder), under the ``load`` condition (``"none"`` or ``"core"``), the rounds shared by
    ``sets`` sets of fresh worker processes (at most one a round)."""

    rounds: int = 5
    rows: int | None = None
    seed: int = 0
    data_dir: str | None = None
    load: str = "none"
    sets: int = 2


class JaxSystem(bench_systems.System):
    """A ``jax.jit`` training step (forward, softmax cross-entropy, ``jax.grad``, optax's
    update) over the epoch's batches, parameters kept on the device between steps."""

    name = "jax"

    def setup(self, X, y, config, seed):
        import jax
        import jax.numpy as jnp
        import optax

        s = bench_systems.sizes(config)
        key = jax.random.PRNGKey(seed)
        params = []
        for a, b in zip(s[:-1], s[1:]):
            key, sub = jax.random.split(key)
            bound = 1.0 / np.sqrt(a)
            params.append((jax.random.uniform(sub, (a, b), jnp.float32, -bound, bound), jnp.zeros(b, jnp.float32)))
        act = jax.nn.sigmoid if config["activation"] == "sigmoid" else jax.nn.relu
        opt = optax.adam(config["lr"]) if config["optimizer"] == "adam" else optax.sgd(config["lr"])

        def loss(params, xb, yb):
            h = xb
            for W, b in params[:-1]:
                h = act(h @ W + b)
            W, b = params[-1]
            return optax.softmax_cross_entropy_with_integer_labels(h @ W + b, yb).mean()

        @jax.jit
        def step(params, state, xb, yb):
            grads = jax.grad(loss)(params, xb, yb)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        self.jax, self.params, self.state, self.step = jax, params, opt.init(params), step
        self.bs = config["batch_size"]

    def epoch(self, X, y):
        jnp = self.jax.numpy
        Xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.int32)
        for start in range(0, len(X), self.bs):
            self.params, self.state = self.step(self.params, self.state, Xj[start:start + self.bs],
                                                 yj[start:start + self.bs])
        self.jax.block_until_ready(self.params)


class TorchCompileSystem(bench_systems.TorchSystem):
    """The tuned PyTorch loop with ``torch.compile`` of the network (compiled in the warm-up)."""

    def __init__(self):
        super().__init__(tuned=True)
        self.name = "torch-compile"

    def setup(self, X, y, config, seed):
        super().setup(X, y, config, seed)
        self.net = self.torch.compile(self.net)


def make_system(name):
    if name == "fastnet":
        return bench_systems.FastnetSystem("cpu", "fused")
    if name == "fastnet-bf16":
        return bench_systems.FastnetSystem("cpu", "fused", precision="bf16")
    if name in ("pytorch", "pytorch-tuned"):
        return bench_systems.TorchSystem(tuned=name == "pytorch-tuned")
    if name == "pytorch-autocast-tuned":
        return bench_systems.TorchSystem(tuned=True, autocast=True)
    if name == "torch-compile":
        return TorchCompileSystem()
    if name == "jax":
        return JaxSystem()
    if name == "numpy-scratch":
        return bench_systems.NumpyScratchSystem()
    raise ValueError(f"system must be one of {', '.join(SYSTEMS + BF16_SYSTEMS[:2])}, got {name!r}")


def installed(name, needs=None):
    """Whether ``name``'s library (``needs``: system -> module, default ``_NEEDS``) imports here,
    without importing it."""
    import importlib.util

    need = (_NEEDS if needs is None else needs).get(name)
    return need is None or importlib.util.find_spec(need) is not None


def _threads():
    info = {"cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    try:
        from threadpoolctl import threadpool_info

        info["pools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "version")}
                         for p in threadpool_info()]
    except ImportError:
        pass
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def worker(name, config_name, rows, seed, data_dir=None):
    """A worker's life: set up, warm up, then one epoch per line read from stdin (the
    round's shuffle seed), answered with one JSON line on stdout; an empty line ends it."""
    from fastnet.cli import load_mnist_arrays

    (X, y), _ = load_mnist_arrays(subset=rows or None, cache_dir=data_dir)
    config = bench_systems.CONFIGS[config_name]
    system = make_system(name)
    out = sys.stdout
    sys.stdout = sys.stderr  # (libraries' prints stay off the answer channel)
    system.setup(X, y, config, seed)
    order = np.random.default_rng([seed, 10**6]).permutation(len(X))
    system.epoch(X[order], y[order])
    system.synchronize()
    versions = {}
    for module in ("numpy", "torch", "jax", "optax"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "?")
    import fastnet

    versions["fastnet"] = fastnet.__version__
    print(json.dumps({"ready": name, "pid": os.getpid(), "rows": len(X), "versions": versions,
                      "threads": _threads(), "details": system.details(), "warm_up": system.epoch_details()}),
          file=out, flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        order = np.random.default_rng(int(line)).permutation(len(X))
        Xo, yo = X[order], y[order]
        started = time.time()
        t0 = time.perf_counter()
        system.epoch(Xo, yo)
        system.synchronize()
        seconds = time.perf_counter() - t0
        print(json.dumps({"seconds": seconds, "started": started, "details": system.epoch_details()}), file=out,
              flush=True)
    accuracy = system.accuracy(X, y)
    print(json.dumps({"accuracy_on_training_rows": accuracy}), file=out, flush=True)


def _start(name, config_name, settings, env):
    cmd = [sys.executable, "-m", "fastnet.cli.bench.processes", "--worker", name, config_name, str(settings.rows or 0),
           str(settings.seed), *([settings.data_dir] if settings.data_dir else [])]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _send(proc, name, line):
    try:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    except BrokenPipeError:  # (a worker that died: the same message as a missing answer)
        proc.wait()
        raise RuntimeError(f"the {name} worker ended (exit {proc.returncode}) before answering: "
                           "see its output above") from None


def _read(proc, name):
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"the {name} worker ended (exit {proc.returncode}) before answering: see its output above")
    return json.loads(line)


def end_workers(procs, timeout=10):
    """End each worker of ``procs`` (name -> process) by closing its input; one that has not
    exited ``timeout`` seconds later is killed."""
    for proc in procs.values():
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_description():
    """``(CPU model, its vector flags)``: the avx*, amx*, fma* and sse4* flags, sorted."""
    from fastnet.backends.gemm_choice import cpu_model
    from fastnet.backends.precision import cpu_flags

    return cpu_model(), sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4")))


def _cpu_seconds(pid):
    """User and system CPU seconds of the live process ``pid`` (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def turn(names, i):
    """The systems' order in a set's ``i``-th round: ``names`` from the ``i``-th on (the system
    that goes first moves on each round)."""
    return names[i % len(names):] + names[:i % len(names)]


def check_sets(sets):
    """``sets`` (the sets of workers a run's rounds are shared by), checked: a positive integer."""
    if isinstance(sets, bool) or not isinstance(sets, int) or sets < 1:
        raise ValueError(f"sets must be a positive integer, got {sets!r}")


def _rounds(procs, rounds, settings, progress, record):
    """The timed rounds ``rounds`` (their indices among all the sets' rounds) of one set of
    workers: ``record(name, r, answer)`` with each epoch's answer (its seconds, start time and
    details: None, or what the system says its epoch ran with, fastnet's thread counts).
    Round ``r``'s shuffle seed depends on ``r`` alone; the systems take turns from the ``i``-th
    for the set's ``i``-th round."""
    names = list(procs)
    for i, r in enumerate(rounds):
        seconds = {}
        for name in turn(names, i):
            _send(procs[name], name, str(settings.seed * 1000 + r))
            answer = _read(procs[name], name)
            record(name, r, answer)
            seconds[name] = answer["seconds"]
            time.sleep(SETTLE_SECONDS)
        if progress:
            progress(f"round {r + 1} of {settings.rounds}: "
                     + ", ".join(f"{n} {seconds[n]:.3f} s" for n in names))


def _one_set(config_name, names, rounds, settings, env, progress, label, record):
    """One set of workers, started one at a time in the order of ``names`` (the warm-ups never
    overlap), through its ``rounds`` under ``settings.load`` (the busy loop from after the last
    warm-up to the last round); the workers are gone when it returns, also on an error or
    Ctrl-C.  Returns ``{name: its ready message}``, ``{name: accuracy}`` and the busy loop's
    record (None on a quiet machine)."""
    procs, ready, load = {}, {}, None
    try:
        for name in names:
            procs[name] = _start(name, config_name, settings, env)
            ready[name] = _read(procs[name], name)
            if progress:
                progress(f"{label}{name} ready")
        with bench_interleaved.cpu_load(settings.load) as spinning:  # after the warm-ups, until the last round
            if spinning is not None:
                load = {**spinning, "started": time.time()}
                if progress:
                    progress(f"{label}one core taken: busy loop pid {load['pid']}")
            _rounds(procs, rounds, settings, progress, record)
            if load is not None:
                load["cpu_seconds"] = _cpu_seconds(load["pid"])
        if load is not None:
            load["stopped"] = time.time()  # (killed and reaped by now)
        accuracy = {}
        for name, proc in procs.items():
            _send(proc, name, "")
            accuracy[name] = _read(proc, name)["accuracy_on_training_rows"]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return ready, accuracy, load


def run(config_name, systems=None, baselines=("pytorch-tuned", "torch-compile", "jax", "numpy-scratch"),
        settings=Settings(), progress=None):
    """Every system in its own worker process; ``settings.rounds`` interleaved rounds, shared
    by ``settings.sets`` sets of workers, under ``settings.load``.  Returns a JSON-ready
    dict: per system the epoch seconds of each round (``set_of_round``: which set ran it) and,
    against each baseline present, the per-round ratios and their median; ``condition`` and
    ``load`` (per set, the busy loop's pid, core, start and stop times, CPU seconds; None
    without)."""
    if settings.load not in bench_interleaved.CONDITIONS:  # (before the warm-ups, not after)
        raise ValueError(f"load must be one of {', '.join(bench_interleaved.CONDITIONS)}, got {settings.load!r}")
    check_sets(settings.sets)
    wanted = list(systems or SYSTEMS)
    missing = {s: f"{_NEEDS[s]} is not installed" for s in wanted if not installed(s)}
    names = [s for s in wanted if s not in missing]
    env = dict(os.environ)
    n_rounds = settings.rounds
    sets = max(1, min(settings.sets, n_rounds))
    times = {name: [None] * n_rounds for name in names}
    started = {name: [None] * n_rounds for name in names}
    details = {name: [None] * n_rounds for name in names}

    def record(name, r, answer):
        times[name][r], started[name][r] = answer["seconds"], answer["started"]
        details[name][r] = answer.get("details")

    ready, accuracy, loads = {n: [] for n in names}, {n: [] for n in names}, []
    for k in range(sets):
        label = f"set {k + 1} of {sets}: " if sets > 1 else ""
        order = names if k % 2 == 0 else names[::-1]   # (the start order, forward and backward in turn)
        ready_k, accuracy_k, load = _one_set(config_name, order, list(range(k, n_rounds, sets)), settings, env,
                                             progress, label, record)
        for name in names:
            ready[name].append(ready_k[name])
            accuracy[name].append(accuracy_k[name])
        loads.append(load)
    cpu, flags = cpu_description()
    result = {"kind": "processes", "config": config_name,
              "rows": ready[names[0]][0]["rows"] if names else settings.rows, "rounds": n_rounds, "sets": sets,
              "set_of_round": [r % sets for r in range(n_rounds)],
              "condition": settings.load, "load": loads if settings.load != "none" else None,
              "cpu": cpu, "cpu_flags": flags, "machine": bench_systems.machine_description(),
              "not_run": missing, "systems": {}}
    for name in names:
        first = ready[name][0]
        entry = {"pid": first["pid"], "pids": [m["pid"] for m in ready[name]],
                 "epoch_seconds": times[name], "epoch_started": started[name],
                 "median_epoch_seconds": statistics.median(times[name]),
                 "versions": first["versions"], "threads": first["threads"],
                 "details": first.get("details", {}), "epoch_details": details[name],
                 "warm_up_details": [m.get("warm_up") for m in ready[name]],
                 "accuracy_on_training_rows": accuracy[name][0], "accuracy_per_set": accuracy[name], "vs": {}}
        for base in baselines:
            if base in times and base != name:
                ratios = [b / a for a, b in zip(times[name], times[base])]
                entry["vs"][base] = {"per_round": ratios, "median": statistics.median(ratios)}
        result["systems"][name] = entry
    return result


def format_table(result):
    order = BF16_BASELINES + SYSTEMS
    bases = sorted({b for e in result["systems"].values() for b in e["vs"]},
                   key=lambda b: order.index(b) if b in order else 99)
    busy = ", one core taken by a busy loop" if result.get("condition") == "core" else ""
    sets = result.get("sets", 1)
    fresh = (f"; the rounds shared by {sets} sets of worker processes, each started afresh (in turn in the "
             f"order below and the reverse)") if sets > 1 else ""
    lines = [f"{result['config']}, {result['rows']} rows, {result['rounds']} rounds, each system in its own process"
             f"{busy} ({result['cpu']}){fresh}", "",
             "| system | epoch (median) | " + " | ".join(f"vs {b}" for b in bases) + " |",
             "|---|---:|" + "---:|" * len(bases)]
    for name, e in result["systems"].items():
        cells = [f"{e['vs'][b]['median']:.2f}x" if b in e["vs"] else "—" for b in bases]
        lines.append(f"| {name} | {e['median_epoch_seconds']:.3f} s | " + " | ".join(cells) + " |")
    accuracy = {n: e["accuracy_on_training_rows"] for n, e in result["systems"].items()
                if e.get("accuracy_on_training_rows") is not None}
    if accuracy:
        epochs = 1 + len(range(0, result["rounds"], sets))   # (the warm-up and the first set's rounds)
        whose = " (the first set's workers)" if sets > 1 else ""
        lines.append("")
        lines.append(f"accuracy on the training rows after {epochs} epochs{whose}: "
                     + ", ".join(f"{n} {a:.4f}" for n, a in accuracy.items()))
    threads = {n: e["epoch_details"] for n, e in result["systems"].items()
               if any(d and d.get("steps_with_threads") for d in e.get("epoch_details") or ())}
    for name, rounds in threads.items():
        lines.append("")
        lines.append(f"{name}, steps per BLAS thread count in each round: " + "; ".join(
            ", ".join(f"{k} thread{'s' * (k != '1')}: {v}" for k, v in d["steps_with_threads"].items() if v)
            if d and d.get("steps_with_threads") else "-" for d in rounds))
    loads = result.get("load") or []
    loads = [loads] if isinstance(loads, dict) else loads   # (a dict: a result from before the sets)
    for k, load in enumerate(loads):
        if not load:
            continue
        if k == 0:
            lines.append("")
        share = ""
        if load.get("cpu_seconds") is not None and load["stopped"] > load["started"]:
            share = f", {load['cpu_seconds'] / (load['stopped'] - load['started']):.2f} of a core"
        where = f"on core {load['core']}" if load["core"] is not None else "not pinned"
        whose = f" (set {k + 1})" if len(loads) > 1 else ""
        lines.append(f"busy loop{whose}: pid {load['pid']} {where}{share}, from after the warm-ups to the last "
                     f"timed round")
    if result["not_run"]:
        lines.append("")
        lines.append("not run: " + "; ".join(f"{k} ({v})" for k, v in result["not_run"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) in (6, 7) and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), *sys.argv[6:])
    else:
        sys.exit("usage: python -m fastnet.cli.bench.processes --worker SYSTEM CONFIG ROWS SEED [DATA_DIR] "
                 "(the coordinator is fastnet bench --processes)")

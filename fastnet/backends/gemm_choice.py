"""Which library runs the float32 GEMMs of CPU training steps, chosen on this machine by
measurement.

The candidates (``PROVIDERS``):

* ``numpy``: NumPy's BLAS (OpenBLAS in NumPy's wheels), always there;
* ``onednn``: oneDNN's matmul (:mod:`fastnet.backends.gemm_onednn`; ``pip install ".[bf16]"``),
  AVX-512 or AMX kernels where the CPU has them;
* ``mkl``: Intel MKL's ``cblas_sgemm`` (:mod:`fastnet.backends.gemm_mkl`; ``pip install ".[mkl]"``).

Which is fastest depends on the CPU (vendor, AVX-512, AMX, cache sizes), the library
versions, the thread count and the shapes (the figures from two machines: "Float32 GEMMs"
in docs/pages/decisions.md).  No fixed default is right everywhere, so at
a model's first ``fit`` (``FASTNET_CPU_GEMM=auto``, the default) :func:`choose` times
each provider that loads on the step's own GEMMs (each dense layer's ``x @ W``,
``x.T @ dy`` and, past the first layer, ``dy @ W.T``, at the fit's batch size and
NumPy's BLAS thread count), each step ending with the model's optimizer's update as fit's steps
on that provider run it (:class:`StepUpdate`: oneDNN's pool shares the update, the other
providers leave it to one thread; the GEMMs alone can rank the providers the other way round):
``WARM_STEPS`` untimed steps (the first makes oneDNN's
primitives, the second compiles its fast call), then timed steps for at least
``MEASURE_SECONDS`` (``MIN_REPS`` to ``MAX_REPS``), twice in alternating order (once when
the first pass took over ``SECOND_PASS_BEFORE``); each provider's best step gives its
GFLOP/s and the fastest wins.  Before each provider's steps :func:`settle` waits until the
process's other threads are idle: the threads a pool lets go spin on for a while (OpenBLAS's
for about 0.13 s, measured on an Intel Xeon), and a provider timed beside them runs up to
30x slower than alone (that made oneDNN, 1.3x faster than OpenBLAS there, measure at 3
GFLOP/s).  On a quiet machine deciding takes well under a second (a busy one slows the
steps measured, and the measurement with them).

The decision is kept in the process (the same key always gets the same answer: two fits
of one model compute with one library) and on disk, in ``gemm-choice.json`` under
fastnet's cache folder (``$XDG_CACHE_HOME/fastnet`` or ``~/.cache/fastnet``; the file
``FASTNET_GEMM_CACHE`` names, or ``off``), keyed by the CPU model (``/proc/cpuinfo``'s
``model name``), the versions of fastnet, NumPy, NumPy's BLAS, oneDNN and MKL, the thread
count, the GEMM shapes, the optimizer and the measurement's ``METHOD``: a new CPU, library version, thread
count, model or method measures again; the same one does not.

``FASTNET_CPU_GEMM`` overrides the choice: ``numpy``, ``onednn`` or ``mkl`` (``openblas``:
the old name of ``numpy``).  The choice, its source (``measured``, ``cache``, the
setting) and each candidate's GFLOP/s are in ``history.params["gemm"]`` and in ``fastnet
info``.  Inference (``predict``, ``evaluate``) always runs NumPy's BLAS (fit's validation runs
on the training GEMMs' library: :meth:`fastnet.backends.devices.Backend.evaluation_matmul`); ``float64`` models
and GPU backends have no choice to make; ``precision="bf16"`` runs oneDNN (the one
bfloat16 provider).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

PROVIDERS = ("numpy", "onednn", "mkl")
CACHE_ENV = "FASTNET_GEMM_CACHE"
CPU_GEMM_ENV = "FASTNET_CPU_GEMM"  # (fastnet.backends.precision.CPU_GEMM: the setting)
CACHE_FILE = "gemm-choice.json"
MAX_ENTRIES = 256       # decisions kept on disk (the oldest dropped first)
#: The measurement's version, in the cache key: decisions of an earlier method are made again
#: (2: each provider timed after :func:`settle`; the decisions of 1 favoured NumPy's BLAS;
#: 3: fit's steps timed with the optimizer's update, :class:`StepUpdate`; those of 2 timed the
#: GEMMs alone, and with MKL installed chose it on an Intel Xeon where its steps were slower).
METHOD = 3

WARM_STEPS = 2           # untimed steps before a provider's timed ones
MEASURE_SECONDS = 0.03   # timed per provider and pass, at least ...
MIN_REPS = 2             # ... this many steps, ...
MAX_REPS = 40            # ... at most this many
PASSES = 2               # passes over the providers, in alternating order (the best step counts) ...
SECOND_PASS_BEFORE = 0.3  # ... the second one only when the first took less than this (seconds)
SETTLE_LIMIT = 0.3      # seconds waited at most for the process's other threads to go idle, ...
QUIET_SHARE = 0.2       # ... idle: together they used under this share of one core ...
QUIET_SECONDS = 0.005   # ... over this long

#: The install line of each optional provider.
INSTALL = {"onednn": 'pip install ".[bf16]" in fastnet\'s clone (oneDNN: the onednn-cpu-gomp wheel)',
           "mkl": 'pip install ".[mkl]" in fastnet\'s clone (Intel MKL: the mkl wheel)'}


# -- the step's GEMMs ----------------------------------------------------------------------------

def step_problems(batch: int, weight_shapes) -> list[tuple[int, int, int, bool, bool]]:
    """The GEMMs of one training step: ``(M, K, N, a transposed, b transposed)`` per GEMM,
    for dense layers with weights of ``weight_shapes`` (``(n_in, n_out)``; other shapes are
    ignored) at ``batch`` rows: ``x @ W``, ``x.T @ dy`` and, past the first layer,
    ``dy @ W.T``."""
    problems = []
    dense = [tuple(int(d) for d in s) for s in weight_shapes if len(s) == 2]
    for i, (n_in, n_out) in enumerate(dense):
        problems.append((batch, n_in, n_out, False, False))   # forward: x @ W
        problems.append((n_in, batch, n_out, True, False))    # dW = x.T @ dy
        if i:
            problems.append((batch, n_out, n_in, False, True))  # dx = dy @ W.T
    return problems


@dataclass(frozen=True)
class StepUpdate:
    """The optimizer's update of a training step, timed with the step's GEMMs: what a provider
    costs a step is its GEMMs and the update as a step on it runs it (on oneDNN's OpenMP pool,
    its threads share the update where that is faster; beside NumPy's BLAS or MKL it runs on
    the calling thread), and the GEMMs after an update's pass over memory run from colder
    caches.  ``name``: the optimizer's; ``shapes``: its parameters'; ``make(runner)``: a
    callable running one update of scratch arrays of those shapes as a step with that pool
    runner (``fastnet.backends.gemm_onednn.PoolRunner``, or None) runs it
    (:meth:`fastnet.core.optimizers.Optimizer.step_update` makes one)."""

    name: str
    shapes: tuple
    make: Callable = field(compare=False, repr=False)


def problem_flops(problems) -> float:
    return float(sum(2 * m * k * n for m, k, n, _, _ in problems))


def describe(problems) -> str:
    """``"batch 128, 784-512-512-10"``, from the forward GEMMs."""
    forward = [p for p in problems if not p[3] and not p[4]]
    if not forward:
        return "no GEMMs"
    sizes = [forward[0][1]] + [p[2] for p in forward]
    return f"{'-'.join(map(str, sizes))} at batch {forward[0][0]}"


# -- the machine and the libraries ---------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _numpy_blas() -> str:
    from fastnet.backends import threads

    libs = threads.numpy_blas()
    if not libs:
        return "unknown BLAS"
    c = libs[0]
    return f"{c.internal_api} {c.version}"


def _provider_version(name: str) -> str:
    if name == "numpy":
        return _numpy_blas()
    if name == "onednn":
        from fastnet.backends import gemm_onednn

        return f"oneDNN {'.'.join(map(str, gemm_onednn.version()))}"
    from fastnet.backends import gemm_mkl

    return f"MKL {gemm_mkl.version()}"


def available() -> dict[str, Optional[str]]:
    """``{provider: None (it loads) or why not}``."""
    out: dict[str, Optional[str]] = {"numpy": None}
    from fastnet.backends import gemm_mkl
    from fastnet.backends import gemm_onednn

    for name, module, error in (("onednn", gemm_onednn, gemm_onednn.OneDNNUnavailable),
                                ("mkl", gemm_mkl, gemm_mkl.MKLUnavailable)):
        try:
            module.load()
            out[name] = None
        except error as exc:
            out[name] = str(exc)
    return out


def versions(names) -> dict[str, str]:
    """The versions a decision depends on: fastnet's, NumPy's and each provider's."""
    from fastnet import __version__

    return {"fastnet": __version__, "numpy": np.__version__, **{n: _provider_version(n) for n in names}}


# -- the providers ---------------------------------------------------------------------------------

def matmul_for(provider: str):
    """The training GEMM of ``provider`` (a callable ``(a, b, out)`` with a ``pool``), or None
    for NumPy's (the backend calls ``xp.matmul``)."""
    if provider == "numpy":
        return None
    if provider == "onednn":
        from fastnet.backends import gemm_onednn

        return gemm_onednn.F32Matmul()
    if provider == "mkl":
        from fastnet.backends import gemm_mkl

        return gemm_mkl.F32Matmul()
    raise ValueError(f"provider must be one of {', '.join(map(repr, PROVIDERS))}, got {provider!r}")


def _pool(provider: str):
    from fastnet.backends import threads

    matmul = matmul_for(provider)
    return matmul.pool if matmul is not None else ("blas", threads.blas_threads, threads.set_blas_threads)


def settle(limit: float = SETTLE_LIMIT, clock=time.perf_counter, cpu=time.process_time, sleep=time.sleep) -> float:
    """Wait (at most ``limit`` seconds) until the other threads of this process are idle: until,
    over ``QUIET_SECONDS`` of this thread sleeping, the process used under ``QUIET_SHARE`` of
    one core.  Returns the seconds waited.

    A thread pool's threads spin for a while after their work (OpenBLAS's about 0.13 s,
    oneDNN's libgomp a few ms, measured on an Intel Xeon); GEMMs of another pool timed meanwhile
    measure its contention, not its speed."""
    start = clock()
    while True:
        t, c = clock(), cpu()
        sleep(QUIET_SECONDS)
        t2, c2 = clock(), cpu()
        if c2 - c < QUIET_SHARE * (t2 - t) or t2 - start >= limit:
            return t2 - start


def measure(provider: str, problems, threads: int, clock=time.perf_counter, precision: str = "float32",
            update: Optional[StepUpdate] = None) -> float:
    """``provider``'s GFLOP/s on one step of ``problems`` at ``threads`` threads: the best of
    timed steps after :func:`settle` and ``WARM_STEPS`` untimed ones (see the module docstring).
    With ``update`` each step ends with the optimizer's update as a step on ``provider`` runs
    it, and the figure is the GEMMs' FLOPs over the whole step's time.

    ``precision="bf16"`` (provider ``"onednn"``, the one bfloat16 provider) times oneDNN's
    bfloat16 GEMMs on operands already rounded to bfloat16: the GEMMs alone, without the
    rounding a training step does before them."""
    rounded: Optional[Callable] = None
    if precision == "bf16":
        if provider != "onednn":
            raise ValueError(f"precision='bf16' runs on provider 'onednn' only, got provider={provider!r}")
        from fastnet.backends import gemm_onednn

        call: Callable = gemm_onednn.matmul
        rounded = gemm_onednn.to_bf16_bits
    elif precision == "float32":
        matmul = matmul_for(provider)
        call = (lambda a, b, out: np.matmul(a, b, out=out)) if matmul is None else matmul
    else:
        raise ValueError(f"precision must be 'float32' or 'bf16', got {precision!r}")
    rng = np.random.default_rng(0)
    ops = []
    for m, k, n, ta, tb in problems:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        if rounded is not None:
            a, b = rounded(a), rounded(b)
        ops.append((a.T if ta else a, b.T if tb else b, np.empty((m, n), np.float32)))
    if update is not None and precision != "float32":
        raise ValueError(f"update is timed with float32 steps only, got precision={precision!r}")
    _, get, apply = _pool(provider)
    before = get()
    if threads and before != threads:
        apply(threads)
    try:
        # (made after the pool's thread count is set: the update's pool runs that many)
        updated = update.make(getattr(call, "pool_runner", None)) if update is not None else None

        def step():
            for a, b, out in ops:
                call(a, b, out)
            if updated is not None:
                updated()

        settle()  # (another pool's threads, still spinning, would be timed with this one)
        for _ in range(WARM_STEPS):  # primitives made, fast calls compiled, threads woken
            step()
        times: list[float] = []
        start = clock()
        while len(times) < MAX_REPS and (len(times) < MIN_REPS or clock() - start < MEASURE_SECONDS):
            t = clock()
            step()
            times.append(clock() - t)
    finally:
        if threads and before is not None and before != threads:
            apply(before)
    return problem_flops(problems) / max(min(times), 1e-9) / 1e9


# -- the decision ------------------------------------------------------------------------------------

@dataclass
class Choice:
    """A decision: ``provider`` runs the float32 GEMMs of steps of ``problems``."""

    provider: str
    source: str                                   # "measured", "cache", "setting" (FASTNET_CPU_GEMM), ...
    gflops: dict = field(default_factory=dict)    # measured GFLOP/s by provider
    unavailable: dict = field(default_factory=dict)  # provider -> why it did not run
    problems: list = field(default_factory=list)
    threads: int = 0
    cpu: str = ""
    versions: dict = field(default_factory=dict)
    seconds: float = 0.0                          # time taken to decide (measuring included)
    update: str = ""                              # the optimizer whose update was timed with the GEMMs

    def reason(self) -> str:
        """Why this provider: ``"measured 210 GFLOP/s vs numpy 180, mkl 150 on 784-512-512-10 at
        batch 128, 2 threads, steps with adam's update"``."""
        where = f"on {describe(self.problems)}, {self.threads} thread{'s' * (self.threads != 1)}"
        if self.update:
            where += f", steps with {self.update}'s update"
        if self.gflops:
            others = ", ".join(f"{p} {g:.0f}" for p, g in sorted(self.gflops.items(), key=lambda kv: -kv[1])
                               if p != self.provider)
            mine = self.gflops.get(self.provider)
            rate = f"{mine:.0f}" if mine is not None else "?"
            text = f"measured {rate} GFLOP/s" + (f" vs {others}" if others else "") + f" {where}"
            if self.source == "cache":
                text += " (cached decision)"
            return text
        if self.source == "setting":
            return f"{CPU_GEMM_ENV}={self.provider} (not measured) {where}"
        return f"{self.source} {where}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["reason"] = self.reason()
        d["problems"] = [list(p) for p in self.problems]
        return d


_memory: dict[str, Choice] = {}


def cache_path() -> Optional[Path]:
    """The decisions' file, or None (``FASTNET_GEMM_CACHE=off``)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("off", "none", "0"):
        return None
    if value:
        return Path(value)
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "fastnet" / CACHE_FILE


def _read_cache(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Optional[Path], key: str, choice: Choice) -> None:
    if path is None:
        return
    entries = _read_cache(path)
    entries[key] = {**choice.as_dict(), "when": time.time()}
    if len(entries) > MAX_ENTRIES:
        for old in sorted(entries, key=lambda k: entries[k].get("when", 0))[:len(entries) - MAX_ENTRIES]:
            del entries[old]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the decision is kept in this process only


def cache_key(cpu: str, versions_: dict, threads: int, problems, update: Optional[StepUpdate] = None) -> str:
    """The decision's key: a digest of the CPU model, library versions, thread count, shapes
    and the optimizer whose update the steps timed (its name and parameters' shapes)."""
    timed = None if update is None else {"name": update.name, "shapes": [list(s) for s in update.shapes]}
    text = json.dumps({"cpu": cpu, "versions": versions_, "threads": int(threads),
                       "problems": [list(p) for p in problems], "dtype": "float32", "method": METHOD,
                       "update": timed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_decisions() -> list[dict]:
    """The decisions on disk made on this CPU, newest first (for ``fastnet info``)."""
    cpu = cpu_model()
    entries = [e for e in _read_cache(cache_path()).values() if isinstance(e, dict) and e.get("cpu") == cpu]
    return sorted(entries, key=lambda e: -e.get("when", 0))


def choose(batch: int, weight_shapes, threads: int, setting: Optional[str] = None, *,
           update: Optional[StepUpdate] = None, measure: Optional[Callable] = None,
           providers: Optional[dict] = None) -> Choice:
    """The provider of the float32 GEMMs of steps at ``batch`` rows through dense layers of
    ``weight_shapes``, at ``threads`` threads; ``update``: the optimizer's update, timed in
    each step with the GEMMs (fit's; None: the GEMMs alone).  ``setting``:
    ``FASTNET_CPU_GEMM``'s value (read when None).  ``measure(provider, problems, threads,
    [update=]) -> GFLOP/s`` and ``providers`` (``{name: None or why not}``, as
    :func:`available`) are for tests."""
    from fastnet.backends.precision import cpu_gemm_provider

    t0 = time.perf_counter()
    measure = globals()["measure"] if measure is None else measure
    setting = cpu_gemm_provider() if setting is None else setting
    problems = step_problems(int(batch), weight_shapes)
    threads = int(threads or 1)
    timed = "" if update is None else update.name
    if setting != "auto":
        return Choice(setting, "setting", problems=problems, threads=threads, cpu=cpu_model(), update=timed)
    providers = available() if providers is None else providers
    ready = [p for p in PROVIDERS if p in providers and providers[p] is None]
    unavailable = {p: why for p, why in providers.items() if why is not None}
    cpu = cpu_model()
    vers = versions(ready)
    key = cache_key(cpu, vers, threads, problems, update)
    known = _memory.get(key)
    if known is not None:
        return known
    path = cache_path()
    entry = _read_cache(path).get(key)
    if isinstance(entry, dict) and entry.get("provider") in ready:
        choice = Choice(entry["provider"], "cache", dict(entry.get("gflops", {})), unavailable, problems,
                        threads, cpu, vers, time.perf_counter() - t0, timed)
    elif len(ready) == 1 or not problems:
        choice = Choice(ready[0], "the only provider here" if len(ready) == 1 else "no GEMMs", {}, unavailable,
                        problems, threads, cpu, vers, time.perf_counter() - t0, timed)
    else:
        rates: dict[str, list[float]] = {p: [] for p in ready}
        for i in range(PASSES):
            if i and time.perf_counter() - t0 > SECOND_PASS_BEFORE:
                break  # large steps (or a busy machine): one pass keeps the decision well under a second
            for p in (ready if i % 2 == 0 else ready[::-1]):
                rates[p].append(float(measure(p, problems, threads) if update is None
                                      else measure(p, problems, threads, update=update)))
        gflops = {p: max(r) for p, r in rates.items()}
        best = max(ready, key=lambda p: (gflops[p], -ready.index(p)))
        choice = Choice(best, "measured", gflops, unavailable, problems, threads, cpu, vers,
                        time.perf_counter() - t0, timed)
        _write_cache(path, key, choice)
    _memory[key] = choice
    return choice

"""GEMM providers at an MLP step's shapes: NumPy (OpenBLAS) float32, oneDNN float32 and
bfloat16 (``fastnet.backends.gemm_onednn``), PyTorch float32 and bfloat16.

Shapes: one training step of 784-512-512-10 at batch B (128 and 1024 by default)::

    fwd1  x (B,784) @ W1 (784,512)     dW1  x.T (784,B) @ dy (B,512)
    fwd2  h (B,512) @ W2 (512,512)     dW2  h.T (512,B) @ dy (B,512)     dx2  dy (B,512) @ W2.T
    fwd3  h (B,512) @ W3 (512,10)      dW3  h.T (512,B) @ dy (B,10)      dx3  dy (B,10) @ W3.T

(``x.T``, ``W.T`` are transposed views, passed as they are: no provider copies them.)
``--square N ...`` adds N x N x N GEMMs: the best rate each provider reaches here.
Providers, all with ``--threads`` threads (2 by default):

* ``numpy-f32``       ``np.matmul(a, b, out=out)`` (OpenBLAS; threadpoolctl sets its threads);
* ``dnnl3.2-f32``, ``dnnl3.2-bf16``    ``fastnet.backends.gemm_onednn.matmul`` with ``onednn-cpu-gomp``
  (bf16: operands converted to bfloat16 beforehand; float32 accumulation and output);
* ``dnnl3.13-f32``, ``dnnl3.13-bf16``  the same with the ``onednn`` package (SYCL runtime);
* ``torch-f32``       ``torch.matmul(a, b, out=o)`` on tensors sharing NumPy's memory;
* ``torch-bf16``      ``torch.matmul(a, b, out=o)`` on bfloat16 tensors (bfloat16 output);
* ``torch-autocast``  forward shapes only: ``F.linear(x, W, bias)`` on float32 tensors inside
  ``torch.autocast("cpu", dtype=torch.bfloat16)``, entered per call: the casts of x and W to
  bfloat16 are included, as in a training step's forward (bfloat16 output).

**One process per library.**  Each family (NumPy, PyTorch, oneDNN 3.2, oneDNN 3.13) runs in
its own worker process; this process only sends requests and waits.  In one process the
pools get in each other's way: OpenBLAS's threads spin (yielding) for a while after a
GEMM, and so do OpenMP's, so on 2 cores the next library's threads wait for a core (seen
here: oneDNN 3.2 at 8 GFLOP/s in some rounds, 200 in others).  Before each worker's turn
this process sleeps ``--gap`` seconds (the last worker's threads go to sleep).  The two
oneDNN packages could not share a process anyway: both are ``libdnnl.so.3``.

**Timing.**  Rounds (``--rounds``, >= 7): in each round every worker in turn (rotated order)
runs one short burst per (provider, shape): 2 untimed calls, then calls until ``--burst``
seconds have passed.  Per round and shape the ratios ``numpy seconds / provider seconds``
and ``torch-bf16 seconds / provider seconds`` are taken; the table gives their medians over
rounds, and the median and best GFLOP/s.  On a shared machine read the ratios.

**Conversions** (``--conversions``): float32 -> bfloat16 of a step's operands with
``ml_dtypes`` ``astype``, a Numba loop (round to nearest even), NumPy bit arithmetic
(``gemm_onednn.to_bf16_bits``) and ``torch.Tensor.to``.

**Steps** (``--steps``): training epochs of relu512x2-adam at each batch (random data,
``--step-rows`` rows) of fastnet as today (NumPy float32 GEMMs), PyTorch float32 and
PyTorch with bfloat16 autocast, with one step's 8 GEMMs by NumPy and by oneDNN bf16 and the
conversions a bf16 step needs, all in the same rounds.  Projection per round::

    fastnet bf16 step = fastnet step - NumPy GEMMs + oneDNN bf16 GEMMs + conversions (Numba)

and fastnet's own ``precision="bf16"`` step, ``fastnet-bf16-onednn`` (each GEMM's two
operands rounded to bfloat16 just before it: weights twice per step, activations twice).

    python bench/gemm_providers.py --rounds 9 --json gemm.json
    python bench/gemm_providers.py --batches 128 --no-gemms --conversions --steps
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

LAYERS = (784, 512, 512, 10)
PACKAGES = {"dnnl-gomp": "onednn-cpu-gomp", "dnnl-sycl": "onednn"}


def step_shapes(batch, layers=LAYERS):
    """[name, M, K, N, a transposed, b transposed] for one training step's GEMMs."""
    shapes = []
    for i, (k, n) in enumerate(zip(layers[:-1], layers[1:]), 1):
        shapes.append([f"fwd{i}", batch, k, n, False, False])
        shapes.append([f"dW{i}", k, batch, n, True, False])
        if i > 1:
            shapes.append([f"dx{i}", batch, n, k, False, True])
    return shapes


def square_shape(n):
    """An n x n x n GEMM: the machine's best case, beside a step's shapes (``--square``)."""
    return [f"square{n}", n, n, n, False, False]


def operands(shape, seed=0):
    """float32 a (M, K), b (K, N) laid out as in a step (transposed views where marked)."""
    _, m, k, n, ta, tb = shape
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32) * 0.05
    return (a.T if ta else a), (b.T if tb else b)


def bf16_like(x):
    """x rounded to bfloat16 (ml_dtypes), in the same layout (a transposed view stays one)."""
    import ml_dtypes

    if x.flags.c_contiguous:
        return x.astype(ml_dtypes.bfloat16)
    return x.T.astype(ml_dtypes.bfloat16).T


def numba_bf16():
    import numba

    @numba.njit(cache=False, nogil=True)
    def convert(x, out):
        """float32 -> bfloat16 bits (C-contiguous 2-D arrays), round to nearest even (no NaN care)."""
        u = x.reshape(-1).view(np.uint32)
        o = out.reshape(-1)
        for i in range(u.size):
            v = u[i]
            o[i] = np.uint16((v + np.uint32(0x7FFF) + ((v >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
        return out
    return convert


def burst(fn, seconds):
    """Seconds per call: 2 untimed calls, then calls until `seconds` have passed."""
    fn()
    fn()
    calls = 0
    t0 = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return elapsed / calls


# ----------------------------------------------------------------------------- worker tasks
# A task is a JSON list: [kind, what, argument]; a worker builds it once (warming it up) and
# times it on request.  Kinds: "gemm" [provider, shape], "conv" [method, shape], "epoch"
# [system, batch] (one epoch, per step), "stepgemms" [provider, batch] (a step's 8 GEMMs),
# "stepconv" [method, batch] (what a bf16 step converts).

def gemm_fn(provider, shape):
    a, b = operands(shape)
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    if provider == "numpy-f32":
        return lambda: np.matmul(a, b, out=out)
    if provider.startswith("dnnl"):
        from fastnet.backends import gemm_onednn as g

        if provider.endswith("bf16"):
            a, b = bf16_like(a), bf16_like(b)
        return lambda: g.matmul(a, b, out)
    import torch

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)        # transposed views stay views
    if provider == "torch-autocast":
        import torch.nn.functional as F

        if not shape[0].startswith("fwd"):
            return None
        x, w = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b.T))
        bias = torch.zeros(b.shape[1])

        def linear():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return F.linear(x, w, bias)
        return linear
    if provider == "torch-bf16":
        ta, tb = ta.to(torch.bfloat16), tb.to(torch.bfloat16)  # .to keeps the strides
    tout = torch.empty((a.shape[0], b.shape[1]), dtype=ta.dtype)
    return lambda: torch.matmul(ta, tb, out=tout)


def conv_fn(method, shape):
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    out = np.empty(shape, np.uint16)
    if method == "ml_dtypes astype":
        import ml_dtypes
        return lambda: x.astype(ml_dtypes.bfloat16)
    if method == "numba loop":
        convert = numba_bf16()
        return lambda: convert(x, out)
    if method == "numpy bits":
        from fastnet.backends import gemm_onednn as g
        return lambda: g.to_bf16_bits(x)
    if method == "torch .to":
        import torch
        tx = torch.from_numpy(x)
        return lambda: tx.to(torch.bfloat16)
    raise ValueError(method)


def step_conversion_shapes(batch):
    """What a bf16 step converts: x, h1, h2 (forward inputs), W1..W3 (after the update), the
    output gradient and the two hidden gradients (backward inputs)."""
    return [(batch, 784), (batch, 512), (batch, 512), (784, 512), (512, 512), (512, 10),
            (batch, 10), (batch, 512), (batch, 512)]


def epoch_fn(system, batch, rows):
    os.environ.setdefault("FASTNET_THREADS", "fixed")
    from fastnet.cli.bench import systems as B
    from fastnet.core.recipes import BENCH_CONFIGS

    config = dict(BENCH_CONFIGS["relu512x2-adam"], batch_size=batch)
    rng = np.random.default_rng(0)
    X = rng.random((rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    if system == "fastnet-f32":
        s = B.FastnetSystem()
    elif system == "fastnet-bf16-onednn":
        s = B.FastnetSystem(precision="bf16")
    elif system == "pytorch-f32":
        s = B.TorchSystem()
    elif system == "pytorch-bf16-autocast":
        s = B.TorchSystem(autocast=True)
    elif system == "pytorch-bf16-autocast-tuned":   # Adam(fused=True), flush denormals
        s = B.TorchSystem(tuned=True, autocast=True)
    else:
        raise ValueError(system)
    s.setup(X, y, config, 0)
    s.epoch(X[:batch * 4], y[:batch * 4])                  # warm-up: compile, caches
    steps = rows // batch

    def epoch():
        t0 = time.perf_counter()
        s.epoch(X, y)
        return (time.perf_counter() - t0) / steps
    return epoch


def build(task, rows):
    kind, what, arg = task
    if kind == "gemm":
        return gemm_fn(what, arg)
    if kind == "conv":
        return conv_fn(what, tuple(arg))
    if kind == "epoch":
        return epoch_fn(what, arg, rows)
    if kind == "stepgemms":
        fns = [gemm_fn(what, s) for s in step_shapes(arg)]
        return lambda: [f() for f in fns]
    if kind == "stepconv":
        fns = [conv_fn(what, s) for s in step_conversion_shapes(arg)]
        return lambda: [f() for f in fns]
    raise ValueError(kind)


def set_threads(n):
    """NumPy's BLAS, PyTorch (if imported) and oneDNN's OpenMP pool (if loaded) to n threads."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n, user_api="blas")
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    from fastnet.backends import gemm_onednn as g
    if g._lib is not None:
        g.set_num_threads(n)


def serve(family, threads, rows):
    """Worker: one JSON line in (tasks to build, or tasks to time), one JSON line out."""
    if family in ("torch",):
        import torch  # noqa: F401  (imported before the threads are set)
    if family.startswith("dnnl"):
        from fastnet.backends import gemm_onednn as g
        g.load()
    set_threads(threads)
    info = {"family": family, "pid": os.getpid()}
    if family.startswith("dnnl"):
        info.update(version=".".join(map(str, g.version())), runtime=g.runtime(), library=g.library_path(),
                    threads=g.get_num_threads())
    if family == "torch":
        info.update(torch=torch.__version__, threads=torch.get_num_threads(),
                    mkldnn=torch.backends.mkldnn.is_available())
    print(json.dumps(info), flush=True)
    built = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if "build" in req:
                impls = {}
                for task in req["build"]:
                    fn = built[json.dumps(task)] = build(task, rows)
                    if fn is not None:
                        fn()
                    if task[0] == "gemm" and task[1].startswith("dnnl"):
                        a, b = operands(task[2])
                        if task[1].endswith("bf16"):
                            a, b = bf16_like(a), bf16_like(b)
                        impls[f"{task[1]} {task[2][0]}@{task[2][1]}x{task[2][2]}x{task[2][3]}"] = \
                            g.implementation(a, b)
                answer = {"built": [json.dumps(t) for t in req["build"] if built[json.dumps(t)] is not None],
                          "impls": impls}
            else:
                seconds = {}
                for key in req["time"]:
                    fn = built[key]
                    seconds[key] = fn() if json.loads(key)[0] == "epoch" else burst(fn, req["seconds"])
                answer = {"seconds": seconds}
        except Exception as e:   # reported to the parent
            answer = {"error": repr(e)}
        print(json.dumps(answer), flush=True)


class Worker:
    def __init__(self, family, threads, rows):
        env = dict(os.environ)
        if family in PACKAGES:
            env["FASTNET_ONEDNN"] = PACKAGES[family]
        self.family = family
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", family,
                                      "--threads", str(threads), "--step-rows", str(rows)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {family} did not start")
        self.info = json.loads(line)
        self.tasks = []

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"{self.family}: {answer['error']}")
        return answer

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ----------------------------------------------------------------------------- the run
def plan(args, families):
    """Tasks per worker family (a family whose worker did not start gets none)."""
    tasks = {f: [] for f in families}

    def add(family, task):
        if family in tasks and task not in tasks[family]:
            tasks[family].append(task)

    versions = {f: "dnnl" + ".".join(families[f]["version"].split(".")[:2])
                for f in families if f.startswith("dnnl")}
    first = next(iter(versions), "numpy")      # the worker that also converts
    for bt in args.batches:
        if not args.no_gemms:
            for s in step_shapes(bt) + ([square_shape(n) for n in args.square] if bt == args.batches[0] else []):
                add("numpy", ["gemm", "numpy-f32", s])
                for p in ("torch-f32", "torch-bf16", "torch-autocast"):
                    add("torch", ["gemm", p, s])
                for f, v in versions.items():
                    add(f, ["gemm", f"{v}-f32", s])
                    add(f, ["gemm", f"{v}-bf16", s])
        if args.conversions:
            for shape in sorted(set(step_conversion_shapes(bt)) - {(bt, 10), (512, 10)}):
                for m in ("ml_dtypes astype", "numba loop", "numpy bits"):
                    add(first, ["conv", m, list(shape)])
                add("torch", ["conv", "torch .to", list(shape)])
        if args.steps:
            add("numpy", ["epoch", "fastnet-f32", bt])
            add("numpy", ["stepgemms", "numpy-f32", bt])
            for system in ("pytorch-f32", "pytorch-bf16-autocast", "pytorch-bf16-autocast-tuned"):
                add("torch", ["epoch", system, bt])
            for f, v in versions.items():
                add(f, ["stepgemms", f"{v}-bf16", bt])
            if versions:
                add(first, ["stepconv", "numba loop", bt])
                add(first, ["epoch", "fastnet-bf16-onednn", bt])
    return tasks


def run(args):
    families = ["numpy", "torch", "dnnl-gomp", "dnnl-sycl"]
    workers = {}
    for f in families:
        try:
            workers[f] = Worker(f, args.threads, args.step_rows)
        except Exception as e:
            print(f"# worker {f}: not available ({e})", file=sys.stderr)
    if args.no_sycl and "dnnl-sycl" in workers:
        workers.pop("dnnl-sycl").close()
    tasks = plan(args, {f: w.info for f, w in workers.items()})
    impls = {}
    for f, w in workers.items():
        answer = w.ask(build=tasks[f])
        w.tasks = answer["built"]
        impls.update(answer["impls"])
    times = {key: [] for w in workers.values() for key in w.tasks}
    order = list(workers)
    loads = []
    for r in range(args.rounds):
        for f in order[r % len(order):] + order[:r % len(order)]:
            time.sleep(args.gap)
            if workers[f].tasks:
                answer = workers[f].ask(time=workers[f].tasks, seconds=args.burst)
                for key, s in answer["seconds"].items():
                    times[key].append(s)
        loads.append(open("/proc/loadavg").read().split()[0])
        print(f"# round {r + 1}/{args.rounds}, load average {loads[-1]}", file=sys.stderr)
    for w in workers.values():
        w.close()
    return times, {f: w.info for f, w in workers.items()}, impls, loads


def median_ratio(base, other):
    return statistics.median([x / y for x, y in zip(base, other)])


def gemm_rows(times, batches, squares=()):
    def t(provider, shape):
        return times.get(json.dumps(["gemm", provider, shape]))

    providers = []
    for key in times:
        kind, p, _ = json.loads(key)
        if kind == "gemm" and p not in providers:
            providers.append(p)
    rows = []
    for bt in batches:
        ss = step_shapes(bt)
        for s in ss:
            flop = 2.0 * s[1] * s[2] * s[3]
            for p in providers:
                if t(p, s):
                    rows.append(_row(s[0], bt, s[1:4], p, flop, t(p, s), t("numpy-f32", s),
                                     t("torch-bf16", s)))
        flop = sum(2.0 * s[1] * s[2] * s[3] for s in ss)
        step = {p: [sum(x) for x in zip(*[t(p, s) for s in ss])]
                for p in providers if all(t(p, s) for s in ss)}
        for p, v in step.items():
            rows.append(_row("step", bt, None, p, flop, v, step["numpy-f32"], step["torch-bf16"]))
    for n in squares:
        s = square_shape(n)
        for p in providers:
            if t(p, s):
                rows.append(_row(s[0], None, s[1:4], p, 2.0 * n ** 3, t(p, s), t("numpy-f32", s), t("torch-bf16", s)))
    return rows


def _row(name, batch, mkn, provider, flop, t, base, tbf):
    return {"shape": name, "batch": batch, "mkn": mkn, "provider": provider,
            "gflops_median": flop / statistics.median(t) / 1e9, "gflops_best": flop / min(t) / 1e9,
            "us_median": statistics.median(t) * 1e6, "vs_numpy": median_ratio(base, t),
            "vs_torch_bf16": median_ratio(tbf, t), "seconds": t}


def format_gemm(rows):
    lines = ["| shape | M x K x N | provider | GFLOP/s median | best | us/call median | x NumPy f32 "
             "| x torch bf16 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        dims = "x".join(map(str, r["mkn"])) if r["mkn"] else f"batch {r['batch']}: the 8 GEMMs"
        lines.append(f"| {r['shape']} | {dims} | {r['provider']} | {r['gflops_median']:.0f} | "
                     f"{r['gflops_best']:.0f} | {r['us_median']:.1f} | {r['vs_numpy']:.2f} | "
                     f"{r['vs_torch_bf16']:.2f} |")
    return "\n".join(lines)


def conversion_rows(times):
    rows = []
    for key, t in times.items():
        kind, method, shape = json.loads(key)
        if kind == "conv":
            rows.append({"array": tuple(shape), "method": method, "us_median": statistics.median(t) * 1e6,
                         "gb_per_s": 4 * shape[0] * shape[1] / statistics.median(t) / 1e9, "seconds": t})
    return sorted(rows, key=lambda r: (r["array"], r["method"]))


def format_conversions(rows):
    lines = ["| array (float32) | method | us median | GB/s (float32 read) |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['array'][0]}x{r['array'][1]} | {r['method']} | {r['us_median']:.1f} | "
                     f"{r['gb_per_s']:.1f} |")
    return "\n".join(lines)


def step_rows(times, batches):
    out = []
    for bt in batches:
        def t(kind, what):
            return times.get(json.dumps([kind, what, bt]))
        fast, gnp = t("epoch", "fastnet-f32"), t("stepgemms", "numpy-f32")
        auto, tf32 = t("epoch", "pytorch-bf16-autocast"), t("epoch", "pytorch-f32")
        if not (fast and gnp and auto):
            continue
        row = {"batch": bt, "ms_median": {}, "ratios": {}}
        parts = {"fastnet f32 step": fast, "pytorch f32 step": tf32, "pytorch bf16 autocast step": auto,
                 "NumPy f32: the 8 GEMMs": gnp}
        for key in times:
            kind, what, arg = json.loads(key)
            if kind == "stepgemms" and what.startswith("dnnl") and arg == bt:
                v = what[:-5]
                conv = times[json.dumps(["stepconv", "numba loop", bt])]
                proj = [f - g + d + c for f, g, d, c in zip(fast, gnp, times[key], conv)]
                parts[f"{what}: the 8 GEMMs"] = times[key]
                parts["conversions (Numba loop, 9 arrays)"] = conv
                parts[f"projected fastnet bf16 step ({v})"] = proj
                row["ratios"][f"autocast step / projected ({v})"] = median_ratio(auto, proj)
        tuned = t("epoch", "pytorch-bf16-autocast-tuned")
        if tuned:
            parts["pytorch bf16 autocast step, tuned (fused Adam, flush denormals)"] = tuned
        proto = t("epoch", "fastnet-bf16-onednn")
        if proto:
            parts["fastnet bf16 prototype step (oneDNN bf16 GEMMs, operands converted per GEMM)"] = proto
            row["ratios"]["autocast step / fastnet bf16 prototype step"] = median_ratio(auto, proto)
            row["ratios"]["fastnet f32 step / fastnet bf16 prototype step"] = median_ratio(fast, proto)
            if tuned:
                row["ratios"]["tuned autocast step / fastnet bf16 prototype step"] = \
                    median_ratio(tuned, proto)
        row["ratios"]["NumPy GEMMs / fastnet step"] = median_ratio(gnp, fast)
        row["ratios"]["autocast step / fastnet f32 step"] = median_ratio(auto, fast)
        row["ratios"]["pytorch f32 step / fastnet f32 step"] = median_ratio(tf32, fast)
        row["ms_median"] = {k: statistics.median(v) * 1e3 for k, v in parts.items()}
        row["seconds"] = parts
        out.append(row)
    return out


def format_steps(rows):
    lines = []
    for r in rows:
        lines.append(f"\nbatch {r['batch']}, ms per step (median of rounds):\n\n| part | ms |\n|---|---:|")
        lines += [f"| {k} | {v:.3f} |" for k, v in r["ms_median"].items()]
        lines.append("\n| ratio (median of per-round ratios) | |\n|---|---:|")
        lines += [f"| {k} | {v:.2f} |" for k, v in r["ratios"].items()]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--burst", type=float, default=0.02, help="seconds per timed burst")
    ap.add_argument("--gap", type=float, default=0.2, help="seconds of sleep before each worker's turn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-sycl", action="store_true", help="leave out the onednn (SYCL) package")
    ap.add_argument("--square", type=int, nargs="*", default=[],
                    help="also N x N x N GEMMs (the best case), for each provider")
    ap.add_argument("--no-gemms", action="store_true")
    ap.add_argument("--conversions", action="store_true")
    ap.add_argument("--steps", action="store_true")
    ap.add_argument("--step-rows", type=int, default=8192)
    ap.add_argument("--json")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.threads, args.step_rows)
    if args.rounds < 7:
        print("# note: fewer than 7 rounds", file=sys.stderr)
    load0 = open("/proc/loadavg").read().strip()
    times, workers, impls, loads = run(args)
    result = {"argv": sys.argv, "cpu_count": os.cpu_count(), "workers": workers, "implementations": impls,
              "loadavg_per_round": loads,
              "loadavg_start": load0, "loadavg_end": open("/proc/loadavg").read().strip()}
    if not args.no_gemms:
        result["gemm"] = gemm_rows(times, args.batches, args.square)
        print(format_gemm(result["gemm"]))
    if args.conversions:
        result["conversions"] = conversion_rows(times)
        print("\n" + format_conversions(result["conversions"]))
    if args.steps:
        result["steps"] = step_rows(times, args.batches)
        print(format_steps(result["steps"]))
    print("\n# workers: " + "; ".join(json.dumps(w) for w in workers.values()))
    for k, v in impls.items():
        print(f"#   {k}: {v}")
    print(f"# load average: start {result['loadavg_start']}, end {result['loadavg_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

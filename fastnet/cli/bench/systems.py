"""MNIST training throughput, fastnet beside its peers, measured in one run.

Systems (each trains the same architecture, optimizer, batch size and data
order, one epoch per round, after a warm-up epoch that compiles and fills
caches):

* ``fastnet-fused``     fastnet, CPU backend, Numba kernels;
* ``fastnet-reference`` fastnet, CPU backend, plain NumPy kernels;
* ``fastnet-cuda``      fastnet on a GPU, when one is usable (synchronised each round);
* ``pytorch``           PyTorch CPU, ``torch.set_num_threads(cores)``;
* ``pytorch-tuned``     the same with ``Adam(fused=True)`` and ``set_flush_denormal(True)``;
* ``sklearn``           scikit-learn's ``MLPClassifier.partial_fit``;
* ``numpy-scratch``     the tutorials' from-scratch NumPy loop (allocates every step): the floor.

Rounds are interleaved (A B C A B C ...) so machine drift hits every system
alike; ratios to PyTorch are taken round by round, then the median.  Each
round shuffles the data once, outside the timed region, and every system then
trains on the same shuffled arrays in order: the same data order for all, and
no system pays for another's way of gathering batches.
"""
from __future__ import annotations

import contextlib
import functools
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from fastnet.core.recipes import BENCH_CONFIGS

#: The benchmark configurations (``fastnet.core.recipes``' table, purpose "bench").
CONFIGS = BENCH_CONFIGS


def sizes(config, n_in=784, n_out=10):
    return [n_in, *config["hidden"], n_out]


def flops_per_sample(layer_sizes):
    """Training FLOPs per sample: 6 x weights, less 2 x first-layer weights (no input gradient)."""
    weights = [a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:])]
    return 6 * sum(weights) - 2 * weights[0]


def gemm_ceiling(layer_sizes, batch, dtype=np.float32, repeats=20):
    """GFLOP/s of NumPy's GEMMs at exactly one training step's shapes (forward, dW, dX)."""
    rng = np.random.default_rng(0)
    mats = []
    for i, (a, b) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        X = rng.random((batch, a), dtype=dtype)
        W = rng.random((a, b), dtype=dtype)
        D = rng.random((batch, b), dtype=dtype)
        mats.append((X, W, D, np.empty((batch, b), dtype), np.empty((a, b), dtype),
                     np.empty((batch, a), dtype), i > 0))

    def step():
        for X, W, D, out, dW, dX, need_dx in mats:
            np.matmul(X, W, out=out)
            np.matmul(X.T, D, out=dW)
            if need_dx:
                np.matmul(D, W.T, out=dX)

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return flops_per_sample(layer_sizes) * batch / statistics.median(times) / 1e9


# --------------------------------------------------------------------- systems
class System:
    """One trainer: ``setup`` once, then ``epoch(X, y)`` trains one epoch on the rows in order."""

    name: str | None = None

    def setup(self, X, y, config, seed):
        raise NotImplementedError

    def epoch(self, X, y):
        raise NotImplementedError

    def synchronize(self):
        pass

    def accuracy(self, X, y):
        return None

    def details(self):
        """What the system ran with, for the result (precision, GEMM library): a JSON-ready dict."""
        return {}

    def epoch_details(self):
        """What the last epoch ran with that can change from one epoch to the next (fastnet's
        BLAS thread counts), a JSON-ready dict; None where nothing does."""
        return None


class FastnetSystem(System):
    def __init__(self, backend="cpu", kernels="fused", precision="float32"):
        self.backend, self.kernels, self.precision = backend, kernels, precision
        self.name = ("fastnet-cuda" if backend == "cuda" else f"fastnet-{kernels}") + (
            "" if precision == "float32" else f"-{precision}")

    def setup(self, X, y, config, seed):
        import fastnet

        self.model = fastnet.MLP(sizes(config), activation=config["activation"], backend=self.backend,
                                 kernels=self.kernels, seed=seed, precision=self.precision)
        self.config = config

    def epoch(self, X, y):
        c = self.config
        self.model.fit(X, y, epochs=1, batch_size=c["batch_size"], optimizer=c["optimizer"], lr=c["lr"],
                       shuffle=False, diagnose=False, verbose=0)

    def synchronize(self):
        self.model.backend_.synchronize()

    def accuracy(self, X, y):
        return self.model.score(X, y)

    def details(self):
        gemm = self.model.history_.params.get("gemm") or {}
        return {"precision": self.model.precision, "gemm_provider": gemm.get("provider"),
                "gemm_source": gemm.get("source")}

    def epoch_details(self):
        # the thread tuner's steps per BLAS thread count in this epoch's fit and the counts its
        # probes chose in it, in order (None when it is off)
        tuner = self.model.history_.params.get("threads") or {}
        steps = tuner.get("steps_with")
        return {"steps_with_threads": dict(steps), "thread_decisions": list(tuner.get("decisions", ()))} if steps else None


class TorchSystem(System):
    """PyTorch's loop; ``tuned``: ``Adam(fused=True)`` and flushed denormals; ``autocast``: the
    forward and the loss under ``torch.autocast("cpu", dtype=torch.bfloat16)``."""

    def __init__(self, tuned=False, autocast=False):
        self.tuned, self.autocast = tuned, autocast
        self.name = ("pytorch-autocast" if autocast else "pytorch") + ("-tuned" if tuned else "")

    def setup(self, X, y, config, seed):
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(os.cpu_count() or 1)
        layers = []
        s = sizes(config)
        for i, (a, b) in enumerate(zip(s[:-1], s[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(s) - 2:
                layers.append(torch.nn.Sigmoid() if config["activation"] == "sigmoid" else torch.nn.ReLU())
        self.torch = torch
        self.net = torch.nn.Sequential(*layers)
        if config["optimizer"] == "adam":
            kw = {"fused": True} if self.tuned else {}
            self.opt = torch.optim.Adam(self.net.parameters(), lr=config["lr"], **kw)
        else:
            self.opt = torch.optim.SGD(self.net.parameters(), lr=config["lr"])
        self.loss = torch.nn.CrossEntropyLoss()
        self.bs = config["batch_size"]

    def epoch(self, X, y):
        torch = self.torch
        if self.tuned:
            torch.set_flush_denormal(True)
        Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        for start in range(0, len(Xt), self.bs):
            xb, yb = Xt[start:start + self.bs], yt[start:start + self.bs]
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext():
                loss = self.loss(self.net(xb), yb)
            loss.backward()
            self.opt.step()
        if self.tuned:
            torch.set_flush_denormal(False)

    def accuracy(self, X, y):
        with self.torch.no_grad():
            out = self.net(self.torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
        return float((out.argmax(1).numpy() == y).mean())

    def details(self):
        return {"precision": "bf16 autocast" if self.autocast else "float32", "fused_adam": self.tuned,
                "flush_denormal": self.tuned}


class SklearnSystem(System):
    name = "sklearn"

    def setup(self, X, y, config, seed):
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(
            hidden_layer_sizes=tuple(config["hidden"]),
            activation="logistic" if config["activation"] == "sigmoid" else "relu",
            solver=config["optimizer"], learning_rate_init=config["lr"], batch_size=config["batch_size"],
            alpha=0.0, momentum=0.0, nesterovs_momentum=False, shuffle=False, random_state=seed,
        )
        self.classes = np.arange(10)

    def epoch(self, X, y):
        self.clf.partial_fit(X, y, classes=self.classes)

    def accuracy(self, X, y):
        return float(self.clf.score(X, y))


class NumpyScratchSystem(System):
    """The tutorials' loop: plain NumPy expressions, new arrays every step."""

    name = "numpy-scratch"

    def setup(self, X, y, config, seed):
        rng = np.random.default_rng(seed)
        s = sizes(config)
        self.W = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32) for a, b in zip(s[:-1], s[1:])]
        self.b = [np.zeros(b, np.float32) for b in s[1:]]
        self.act = config["activation"]
        self.opt, self.lr, self.bs = config["optimizer"], config["lr"], config["batch_size"]
        self.m = [np.zeros_like(p) for p in self.W + self.b]
        self.v = [np.zeros_like(p) for p in self.W + self.b]
        self.t = 0

    def epoch(self, X, y_all):
        for start in range(0, len(X), self.bs):
            x, y = X[start:start + self.bs], y_all[start:start + self.bs]
            acts = [x]
            for i, (W, b) in enumerate(zip(self.W, self.b)):
                z = acts[-1] @ W + b
                if i < len(self.W) - 1:
                    z = 1 / (1 + np.exp(-z)) if self.act == "sigmoid" else np.maximum(z, 0)
                acts.append(z)
            z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(y)), y] -= 1
            delta = p / len(y)
            grads_W, grads_b = [], []
            for i in range(len(self.W) - 1, -1, -1):
                grads_W.insert(0, acts[i].T @ delta)
                grads_b.insert(0, delta.sum(axis=0))
                if i > 0:
                    delta = delta @ self.W[i].T
                    a = acts[i]
                    delta = delta * (a * (1 - a)) if self.act == "sigmoid" else delta * (a > 0)
            params, grads = self.W + self.b, grads_W + grads_b
            if self.opt == "adam":
                self.t += 1
                for j, (w, g) in enumerate(zip(params, grads)):
                    self.m[j] = 0.9 * self.m[j] + 0.1 * g
                    self.v[j] = 0.999 * self.v[j] + 0.001 * g * g
                    mh = self.m[j] / (1 - 0.9**self.t)
                    vh = self.v[j] / (1 - 0.999**self.t)
                    w -= self.lr * mh / (np.sqrt(vh) + 1e-8)
            else:
                for w, g in zip(params, grads):
                    w -= self.lr * g


def available_systems(include_reference=True, include_peers=True):
    """The systems that can run here (peers only when their package imports)."""
    import fastnet

    systems = [FastnetSystem("cpu", "fused")]
    if include_reference:
        systems.append(FastnetSystem("cpu", "reference"))
    if "cuda" in fastnet.available_backends():
        systems.append(FastnetSystem("cuda", "fused"))
    if include_peers:
        try:
            import torch  # noqa: F401

            systems += [TorchSystem(tuned=False), TorchSystem(tuned=True)]
        except ImportError:
            pass
        try:
            import sklearn  # noqa: F401

            systems.append(SklearnSystem())
        except ImportError:
            pass
        systems.append(NumpyScratchSystem())
    return systems


def labelled(progress, label):
    """``progress(label, system, round, rounds)`` as :func:`measure` calls it, ``(system, round,
    rounds)``, with ``label`` (a config's name) bound; None stays None."""
    return None if progress is None else functools.partial(progress, label)


def measure(systems, X, y, config, rounds, rng, seed=0, progress=None):
    """Set up every system, one untimed warm-up epoch each, then ``rounds`` interleaved
    timed epochs (one shuffle per round, outside the timing, shared by all);
    ``progress(system, round, rounds)`` after each (:func:`labelled`).
    Returns ``{name: [seconds of round 1, round 2, ...]}``."""
    for s in systems:
        s.setup(X, y, config, seed)
        order = rng.permutation(len(X))
        s.epoch(X[order], y[order])
        s.synchronize()
    times = {s.name: [] for s in systems}
    for r in range(rounds):
        order = rng.permutation(len(X))
        Xo, yo = X[order], y[order]
        for s in systems:
            t0 = time.perf_counter()
            s.epoch(Xo, yo)
            s.synchronize()
            times[s.name].append(time.perf_counter() - t0)
            if progress:
                progress(s.name, r + 1, rounds)
    return times


def run(X, y, configs=None, systems=None, rounds=3, seed=0, progress=None):
    """Measure every system on every config; returns a list of row dicts.

    Each row: config, system, samples_per_s (median over rounds), ratio_to_pytorch
    (median of per-round ratios), gflops, gemm_ceiling_gflops, pct_of_ceiling, rounds.
    """
    systems = systems if systems is not None else available_systems()
    configs = configs or list(CONFIGS)
    rows = []
    rng = np.random.default_rng(seed)
    for cname in configs:
        config = CONFIGS[cname]
        layer_sizes = sizes(config)
        ceiling = gemm_ceiling(layer_sizes, config["batch_size"])
        fps = flops_per_sample(layer_sizes)
        times = measure(systems, X, y, config, rounds, rng, seed, labelled(progress, cname))
        base = times.get("pytorch")
        for s in systems:
            t = times[s.name]
            sps = len(X) / statistics.median(t)
            ratio = statistics.median(b / a for a, b in zip(t, base)) if base else None
            rows.append({
                "config": cname, "system": s.name, "samples_per_s": sps, "ratio_to_pytorch": ratio,
                "gflops": fps * sps / 1e9, "gemm_ceiling_gflops": ceiling,
                "pct_of_ceiling": 100 * fps * sps / 1e9 / ceiling, "rounds": rounds,
                "epoch_seconds": t,
            })
    return rows


def format_table(rows):
    """A markdown table of :func:`run`'s rows."""
    lines = ["| config | system | samples/s | vs PyTorch | GFLOP/s | % of GEMM ceiling |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio_to_pytorch']:.2f}x" if r["ratio_to_pytorch"] is not None else "-"
        lines.append(f"| {r['config']} | {r['system']} | {r['samples_per_s']:,.0f} | {ratio} | "
                     f"{r['gflops']:.0f} | {r['pct_of_ceiling']:.0f}% (of {r['gemm_ceiling_gflops']:.0f}) |")
    return "\n".join(lines)


def machine_description():
    import platform

    import numpy

    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
                         for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        blas = "unknown BLAS"
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"NumPy {numpy.__version__} with {blas}")


# ------------------------------------------------------------ time to accuracy
@dataclass(frozen=True)
class TrainTest:
    """The rows trained on (``X``, ``y``) and the test rows accuracy is measured on (``Xt``, ``yt``)."""
    X: np.ndarray
    y: np.ndarray
    Xt: np.ndarray
    yt: np.ndarray

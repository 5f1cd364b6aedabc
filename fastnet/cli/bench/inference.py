"""Inference: fastnet's ``predict_proba`` beside ONNX Runtime and PyTorch (``fastnet bench --inference``).

One set of weights for all three: the fastnet model (784-512-512-10 ReLU, trained
``train_epochs`` epochs or left at its initial weights) is exported with
``to_onnx`` for ONNX Runtime (CPU provider, default threads) and copied into a
``torch.nn.Sequential`` (PyTorch's default threads, ``torch.inference_mode()``,
softmax).  The outputs are compared before anything is timed.

* throughput: the whole test set in one call, interleaved rounds; rows/s from the
  median call, ratios = median over rounds of ``other seconds / fastnet seconds``;
* latency: single-row calls, interleaved in rounds (each round: a run of calls per
  system, on the same rows), each call timed alone; median and 90th percentile.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np

SYSTEMS = ("fastnet", "onnxruntime", "pytorch")


def build_model(X, y, hidden=(512, 512), train_epochs=1, seed=0):
    import fastnet

    model = fastnet.MLP([X.shape[1], *hidden, 10], activation="relu", backend="cpu", seed=seed)
    if train_epochs:
        model.fit(X, y, epochs=train_epochs, batch_size=128, optimizer="adam", lr=1e-3, diagnose=False, verbose=0)
    else:
        model.build(X.shape[1])
    return model


def torch_copy(model):
    """A ``torch.nn.Sequential`` with the model's weights (Linear + ReLU per Dense layer)."""
    import torch

    from fastnet.core.layers import Dense

    weights, layers = model.get_weights(), []
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    for i, layer in enumerate(dense):
        W = weights[f"{layer.name}.W"]
        lin = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T, dtype=np.float32)))
            lin.bias.copy_(torch.from_numpy(weights[f"{layer.name}.b"].astype(np.float32)))
        layers.append(lin)
        if i < len(dense) - 1:
            if layer.kernel_activation != "relu":
                raise ValueError(f"torch_copy handles ReLU hidden layers, not {layer.kernel_activation!r}")
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval()


def make_predictors(model, workdir):
    """``{name: f(X) -> probabilities}`` for fastnet, ONNX Runtime and PyTorch, same weights."""
    import onnxruntime as ort
    import torch

    path = os.path.join(workdir, "model.onnx")
    model.to_onnx(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    net = torch_copy(model)

    def torch_predict(X):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()

    return {"fastnet": model.predict_proba,
            "onnxruntime": lambda X: sess.run(None, {"X": X})[0],
            "pytorch": torch_predict}


def agreement(predictors, X):
    """Largest absolute difference of each system's probabilities from fastnet's."""
    ref = predictors["fastnet"](X)
    return {name: float(np.abs(np.asarray(f(X)) - ref).max()) for name, f in predictors.items()}


def _throughput(predictors, X, rounds):
    for f in predictors.values():  # warm-up
        f(X)
    times = {n: [] for n in predictors}
    for _ in range(rounds):
        for name, f in predictors.items():
            t0 = time.perf_counter()
            f(X)
            times[name].append(time.perf_counter() - t0)
    return times


def _latency(predictors, X, calls, rounds):
    per_round = max(1, calls // rounds)
    rows = [X[i % len(X):i % len(X) + 1] for i in range(per_round * rounds)]
    for f in predictors.values():  # warm-up
        for r in rows[:20]:
            f(r)
    us = {n: [] for n in predictors}
    for k in range(rounds):
        chunk = rows[k * per_round:(k + 1) * per_round]
        for name, f in predictors.items():
            out = us[name]
            for r in chunk:
                t0 = time.perf_counter_ns()
                f(r)
                out.append((time.perf_counter_ns() - t0) / 1e3)
    return us


@dataclass(frozen=True)
class Settings:
    """What :func:`run_inference` builds and times: the model (``hidden`` ReLU layers, trained
    ``train_epochs`` epochs from ``seed``), the throughput ``rounds``, the single-row ``calls``
    in ``latency_rounds`` rounds, and the ``tolerance`` the outputs must agree within."""
    hidden: tuple = (512, 512)
    train_epochs: int = 1
    rounds: int = 10
    calls: int = 2000
    latency_rounds: int = 10
    tolerance: float = 1e-4
    seed: int = 0


def run_inference(Xtr, ytr, Xte, settings=Settings()):
    """Build, compare outputs (RuntimeError beyond ``settings.tolerance``), then time throughput
    and latency."""
    hidden, rounds = settings.hidden, settings.rounds
    model = build_model(Xtr, ytr, hidden, settings.train_epochs, settings.seed)
    X = np.ascontiguousarray(Xte, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        predictors = make_predictors(model, tmp)
        diffs = agreement(predictors, X)
        if max(diffs.values()) > settings.tolerance:
            raise RuntimeError(f"the systems' probabilities disagree (max abs diff from fastnet: {diffs})")
        times = _throughput(predictors, X, rounds)
        lat = _latency(predictors, X, settings.calls, settings.latency_rounds)
    result = {"model": f"{X.shape[1]}-{'-'.join(map(str, hidden))}-10 relu", "train_epochs": settings.train_epochs,
              "train_rows": len(Xtr),
              "rows": len(X), "rounds": rounds, "max_abs_diff_from_fastnet": diffs, "systems": {}}
    try:
        import torch

        result["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    for name in predictors:
        t = times[name]
        ratio = [a / b for a, b in zip(t, times["fastnet"])]  # this system's seconds / fastnet's
        lu = np.asarray(lat[name])
        result["systems"][name] = {
            "seconds": t, "rows_per_s": len(X) / statistics.median(t),
            "fastnet_speedup_per_round": ratio, "fastnet_speedup": statistics.median(ratio),
            "latency_us_median": float(np.median(lu)), "latency_us_p90": float(np.percentile(lu, 90)),
            "latency_calls": len(lu),
        }
    return result


def format_inference(result):
    lines = [f"| system | rows/s ({result['rows']:,} rows per call) | fastnet speed-up vs this | "
             "single-row µs, median | single-row µs, p90 | max abs diff from fastnet |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, s in result["systems"].items():
        lines.append(f"| {name} | {s['rows_per_s']:,.0f} | {s['fastnet_speedup']:.2f}x | "
                     f"{s['latency_us_median']:.1f} | {s['latency_us_p90']:.1f} | "
                     f"{result['max_abs_diff_from_fastnet'][name]:.1e} |")
    lines.append(f"\nmodel {result['model']}, trained {result['train_epochs']} epoch(s) on {result['train_rows']:,} "
                 f"rows; speed-up = median over {result['rounds']} rounds of (this system's seconds / fastnet's) "
                 "on the whole batch")
    return "\n".join(lines)

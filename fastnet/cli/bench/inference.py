"""Inference: fastnet's ``predict_proba`` beside ONNX Runtime and PyTorch (``fastnet bench --inference``).

One set of weights for all three: the fastnet model (784-512-512-10 ReLU, trained
``train_epochs`` epochs or left at its initial weights) is saved, exported with
``to_onnx`` for ONNX Runtime (CPU provider, default threads) and copied into a
``torch.nn.Sequential`` (PyTorch's default threads, ``torch.inference_mode()``,
softmax).  Each system runs in a worker process of its own (in one process, one library's
thread pool spins while another's works), started and warmed up one at a time; the
coordinator asks each in turn, the system that goes first moving on each round.  The
outputs are compared before anything is timed.  The rounds are shared by ``Settings.sets``
sets of workers (default 2, ``--sets``), each set started afresh once the previous one's
workers are gone, the second in the reverse order: round ``r`` is set ``r % sets``'s.  A
process keeps its luck for its life (fastnet's few-row path is weighed at its first calls,
a library places its buffers once): with one set, each system's figure would be one
process's.

* throughput: the whole test set in one call, interleaved rounds; rows/s from the
  median call, ratios = median over rounds of ``other seconds / fastnet seconds``;
* latency: single-row calls, interleaved in rounds (each round: a run of calls per
  system, on the same rows), each call timed alone; median and 90th percentile.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

SYSTEMS = ("fastnet", "onnxruntime", "pytorch")
#: The module each peer needs (fastnet needs none beyond fastnet).
_NEEDS = {"onnxruntime": "onnxruntime", "pytorch": "torch"}
#: Single-row calls of each worker's warm-up.
WARM_ROWS = 20
#: Seconds the coordinator waits after a system's turn before the next one's.
SETTLE_SECONDS = 0.2


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


def make_predictor(name, workdir):
    """``f(X) -> probabilities`` of system ``name``, from the files in ``workdir`` (``model.npz``,
    and ``model.onnx`` for ONNX Runtime): fastnet's ``predict_proba``, an ONNX Runtime session
    (CPU provider, default threads), or the weights copied into PyTorch (``torch_copy``,
    ``torch.inference_mode()``, softmax, PyTorch's default threads)."""
    import fastnet

    if name == "fastnet":
        return fastnet.load(os.path.join(workdir, "model.npz"), backend="cpu").predict_proba
    if name == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(os.path.join(workdir, "model.onnx"), providers=["CPUExecutionProvider"])
        return lambda X: sess.run(None, {"X": X})[0]
    if name == "pytorch":
        import torch

        net = torch_copy(fastnet.load(os.path.join(workdir, "model.npz"), backend="cpu"))

        def predict(X):
            with torch.inference_mode():
                return torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()

        return predict
    raise ValueError(f"system must be one of {', '.join(SYSTEMS)}, got {name!r}")


def worker(name, workdir):
    """A worker's life: load the system and the rows (``workdir/X.npy``), warm up (a whole-batch
    call, ``WARM_ROWS`` single-row calls), say ready, then one JSON answer per command read
    from stdin: ``outputs`` (the probabilities saved as ``out-NAME.npy``), ``batch`` (one
    whole-batch call timed), ``rows START COUNT`` (``COUNT`` single-row calls from row
    ``START`` on, each timed alone, in microseconds); an empty line ends it."""
    predict = make_predictor(name, workdir)
    X = np.load(os.path.join(workdir, "X.npy"))
    out = sys.stdout
    sys.stdout = sys.stderr  # (libraries' prints stay off the answer channel)
    predict(X)
    for i in range(WARM_ROWS):
        predict(X[i % len(X):i % len(X) + 1])
    print(json.dumps({"ready": name, "pid": os.getpid()}), file=out, flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command:
            break
        if command[0] == "outputs":
            np.save(os.path.join(workdir, f"out-{name}.npy"), np.asarray(predict(X)))
            answer = {"saved": True}
        elif command[0] == "batch":
            t0 = time.perf_counter()
            predict(X)
            answer = {"seconds": time.perf_counter() - t0}
        else:
            start, count = int(command[1]), int(command[2])
            us = []
            for i in range(start, start + count):
                row = X[i % len(X):i % len(X) + 1]
                t0 = time.perf_counter_ns()
                predict(row)
                us.append((time.perf_counter_ns() - t0) / 1e3)
            answer = {"us": us}
            if name == "fastnet":  # the thread count its few-row kernel runs on, per row count
                from fastnet.backends import small_batch

                answer["threads"] = {str(k): v for k, v in small_batch.choices(predict.__self__).items()}
        print(json.dumps(answer), file=out, flush=True)


def _ask(proc, name, line):
    """Send ``line`` to a worker and return its JSON answer (the training workers' protocol)."""
    from fastnet.cli.bench import processes as bench_processes

    bench_processes._send(proc, name, line)
    return bench_processes._read(proc, name)


def installed(name):
    """Whether ``name``'s library imports here (without importing it)."""
    from fastnet.cli.bench import processes as bench_processes

    return bench_processes.installed(name, _NEEDS)


@dataclass(frozen=True)
class Settings:
    """What :func:`run_inference` builds and times: the model (``hidden`` ReLU layers, trained
    ``train_epochs`` epochs from ``seed``), the throughput ``rounds``, the single-row ``calls``
    in ``latency_rounds`` rounds, both shared by ``sets`` sets of fresh worker processes, and
    the ``tolerance`` the outputs must agree within."""
    hidden: tuple = (512, 512)
    train_epochs: int = 1
    rounds: int = 10
    calls: int = 2000
    latency_rounds: int = 10
    tolerance: float = 1e-4
    seed: int = 0
    sets: int = 2


def _one_set(names, tmp, throughput_rounds, latency_rounds, per_round, tolerance, record):
    """One set of workers: started one at a time in ``names``' order (the warm-ups never
    overlap), their outputs compared (RuntimeError beyond ``tolerance``), then the given
    throughput and latency rounds (indices among all the sets' rounds), the system that goes
    first moving on each round; ``record(kind, round, name, answer)`` gets each answer.  The
    workers are ended whatever happens.  Returns their pids and the outputs' differences."""
    from fastnet.cli.bench import processes as bench_processes

    procs = {}
    try:
        for name in names:
            procs[name] = subprocess.Popen([sys.executable, "-m", "fastnet.cli.bench.inference", "--worker",
                                            name, tmp], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            bench_processes._read(procs[name], name)  # ready: loaded and warmed up
        for name in names:
            _ask(procs[name], name, "outputs")
        ref = np.load(os.path.join(tmp, "out-fastnet.npy"))
        diffs = {name: float(np.abs(np.load(os.path.join(tmp, f"out-{name}.npy")) - ref).max()) for name in names}
        if max(diffs.values()) > tolerance:
            raise RuntimeError(f"the systems' probabilities disagree (max abs diff from fastnet: {diffs})")
        for i, r in enumerate(throughput_rounds):
            for name in bench_processes.turn(names, i):
                record("batch", r, name, _ask(procs[name], name, "batch"))
                time.sleep(SETTLE_SECONDS)
        for i, k in enumerate(latency_rounds):
            for name in bench_processes.turn(names, i):
                record("rows", k, name, _ask(procs[name], name, f"rows {k * per_round} {per_round}"))
                time.sleep(SETTLE_SECONDS)
        return {name: proc.pid for name, proc in procs.items()}, diffs
    finally:
        bench_processes.end_workers(procs)


def run_inference(Xtr, ytr, Xte, settings=Settings(), systems=SYSTEMS):
    """Build the model and write it (``model.npz``, ``model.onnx``), then in each of
    ``settings.sets`` sets of fresh worker processes (one per system; the second set started
    in the reverse order) compare the systems' outputs and time its share of the throughput
    and latency rounds: round ``r`` is set ``r % sets``'s.  Systems whose library is not
    installed are left out and named."""
    from fastnet.cli.bench import processes as bench_processes

    hidden, rounds = settings.hidden, settings.rounds
    bench_processes.check_sets(settings.sets)
    model = build_model(Xtr, ytr, hidden, settings.train_epochs, settings.seed)
    X = np.ascontiguousarray(Xte, dtype=np.float32)
    missing = {n: f"{_NEEDS[n]} is not installed" for n in systems if not installed(n)}
    names = [n for n in systems if n not in missing]
    if "fastnet" not in names:
        raise ValueError(f"systems must include 'fastnet' (the reference), got {list(systems)!r}")
    per_round = max(1, settings.calls // settings.latency_rounds)
    sets = max(1, min(settings.sets, max(rounds, settings.latency_rounds)))
    answers = {"batch": {}, "rows": {}}   # kind -> (round, name) -> the worker's answer

    def record(kind, r, name, answer):
        answers[kind][r, name] = answer

    pids = {n: [] for n in names}
    diffs = {n: 0.0 for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        model.save(os.path.join(tmp, "model.npz"))
        if "onnxruntime" in names:
            model.to_onnx(os.path.join(tmp, "model.onnx"))
        np.save(os.path.join(tmp, "X.npy"), X)
        for k in range(sets):
            order = names if k % 2 == 0 else names[::-1]
            set_pids, set_diffs = _one_set(order, tmp, range(k, rounds, sets), range(k, settings.latency_rounds, sets),
                                           per_round, settings.tolerance, record)
            for name in names:
                pids[name].append(set_pids[name])
                diffs[name] = max(diffs[name], set_diffs[name])
    result = {"model": f"{X.shape[1]}-{'-'.join(map(str, hidden))}-10 relu", "train_epochs": settings.train_epochs,
              "train_rows": len(Xtr), "rows": len(X), "rounds": rounds, "processes": "each system in its own",
              "sets": sets, "set_of_round": [r % sets for r in range(rounds)],
              "set_of_latency_round": [k % sets for k in range(settings.latency_rounds)],
              "max_abs_diff_from_fastnet": diffs, "not_run": missing, "systems": {}}
    times = {n: [answers["batch"][r, n]["seconds"] for r in range(rounds)] for n in names}
    for name in names:
        t = times[name]
        ratio = [a / b for a, b in zip(t, times["fastnet"])]  # this system's seconds / fastnet's
        us = [answers["rows"][k, name]["us"] for k in range(settings.latency_rounds)]
        lu = np.concatenate(us)
        result["systems"][name] = {
            "pids": pids[name], "seconds": t, "rows_per_s": len(X) / statistics.median(t),
            "fastnet_speedup_per_round": ratio, "fastnet_speedup": statistics.median(ratio),
            "latency_us_median": float(np.median(lu)), "latency_us_p90": float(np.percentile(lu, 90)),
            "latency_calls": len(lu), "latency_us_median_per_round": [float(np.median(u)) for u in us],
        }
    # fastnet's few-row kernel after each latency round: per row count, its thread count, or
    # "numpy" where NumPy's GEMMs won the weighing (fastnet.backends.small_batch)
    result["systems"]["fastnet"]["small_batch_threads_per_round"] = [
        answers["rows"][k, "fastnet"]["threads"] for k in range(settings.latency_rounds)]
    return result


def format_inference(result):
    lines = [f"| system | rows/s ({result['rows']:,} rows per call) | fastnet speed-up vs this | "
             "single-row µs, median | single-row µs, p90 | max abs diff from fastnet |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, s in result["systems"].items():
        lines.append(f"| {name} | {s['rows_per_s']:,.0f} | {s['fastnet_speedup']:.2f}x | "
                     f"{s['latency_us_median']:.1f} | {s['latency_us_p90']:.1f} | "
                     f"{result['max_abs_diff_from_fastnet'][name]:.1e} |")
    sets = result.get("sets", 1)
    fresh = (f", the rounds shared by {sets} sets of worker processes, each started afresh (in turn in the "
             "order above and the reverse)") if sets > 1 else ""
    lines.append(f"\nmodel {result['model']}, trained {result['train_epochs']} epoch(s) on {result['train_rows']:,} "
                 f"rows; each system in its own process{fresh}; speed-up = median over {result['rounds']} rounds of "
                 "(this system's seconds / fastnet's) on the whole batch")
    if result.get("not_run"):
        lines.append("not run: " + "; ".join(f"{k} ({v})" for k, v in result["not_run"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m fastnet.cli.bench.inference --worker SYSTEM WORKDIR "
                 "(the coordinator is fastnet bench --inference)")

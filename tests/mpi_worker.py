"""One process of the data-parallel tests (tests/train/test_distributed_mpi.py): run under
``mpiexec -n N python tests/mpi_worker.py SPEC.json`` or alone (one process).

SPEC (JSON): ``out`` (a folder: each rank writes ``rank<r>.npz`` with its final weights and
``rank<r>.json`` with its history), ``distributed`` (bool), ``backend``, ``subset``
(MNIST training rows), ``epochs``, ``batch_size``, ``dropout``, ``seed`` (null: none),
``optimizer``, and optional ``checkpoint`` (a path; ``{rank}`` is replaced),
``resume`` (a path), ``corrupt_rank`` (that rank trains on other data), ``stall`` /
``kill`` (that rank sleeps / kills itself at its 5th step of the first epoch),
``synthetic`` (rows of a small random problem instead of MNIST: for the CUDA simulator,
whose launches are then made small, as in tests/cuda_sim), ``hidden`` (MNIST hidden
layers, default [64, 32]), ``validation`` (default true: 300 rows, evaluated each epoch).
"""
import json
import os
import signal
import sys
import time

# Opt-out kept: each rank must train bit for bit as the single process it is compared with
# (tests/train/test_distributed_mpi.py), and the thread tuner would time each rank to its own count.
os.environ.setdefault("FASTNET_THREADS", "fixed")

import numpy as np  # noqa: E402

import fastnet  # noqa: E402
from fastnet.core.callbacks import Callback  # noqa: E402
from fastnet.cli import load_mnist_arrays  # noqa: E402


class Fault(Callback):
    def __init__(self, rank, kind):
        self.rank, self.kind = rank, kind

    def on_step_end(self, model, epoch, step):
        if epoch == 1 and step == 5 and self.rank == int(SPEC[self.kind]):
            if self.kind == "stall":
                time.sleep(600)
            os.kill(os.getpid(), signal.SIGKILL)


SPEC = json.load(open(sys.argv[1]))
rank = 0
if SPEC["distributed"]:
    from fastnet.train import distributed

    rank = distributed.init().rank
if SPEC.get("synthetic"):
    X = np.random.default_rng(0).standard_normal((SPEC["synthetic"], 12)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    sizes = [12, 16, 3]
    if SPEC.get("backend") == "cuda-sim":
        from fastnet.kernels import cuda

        cuda.set_launch_config(block=32, row_block=32, bwd_block=(8, 4), max_blocks=2)
        sys.setswitchinterval(2e-4)
else:
    (X, y), _ = load_mnist_arrays(subset=SPEC["subset"])
    sizes = [784, *SPEC.get("hidden", [64, 32]), 10]
if SPEC.get("corrupt_rank") == rank:
    X = X[::-1].copy()
model = fastnet.MLP(sizes, activation="relu", dropout=SPEC.get("dropout", 0.0), seed=SPEC["seed"],
                    backend=SPEC.get("backend", "cpu"))
callbacks = [Fault(rank, kind) for kind in ("stall", "kill") if kind in SPEC]
if SPEC.get("checkpoint"):
    callbacks.append(fastnet.ModelCheckpoint(SPEC["checkpoint"].format(rank=rank)))
history = model.fit(X, y, epochs=SPEC["epochs"], batch_size=SPEC["batch_size"],
                    optimizer=SPEC.get("optimizer", "adam"), lr=SPEC.get("lr"),
                    callbacks=callbacks, resume=SPEC.get("resume"), validation_data=(X[:300], y[:300]) if SPEC.get("validation", True) else None,
                    distributed=True if SPEC["distributed"] else None)
np.savez(os.path.join(SPEC["out"], f"rank{rank}.npz"), **model.get_weights())
with open(os.path.join(SPEC["out"], f"rank{rank}.json"), "w") as f:
    json.dump({"history": history.history, "params": history.params}, f)

"""Per-layer weight and gradient norms, recorded during training for the doctor."""
from __future__ import annotations

import numpy as np

from fastnet.core.callbacks import Callback

__all__ = ["NormRecorder"]


def _frobenius(backend, a):
    return float(backend.xp.linalg.norm(a.ravel()))


class NormRecorder(Callback):
    """Record per-layer weight and gradient norms at the end of every epoch.

    The log is kept on the model as ``model.norms_`` (and as ``self.norms``),
    a plain dict of lists (JSON-friendly) that grows across ``fit`` calls like
    ``model.history_``::

        {
          "epochs":  [1, 2, ...],                    # epoch numbers, as in History
          "layers":  ["dense_0", "dense_1"],         # the Dense layers, in order
          "size":    {"dense_0": 100352, ...},       # number of weights in each W
          "initial_weight": {"dense_0": 27.9, ...},  # ||W|| when first recorded
          "weight":  {"dense_0": [28.1, ...], ...},  # ||W|| at each epoch's end
          "grad":    {"dense_0": [0.41, ...], ...},  # ||dW|| of each epoch's last step
        }

    Norms are Frobenius norms of the weight matrices (biases are left out);
    ``dW`` is the gradient of the mean batch loss of the epoch's last step, as
    the optimizer saw it (before weight decay).  Reading them costs one device
    synchronisation per layer per epoch.
    """

    def __init__(self):
        self.norms = None

    def on_train_begin(self, model):
        from fastnet.core.layers import Dense

        dense = [layer for layer in model.layers if isinstance(layer, Dense)]
        names = [layer.name for layer in dense]
        log = getattr(model, "norms_", None)
        fresh = (not isinstance(log, dict) or log.get("layers") != names
                 or (log["epochs"] and log["epochs"][-1] > model.n_iter_))
        if fresh:
            b = model.backend_
            log = {
                "epochs": [],
                "layers": names,
                "size": {layer.name: int(np.prod(layer.W.shape)) for layer in dense},
                "initial_weight": {layer.name: _frobenius(b, layer.W) for layer in dense},
                "weight": {name: [] for name in names},
                "grad": {name: [] for name in names},
            }
        self.norms = log
        self._dense = dense
        model.norms_ = log

    def on_epoch_end(self, model, epoch, logs):
        b = model.backend_
        log = self.norms
        log["epochs"].append(epoch)
        for layer in self._dense:
            log["weight"][layer.name].append(_frobenius(b, layer.W))
            log["grad"][layer.name].append(_frobenius(b, layer.dW))

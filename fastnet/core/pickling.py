"""Pickling for models: ``pickle``, ``copy.deepcopy``, joblib, multiprocessing, Dask, Ray.

A model holds a backend (an array module, compiled kernels, device arrays) that
cannot be pickled as it is.  :class:`Picklable` makes a model's pickle plain
data: its configuration, the backend's name, the weights, the optimizer's
configuration and state, the random streams' state and the history, all on the
host.  Unpickling builds the model again on the same backend; when that backend
is not usable in the unpickling process (a CUDA model opened on a machine without
a GPU), on the CPU, with a ``RuntimeWarning`` that says so.

Model *files* stay pickle-free: ``fastnet.load`` refuses archives with pickles in
them.  Pickling is for handing a model between Python processes of one's own.
"""
from __future__ import annotations

import warnings

from fastnet.backends.devices import backend_status
from fastnet.core.optimizers import Optimizer

#: Attributes besides the configuration that a pickle keeps (plain data fit leaves).
PLAIN_ATTRIBUTES = ("history_", "norms_", "stop_training", "sizes", "loss_scaler_")


class Picklable:
    """``__getstate__`` / ``__setstate__`` for :class:`fastnet.core.model.Network`."""

    def __getstate__(self):
        opt = self.optimizer_
        return {
            "config": self.get_config(),
            "backend": self.backend_.name,
            "kernels": self.kernels,
            "weights": self.get_weights() if self.built else None,
            "optimizer": None if opt is None else opt.get_state(),  # host copies
            "rng_state": self.backend_.get_rng_state(),
            "attributes": {k: v for k, v in vars(self).items() if k in PLAIN_ATTRIBUTES},
        }

    def __setstate__(self, state):
        backend = state["backend"]
        usable, why = backend_status(backend)
        if not usable:
            warnings.warn(f"this model was pickled on the {backend!r} backend, which is not available here "
                          f"({why}): it is unpickled onto the CPU", RuntimeWarning, stacklevel=2)
            backend = "cpu"
        self._init_from_config(state["config"], backend=backend, kernels=state["kernels"])
        if state["weights"] is not None:
            self.build(state["config"]["input_dim"])
            self.set_weights(state["weights"])
        if state["optimizer"] is not None:
            opt = self.attach_optimizer(Optimizer.from_config(state["optimizer"]["config"]))
            opt.set_state(state["optimizer"])
        self.backend_.set_rng_state(state["rng_state"])
        vars(self).update(state["attributes"])

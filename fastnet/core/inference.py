"""Inference: ``predict``, ``predict_proba``, ``predict_top_k``, ``evaluate``, ``score``.

A base class of :class:`fastnet.core.model.Network`: every call works through
``Layer.infer`` with arrays of its own (no shared buffer), in fixed chunks of
rows, so any number of threads may predict with one model at once, and a
prediction does not depend on how many rows came with it, with two exceptions in
the last bits: a call of very few rows, which the BLAS may run through another
kernel, and on the CPU a call of at most ``fastnet.backends.small_batch.MAX_ROWS``
rows, which runs through a kernel of its own where that was measured faster than
the BLAS for calls of its size (the weights read from each core's L2 cache:
:mod:`fastnet.backends.small_batch`).  Its sums differ from the BLAS's in the last
bits (probabilities of a 784-512-512-10 model within 1e-6 of those of the same row
among 1,024), and are the same for a row whatever the call's other rows and thread
count; in one process a call's size always takes the same way.  The output
activation is the loss's (``Loss.outputs``); class labels come back through
``classes_``.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from fastnet.core import validation

if TYPE_CHECKING:
    from fastnet.core.losses import Loss

#: Rows per chunk in predict/evaluate.
INFERENCE_CHUNK = 1024


class Inference:
    """Prediction and evaluation on a built network (see the module docstring)."""

    if TYPE_CHECKING:  # what the network provides
        loss_: Loss
        classes_: Any
        n_outputs_: int
        backend_: Any

        def _check_fitted(self, what: str) -> None: ...
        def _prepare_X(self, X: ArrayLike, argument: str = "X", one_sample: bool = False) -> np.ndarray: ...
        def _prepare_y(self, y: ArrayLike, argument: str = "y", fitting: bool = False,
                       classes: Any = None) -> np.ndarray: ...
        def _to_device(self, X: np.ndarray, y: np.ndarray | None = None) -> tuple[Any, Any]: ...
        def _infer(self, x: Any, matmul: Any = None) -> Any: ...
        def _correct(self, out: Any, y: Any, into: Any, buffers: Any = None) -> Any: ...
        def _accuracy_denominator(self, n: int) -> int: ...
        def _y_tail(self) -> tuple[int, ...]: ...

    def _chunk(self):
        # A fixed chunk, whatever the training batch was: GEMM results can differ in
        # the last bit with the number of rows, and predictions must not depend on the
        # batch size of fit (nor, beyond the few-row calls of the module docstring, on the
        # call's rows).
        return INFERENCE_CHUNK

    def _evaluate_device(self, Xd, Yd, matmul=None):
        """Loss and accuracy on device arrays, with buffers of this call's own (thread-safe).
        ``matmul``: the GEMM (None: the array module's; fit's validation passes
        ``backend_.evaluation_matmul()``)."""
        xp, dt = self.backend_.xp, self.backend_.dtype
        n = Xd.shape[0]
        chunk = min(self._chunk(), max(n, 1))
        loss_rows = xp.empty(chunk, dtype=dt)
        grad = xp.empty((chunk, self.n_outputs_), dtype=dt)
        buffers = (xp.empty(chunk, dtype=np.int64), xp.empty((chunk,) + self._y_tail(), dtype=bool),
                   xp.empty((chunk,) + self._y_tail(), dtype=bool))
        chunks = -(-n // chunk)
        losses = xp.zeros(chunks, dtype=np.float64)
        corrects = xp.zeros(chunks, dtype=np.int64)
        for i in range(chunks):
            start = i * chunk
            xb, yb = Xd[start:start + chunk], Yd[start:start + chunk]
            m = xb.shape[0]
            out = self._infer(xb, matmul)
            rows = loss_rows[:m]
            self.loss_(out, yb, rows, grad[:m])
            rows.sum(axis=0, out=losses[i:i + 1], keepdims=True)
            if self.loss_.is_classifier:
                self._correct(out, yb, corrects[i:i + 1], buffers)
        result = {"loss": float(self.backend_.to_host(losses).sum()) * self.loss_.scale(n, self.n_outputs_)}
        if self.loss_.is_classifier:
            result["accuracy"] = int(self.backend_.to_host(corrects).sum()) / self._accuracy_denominator(n)
        return result

    @property
    def metrics_names(self) -> list[str]:
        """What :meth:`evaluate` returns, in order: ``["loss", "accuracy"]`` for classifiers,
        ``["loss"]`` otherwise (Keras's ``model.metrics_names``)."""
        return ["loss", "accuracy"] if self.loss_.is_classifier else ["loss"]

    def evaluate(self, X: ArrayLike, y: ArrayLike, verbose: int | str = 0,
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """Loss (and accuracy for classifiers) on ``(X, y)``, as Keras's ``evaluate`` returns them.

        Returns
        -------
        float, list or dict
            ``[loss, accuracy]`` for classifiers (``loss, acc = model.evaluate(X, y)``), the
            loss alone (a float) for regressors: the order of :attr:`metrics_names`.  With
            ``return_dict=True``, ``{"loss": ..., "accuracy": ...}``.  This is Keras's
            convention (``return_dict=False`` by default); code written for the dict that
            ``evaluate`` used to return passes ``return_dict=True``.

        ``verbose=1`` (or ``"auto"``, 2) also writes them as one line on stderr.
        """
        verbose = validation.check_verbose(verbose)
        return_dict = validation.check_bool("return_dict", return_dict)
        self._check_fitted("evaluate")
        Xa = self._prepare_X(X, one_sample=True)
        ya = self._prepare_y(y)
        validation.check_lengths(Xa, ya)
        result = self._evaluate_device(*self._to_device(Xa, ya))
        if verbose:
            print(f"evaluate: {len(Xa)} samples  " + "  ".join(f"{k} {v:.4f}" for k, v in result.items()),
                  file=sys.stderr, flush=True)
        if return_dict:
            return result
        values = [result[k] for k in self.metrics_names]
        return values if len(values) > 1 else values[0]

    def _outputs(self, X, each=None):
        """Network outputs after the output activation (probabilities for classifiers); with
        ``each``, what it makes of each chunk's outputs (predict's labels: the outputs are then
        never held whole)."""
        self._check_fitted("predict")
        X = self._prepare_X(X, one_sample=True)
        b = self.backend_
        n = X.shape[0]
        out = b.few_rows_outputs(self, X)  # (the loss's activation applied; None: as many rows)
        if out is not None:
            return out if each is None else each(out)
        chunk = self._chunk()
        # Peak memory: the result (on the host, filled chunk by chunk) and one chunk's arrays; X is
        # converted to the model's dtype and moved to the device a chunk at a time, never whole.
        result = None
        for start in range(0, n, chunk):
            xd = b.asarray(X[start:start + chunk], dtype=b.dtype)
            out = b.to_host(self.loss_.outputs(self._infer(xd)))  # the loss's output activation
            values = out if each is None else each(out)
            if result is None:
                result = np.empty((n,) + values.shape[1:], dtype=values.dtype)
            result[start:start + len(values)] = values
        return result

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, shape (n, k); (n, 2) for one sigmoid output."""
        if not self.loss_.is_classifier:
            raise TypeError(f"predict_proba is for classifiers; this model's loss is {self.loss_.name!r}")
        p = self._outputs(X)
        if self.loss_.target_kind == "binary" and p.shape[1] == 1:
            return np.hstack([1 - p, p])
        return p

    def predict_top_k(self, X: ArrayLike, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most probable classes per sample and their probabilities: see :func:`fastnet.core.metrics.predict_top_k`."""
        from fastnet.core.metrics import predict_top_k

        return predict_top_k(self, X, k)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predictions for the rows of ``X``.

        Cross-entropy classifiers: the class labels, shape (n,): the labels of ``y`` at
        ``fit`` (``classes_``: strings, integers... as given), class ids ``0..k-1`` for a
        model that has no ``classes_``.  Sigmoid outputs: 0/1 per output (shape (n,) for
        one output, (n, k) for multi-label).  Regressors: the values, (n,) for one output,
        else (n, k).  Probabilities: :meth:`predict_proba`."""
        kind, classes = self.loss_.target_kind, self.classes_
        if kind == "class":  # labels made chunk by chunk: no (n, k) array of probabilities
            return self._outputs(X, lambda p: np.argmax(p, axis=1) if classes is None else classes[np.argmax(p, axis=1)])
        if kind == "binary":
            labels = self._outputs(X, lambda p: (p >= 0.5).astype(np.int64))
            return labels[:, 0] if labels.shape[1] == 1 else labels
        p = self._outputs(X)
        return p[:, 0] if p.shape[1] == 1 else p

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Accuracy for classifiers, R^2 for regression (as scikit-learn)."""
        if self.loss_.is_classifier:
            result = self.evaluate(X, y, return_dict=True)
            assert isinstance(result, dict)
            return result["accuracy"]
        p = self._outputs(X)
        t = validation.check_real_targets(y, self.n_outputs_)
        ss_res = ((t - p) ** 2).sum()
        ss_tot = ((t - t.mean(axis=0)) ** 2).sum()
        return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0

"""One optimizer step on one batch, for a training loop of one's own: ``model.train_on_batch``.

Keras's ``train_on_batch``, and what a PyTorch user's loop does with
``loss.backward(); optimizer.step()``, through the step ``fit`` runs (the same
buffers, fused kernels and optimizer call; :mod:`fastnet.train.fit`)::

    for epoch in range(5):
        for xb, yb in batches:                        # arrays of your own making
            loss, acc = model.train_on_batch(xb, yb)  # a regressor: the loss alone

The batch is checked as cheaply as the common case allows (a float array of the
model's width: one sum finds a NaN or inf; integer class ids: their minimum and
maximum), then read in place (NumPy, already of the model's dtype and C order) or
copied into the model's batch buffer: a step allocates no array.  Anything else
(lists, images to flatten, labels to map through ``classes_``, ...) takes ``fit``'s
own checks, with their messages.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from fastnet.core import validation
from fastnet.core.optimizers import get_optimizer

if TYPE_CHECKING:
    from fastnet.core.model import Network


def train_on_batch(model: Network, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                   class_weight: dict[Any, float] | None = None,
                   return_dict: bool = False) -> float | list[float] | dict[str, float]:
    """One optimizer step on the batch ``(x, y)``; returns its loss (as Keras's ``train_on_batch``).

    The step is ``fit``'s: forward (dropout on), loss, backward, one fused update per
    parameter by ``model.optimizer_`` at its ``lr`` (no schedule), in the model's buffers.
    A loop of ``train_on_batch`` over the batches that ``fit(..., shuffle=False)`` makes,
    in the same order, ends with ``fit``'s weights (tested to the last bit on the CPU).

    Parameters
    ----------
    x : array (m, n_features)
    y : array
        As ``fit`` takes them.  Class labels other than ids ``0..k-1`` need a model that
        knows them (``classes_``, from a ``fit``).
    sample_weight : array (m,), optional
        Each row's loss and gradient times its weight, used as given: the step minimises
        ``sum(w_i loss_i) / m`` (Keras's; ``fit`` first scales the weights of the whole
        training set to a mean of 1).
    class_weight : dict, optional
        ``{label: weight}``, times ``sample_weight`` (Keras's; ``"balanced"`` needs the
        whole training set's counts: give ``fit`` the data, or a dict made from them).
    return_dict : bool
        ``{"loss": ..., "accuracy": ...}`` instead of a list.

    Returns
    -------
    float, list or dict
        Of the batch, before the update: ``[loss, accuracy]`` for classifiers, the loss
        for regressors (as :meth:`evaluate`).  A NaN loss is returned as it is (no
        ``on_nan`` guard: the update was made).

    Notes
    -----
    The model is built at the first call (its input size from ``x``), and given
    ``fit``'s default optimizer (``Adam``, lr 1e-3) unless one is attached:
    ``model.attach_optimizer(fastnet.SGD(lr=0.1))``.  The optimizer's state and step
    count carry on into later calls and ``fit``s; ``history_`` and ``n_iter_`` (epochs)
    do not change.  On the CPU the step runs with the BLAS thread count ``fit``'s tuner
    chooses for it by timing the steps (:mod:`fastnet.backends.threads`; ``FASTNET_THREADS=fixed``
    leaves the count alone); the count configured before the call is put back after it.
    """
    from fastnet.train.fit import _exclusive_training, _loss_scaler

    return_dict = validation.check_bool("return_dict", return_dict)
    with _exclusive_training(model):
        xa = _rows(model, x)
        ya = _targets(model, y)
        validation.check_lengths(xa, ya)
        m = len(xa)
        weights = _weights(model, ya, sample_weight, class_weight, m)  # checked before the model changes
        if not model.built:
            model.build(xa.shape[1])
        optimizer = model.optimizer_ if model.optimizer_ is not None else model.attach_optimizer(get_optimizer("adam"))
        b = model.backend_
        xp = b.xp
        model._ensure_workspace(m)
        sums = _sums(model)
        xb = _into(b, model._xb[:m], xa)
        yb = _into(b, model._yb[:m], ya.reshape(model._yb[:m].shape))
        wb = None if weights is None else _into(b, _weight_buffer(model)[:m], weights.reshape(m, 1))
        classify = model.loss_.is_classifier
        scaler = _loss_scaler(model)
        b.dropout_row = 0
        # fit's BLAS thread tuner for this step (fastnet.backends.threads): the count it chose is set for the
        # step and the configured one put back after it; the step's time is its measure
        tuner = b.thread_tuner(_work(model, m))
        with _closing(tuner), np.errstate(over="ignore", invalid="ignore", divide="ignore"), b.compute_env():
            out = model._forward(xb, True)
            rows = model._loss_rows[:m]
            grad = model._grad[:m]
            model.loss_(out, yb, rows, grad)
            if wb is not None:  # each row's loss and gradient times its weight
                xp.multiply(grad, wb, out=grad)
                xp.multiply(rows, wb.reshape(m), out=rows)
            rows.reshape(m, 1).sum(axis=0, dtype=np.float64, out=sums[0][0:1])  # as fit sums a step's loss
            if classify:
                model._correct(out, yb, sums[1][0:1])
            if scaler is not None:  # fp16: the loss gradient scaled up, out of float16's underflow
                scaler.scale_loss_gradient(xp, grad)
            model._backward(grad)
            if scaler is None or scaler.unscale(xp, model._grad_flat):
                optimizer.step(optimizer.lr)
            tuner.step_done(True)
        result = {"loss": float(b.to_host(sums[0])[0]) * model.loss_.scale(m, model.n_outputs_)}
        if classify:
            result["accuracy"] = int(b.to_host(sums[1])[0]) / model._accuracy_denominator(m)
    if return_dict:
        return result
    return [result["loss"], result["accuracy"]] if classify else result["loss"]


@contextlib.contextmanager
def _closing(tuner):
    try:
        yield
    finally:
        tuner.close()


def _work(model, m):
    """What ``fit``'s thread tuner knows this step by (batch rows, parameter shapes): kept per model."""
    held = getattr(model, "_batch_work", None)
    if held is None or held[0] != m or held[2] is not model.backend_:
        shapes = tuple(a.shape for layer in model.layers for _, a in layer.params())
        held = model._batch_work = (m, (m, shapes), model.backend_)
    return held[1]


def _width(model):
    return model.n_features_in_ if model.built else model.input_dim


def _rows(model, x):
    """``x`` itself when it is a float array of the model's width with no NaN/inf (one sum
    shows them: a non-finite sum sends the batch to the full check, which also passes a
    sum that merely overflowed); else ``fit``'s checks."""
    width = _width(model)
    if (isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype.kind == "f" and len(x)
            and (width is None or x.shape[1] == width) and np.isfinite(np.add.reduce(x, axis=None))):
        return x
    return model._prepare_X(x)


def _targets(model, y):
    """``y`` as the loss takes it: integer class ids checked by their minimum and maximum,
    float targets by one sum (and their range for sigmoid outputs); else ``fit``'s checks."""
    kind, k = model.loss_.target_kind, model.n_outputs_
    if isinstance(y, np.ndarray) and len(y):
        if kind == "class":
            classes = model.classes_
            ids = classes is None or (classes.dtype.kind in "iu" and len(classes) == k and classes[0] == 0
                                      and classes[-1] == k - 1)  # sorted, unique: 0..k-1
            if ids and y.ndim == 1 and y.dtype.kind in "iu" and 0 <= y.min() and y.max() < k:
                return y
        elif y.dtype.kind == "f" and (y.shape == (len(y), k) or (k == 1 and y.ndim == 1)) \
                and np.isfinite(np.add.reduce(y, axis=None)) and (kind != "binary" or 0 <= y.min() <= y.max() <= 1):
            return y
    return model._prepare_y(y)


def _weights(model, ya, sample_weight, class_weight, m):
    weights = validation.check_sample_weight(sample_weight, m)
    if class_weight is not None:
        if isinstance(class_weight, str):
            raise ValueError(f"class_weight={class_weight!r} needs the whole training set's class counts, which "
                             "one batch does not have: give fit the data, or pass a dict {label: weight} "
                             "(sklearn.utils.class_weight.compute_class_weight makes one)")
        k = model.n_outputs_
        classes = model.classes_ if model.classes_ is not None else np.arange(k)
        ids = ya if model.loss_.target_kind != "class" else np.asarray(ya)
        rows = validation.class_weight_rows(class_weight, ids, model.loss_.target_kind, classes)
        weights = rows if weights is None else rows * weights
    return weights


def _sums(model):
    """The step's loss sum and correct count: two 1-element device arrays of the model's."""
    sums = getattr(model, "_batch_sums", None)
    if sums is None or sums[2] is not model.backend_:
        xp = model.backend_.xp
        sums = model._batch_sums = (xp.zeros(1, dtype=np.float64), xp.zeros(1, dtype=np.int64), model.backend_)
    return sums


def _weight_buffer(model):
    """A (max_batch, 1) device buffer for a batch's sample weights, grown with the workspace."""
    held = getattr(model, "_batch_weights", None)
    if held is None or held[1] is not model.backend_ or len(held[0]) < model._max_batch:
        b = model.backend_
        held = model._batch_weights = (b.xp.empty((model._max_batch, 1), dtype=b.dtype), b)
    return held[0]


def _into(b, buf, a):
    """``a`` on the device as ``buf``'s dtype: ``a`` itself when it already is (a NumPy array on
    the CPU, C-contiguous), else copied into ``buf`` (no allocation on the CPU)."""
    if b.xp is np:
        if a.dtype == buf.dtype and a.flags.c_contiguous:
            return a
        np.copyto(buf, a, casting="unsafe")
        return buf
    if validation.is_device_array(a):
        buf[...] = a
    else:
        buf.set(np.ascontiguousarray(a, dtype=buf.dtype))
    return buf

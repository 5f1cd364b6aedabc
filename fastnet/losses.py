"""Losses, each fused with its output activation in one kernel call.

============================  ==================  ===================  =====================
loss                          output activation   kernel               targets
============================  ==================  ===================  =====================
``"cross_entropy"``           softmax             ``softmax_xent``     class ids (or one-hot)
``"binary_cross_entropy"``    sigmoid             ``sigmoid_bce``      0/1 per output
``"mse"``                     any (not softmax)   ``squared_error``    real values
``"sse"``                     any (not softmax)   ``squared_error``    real values
============================  ==================  ===================  =====================

The loss of a batch of ``n`` rows and ``k`` outputs is
``scale(n, k) * sum(per_row_loss)``; its gradient is what the kernel writes.
``"sse"`` is the tutorials' ``0.5 * sum((p - t)**2)`` over the whole batch
(not averaged), ``"mse"`` the mean over rows and outputs.
"""
from __future__ import annotations

from .validation import check_choice


class Loss:
    """A loss: kernel name, scale, and the output activation it absorbs."""

    name = None
    kernel = None
    #: Output activation computed inside the loss kernel (the last layer then
    #: produces raw logits).
    fused_activation = None
    #: Activations of the last layer the loss accepts.
    accepts = ()
    #: ``"class"`` (integer ids), ``"binary"`` (0/1 floats) or ``"real"``.
    target_kind = "real"
    is_classifier = False

    def scale(self, n, k):
        return 1.0 / n

    def bind(self, backend):
        self._kernel = getattr(backend.kernels, self.kernel)
        return self

    def __call__(self, out, y, loss_rows, grad):
        """Per-row loss into ``loss_rows`` and the gradient into ``grad``."""
        n, k = out.shape
        self._kernel(out, y, loss_rows, grad, self.scale(n, k))

    def __repr__(self):
        return f"<loss {self.name}>"


class CrossEntropy(Loss):
    name = "cross_entropy"
    kernel = "softmax_xent"
    fused_activation = "softmax"
    accepts = ("softmax", "identity")
    target_kind = "class"
    is_classifier = True


class BinaryCrossEntropy(Loss):
    name = "binary_cross_entropy"
    kernel = "sigmoid_bce"
    fused_activation = "sigmoid"
    accepts = ("sigmoid", "identity")
    target_kind = "binary"
    is_classifier = True


class MeanSquaredError(Loss):
    name = "mse"
    kernel = "squared_error"
    accepts = ("identity", "sigmoid", "tanh", "relu", "leaky_relu")

    def scale(self, n, k):
        return 1.0 / (n * k)


class SumSquaredError(MeanSquaredError):
    name = "sse"

    def scale(self, n, k):
        return 0.5


LOSSES = {
    "cross_entropy": CrossEntropy,
    "categorical_crossentropy": CrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy,
    "bce": BinaryCrossEntropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "sse": SumSquaredError,
    "sum_squared_error": SumSquaredError,
}


def get_loss(loss):
    """A :class:`Loss` from a name or an instance."""
    if isinstance(loss, Loss):
        return loss
    check_choice("loss", loss, tuple(LOSSES))
    return LOSSES[loss]()


def default_loss(output_activation):
    """The loss that goes with an output activation."""
    return {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(output_activation, "mse")

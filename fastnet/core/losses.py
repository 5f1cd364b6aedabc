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

from fastnet.kernels.reference import ACTIVATIONS
from fastnet.core.validation import check_choice


class Loss:
    """A loss: kernel name, scale, and the output activation it owns.

    The loss decides what the last layer computes, for training and inference
    alike (:meth:`wire`, :meth:`outputs`): with a ``fused_activation`` the last
    layer produces raw logits, the loss kernel applies the activation inside (in
    training) and :meth:`outputs` applies it with the kernel table's forward
    kernel (at inference).
    """

    name: str | None = None
    kernel: str | None = None
    #: Output activation computed inside the loss kernel (the last layer then
    #: produces raw logits).
    fused_activation: str | None = None
    #: Activations of the last layer the loss accepts.
    accepts: tuple[str, ...] = ()
    #: Other names the loss is known by (Keras').
    aliases: tuple[str, ...] = ()
    #: ``"class"`` (integer ids), ``"binary"`` (0/1 floats) or ``"real"``.
    target_kind = "real"
    is_classifier = False

    def scale(self, n, k):
        return 1.0 / n

    def check_output(self, activation):
        """The kernel activation of a last layer with ``activation`` (a canonical name):
        ``"identity"`` when this loss applies it, else ``activation``; raises
        ``ValueError`` when the loss does not go with it."""
        if activation not in self.accepts:
            raise ValueError(
                f"loss {self.name!r} does not go with a {activation!r} output layer "
                f"(it accepts: {', '.join(self.accepts)})"
            )
        return "identity" if self.fused_activation else activation

    def bind(self, backend, n_outputs=None):
        self._kernel = getattr(backend.kernel_set, self.kernel)
        if self.fused_activation:
            self._activate = getattr(backend.kernel_set, self.fused_activation + "_fwd")
            self._zero_bias = backend.xp.zeros(n_outputs or 1, dtype=backend.dtype)
        return self

    def outputs(self, out):
        """The network's outputs from the last layer's ``out``, in place: the fused
        activation applied (probabilities for the classifiers), else unchanged."""
        if self.fused_activation:
            self._activate(out, self._zero_bias[: out.shape[1]])
        return out

    def __call__(self, out, y, loss_rows, grad):
        """Per-row loss into ``loss_rows`` and the gradient into ``grad``."""
        n, k = out.shape
        self._kernel(out, y, loss_rows, grad, self.scale(n, k))

    def __repr__(self):
        return f"<loss {self.name}>"


class CrossEntropy(Loss):
    name = "cross_entropy"
    aliases = ("categorical_crossentropy",)
    kernel = "softmax_xent"
    fused_activation = "softmax"
    accepts = ("softmax", "identity")
    target_kind = "class"
    is_classifier = True


class BinaryCrossEntropy(Loss):
    name = "binary_cross_entropy"
    aliases = ("binary_crossentropy", "bce")
    kernel = "sigmoid_bce"
    fused_activation = "sigmoid"
    accepts = ("sigmoid", "identity")
    target_kind = "binary"
    is_classifier = True


class MeanSquaredError(Loss):
    name = "mse"
    aliases = ("mean_squared_error",)
    kernel = "squared_error"

    @property
    def accepts(self):
        """Any hidden-layer activation of the kernel table."""
        return tuple(ACTIVATIONS)

    def scale(self, n, k):
        return 1.0 / (n * k)


class SumSquaredError(MeanSquaredError):
    name = "sse"
    aliases = ("sum_squared_error",)

    def scale(self, n, k):
        return 0.5


#: Every loss by name and alias.
LOSSES = {n: cls for cls in (CrossEntropy, BinaryCrossEntropy, MeanSquaredError, SumSquaredError)
          for n in (cls.name, *cls.aliases)}


def get_loss(loss: str | Loss) -> Loss:
    """A :class:`Loss` from a name or an instance."""
    if isinstance(loss, Loss):
        return loss
    check_choice("loss", loss, tuple(LOSSES))
    return LOSSES[loss]()


def default_loss(output_activation: str) -> str:
    """The loss that goes with an output activation."""
    for cls in LOSSES.values():
        if cls.fused_activation == output_activation:
            return cls.name
    return MeanSquaredError.name

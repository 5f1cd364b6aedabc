"""``Sequential`` (a network you can train) and the ``MLP`` shorthand.

``Sequential`` is :class:`fastnet.core.model.Network` with the training run of
:mod:`fastnet.train.fit` as its ``fit`` and ``partial_fit`` methods, the step of
:mod:`fastnet.train.step` as ``train_on_batch`` (and the ONNX
export of :mod:`fastnet.integrations.onnx_export` as ``to_onnx``): the network
does not depend on the training code, the training code depends on the network,
and this module ties the two together.
"""
from __future__ import annotations

from collections.abc import Sequence

from fastnet.integrations import onnx_export
from fastnet.train import step as train_step
from fastnet.train import fit as training
from fastnet.core.layers import Dense, Dropout, Layer, canonical_activation
from fastnet.core.losses import default_loss, get_loss
from fastnet.core.model import Network
from fastnet.core.validation import check_int


class Sequential(Network):
    __doc__ = (Network.__doc__ or "").replace("with one loss (``Sequential`` adds ``fit``).",
                                             "trained with one loss.")

    fit = training.fit
    partial_fit = training.partial_fit
    train_on_batch = train_step.train_on_batch
    to_onnx = onnx_export.to_onnx


class MLP(Sequential):
    """A multilayer perceptron from layer sizes: ``MLP([784, 256, 10])``.

    Parameters
    ----------
    sizes : list of int
        Input size, hidden sizes, output size.
    activation : str
        Activation of the hidden layers (a name of ``fastnet.core.layers.hidden_activations()``).
    output : str, optional
        Output activation: ``"softmax"`` (default for ``loss=None``),
        ``"sigmoid"``, ``"linear"``...  Default: the one that goes with ``loss``.
    loss : str, optional
        Default: cross-entropy (with softmax output) unless ``output`` says otherwise.
    dropout : float
        Dropout rate after each hidden layer (0 = none).
    use_bias, init, backend, dtype, seed, kernels, random_state, precision
        As in :class:`Dense` and :class:`Sequential`.
    """

    def __init__(self, sizes: Sequence[int], activation: str | None = "relu", output: str | None = None,
                 loss: str | None = None, dropout: float = 0.0, use_bias: bool = True, init: str = "auto",
                 backend: str = "auto", dtype: str = "float32", seed: int | None = None, kernels: str = "fused",
                 random_state: int | None = None, precision: str = "float32") -> None:
        if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
            raise ValueError(f"sizes must list at least an input and an output size, got {sizes!r}")
        sizes = [check_int(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
        if output is None:
            output = "softmax" if loss is None else (get_loss(loss).fused_activation or "linear")
        layers: list[Layer] = []
        for units in sizes[1:-1]:
            layers.append(Dense(units, activation, use_bias=use_bias, init=init))
            if dropout:
                layers.append(Dropout(dropout))
        layers.append(Dense(sizes[-1], output, use_bias=use_bias, init=init))
        self.sizes = list(sizes)
        super().__init__(layers, loss=loss, backend=backend, dtype=dtype, seed=seed, kernels=kernels,
                         input_dim=sizes[0], random_state=random_state, precision=precision)

    @classmethod
    def from_config(cls, config, backend="auto", kernels="fused", dtype=None):
        """A :class:`Sequential` with the layers of ``config`` (an MLP's config lists its layers)."""
        return Sequential.from_config(config, backend=backend, kernels=kernels, dtype=dtype)

    def __repr__(self):
        """``MLP([784, 512, 512, 10], ...)``: the call that makes this model (defaults left out)."""
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        drops = [layer.rate for layer in self.layers if isinstance(layer, Dropout)]
        args = [repr([self.input_dim, *(layer.units for layer in dense)])]
        hidden = {layer.activation for layer in dense[:-1]}
        if hidden and hidden != {"relu"}:
            args.append(f"activation={next(iter(hidden))!r}")
        out = dense[-1].activation
        # The output and loss arguments that give this pair, fewest first (MLP's defaults: softmax
        # and its loss; a loss given alone brings its own output activation).
        bare = ([] if out == "softmax" else [f"output={out!r}"]) if self.loss_.name == default_loss(
            canonical_activation(out)) else None
        own = get_loss(self.loss_.name).fused_activation or "linear"
        with_loss = [f"loss={self.loss_.name!r}"] + ([] if canonical_activation(out) == canonical_activation(own)
                                                     else [f"output={out!r}"])
        regression = self.loss_.target_kind == "real"
        args += bare if bare is not None and (len(bare) < len(with_loss) or not regression) else with_loss
        if drops:
            args.append(f"dropout={drops[0]!r}")
        if not dense[0].use_bias:
            args.append("use_bias=False")
        if dense[0].init != "auto":
            args.append(f"init={dense[0].init!r}")
        return f"MLP({', '.join(args + self._call_options())})"

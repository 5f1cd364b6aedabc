"""Layers: ``Dense`` and ``Dropout``, written once against ``backend.xp``.

A layer is built for a backend (its parameters are created there), then given
a workspace for a maximum batch size: every buffer of the training step is
allocated once, and a batch of ``n`` rows works on the views ``buf[:n]``
(row slices of C-contiguous arrays stay contiguous, so GEMMs and kernels can
write into them with ``out=``).
"""
from __future__ import annotations

import warnings

import numpy as np

from fastnet.core.validation import check_bool, check_choice, check_int, check_real
from fastnet.kernels.reference import ACTIVATIONS, OUTPUT_ACTIVATIONS

def hidden_activations() -> tuple[str, ...]:
    """Activations of hidden layers: the kernel table's (``"linear"`` means identity)."""
    return ("linear", *ACTIVATIONS)


def activation_names() -> tuple[str, ...]:
    """Activation names a user may give: :func:`hidden_activations` and the table's
    output activations (``"softmax"``), which are allowed on the last layer only
    (the loss applies them).  Read from the table at each call, so an activation
    registered after import is accepted too."""
    return hidden_activations() + tuple(OUTPUT_ACTIVATIONS)
INITS = ("auto", "he", "xavier", "normal")


def canonical_activation(activation: str | None) -> str:
    """Map a user's activation name to a kernel name (``None``/``"linear"`` -> ``"identity"``)."""
    if activation is None:
        return "identity"
    check_choice("activation", activation, activation_names())
    return "identity" if activation == "linear" else activation


class Layer:
    """Base class: parameters, a workspace, and a forward/backward pair."""

    #: ``True`` when the layer has parameters that an optimizer updates.
    trainable = False

    def __init__(self):
        self.name = None
        self.backend_ = None  # the Backend object, set by build (as the model's backend_)
        self.n_in = None
        self.n_out = None

    @property
    def backend(self):
        """Deprecated: ``backend_``, the ``Backend`` object the layer was built on (named as the
        model's: ``model.backend`` is the name given, ``model.backend_`` the object)."""
        warnings.warn("Layer.backend is deprecated: use Layer.backend_ (the Backend object set by "
                      "build, as Network.backend_)", DeprecationWarning, stacklevel=2)
        return self.backend_

    @backend.setter
    def backend(self, value):
        warnings.warn("Layer.backend is deprecated: use Layer.backend_ (the Backend object set by "
                      "build, as Network.backend_)", DeprecationWarning, stacklevel=2)
        self.backend_ = value

    # -- structure ---------------------------------------------------------
    def build(self, n_in, backend, rng):
        """Create parameters for ``n_in`` inputs on ``backend``; return the output width."""
        self.backend_ = backend
        self.n_in = n_in
        self.n_out = n_in
        return self.n_out

    def allocate(self, max_batch):
        """Allocate the buffers of a step of up to ``max_batch`` rows."""

    def params(self):
        """List of ``(short_name, array)`` that an optimizer updates."""
        return []

    def grads(self):
        """Gradients, in the order of :meth:`params`."""
        return []

    def use_grads(self, arrays):
        """Keep the gradients in ``arrays`` (shaped as :meth:`grads`; views of the model's
        one flat gradient buffer) from now on."""

    def get_config(self):
        raise NotImplementedError

    # -- computation -------------------------------------------------------
    def forward(self, x, training):
        raise NotImplementedError

    def backward(self, dy, need_dx):
        raise NotImplementedError

    def infer(self, x, matmul=None):
        """Inference forward into new arrays: no shared buffer, so any number of threads
        may run it on one model at once.  ``matmul(a, b, out)``: the GEMM to run (None: the
        array module's; fit's validation passes its training GEMMs' library)."""
        return x


class Dense(Layer):
    """Fully connected layer ``y = activation(x @ W + b)``, ``W`` shaped (in, out).

    Parameters
    ----------
    units : int
        Number of outputs.
    activation : str or None
        A name of :func:`activation_names` (the kernel table's activations,
        ``"linear"``/``None`` for identity).  ``"softmax"`` only on the last
        layer, where it is fused into the cross-entropy loss; a sigmoid last
        layer is fused into binary cross-entropy the same way.
    use_bias : bool
    init : {"auto", "he", "xavier", "normal"}
        ``"auto"`` is the activation's own choice in the kernel table (He-normal
        for ReLU-like activations, Xavier-uniform otherwise); ``"normal"`` is
        N(0, 1/fan_in) as in the tutorials.
    input_dim : int, optional
        Keras's: on the first layer, the number of input features (the model's
        ``input_dim``); refused on later layers.
    input_shape : tuple of one int, optional
        Keras's ``input_shape=(n_features,)``, the same as ``input_dim=n_features``.
        Dense layers take flat rows: a longer shape (an image's ``(28, 28)``) is
        refused (``fit`` flattens images of shape (n, 28, 28) to 784 features).
    """

    trainable = True

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True, init: str = "auto",
                 input_dim: int | None = None, input_shape: tuple[int] | None = None) -> None:
        super().__init__()
        self.units = check_int("units", units)
        if input_shape is not None:
            shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
            if len(shape) != 1:
                flat = int(np.prod(shape)) if all(isinstance(d, int) for d in shape) else "n_features"
                raise ValueError(f"input_shape={input_shape!r}: a Dense layer takes flat rows, so give "
                                 f"input_shape=({flat},) (fit flattens images of shape (n, h, w) to rows of "
                                 "h * w features)")
            shape_dim = check_int("input_shape[0]", shape[0])
            if input_dim is not None and check_int("input_dim", input_dim) != shape_dim:
                raise ValueError(f"input_dim={input_dim!r} and input_shape={input_shape!r} disagree")
            input_dim = shape_dim
        #: Keras's input size on a first layer (the model's ``input_dim``), else None.
        self.input_dim = check_int("input_dim", input_dim, allow_none=True)
        canonical_activation(activation)  # validates
        self.activation = activation
        self.use_bias = check_bool("use_bias", use_bias)
        check_choice("init", init, INITS)
        self.init = init
        # The kernel activation; the model sets it to "identity" when the
        # output activation is fused into the loss.
        self.kernel_activation = canonical_activation(activation)
        self.W = self.b = self.dW = self.db = None
        self.need_dx = True

    def __repr__(self):
        args = [repr(self.units)]
        if self.activation is not None:
            args.append(f"activation={self.activation!r}")
        if not self.use_bias:
            args.append("use_bias=False")
        if self.init != "auto":
            args.append(f"init={self.init!r}")
        if self.input_dim is not None:
            args.append(f"input_dim={self.input_dim!r}")
        return f"Dense({', '.join(args)})"

    def get_config(self):
        return {
            "type": "Dense",
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "init": self.init,
        }

    def _initial_weights(self, n_in, rng):
        act = ACTIVATIONS.get(canonical_activation(self.activation))  # None for softmax
        init = self.init
        if init == "auto":
            init = act.init if act is not None else "xavier"
        shape = (n_in, self.units)
        if init == "he":
            return rng.standard_normal(shape) * np.sqrt(2.0 / n_in)
        if init == "xavier":
            limit = np.sqrt(6.0 / (n_in + self.units))
            return rng.uniform(-limit, limit, size=shape)
        return rng.standard_normal(shape) / np.sqrt(n_in)

    def build(self, n_in, backend, rng):
        super().build(n_in, backend, rng)
        self.n_out = self.units
        dt = backend.dtype
        self.W = backend.parameter(self._initial_weights(n_in, rng), dtype=dt)
        # Without a bias the kernels still add a zero vector: one signature
        # for every kernel is worth one read of `units` zeros.
        self.b = backend.xp.zeros(self.units, dtype=dt)
        self.dW = backend.xp.zeros_like(self.W)
        self.db = backend.xp.zeros_like(self.b)
        self._bind_kernels()
        return self.n_out

    def _bind_kernels(self):
        k = self.backend_.kernel_set
        self._fwd = getattr(k, self.kernel_activation + "_fwd")
        self._bwd = getattr(k, self.kernel_activation + "_bwd")
        # What the backward kernel reads: the activation's output, or (saves="input") its input.
        self._saves_input = ACTIVATIONS[self.kernel_activation].saves == "input"

    def allocate(self, max_batch):
        xp, dt = self.backend_.xp, self.backend_.dtype
        self.out = xp.empty((max_batch, self.units), dtype=dt)
        self.pre = xp.empty((max_batch, self.units), dtype=dt) if self._saves_input else None
        self.dx = xp.empty((max_batch, self.n_in), dtype=dt) if self.need_dx else None

    def params(self):
        return [("W", self.W), ("b", self.b)] if self.use_bias else [("W", self.W)]

    def grads(self):
        return [self.dW, self.db] if self.use_bias else [self.dW]

    def use_grads(self, arrays):
        self.dW = arrays[0]
        if self.use_bias:
            self.db = arrays[1]

    def forward(self, x, training):
        n = x.shape[0]
        z = self.out[:n]
        # x and W as the GEMMs read them (in bf16, rounded once: backward reads them again)
        self.x, self._W = self.backend_.gemm_operand(x), self.backend_.gemm_operand(self.W)
        self.backend_.matmul(self.x, self._W, z)
        if self._saves_input:
            self._fwd(z, self.b, self.pre[:n])
        else:
            self._fwd(z, self.b)
        return z

    def infer(self, x, matmul=None):
        xp = self.backend_.xp
        if matmul is None:
            z = xp.matmul(x, self.W)  # a new array per call
        else:
            z = xp.empty((x.shape[0], self.W.shape[1]), dtype=self.W.dtype)
            matmul(x, self.W, z)
        if self._saves_input:
            self._fwd(z, self.b, xp.empty_like(z))
        else:
            self._fwd(z, self.b)
        return z

    def backward(self, dy, need_dx):
        """``dy`` is overwritten with the pre-activation gradient (it is a scratch buffer)."""
        n = dy.shape[0]
        self._bwd((self.pre if self._saves_input else self.out)[:n], dy, dy, self.db)
        dy = self.backend_.gemm_operand(dy)
        self.backend_.matmul(self.x.T, dy, self.dW)
        if not need_dx:
            return None
        dx = self.dx[:n]
        self.backend_.matmul(dy, self._W.T, dx)
        return dx


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate``
    and scale the rest by ``1 / (1 - rate)``; identity at inference."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = check_real("rate", rate, low=0, high=1, high_open=True)
        self.need_dx = True

    def __repr__(self):
        return f"Dropout({self.rate!r})"

    def get_config(self):
        return {"type": "Dropout", "rate": self.rate}

    def allocate(self, max_batch):
        xp, dt = self.backend_.xp, self.backend_.dtype
        self.keep = xp.empty((max_batch, self.n_in), dtype=dt)
        self.out = xp.empty((max_batch, self.n_in), dtype=dt)

    def forward(self, x, training):
        self.training = training and self.rate > 0
        if not self.training:
            return x
        xp = self.backend_.xp
        n = x.shape[0]
        keep, out = self.keep[:n], self.out[:n]
        # 1 / (1 - rate) or 0, from the backend's counter-based generator
        self.backend_.dropout_mask(keep, self.rate)
        xp.multiply(x, keep, out=out)
        return out

    def backward(self, dy, need_dx):
        if not need_dx:
            return None
        if self.training:
            dy *= self.keep[: dy.shape[0]]
        return dy


LAYER_TYPES = {"Dense": Dense, "Dropout": Dropout}


def layer_from_config(config: dict) -> Layer:
    """Rebuild a layer from :meth:`Layer.get_config` output."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r} in model config")
    return LAYER_TYPES[kind](**config)

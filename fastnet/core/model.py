"""The network: ``Network``, a stack of layers with one loss.

Layers, build, the workspace of a training step, forward and backward passes,
parameters, inference (predict, evaluate), config, save and moving between
backends.  Training is not here: ``fastnet.train.fit`` runs it from outside, and
``fastnet.core.sequential.Sequential`` is this network with ``fit``.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fastnet.core import validation
from fastnet.backends.devices import get_backend, resolve_name
from fastnet.core.callbacks import History
from fastnet.core.layers import Dense, Layer, canonical_activation, layer_from_config
from fastnet.core.losses import Loss, default_loss, get_loss
from fastnet.core.inference import Inference
from fastnet.core.optimizers import Optimizer
from fastnet.core.pickling import Picklable



def _device_seed(seed):
    # The device generator (shuffling, dropout) gets its own stream, derived
    # from the model seed, so that weights and data order never share draws.
    return None if seed is None else int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])


def _precision_on(precision, backend):
    """``precision`` if a backend named ``backend`` has it, else float32 (a GPU-only precision
    moved onto the CPU)."""
    from fastnet.backends.devices import DEVICES

    name = resolve_name(backend.name if hasattr(backend, "name") else backend)
    return precision if precision in DEVICES[name].precisions else "float32"


#: What a model file's name must end in (``save``; the CLI's ``--save``).
MODEL_SUFFIX = ".npz"
_OTHER_FORMATS = {
    ".keras": "Keras's format", ".h5": "Keras's HDF5 format", ".hdf5": "Keras's HDF5 format",
    ".pt": "PyTorch's format", ".pth": "PyTorch's format", ".safetensors": "the safetensors format",
    ".onnx": "ONNX (write it with model.to_onnx(path))",
    ".pkl": "a pickle (pickle.dump(model, f) pickles a model; model files never hold pickles)",
    ".pickle": "a pickle (pickle.dump(model, f) pickles a model; model files never hold pickles)",
    ".joblib": "a pickle (joblib.dump(model, path) pickles a model; model files never hold pickles)",
}


def check_model_path(path: Any, option: str = "path") -> str:
    """``path`` as a str if it ends in ``.npz`` (any case); else a ``ValueError`` that says
    fastnet writes ``.npz`` files, and what the extension given is for."""
    text = os.fspath(path)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    suffix = os.path.splitext(text)[1]
    if suffix.lower() == MODEL_SUFFIX:
        return text
    stem = os.path.splitext(text)[0] if suffix else text
    if not suffix:
        what = "has no extension (fastnet does not add one)"
    else:
        what = f"ends in {suffix!r}" + (f", {_OTHER_FORMATS[suffix.lower()]}" if suffix.lower() in _OTHER_FORMATS
                                        else "")
    raise ValueError(f"{option} {text!r} {what}: fastnet writes model files as NumPy .npz archives, "
                     f"so the name must end in .npz, e.g. {stem + MODEL_SUFFIX!r}")


class Summary(str):
    """The text :meth:`Network.summary` prints (``Network._summary()``); echoed, it shows as
    the table itself (in a notebook, as an HTML table: a model's ``_repr_html_``)."""

    def __repr__(self):
        return str(self)

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(str(self))

    def _repr_html_(self):
        import html

        rows = [line.split(None, 3) for line in self.splitlines()[1:-1]]
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return ("<table><tr><th>layer</th><th>output</th><th>params</th><th>activation</th></tr>"
                f"{body}</table><p>{html.escape(self.splitlines()[-1])}</p>")


class Network(Inference, Picklable):
    """A stack of layers with one loss (``Sequential`` adds ``fit``).

    Inference (``predict``, ``predict_proba``, ``evaluate``, ``score``) comes from
    :class:`fastnet.core.inference.Inference`; a network pickles and deep-copies (see
    :mod:`fastnet.core.pickling`).

    Parameters
    ----------
    layers : list of Layer
        ``Dense`` and ``Dropout`` layers; the last one must be ``Dense``.
    loss : str or Loss, optional
        ``"cross_entropy"``, ``"binary_cross_entropy"``, ``"mse"`` or ``"sse"``.
        Default: from the last layer's activation (softmax -> cross-entropy,
        sigmoid -> binary cross-entropy, else mse).
    backend : {"auto", "cpu", "cuda", "cuda-sim"}
    dtype : {"float32", "float64"}
    seed : int, optional
        Seeds the weight initialisation, the shuffling and dropout: the same
        seed gives bit-identical training on the same backend.  ``random_state``
        (scikit-learn's name) is the same.
    kernels : {"fused", "reference"}
        The Numba kernels, or the plain array expressions they are tested against.
    precision : {"float32", "bf16", "tf32", "fp16"}
        The GEMMs of training steps: float32; bfloat16 inputs (CPU with oneDNN, or GPU
        tensor cores); TF32 or float16 inputs (GPU tensor cores; float16 with dynamic loss
        scaling, ``loss_scaler_``).  Accumulation, weights, optimizer state and inference
        stay float32 (:mod:`fastnet.backends.precision`); an error names what is missing where the
        CPU, GPU or library cannot.  ``to()`` and ``clone()`` onto a backend without the
        precision (a GPU one onto the CPU) give a float32 model.
    input_dim : int, optional
        Number of input features; inferred at the first ``fit`` when omitted.

    Attributes (after fit)
    ----------------------
    history_ : History
        All epochs trained so far (``loss_curve_`` is ``history_["loss"]``).
    n_iter_ : int
        Epochs trained so far.
    optimizer_ : Optimizer
    """

    #: The column names of the DataFrame the model was fitted on (as scikit-learn's), set by
    #: ``fit``; absent before the first fit.
    feature_names_in_: list[str] | None

    def __init__(self, layers: Sequence[Layer], loss: str | Loss | None = None, backend: str = "auto",
                 dtype: str = "float32", seed: int | None = None, kernels: str = "fused",
                 input_dim: int | None = None, random_state: int | None = None, precision: str = "float32") -> None:
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"layers must be a non-empty list of layers, got {layers!r}")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastnet layer (Dense, Dropout), got {layer!r}")
        if not isinstance(layers[-1], Dense):
            raise ValueError(f"the last layer must be Dense, got {type(layers[-1]).__name__}")
        self.layers = list(layers)
        if random_state is not None:  # scikit-learn's name for the seed
            if seed is not None and seed != random_state:
                raise ValueError(f"give seed or random_state (the same thing), not both: got seed={seed!r} "
                                 f"and random_state={random_state!r}")
            seed = random_state
        self.seed = validation.check_int("seed", seed, 0, allow_none=True)
        self.input_dim = validation.check_int("input_dim", input_dim, 1, allow_none=True)
        first = getattr(self.layers[0], "input_dim", None)  # Keras's Dense(..., input_dim=) / input_shape=
        if first is not None:
            if self.input_dim is not None and self.input_dim != first:
                raise ValueError(f"input_dim={self.input_dim} and the first layer's input_dim={first} disagree")
            self.input_dim = first
        for i, layer in enumerate(self.layers[1:], 1):
            if getattr(layer, "input_dim", None) is not None:
                raise ValueError(f"layers[{i}] has input_dim={layer.input_dim}: only the first layer takes the "
                                 "input size (the others' comes from the layer before)")
        self.backend_ = get_backend(backend, dtype=dtype, seed=_device_seed(seed), kernels=kernels,
                                    precision=precision)
        self.backend = self.backend_.name
        self.precision = self.backend_.precision
        self.dtype = self.backend_.dtype.name
        self.kernels = kernels
        last = canonical_activation(self.layers[-1].activation)
        self.n_outputs_ = self.layers[-1].units
        self.loss_ = get_loss(loss if loss is not None else default_loss(last))
        self.loss = self.loss_.name
        self._wire_output()
        if self.loss_.target_kind == "class" and self.n_outputs_ < 2:
            raise ValueError(
                f"cross_entropy (a softmax output) needs an output layer of >= 2 units, got {self.n_outputs_}: "
                "for two classes use one unit with output=\"sigmoid\" (binary cross-entropy), or 2 units; "
                "for regression (real-valued y) give loss=\"mse\" (e.g. MLP([n_features, 64, 1], loss=\"mse\"); "
                "fastnet.integrations.sklearn.MLPRegressor in scikit-learn's API)")
        self.built = False
        #: The labels of the classes (cross-entropy models), in output order; set by fit.
        self.classes_ = None
        self.optimizer_: Optimizer | None = None
        #: precision="fp16": the dynamic loss scale of training (fastnet.backends.precision.LossScaler)
        self.loss_scaler_ = None
        self.history_ = History()
        self.stop_training = False
        self._max_batch = 0
        # One training at a time per model (fit's buffers are the model's); inference
        # uses buffers of its own per call and needs no lock.
        self._training = threading.Lock()

    # ------------------------------------------------------------------ build
    def _wire_output(self):
        for i, layer in enumerate(self.layers[:-1]):
            if isinstance(layer, Dense) and layer.activation == "softmax":
                raise ValueError(f"softmax is only supported on the last layer, got it on layer {i}")
        last = self.layers[-1]
        # The loss owns the output activation: a softmax/sigmoid output is computed inside it.
        last.kernel_activation = self.loss_.check_output(canonical_activation(last.activation))

    def build(self, n_features: int) -> Network:
        """Create the parameters for ``n_features`` inputs."""
        if self.input_dim is not None and n_features != self.input_dim:
            raise ValueError(
                f"X has {n_features} features per sample, but the model expects {self.input_dim}"
            )
        rng = np.random.default_rng(self.seed)
        n = n_features
        trainable_before = False
        counts: dict[str, int] = {}
        for layer in self.layers:
            kind = type(layer).__name__.lower()
            layer.name = f"{kind}_{counts.get(kind, 0)}"
            counts[kind] = counts.get(kind, 0) + 1
            layer.need_dx = trainable_before
            n = layer.build(n, self.backend_, rng)
            trainable_before = trainable_before or layer.trainable
        self._pack_gradients()
        self.n_features_in_ = n_features
        self.n_outputs_ = n
        self.loss_.bind(self.backend_, n)
        self.built = True
        self._max_batch = 0
        if self.optimizer_ is not None:  # attached before the build (or to the parameters replaced here)
            self.attach_optimizer(self.optimizer_)
        return self

    def _pack_gradients(self):
        """All gradients in one flat buffer, ``_grad_flat``: each layer's are views of it, so
        a data-parallel step sums every gradient in one collective call (fastnet.train.distributed)."""
        grads = [g for layer in self.layers for g in layer.grads()]
        flat = self.backend_.xp.zeros(sum(g.size for g in grads), dtype=self.backend_.dtype)
        offset = 0
        for layer in self.layers:
            views = []
            for g in layer.grads():
                views.append(flat[offset:offset + g.size].reshape(g.shape))
                offset += g.size
            layer.use_grads(views)
        self._grad_flat = flat

    def _ensure_workspace(self, batch):
        if batch <= self._max_batch:
            return
        xp, dt = self.backend_.xp, self.backend_.dtype
        for layer in self.layers:
            layer.allocate(batch)
        self._xb = xp.empty((batch, self.n_features_in_), dtype=dt)
        self._yb = xp.empty((batch,) + self._y_tail(), dtype=self._y_dtype())
        self._loss_rows = xp.empty(batch, dtype=dt)
        self._grad = xp.empty((batch, self.n_outputs_), dtype=dt)
        # Buffers of the accuracy count, so that a training step allocates no arrays.
        self._pred = xp.empty(batch, dtype=np.int64)
        self._hit = xp.empty((batch,) + self._y_tail(), dtype=bool)
        self._hit2 = xp.empty((batch,) + self._y_tail(), dtype=bool)
        self._max_batch = batch

    def _y_dtype(self):
        return np.int32 if self.loss_.target_kind == "class" else self.backend_.dtype

    def _y_tail(self):
        return () if self.loss_.target_kind == "class" else (self.n_outputs_,)

    def _check_fitted(self, what):
        if not self.built:
            raise validation.NotFittedError(f"this model is not fitted yet: call fit before {what}")

    # ------------------------------------------------------------ data prep
    def _prepare_X(self, X, argument="X", one_sample=False, fitting=False):
        """``X`` checked (:func:`fastnet.core.validation.check_X`) and, a DataFrame's, its column names
        against those of the first fit (``feature_names_in_``), as scikit-learn does; with
        ``fitting``, a first fit's names are kept in ``_fit_feature_names`` (made
        ``feature_names_in_`` by fit once every check has passed)."""
        names, fitted = validation.feature_names(X), getattr(self, "feature_names_in_", None)
        validation.check_feature_names(names, fitted, argument)
        a = validation.check_X(X, self.n_features_in_ if self.built else self.input_dim, argument, one_sample,
                      dtype=self.backend_.dtype)
        if fitting:
            self._fit_feature_names = names if fitted is None else fitted
        return a

    def _prepare_y(self, y, argument="y", fitting=False, classes=None):
        """Targets as the loss takes them; class labels become ids through ``classes``
        (default ``classes_``; with ``fitting``, a first fit's labels define them: see ``fit``)."""
        kind = self.loss_.target_kind
        if kind == "class":
            known = self.classes_ if classes is None else classes
            ids, classes = validation.encode_labels(y, self.n_outputs_, known, argument, learn=fitting, hint=validation.REGRESSION_HINT)
            if fitting:
                self._fit_classes = classes  # made classes_ by fit once every check has passed
            return validation.check_class_targets(ids, self.n_outputs_, argument, hint=validation.REGRESSION_HINT)
        return validation.check_real_targets(y, self.n_outputs_, binary=(kind == "binary"), argument=argument,
                                    hint=validation.REGRESSION_HINT if kind == "binary" else "")

    def _to_device(self, X, y=None):
        b = self.backend_
        Xd = b.asarray(X, dtype=b.dtype)
        Yd = None if y is None else b.asarray(y, dtype=self._y_dtype())
        return Xd, Yd

    # --------------------------------------------------------------- passes
    def _forward(self, x, training):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def _infer(self, x, matmul=None):
        """Inference forward with new arrays per call: safe from any number of threads.
        ``matmul``: the GEMM (None: the array module's, as ``predict`` runs)."""
        for layer in self.layers:
            x = layer.infer(x) if matmul is None else layer.infer(x, matmul=matmul)
        return x

    def _backward(self, grad):
        dy = grad
        for layer in reversed(self.layers):
            dy = layer.backward(dy, layer.need_dx)
            if dy is None:
                break

    def _correct(self, out, y, into, buffers=None):
        """Number of correct predictions in a batch, written into the 1-element array ``into``.

        ``buffers`` = ``(pred, hit, hit2)`` scratch arrays of at least ``len(out)`` rows
        (default: the training workspace's)."""
        xp = self.backend_.xp
        m = out.shape[0]
        pred, hit, above = buffers or (self._pred, self._hit, self._hit2)
        hit = hit[:m]
        if self.loss_.target_kind == "class":
            xp.equal(xp.argmax(out, axis=1, out=pred[:m]), y, out=hit)
        else:
            # logit > 0 (p > 0.5) agrees with target >= 0.5
            above = above[:m]
            xp.greater(out, 0, out=above)
            xp.greater_equal(y, 0.5, out=hit)
            xp.equal(hit, above, out=hit)
        hit.reshape(hit.size).sum(axis=0, dtype=np.int64, out=into, keepdims=True)
        return into

    def _accuracy_denominator(self, n):
        return n if self.loss_.target_kind == "class" else n * self.n_outputs_

    # ------------------------------------------------------------- training
    @property
    def n_iter_(self) -> int:
        """Epochs trained so far."""
        return len(self.history_)

    @property
    def loss_curve_(self) -> list[float]:
        """Training loss per epoch, as in scikit-learn."""
        return list(self.history_.history.get("loss", []))

    # ------------------------------------------------------------ parameters
    def attach_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Make ``optimizer`` this model's (``optimizer_``), its state allocated for the parameters.

        Before ``fit``, a model whose input size is known (``input_dim``, ``MLP``'s first
        size) is built here first, with the initial weights ``fit`` would start from; one
        whose input size is not known yet keeps the optimizer and allocates its state when
        it is built (at the first ``fit`` or ``train_on_batch``)."""
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastnet Optimizer (fastnet.Adam(lr=1e-3), ...), got {optimizer!r}")
        if not self.built:
            if self.input_dim is None:
                self.optimizer_ = optimizer  # set up by build()
                return optimizer
            self.build(self.input_dim)
            if self.optimizer_ is optimizer:
                return optimizer
        params = [a for layer in self.layers for _, a in layer.params()]
        grads = [g for layer in self.layers for g in layer.grads()]
        optimizer.setup(params, grads, self.backend_)
        self.optimizer_ = optimizer
        return optimizer

    def parameters(self) -> list[tuple[str, Any]]:
        """``[(name, array)]`` in layer order, e.g. ``("dense_0.W", W)``: the live device arrays.

        Before ``fit``, a model whose input size is known (``input_dim``, ``MLP``'s first
        size) is built here, with the initial weights ``fit`` would start from."""
        if not self.built and self.input_dim is not None:
            self.build(self.input_dim)
        self._check_fitted("parameters")
        return [(f"{layer.name}.{p}", a) for layer in self.layers for p, a in layer.params()]

    def get_weights(self) -> dict[str, np.ndarray]:
        """``{name: numpy array}``: host copies of every parameter."""
        return {name: self.backend_.to_host(a).copy() for name, a in self.parameters()}

    def set_weights(self, weights: Mapping[str, ArrayLike]) -> None:
        """Copy ``{name: array}`` into the parameters (shapes must match)."""
        params = dict(self.parameters())
        missing = set(params) - set(weights)
        if missing:
            raise ValueError(f"weights lack {sorted(missing)}")
        for name, a in params.items():
            w = validation.as_array(f"weights[{name!r}]", weights[name])  # host, list or device (CuPy) array
            if w.shape != a.shape:
                raise ValueError(f"weights[{name!r}] has shape {w.shape}, expected {a.shape}")
            a[...] = self.backend_.asarray(w, dtype=a.dtype)

    def gradients(self, X: ArrayLike, y: ArrayLike) -> tuple[float, dict[str, np.ndarray]]:
        """``(loss, {name: gradient})`` on all of ``(X, y)``, without changing the model.

        Dropout is off (as at inference), so the result is deterministic.
        """
        Xa = self._prepare_X(X)
        ya = self._prepare_y(y)
        validation.check_lengths(Xa, ya)
        if not self.built:
            self.build(Xa.shape[1])
        Xd, Yd = self._to_device(Xa, ya)
        n = len(Xa)
        self._ensure_workspace(n)
        out = self._forward(Xd, False)
        rows, grad = self._loss_rows[:n], self._grad[:n]
        self.loss_(out, Yd, rows, grad)
        loss = float(self.backend_.to_host(rows).sum()) * self.loss_.scale(n, self.n_outputs_)
        self._backward(grad)
        grads = {}
        for layer in self.layers:
            for (p, _), g in zip(layer.params(), layer.grads()):
                grads[f"{layer.name}.{p}"] = self.backend_.to_host(g).copy()
        return loss, grads

    # ------------------------------------------------------------ structure
    def get_config(self) -> dict[str, Any]:
        """The architecture as JSON-able data: ``{"layers": [...], "loss", "dtype", "seed",
        "input_dim", "classes"...}``; :meth:`from_config` makes the model again (without
        the weights: ``get_weights`` / ``set_weights``, or ``save`` / ``fastnet.load``)."""
        return {
            "layers": [layer.get_config() for layer in self.layers],
            "loss": self.loss_.name,
            "dtype": self.dtype,
            **({"precision": self.precision} if self.precision != "float32" else {}),
            "seed": self.seed,
            "input_dim": self.n_features_in_ if self.built else self.input_dim,
            **({"classes": self.classes_.tolist()} if self.classes_ is not None else {}),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], backend: str = "auto", kernels: str = "fused",
                    dtype: str | None = None) -> Network:
        """A new, unbuilt model from :meth:`get_config` output, on ``backend``."""
        layers = [layer_from_config(c) for c in config["layers"]]
        model = cls(layers, loss=config["loss"], backend=backend, dtype=dtype or config["dtype"],
                    seed=config.get("seed"), kernels=kernels, input_dim=config.get("input_dim"),
                    precision=_precision_on(config.get("precision", "float32"), backend))
        model._set_classes(config)
        return model

    def _set_classes(self, config):
        if config.get("classes") is not None:
            self.classes_ = np.asarray(config["classes"])

    def _init_from_config(self, config, backend, kernels):
        """Initialise this object (of any subclass) as :class:`Network` from ``config``."""
        Network.__init__(self, [layer_from_config(c) for c in config["layers"]], loss=config["loss"],
                         backend=backend, dtype=config["dtype"], seed=config.get("seed"), kernels=kernels,
                         input_dim=config.get("input_dim"),
                         precision=_precision_on(config.get("precision", "float32"), backend))
        self._set_classes(config)

    def clone(self, backend: str | None = None, dtype: str | None = None, kernels: str | None = None) -> Network:
        """A new model with the same architecture and weights (no optimizer state)."""
        other = type(self).from_config(
            self.get_config(), backend=backend or self.backend_.name,
            kernels=kernels or self.kernels, dtype=dtype or self.dtype,
        )
        if self.built:
            other.build(self.n_features_in_)
            other.set_weights(self.get_weights())
        return other

    def to(self, backend: str, dtype: str | None = None) -> Network:
        """Move the model (weights and optimizer state) to another backend, in place."""
        weights = self.get_weights() if self.built else None
        opt = self.optimizer_
        state = opt.get_state() if opt is not None else None  # host copies
        new = get_backend(backend, dtype=dtype or self.dtype, seed=_device_seed(self.seed), kernels=self.kernels,
                          precision=_precision_on(self.precision, backend))
        self.backend_ = new
        self.precision = new.precision
        self.backend, self.dtype = new.name, new.dtype.name
        if weights is not None:
            self.build(self.n_features_in_)
            self.set_weights(weights)
            if opt is not None and state is not None:
                self.attach_optimizer(opt)
                opt.set_state(state)
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path``, a NumPy ``.npz`` archive (no pickle); see :func:`fastnet.load`.

        ``path`` must end in ``.npz``: the name says what the file holds.  A path without it
        (``"model"``, ``"model.keras"``, ``"model.h5"``, ``"model.pt"``...) is refused with a
        ``ValueError`` before anything is written; nothing is appended to the name (NumPy's
        ``np.savez`` would add ``.npz`` silently).  ONNX: :meth:`to_onnx`."""
        from fastnet.core.npzfile import save_model

        check_model_path(path)
        save_model(self, path)

    def summary(self, print_fn: Any = None) -> None:
        """Print a table of layers, output widths and parameter counts (as Keras's ``summary``).

        ``print_fn`` is called with each line of the table (default: ``print``, to stdout);
        to get the text: ``lines = []; model.summary(print_fn=lines.append); "\\n".join(lines)``.
        Returns None.  The counts are known before ``fit`` when the input size is
        (``input_dim``, ``MLP``'s first size).  A notebook shows a model itself (the last
        expression of a cell) as this table in HTML."""
        if print_fn is not None and not callable(print_fn):
            raise TypeError(f"print_fn must be callable (print, a list's append...), got {print_fn!r}")
        for line in self._summary().splitlines():
            (print_fn or print)(line)

    def _summary(self) -> Summary:
        """The text of :meth:`summary` (a ``str`` whose echo is the table)."""
        lines = [f"{'layer':<14}{'output':>10}{'params':>12}  activation"]
        total: int | None = 0
        n: int | None = self.n_features_in_ if self.built else self.input_dim
        for i, layer in enumerate(self.layers):
            units = getattr(layer, "units", None)
            width = layer.n_out if self.built else (units if units is not None else n)
            if self.built:
                count = sum(int(np.prod(a.shape)) for _, a in layer.params())
            elif units is None:
                count = 0  # Dropout
            elif n is not None:
                count = n * units + (units if layer.use_bias else 0)
            else:
                count = None  # the input size is known at the first fit
            total = None if total is None or count is None else total + count
            act = getattr(layer, "activation", None) or "-"
            name = layer.name or f"{type(layer).__name__.lower()}_{i}"
            shown = "?" if count is None else f"{count:,}"
            lines.append(f"{name:<14}{width if width is not None else '?'!s:>10}{shown:>12}  {act}")
            n = width
        total_text = f"{total:,}" if total is not None else "? (the input size is known at the first fit)"
        lines.append(f"total parameters: {total_text}  loss: {self.loss_.name}  backend: {self.backend_!r}")
        return Summary("\n".join(lines))

    def _repr_html_(self):
        """A notebook shows a model as its summary table."""
        return f"<p><code>{__import__('html').escape(repr(self))}</code></p>" + self._summary()._repr_html_()

    def _call_options(self) -> list[str]:
        """The keyword arguments of :meth:`__repr__` that every network has (defaults left out)."""
        options = []
        if self.dtype != "float32":
            options.append(f"dtype={self.dtype!r}")
        if self.precision != "float32":
            options.append(f"precision={self.precision!r}")
        if self.seed is not None:
            options.append(f"seed={self.seed!r}")
        if self.kernels != "fused":
            options.append(f"kernels={self.kernels!r}")
        options.append(f"backend={self.backend_.name!r}")  # the one it runs on (an "auto" resolved)
        return options

    def __repr__(self):
        """The constructor call that makes this architecture (``eval``-able with ``from fastnet import *``)."""
        args = ["[" + ", ".join(repr(layer) for layer in self.layers) + "]"]
        if self.loss_.name != default_loss(canonical_activation(self.layers[-1].activation)):
            args.append(f"loss={self.loss_.name!r}")
        if self.input_dim is not None and getattr(self.layers[0], "input_dim", None) is None:
            args.append(f"input_dim={self.input_dim!r}")
        return f"{type(self).__name__}({', '.join(args + self._call_options())})"

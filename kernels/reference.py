"""Reference kernels: the complete kernel table of fastnet, in plain array expressions.

Every kernel fastnet calls is defined here, written against the array module of
its arguments (NumPy, CuPy, or the CuPy contract), so each one is correct on
every backend.  ``cpu.py`` (Numba) and ``cuda.py`` (numba.cuda) define fused
versions of *some* of these names, with the same signatures and side effects;
a backend's kernel set is this table with its module's fused kernels laid over
it (:func:`fastnet.kernels.kernel_set`), so a kernel nobody has fused yet runs
as written here.  Conventions:

* results are written into the arrays passed in (``out`` buffers); nothing is
  returned and nothing is allocated that the caller could keep;
* activations work in place on ``z`` (shape ``(n, k)``, C-contiguous); an
  activation registered with ``saves="input"`` also writes its input ``x = z + b``
  (its backward needs the input, not the output);
* loss kernels write a per-row loss ``loss`` (shape ``(n,)``) and the gradient
  of ``scale * loss.sum()`` with respect to their input into ``grad``;
* optimizer updates change the parameter ``w`` and the state arrays in place,
  element by element, so they work on arrays of any shape (the caller passes
  flat views); their arguments are ``w, g``, the state arrays, then scalars
  from ``lr`` on.

``scale`` and the hyper-parameters are Python floats: under NumPy 2 (NEP 50)
and CuPy they do not promote float32 arrays to float64.

The table
---------
``KERNELS`` maps every kernel name to its reference function and ``KINDS`` to
its kind; ``ACTIVATIONS`` maps activation names to an :class:`Activation`
record, ``OUTPUT_ACTIVATIONS`` the output-only ones (softmax), ``ONNX_OPS`` each
activation's ONNX operator (for ``model.to_onnx``).  Every list of
names elsewhere (what a layer and a loss accept, the CLI's choices, the CUDA
compile signatures, ``fastnet info``) is derived from these.  To add a kernel,
define it below and register it: :func:`kernel` (losses, updates, ...) or
:func:`register_activation` (a forward/backward pair).
"""
from __future__ import annotations

import importlib
import math
from typing import Callable, NamedTuple

import numpy as np

#: Every kernel: name -> reference function, in registration order.
KERNELS: dict[str, Callable] = {}
#: name -> kind: "activation_fwd", "activation_bwd", "output", "loss", "update", "dropout", "augment".
KINDS: dict[str, str] = {}
#: Loss kernel name -> the targets it takes: "class" (integer ids), "binary" (0/1), "real".
LOSS_TARGETS: dict[str, str] = {}


class Activation(NamedTuple):
    """An activation of hidden (and output) layers: a ``<name>_fwd`` / ``<name>_bwd`` pair.

    ``saves``: what the backward kernel reads as its first argument, the forward's
    ``"output"`` (sigmoid: ``a (1 - a)``) or its ``"input"`` (GELU); an activation that
    saves its input has a forward ``fwd(z, b, x)`` that also writes ``x = z + b``.
    ``init``: the default weight initialisation of a layer using it (``"he"`` or
    ``"xavier"``).  What the training doctor asks of it: ``active_above``, the output
    above which a unit counts as active; ``dies``, whether a unit can stay inactive for
    every input (ReLU's dead units); ``saturated``, ``(low, high)``: outputs below
    ``low`` or above ``high`` saturate the unit (its gradient vanishes), or ``None``.
    """

    name: str
    fwd: Callable
    bwd: Callable
    saves: str = "output"
    init: str = "xavier"
    active_above: float = 0.0
    dies: bool = False
    saturated: tuple | None = None


#: Hidden-layer activations: name -> :class:`Activation`.
ACTIVATIONS: dict[str, Activation] = {}
#: Output-only activations (applied by a loss at inference): name -> forward kernel.
OUTPUT_ACTIVATIONS: dict[str, Callable] = {}
#: Every activation's ONNX operator: name -> ``(op_type, attributes)`` (None: no ONNX form).
ONNX_OPS: dict[str, tuple | None] = {}


def kernel(kind, targets=None):
    """Decorator: register a kernel of ``kind`` under its function name (a loss kernel
    says which ``targets`` it takes)."""
    if (kind == "loss") != (targets is not None):
        raise ValueError("a loss kernel, and only a loss kernel, names its targets")

    def register(f):
        KERNELS[f.__name__] = f
        KINDS[f.__name__] = kind
        if targets is not None:
            LOSS_TARGETS[f.__name__] = targets
        return f
    return register


def register_activation(name, fwd, bwd, *, saves="output", init="xavier", active_above=0.0, dies=False,
                        saturated=None, onnx=None):
    """Register ``fwd``/``bwd`` (named ``<name>_fwd``/``<name>_bwd``) as the activation ``name``."""
    if fwd.__name__ != f"{name}_fwd" or bwd.__name__ != f"{name}_bwd":
        raise ValueError(f"activation {name!r} needs kernels named {name}_fwd and {name}_bwd, "
                         f"got {fwd.__name__} and {bwd.__name__}")
    if saves not in ("output", "input"):
        raise ValueError(f"saves must be 'output' or 'input', got {saves!r}")
    kernel("activation_fwd")(fwd)
    kernel("activation_bwd")(bwd)
    ACTIVATIONS[name] = Activation(name, fwd, bwd, saves, init, active_above, dies, saturated)
    ONNX_OPS[name] = onnx


def register_output_activation(name, fwd, *, onnx=None):
    """Register ``fwd(z, b)`` (named ``<name>_fwd``) as an output-only activation."""
    kernel("output")(fwd)
    OUTPUT_ACTIVATIONS[name] = fwd
    ONNX_OPS[name] = onnx


#: Slope of ``leaky_relu`` for negative inputs (fixed, as in Keras' default of
#: 0.01 ... the kernels take no extra argument so every activation shares one
#: signature).
LEAKY_SLOPE = 0.01

def _xp(a):
    """Array module of ``a``: its ``__array_namespace__`` (NumPy 2, the CuPy contract), else
    the package its type comes from (``numpy`` or a GPU one)."""
    if hasattr(type(a), "__array_namespace__"):
        return a.__array_namespace__()
    package = type(a).__module__.partition(".")[0]
    return np if package == "numpy" else importlib.import_module(package)


# --------------------------------------------------------------------------
# bias + activation, forward (in place) and backward (with the bias gradient)
# --------------------------------------------------------------------------
def identity_fwd(z, b):
    """``z += b`` in place."""
    z += b


def sigmoid_fwd(z, b):
    """``z = sigmoid(z + b)`` in place.

    Written as ``0.5 * tanh(0.5 * x) + 0.5``: equal to ``1 / (1 + exp(-x))``
    but never overflows ``exp`` for large negative ``x``.
    """
    xp = _xp(z)
    z += b
    z *= 0.5
    xp.tanh(z, out=z)
    z *= 0.5
    z += 0.5


def tanh_fwd(z, b):
    """``z = tanh(z + b)`` in place."""
    xp = _xp(z)
    z += b
    xp.tanh(z, out=z)


def relu_fwd(z, b):
    """``z = max(z + b, 0)`` in place."""
    xp = _xp(z)
    z += b
    xp.maximum(z, 0, out=z)


def leaky_relu_fwd(z, b):
    """``z = x if x > 0 else 0.01 x`` with ``x = z + b``, in place."""
    xp = _xp(z)
    z += b
    xp.maximum(z, z * LEAKY_SLOPE, out=z)


def _bias_grad(dz, db):
    dz.sum(axis=0, out=db)


def identity_bwd(a, dy, dz, db):
    """``dz = dy``; ``db = dz.sum(0)``.  ``dz`` may be ``dy``."""
    if dz is not dy:
        dz[...] = dy
    _bias_grad(dz, db)


def sigmoid_bwd(a, dy, dz, db):
    """``dz = dy * a * (1 - a)`` where ``a`` is the sigmoid output."""
    dz[...] = dy * (a * (1 - a))
    _bias_grad(dz, db)


def tanh_bwd(a, dy, dz, db):
    """``dz = dy * (1 - a**2)`` where ``a`` is the tanh output."""
    dz[...] = dy * (1 - a * a)
    _bias_grad(dz, db)


def relu_bwd(a, dy, dz, db):
    """``dz = dy where a > 0 else 0``."""
    xp = _xp(a)
    dz[...] = xp.where(a > 0, dy, 0)
    _bias_grad(dz, db)


def leaky_relu_bwd(a, dy, dz, db):
    """``dz = dy where a > 0 else 0.01 dy`` (``a > 0`` exactly when its input was)."""
    xp = _xp(a)
    dz[...] = xp.where(a > 0, dy, dy * LEAKY_SLOPE)
    _bias_grad(dz, db)


register_activation("identity", identity_fwd, identity_bwd, onnx=("Identity", {}))
register_activation("sigmoid", sigmoid_fwd, sigmoid_bwd, active_above=0.5, saturated=(0.01, 0.99),
                    onnx=("Sigmoid", {}))
register_activation("tanh", tanh_fwd, tanh_bwd, saturated=(-0.99, 0.99), onnx=("Tanh", {}))
register_activation("relu", relu_fwd, relu_bwd, init="he", dies=True, onnx=("Relu", {}))
register_activation("leaky_relu", leaky_relu_fwd, leaky_relu_bwd, init="he", dies=True,
                    onnx=("LeakyRelu", {"alpha": LEAKY_SLOPE}))


#: ``sqrt(2 / pi)`` and the cubic coefficient of GELU's tanh approximation.
GELU_C = 0.7978845608028654
GELU_A = 0.044715


def gelu_fwd(z, b, x):
    """GELU, tanh approximation (Hendrycks & Gimpel): ``x = z + b`` is kept in ``x``
    and ``z = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))``, in place."""
    xp = _xp(z)
    xp.add(z, b, out=x)
    z[...] = x * x
    z *= GELU_A * x
    z += x
    z *= GELU_C
    xp.tanh(z, out=z)
    z += 1
    z *= x
    z *= 0.5


def gelu_bwd(x, dy, dz, db):
    """``dz = dy * gelu'(x)`` from the saved input ``x``, with ``t = tanh(u)``,
    ``u = c (x + a x**3)``: ``gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t**2) c (1 + 3 a x**2)``."""
    xp = _xp(x)
    x2 = x * x
    t = xp.tanh(GELU_C * (x + GELU_A * x2 * x))
    d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (GELU_C * (1 + 3 * GELU_A * x2))
    dz[...] = dy * d
    _bias_grad(dz, db)


register_activation("gelu", gelu_fwd, gelu_bwd, saves="input", init="he",
                    onnx=("Gelu", {"approximate": "tanh"}))  # ONNX opset 20


def softmax_fwd(z, b):
    """``z = softmax(z + b)`` row by row, in place (the row maximum subtracted before ``exp``)."""
    xp = _xp(z)
    z += b
    z -= z.max(axis=1, keepdims=True)
    xp.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)


register_output_activation("softmax", softmax_fwd, onnx=("Softmax", {"axis": 1}))


# --------------------------------------------------------------------------
# losses: per-row loss and the gradient of ``scale * loss.sum()``
# --------------------------------------------------------------------------
@kernel("loss", targets="class")
def softmax_xent(logits, y, loss, grad, scale):
    """Softmax cross-entropy forward and backward in one call.

    Parameters
    ----------
    logits : (n, k) array, not modified.
    y : (n,) integer array of class ids in ``[0, k)``.
    loss : (n,) array, out: ``logsumexp(logits_i) - logits_i[y_i]``.
    grad : (n, k) array, out: ``scale * (softmax(logits) - onehot(y))``.
    scale : float, usually ``1 / n``.

    The row maximum is subtracted before ``exp`` so logits of +-1e4 stay finite.
    """
    xp = _xp(logits)
    n = logits.shape[0]
    rows = xp.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    loss[...] = xp.log(s[:, 0]) - shifted[rows, y]
    grad[...] = e / s
    grad[rows, y] -= 1
    grad *= scale


@kernel("loss", targets="binary")
def sigmoid_bce(logits, y, loss, grad, scale):
    """Binary cross-entropy on logits (sigmoid fused in).

    ``loss_i = sum_j max(z, 0) - z * t + log1p(exp(-|z|))``: finite for any ``z``.
    ``grad = scale * (sigmoid(z) - t)``.  ``y`` has the shape of ``logits``
    and holds targets in [0, 1].
    """
    xp = _xp(logits)
    z = logits
    per = xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
    per.sum(axis=1, out=loss)
    grad[...] = (0.5 * xp.tanh(0.5 * z) + 0.5 - y) * scale


@kernel("loss", targets="real")
def squared_error(pred, y, loss, grad, scale):
    """Squared error: ``loss_i = sum_j (p - t)**2``; ``grad = 2 * scale * (p - t)``.

    The caller picks ``scale``: ``1 / (n * k)`` for the mean squared error,
    ``0.5`` for the tutorials' sum of squares ``0.5 * sum((p - t)**2)``.
    """
    d = pred - y
    (d * d).sum(axis=1, out=loss)
    grad[...] = d * (2 * scale)


# --------------------------------------------------------------------------
# optimizer updates, in place, element-wise
# --------------------------------------------------------------------------
@kernel("update")
def sgd_update(w, g, lr, weight_decay):
    """``w -= lr * (g + weight_decay * w)``."""
    w -= lr * (g + weight_decay * w)


@kernel("update")
def momentum_update(w, g, v, lr, mu, weight_decay):
    """Heavy-ball momentum: ``v = mu v - lr (g + wd w)``; ``w += v``."""
    v *= mu
    v -= lr * (g + weight_decay * w)
    w += v


@kernel("update")
def nesterov_update(w, g, v, lr, mu, weight_decay):
    """Nesterov momentum (Sutskever form): ``v = mu v - lr g'``; ``w += mu v - lr g'``."""
    gd = g + weight_decay * w
    v *= mu
    v -= lr * gd
    w += mu * v - lr * gd


def adam_scalars(lr, bc1, bc2):
    """Adam's host scalars for step ``t``: ``lr / bc1`` and ``1 / sqrt(bc2)`` (in double)."""
    return lr / bc1, 1.0 / math.sqrt(bc2)


@kernel("update")
def adam_update(w, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    """Adam with L2 weight decay added to the gradient.

    ``bc1 = 1 - beta1**t`` and ``bc2 = 1 - beta2**t`` are the bias corrections
    for step ``t`` (computed once per step by the caller, on the host).  The update is
    ``w -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)``, PyTorch's arrangement of
    ``lr * (m / bc1) / (sqrt(v / bc2) + eps)``: the bias corrections folded into two host
    scalars (``lr / bc1`` and ``1 / sqrt(bc2)``), one square root and one division per element.
    """
    xp = _xp(w)
    step, scale = adam_scalars(lr, bc1, bc2)
    gd = g + weight_decay * w
    m *= beta1
    m += (1 - beta1) * gd
    v *= beta2
    v += (1 - beta2) * (gd * gd)
    w -= step * m / (xp.sqrt(v) * scale + eps)


@kernel("update")
def adamw_update(w, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    """AdamW: Adam with decoupled weight decay ``w -= lr * wd * w`` (the Adam step arranged
    as in :func:`adam_update`)."""
    xp = _xp(w)
    step, scale = adam_scalars(lr, bc1, bc2)
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    w -= step * m / (xp.sqrt(v) * scale + eps) + (lr * weight_decay) * w


@kernel("update")
def rmsprop_update(w, g, s, lr, rho, eps, weight_decay):
    """RMSprop: ``s = rho s + (1 - rho) g'^2``; ``w -= lr g' / (sqrt(s) + eps)``."""
    xp = _xp(w)
    gd = g + weight_decay * w
    s *= rho
    s += (1 - rho) * (gd * gd)
    w -= lr * gd / (xp.sqrt(s) + eps)


@kernel("update")
def adagrad_update(w, g, s, lr, eps, weight_decay):
    """Adagrad (Duchi et al.): ``s += g'^2``; ``w -= lr g' / (sqrt(s) + eps)``, ``g' = g + wd w``."""
    xp = _xp(w)
    gd = g + weight_decay * w
    s += gd * gd
    w -= lr * gd / (xp.sqrt(s) + eps)


# --------------------------------------------------------------------------
# dropout masks from a counter-based generator (the same bits on every backend)
# --------------------------------------------------------------------------
#: splitmix64's constants (Steele, Lea and Flood, 2014): the increment and the
#: two multipliers of its finalizer.
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_M1 = 0xBF58476D1CE4E5B9
SPLITMIX_M2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1


def dropout_params(rate, counter, dtype, start=0):
    """Host-side scalars shared by the three implementations of :func:`dropout_mask`.

    ``(threshold, scale, unit, base, shift)``: ``rate`` and ``1 / (1 - rate)`` in
    ``dtype``; ``unit = 2**-bits`` and ``shift = 64 - bits`` with ``bits`` the
    mantissa width (24 for float32, 53 for float64); ``base = counter * 2**32 + start + 1``
    modulo 2**64, the position of element 0 of this call in the stream.
    """
    T = np.dtype(dtype).type
    bits = 24 if np.dtype(dtype) == np.float32 else 53
    base = ((int(counter) << 32) + int(start) + 1) & _MASK64
    return T(rate), T(1.0 / (1.0 - rate)), T(2.0**-bits), base, 64 - bits


@kernel("dropout")
def dropout_mask(keep, rate, key, counter, start=0):
    """Fill ``keep`` with ``1 / (1 - rate)`` (kept) or ``0`` (dropped), in place.

    Element ``i`` (row-major) of call ``counter`` draws
    ``h = splitmix64_mix(key + GAMMA * (counter * 2**32 + start + i + 1))`` (all
    modulo 2**64), i.e. the ``counter * 2**32 + start + i + 1``-th output of
    splitmix64 seeded with ``key``: with ``start = s``, ``keep`` is elements
    ``s, s + 1, ...`` of the call's mask (a data-parallel rank's rows of the
    global batch get the masks a one-process run gives them); ``u = (h >> (64 - bits)) * 2**-bits`` is exact in the array
    dtype and the element is kept when ``u >= rate``.  The state is the pair
    ``(key, counter)``: two integers to checkpoint, and the same masks on the
    CPU and the GPU.  Calls must differ in ``counter`` and have fewer than
    2**32 elements.
    """
    xp = _xp(keep)
    threshold, scale, unit, base, shift = dropout_params(rate, counter, keep.dtype, start)
    x = xp.arange(keep.size, dtype=xp.uint64)
    x += xp.uint64(base)
    x *= xp.uint64(SPLITMIX_GAMMA)
    x += xp.uint64(int(key) & _MASK64)
    x ^= x >> xp.uint64(30)
    x *= xp.uint64(SPLITMIX_M1)
    x ^= x >> xp.uint64(27)
    x *= xp.uint64(SPLITMIX_M2)
    x ^= x >> xp.uint64(31)
    u = (x >> xp.uint64(shift)).astype(keep.dtype)
    u *= unit
    keep.reshape(keep.size)[...] = xp.where(u >= threshold, scale, keep.dtype.type(0))


# --------------------------------------------------------------------------
# data augmentation: a per-row affine distortion of flattened images
# --------------------------------------------------------------------------
@kernel("augment")
def affine_warp(x, params, out, h, w):
    """Resample each row of ``x`` (an ``h x w`` image, row-major) through its own affine map.

    Parameters
    ----------
    x : (n, h * w) array, not modified.
    params : (n, 6) array of the dtype of ``x``: row ``i`` holds ``(a, b, tx, c, d, ty)``,
        the map from a pixel of the output image, column ``u`` and row ``v`` (integer pixel
        centres from 0), to the point of the input it reads:
        ``sx = a u + b v + tx`` (column), ``sy = c u + d v + ty`` (row).
        ``(1, 0, 0, 0, 1, 0)`` is the identity; ``fastnet.train.augment.affine_params`` builds
        rows from shifts, angles and scales.
    out : (n, h * w) array, out: ``out[i, v * w + u]`` is the bilinear interpolation of
        image ``i`` at ``(sx, sy)``, where pixels outside the image count as 0.
    h, w : int
        Image height (rows) and width (columns).

    With ``x0 = floor(sx)``, ``fx = sx - x0`` (and the same for rows), the value is
    ``(1-fx)(1-fy) p[y0, x0] + fx (1-fy) p[y0, x0+1] + (1-fx) fy p[y0+1, x0] + fx fy p[y0+1, x0+1]``,
    summed in that order: an integer point reads its pixel exactly.
    """
    xp = _xp(x)
    n = x.shape[0]
    if n == 0:
        return
    dt = x.dtype
    v, u = xp.divmod(xp.arange(h * w), w)
    u = u.astype(dt)[None, :]
    v = v.astype(dt)[None, :]
    a, b, tx, c, d, ty = (params[:, j:j + 1] for j in range(6))
    sx = a * u + b * v + tx
    sy = c * u + d * v + ty
    inside = (sx > -1) & (sx < w) & (sy > -1) & (sy < h)  # False for NaN too
    sx = xp.where(inside, sx, 0)
    sy = xp.where(inside, sy, 0)
    fx0 = xp.floor(sx)
    fy0 = xp.floor(sy)
    fx = sx - fx0
    fy = sy - fy0
    x0 = fx0.astype(xp.int64)
    y0 = fy0.astype(xp.int64)
    flat = x.reshape(n * h * w)
    base = (xp.arange(n, dtype=xp.int64) * (h * w))[:, None]
    total = xp.zeros(sx.shape, dtype=dt)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            ok = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            idx = base + xp.where(ok, yy * w + xx, 0)
            total += xp.where(ok, wx * wy * xp.take(flat, idx), 0)
    out[...] = total

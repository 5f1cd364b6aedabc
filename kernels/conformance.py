"""Conformance of a kernel set to the reference table: every kernel, any backend.

:func:`check` runs each kernel of a :class:`~fastnet.kernels.KernelSet` (or
only its fused ones) on inputs made from the kernel's kind and parameter names,
and compares every array it writes with what the reference kernel writes on
float64 copies of the same inputs.  A backend author runs it on a new module;
the test suite runs it on ``cpu`` (in process) and on ``cuda`` under the
simulator, so an override that is wrong fails whatever kernel it is.

Inputs by kind (``reference.KINDS``): activations get ``z`` of scale 3 and a
bias (the backward's saved array is what the forward saves: output or input);
losses get targets of the loss kernel's ``targets`` (class ids, 0/1 or real
values); optimizer updates get non-negative state (second moments) and the
scalars named in :data:`SCALARS`; ``dropout_mask`` must match bit for bit; the
augmentation warp gets non-square images, random maps near the identity and an
identity row.
Outputs are poisoned with NaN first, so an element a kernel never writes fails.
"""
from __future__ import annotations

import inspect

import numpy as np

from . import reference

#: Values of the scalar parameters of update kernels, by name (others: 0.1).
SCALARS = {"lr": 0.01, "mu": 0.9, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01,
           "bc1": 1 - 0.9**3, "bc2": 1 - 0.999**3, "rho": 0.9}
#: Largest error allowed, relative to the largest reference value (at least 1).
TOLERANCE = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}
SHAPES = ((1, 1), (3, 33), (17, 10))


def _params(name):
    return list(inspect.signature(reference.KERNELS[name]).parameters)


def cases(name, shape, dtype, rng):
    """Host (NumPy) arguments of kernel ``name`` for an ``(n, k)`` shape, and the
    indices of the arguments it writes."""
    kind = reference.KINDS[name]
    n, k = shape
    dt = np.dtype(dtype)
    normal = lambda *s, scale=1.0: (rng.standard_normal(s) * scale).astype(dt)  # noqa: E731
    poison = lambda *s: np.full(s, np.nan, dt)  # noqa: E731
    params = _params(name)
    if kind in ("activation_fwd", "output"):
        args = [normal(n, k, scale=3.0), normal(k)] + ([poison(n, k)] if len(params) == 3 else [])
        return args, list(range(len(args)))
    if kind == "activation_bwd":
        act = reference.ACTIVATIONS[name[: -len("_bwd")]]
        z, b = normal(n, k, scale=3.0), normal(k)
        saved = np.empty_like(z)
        if act.saves == "input":
            reference.KERNELS[act.name + "_fwd"](z.copy(), b, saved)
        else:
            saved[...] = z
            act.fwd(saved, b)
        return [saved, normal(n, k), poison(n, k), poison(k)], [2, 3]
    if kind == "loss":
        targets = reference.LOSS_TARGETS[name]
        if targets == "class":
            y = rng.integers(0, k, n).astype(np.int32)
        elif targets == "binary":
            y = rng.integers(0, 2, (n, k)).astype(dt)
        else:
            y = normal(n, k)
        return [normal(n, k, scale=3.0), y, poison(n), poison(n, k), 1.0 / n], [2, 3]
    if kind == "update":
        size = n * k
        n_state = params.index("lr") - 2
        arrays = [normal(size), normal(size)] + [np.abs(normal(size)) for _ in range(n_state)]
        scalars = [SCALARS.get(p, 0.1) for p in params[params.index("lr"):]]
        return arrays + scalars, list(range(len(arrays)))
    if kind == "dropout":
        return [poison(n, k), 0.3, 12345, 7], [0]
    if kind == "augment":
        # n images of k x (k + 1) pixels (not square: rows and columns must not be
        # swapped), each under its own random map near the identity, some points
        # falling outside the image, plus an exact identity row.
        h, w = k, k + 1
        ang = rng.uniform(-0.6, 0.6, n)
        sc = rng.uniform(0.7, 1.3, n)
        params = np.stack([np.cos(ang) / sc, -np.sin(ang) / sc, rng.uniform(-2, 2, n),
                           np.sin(ang) / sc, np.cos(ang) / sc, rng.uniform(-2, 2, n)], axis=1)
        params[0] = (1, 0, 0, 0, 1, 0)
        return [rng.random((n, h * w)).astype(dt), params.astype(dt), poison(n, h * w), h, w], [2]
    raise ValueError(f"kernel {name!r} has an unknown kind {kind!r}")


def _copy(a, to_device):
    return to_device(a.copy()) if isinstance(a, np.ndarray) else a


def check(kernels, to_device=np.asarray, to_host=np.asarray, names=None, dtypes=(np.float32, np.float64),
          seed=0, alias=True):
    """Run ``names`` (default: the fused kernels of ``kernels``) against the reference.

    ``to_device`` / ``to_host`` move a NumPy array to the backend and back.  With
    ``alias`` an activation backward also runs with ``dz`` being ``dy`` (the layers
    call it that way).  Returns a list of failures, ``(kernel, dtype, shape, message)``;
    empty when every kernel conforms.
    """
    rng = np.random.default_rng(seed)
    failures = []
    for name in names if names is not None else kernels.fused:
        fn = getattr(kernels, name)
        for dtype in dtypes:
            tol = TOLERANCE[np.dtype(dtype)]
            for shape in SHAPES:
                args, outs = cases(name, shape, dtype, rng)
                want = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                        for a in args]
                if reference.KINDS[name] == "dropout":
                    want = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
                reference.KERNELS[name](*want)
                variants = [False, True] if alias and reference.KINDS[name] == "activation_bwd" else [False]
                for aliased in variants:
                    dev = [_copy(a, to_device) for a in args]
                    if aliased:
                        dev[2] = dev[1]  # dz is dy
                    fn(*dev)
                    for i in outs:
                        j = 1 if aliased and i == 2 else i
                        got = np.asarray(to_host(dev[j]), dtype=np.float64)
                        ref = np.asarray(want[i], dtype=np.float64)
                        if reference.KINDS[name] == "dropout":
                            ok = np.array_equal(got, ref)
                            err = "bits differ"
                        else:
                            scale = max(1.0, float(np.nanmax(np.abs(ref))) if ref.size else 1.0)
                            with np.errstate(invalid="ignore"):
                                diff = np.abs(got - ref)
                            err = float(np.max(diff)) / scale if diff.size else 0.0
                            ok = bool(np.all(np.isfinite(got) == np.isfinite(ref))) and err <= tol
                        if not ok:
                            where = f"argument {i} ({_params(name)[i]})" + (" with dz is dy" if aliased else "")
                            failures.append((name, np.dtype(dtype).name, shape,
                                             f"{where}: error {err} > {tol}" if err != "bits differ" else where))
    return failures

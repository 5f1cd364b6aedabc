"""Finite-difference check of a model's analytic gradients."""
from __future__ import annotations

import numpy as np

from fastnet.backends.devices import KERNEL_CHOICES
from fastnet.core.validation import check_choice


def gradcheck(model, X, y, eps=1e-5, max_checks=None, seed=0, kernels="reference"):
    """Largest relative error between ``model.gradients`` and central differences.

    The check runs on a float64 copy of ``model`` (the model itself is not
    changed).  For each parameter element ``w``::

        numeric = (L(w + eps) - L(w - eps)) / (2 eps)
        noise   = 4 * machine_eps * max(|L(w + eps)|, |L(w - eps)|) / (2 eps)
        error   = max(|analytic - numeric| - noise, 0) / max(|analytic| + |numeric|, 1e-8)

    ``noise`` bounds the rounding error of the difference quotient: without it
    an exactly-zero gradient (a dead ReLU path) would get a large relative
    error from a numeric estimate of +-1e-11 that is pure rounding.

    Parameters
    ----------
    model : Sequential
    X, y : arrays
        A small batch (every element costs two forward passes).
    eps : float
    max_checks : int, optional
        Check at most this many randomly chosen elements per parameter.
    kernels : {"reference", "fused"}
        The kernels of the float64 copy: the table's array expressions (default), or
        the backend's fused kernels (their float64 versions), to check those.

    Returns
    -------
    float
        The largest error; below ~1e-6 means the gradients are right.
    """
    check_choice("kernels", kernels, KERNEL_CHOICES)
    m = model.clone(dtype="float64", kernels=kernels)
    if not m.built:
        m.build(np.asarray(X).reshape(len(X), -1).shape[1])
    _, analytic = m.gradients(X, y)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for name, param in m.parameters():
        flat = param.reshape(-1)
        grad = analytic[name].reshape(-1)
        idx = np.arange(flat.size)
        if max_checks is not None and flat.size > max_checks:
            idx = rng.choice(flat.size, max_checks, replace=False)
        for i in idx:
            old = float(flat[i])
            flat[i] = old + eps
            plus = m.gradients(X, y)[0]
            flat[i] = old - eps
            minus = m.gradients(X, y)[0]
            flat[i] = old
            numeric = (plus - minus) / (2 * eps)
            noise = 4 * np.finfo(np.float64).eps * max(abs(plus), abs(minus)) / (2 * eps)
            err = max(abs(grad[i] - numeric) - noise, 0.0) / max(abs(grad[i]) + abs(numeric), 1e-8)
            worst = max(worst, err)
    return worst

"""On-the-fly data augmentation of image rows: ``fit(..., augment=Augment(...))``.

Each training step, after the batch is gathered, every image of the batch is
written into a preallocated buffer under its own small random affine distortion
(shift, rotation, scale; bilinear interpolation, zero outside the image) by the
table's ``affine_warp`` kernel (NumPy reference, fused ``@njit`` on the CPU,
``@cuda.jit`` on CUDA).  The distortions are drawn on the host from the
backend's augmentation stream (``Backend.augment_rng``, seeded by the model's
seed), once per epoch for all its rows, turned into one ``(a, b, tx, c, d, ty)``
row of the kernel's parameters per image (:func:`affine_params`) and copied to
the device once per epoch: the same seed gives the same images on every
backend.  Validation data and inference (``predict``, ``evaluate``) are never
augmented.
"""
from __future__ import annotations

import math

import numpy as np

from fastnet.core import validation

__all__ = ["Augment", "affine_params"]


def affine_params(dx, dy, angle, scale, image_shape):
    """Rows ``(a, b, tx, c, d, ty)`` of the ``affine_warp`` kernel, float64, shape ``(n, 6)``.

    The output image is the input shifted by ``dx`` columns (right) and ``dy`` rows
    (down), turned by ``angle`` degrees counter-clockwise as displayed (rows going
    down), and scaled by ``scale``, about the image centre ``((w - 1) / 2, (h - 1) / 2)``
    in pixel coordinates (pixel centres at integers from 0).  The kernel needs the
    inverse map, from an output pixel ``p`` to the input point it reads:
    ``R(-angle) (p - centre - shift) / scale + centre``.  Arguments are scalars or
    arrays of one length.
    """
    h, w = image_shape
    dx, dy, angle, scale = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (dx, dy, angle, scale))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    t = np.deg2rad(angle)
    cos, sin = np.cos(t) / scale, np.sin(t) / scale
    a, b, c, d = cos, -sin, sin, cos
    ox, oy = cx + dx, cy + dy  # where the centre lands
    tx = cx - a * ox - b * oy
    ty = cy - c * ox - d * oy
    return np.stack(np.broadcast_arrays(a, b, tx, c, d, ty), axis=1)


class Augment:
    """Random small affine distortions of the training images, drawn per image and step.

    Parameters
    ----------
    shift : float
        Largest shift in pixels, along each axis: uniform in ``[-shift, shift]``
        (sub-pixel shifts are interpolated).  Default 0.
    rotate : float
        Largest rotation in degrees, uniform in ``[-rotate, rotate]``; at most 180.
        Default 0.
    scale : float
        Largest relative zoom: the factor is uniform in ``[1 - scale, 1 + scale]``;
        in ``[0, 1)``.  Default 0.
    image_shape : (int, int), optional
        ``(height, width)`` of an image row.  Default: a square of the feature count
        (784 features: 28 x 28); a feature count that is not a square needs it.

    Notes
    -----
    With every range 0 each image is copied exactly: training is the same as
    without augmentation.  Example::

        model.fit(X, y, epochs=30, augment=fastnet.Augment(shift=2, rotate=10, scale=0.1))
    """

    def __init__(self, shift=0.0, rotate=0.0, scale=0.0, image_shape=None):
        self.shift = validation.check_real("Augment shift", shift, low=0)
        self.rotate = validation.check_real("Augment rotate", rotate, low=0, high=180)
        self.scale = validation.check_real("Augment scale", scale, low=0, high=1, high_open=True)
        if image_shape is not None:
            if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2:
                raise ValueError(f"Augment image_shape must be a pair (height, width), got {image_shape!r}")
            image_shape = tuple(validation.check_int(f"Augment image_shape[{i}]", v) for i, v in enumerate(image_shape))
        self.image_shape = image_shape

    def __repr__(self):
        return (f"Augment(shift={self.shift:g}, rotate={self.rotate:g}, scale={self.scale:g}, "
                f"image_shape={self.image_shape!r})")

    def get_config(self):
        return dict(shift=self.shift, rotate=self.rotate, scale=self.scale, image_shape=self.image_shape)

    def shape_for(self, n_features):
        """``(height, width)`` of rows of ``n_features``; ``ValueError`` naming the argument if none fits."""
        if self.image_shape is not None:
            h, w = self.image_shape
            if h * w != n_features:
                raise ValueError(f"augment: image_shape={self.image_shape!r} has {h * w} pixels but the "
                                 f"data has {n_features} features per row")
            return self.image_shape
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ValueError(f"augment: {n_features} features per row are not a square image: give "
                             f"Augment(..., image_shape=(height, width))")
        return side, side

    def draw(self, rng, n, image_shape):
        """Kernel parameters ``(n, 6)`` (float64) of ``n`` random distortions from ``rng``.

        Each image draws its own shift (x, y), angle and scale, in that order, from
        one ``rng.uniform(-1, 1, (n, 4))`` call (drawn whatever the ranges, so a range
        of 0 leaves the stream where it would be otherwise)."""
        r = rng.uniform(-1.0, 1.0, (n, 4))
        return affine_params(r[:, 0] * self.shift, r[:, 1] * self.shift, r[:, 2] * self.rotate,
                             1.0 + r[:, 3] * self.scale, image_shape)

    def _start(self, model, n, batch):
        """The run of one ``fit``: buffers for ``n`` training rows in batches of ``batch``."""
        return _AugmentRun(self, model, n, batch)


class _AugmentRun:
    """One fit's augmentation: the output buffer (allocated once) and the epoch's parameters."""

    def __init__(self, augment, model, n, batch):
        self.augment = augment
        self.backend = model.backend_
        self.n = n
        self.shape = augment.shape_for(model.n_features_in_)
        self.out = self.backend.xp.empty((batch, model.n_features_in_), dtype=self.backend.dtype)
        self.params = None

    def new_epoch(self):
        """Draw this epoch's distortions, one per training row, and copy them to the device once."""
        b = self.backend
        self.params = b.asarray(self.augment.draw(b.augment_rng, self.n, self.shape), dtype=b.dtype)

    def apply(self, xb, start, m):
        """The batch ``xb`` (rows ``start:start + m`` of the epoch) distorted, in the buffer."""
        out = self.out[:m]
        self.backend.kernel_set.affine_warp(xb, self.params[start:start + m], out, *self.shape)
        return out

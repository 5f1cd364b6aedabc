"""``fastnet.Augment``'s draws and the rows each batch is warped with, where the mutation
audit found bugs the other tests let through (issue 27, item 3).

Oracles: the documented draw (one ``rng.uniform(-1, 1, (n, 4))``; columns shift x, shift y,
angle, scale; zoom ``1 + r * scale``), the inverse map worked by hand for a pure shift and
a pure zoom, and integer shifts checked against NumPy slicing.
"""
import numpy as np

import fastnet
from fastnet.train.augment import Augment


def test_a_drawn_shift_reads_column_0_for_x_and_column_1_for_y():
    """A pure shift by (dx, dy) reads output pixel (u, v) from input (u - dx, v - dy): the
    kernel's row is (1, 0, -dx, 0, 1, -dy), with dx from the draw's column 0 and dy from
    column 1 (the order the docstring gives)."""
    r = np.random.default_rng(7).uniform(-1.0, 1.0, (20, 4))
    p = Augment(shift=3).draw(np.random.default_rng(7), 20, (5, 9))
    np.testing.assert_allclose(p[:, [0, 1, 3, 4]], np.tile([1.0, 0.0, 0.0, 1.0], (20, 1)), atol=1e-15)
    np.testing.assert_allclose(p[:, 2], -3 * r[:, 0], rtol=1e-12)
    np.testing.assert_allclose(p[:, 5], -3 * r[:, 1], rtol=1e-12)


def test_a_drawn_zoom_is_one_plus_the_scale_column_times_the_range():
    """A pure zoom by s about the centre c reads output u from (u - c) / s + c: a = d = 1 / s
    and tx = c - c / s, with s = 1 + 0.2 * r[:, 3] (documented: uniform in [1 - scale, 1 + scale])."""
    r = np.random.default_rng(11).uniform(-1.0, 1.0, (30, 4))
    p = Augment(scale=0.2).draw(np.random.default_rng(11), 30, (7, 5))
    s = 1.0 + 0.2 * r[:, 3]
    np.testing.assert_allclose(p[:, 0], 1 / s, rtol=1e-12)
    np.testing.assert_allclose(p[:, 4], 1 / s, rtol=1e-12)
    cx, cy = (5 - 1) / 2, (7 - 1) / 2
    np.testing.assert_allclose(p[:, 2], cx - cx / s, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p[:, 5], cy - cy / s, rtol=1e-12, atol=1e-15)


def _shift_right(img, k):
    """``img`` (h, w) moved k whole columns right, zeros coming in (NumPy slicing)."""
    out = np.zeros_like(img)
    out[:, k:] = img[:, :img.shape[1] - k]
    return out


def test_a_batch_is_warped_with_its_own_rows_parameters():
    """The epoch's parameters are one row per training row; the batch of rows start..start+m
    must use rows start..start+m of them.  Row i's distortion is set here to a shift of i
    pixels to the right, so batch rows 3 and 4 come out shifted by 3 and 4."""
    side, n = 6, 8
    model = fastnet.MLP([side * side, 4, 2], backend="cpu", seed=0).build(side * side)
    run = Augment(shift=1)._start(model, n, 4)
    run.new_epoch()
    b = model.backend_
    rows = np.array([[1.0, 0.0, -i, 0.0, 1.0, 0.0] for i in range(n)])  # inverse of a shift by i
    run.params = b.asarray(rows, dtype=b.dtype)
    images = np.random.default_rng(0).random((2, side, side)).astype(np.float32)
    out = np.asarray(run.apply(b.asarray(images.reshape(2, -1)), 3, 2)).reshape(2, side, side)
    np.testing.assert_allclose(out[0], _shift_right(images[0], 3), atol=1e-6)
    np.testing.assert_allclose(out[1], _shift_right(images[1], 4), atol=1e-6)

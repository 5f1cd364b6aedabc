"""On-the-fly augmentation: the ``affine_warp`` kernel (reference and fused CPU) on
hand-worked cases, ``fastnet.Augment`` and its errors, and ``fit(augment=...)``.

The hand-worked cases are what a careful person gets wrong: rows and columns
swapped (non-square images), rotation about the wrong centre (an even side, whose
centre falls between pixels), the last row or column dropped or read past the
border, one row's parameters used for every row, validation data or inference
augmented.
"""
import numpy as np
import pytest

import fastnet
from fastnet.train.augment import Augment, affine_params
from fastnet.kernels import conformance, cpu, kernel_set, reference

KERNELS = {"reference": reference.affine_warp, "cpu": cpu.affine_warp}
DTYPES = [np.float32, np.float64]


def warp(kernel, images, params, dtype=np.float64):
    """``images`` (n, h, w) through ``params`` (n, 6) with ``kernel``; out (n, h, w)."""
    images = np.asarray(images, dtype=dtype)
    n, h, w = images.shape
    out = np.full((n, h * w), np.nan, dtype)
    KERNELS[kernel](images.reshape(n, h * w), np.asarray(params, dtype=dtype).reshape(n, 6), out, h, w)
    return out.reshape(n, h, w)


def one(dx=0.0, dy=0.0, angle=0.0, scale=1.0, shape=(3, 5)):
    return affine_params(dx, dy, angle, scale, shape)


@pytest.fixture(params=sorted(KERNELS))
def kernel(request):
    return request.param


# --------------------------------------------------------------------------
# the kernel, by hand
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_returns_every_image_exactly(kernel, dtype):
    rng = np.random.default_rng(0)
    images = (rng.standard_normal((4, 7, 5)) * 1e3).astype(dtype)
    params = np.tile(one(shape=(7, 5)), (4, 1))
    assert np.array_equal(warp(kernel, images, params, dtype), images)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_one_pixel_shift_right_moves_a_pixel_and_fills_zero(kernel, dtype):
    img = np.zeros((1, 3, 5))
    img[0, 1, 2] = 7.0   # row 1, column 2
    img[0, 0, 4] = 5.0   # the last column: shifted out
    got = warp(kernel, img, one(dx=1, shape=(3, 5)), dtype)
    want = np.zeros((1, 3, 5))
    want[0, 1, 3] = 7.0  # one column to the right, same row
    np.testing.assert_array_equal(got, want)


def test_a_one_pixel_shift_down_moves_rows_not_columns(kernel):
    img = np.arange(15, dtype=float).reshape(1, 3, 5) + 1
    got = warp(kernel, img, one(dy=1, shape=(3, 5)))
    want = np.zeros_like(img)
    want[0, 1:] = img[0, :-1]  # row 0 -> row 1, row 1 -> row 2; row 0 is outside: 0
    np.testing.assert_array_equal(got, want)
    got = warp(kernel, img, one(dx=-1, shape=(3, 5)))
    want = np.zeros_like(img)
    want[0, :, :-1] = img[0, :, 1:]  # left by one; the last column reads outside: 0
    np.testing.assert_array_equal(got, want)


def test_a_half_pixel_shift_interpolates_with_zero_outside(kernel):
    img = np.array([[[2.0, 4.0, 8.0]]])  # one row of three pixels
    got = warp(kernel, img, one(dx=0.5, shape=(1, 3)))
    np.testing.assert_allclose(got, [[[1.0, 3.0, 6.0]]], rtol=0, atol=1e-12)
    got = warp(kernel, img, one(dy=0.25, shape=(1, 3)))  # a quarter row down: 3/4 of the row stays
    np.testing.assert_allclose(got, [[[1.5, 3.0, 6.0]]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("side", [3, 4])
def test_a_quarter_turn_is_numpy_rot90_about_the_centre(kernel, side):
    # side 4: the centre (1.5, 1.5) lies between pixels; a turn about pixel (2, 2) or (1, 1)
    # would move the pattern by one and lose a row to the border
    img = np.arange(side * side, dtype=float).reshape(1, side, side) + 1
    got = warp(kernel, img, one(angle=90, shape=(side, side)))
    # counter-clockwise as displayed (row 0 at the top): np.rot90
    np.testing.assert_allclose(got[0], np.rot90(img[0]), rtol=0, atol=1e-9)
    got = warp(kernel, img, one(angle=-90, shape=(side, side)))
    np.testing.assert_allclose(got[0], np.rot90(img[0], -1), rtol=0, atol=1e-9)
    got = warp(kernel, img, one(angle=180, shape=(side, side)))
    np.testing.assert_allclose(got[0], img[0, ::-1, ::-1], rtol=0, atol=1e-9)


def test_a_quarter_turn_of_a_known_pixel():
    img = np.zeros((1, 5, 5))
    img[0, 0, 2] = 1.0  # top middle
    for kernel in KERNELS:
        got = warp(kernel, img, one(angle=90, shape=(5, 5)))
        want = np.zeros((1, 5, 5))
        want[0, 2, 0] = 1.0  # turned counter-clockwise: left middle
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_scaling_about_the_centre_keeps_a_ramp_linear(kernel):
    # value = column index; zooming by 2 about column 2 maps column u to (u - 2) / 2 + 2
    img = np.tile(np.arange(5, dtype=float), (5, 1))[None]
    got = warp(kernel, img, one(scale=2.0, shape=(5, 5)))
    np.testing.assert_allclose(got[0], np.tile((np.arange(5) - 2) / 2 + 2, (5, 1)), rtol=0, atol=1e-12)
    # shrinking by 2: pixel (v, u) reads ((v - 2) * 2 + 2, (u - 2) * 2 + 2): rows and columns 0
    # and 4 read outside (0); column 1 reads column 0 (value 0), column 3 column 4
    got = warp(kernel, img, one(scale=0.5, shape=(5, 5)))
    want = np.zeros((5, 5))
    want[1:4] = [0, 0, 2, 4, 0]
    np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-12)


def test_every_row_has_its_own_parameters(kernel):
    img = np.zeros((3, 3, 5))
    img[:, 1, 2] = 1.0
    params = np.concatenate([one(shape=(3, 5)), one(dx=1, shape=(3, 5)), one(dy=-1, shape=(3, 5))])
    got = warp(kernel, img, params)
    assert got[0, 1, 2] == 1 and got[1, 1, 3] == 1 and got[2, 0, 2] == 1
    assert got.sum() == 3


def test_far_outside_and_nan_parameters_give_zeros(kernel):
    img = np.ones((2, 4, 4))
    params = np.concatenate([one(dx=10, shape=(4, 4)), np.full((1, 6), np.nan)])
    np.testing.assert_array_equal(warp(kernel, img, params), np.zeros((2, 4, 4)))


def test_fused_cpu_conforms_to_the_reference():
    assert conformance.check(kernel_set("cpu"), names=["affine_warp"]) == []
    assert reference.KINDS["affine_warp"] == "augment" and "affine_warp" in kernel_set("cpu").fused


def test_conformance_catches_a_transposed_warp():
    import types

    def affine_warp(x, params, out, h, w):  # rows and columns swapped
        reference.affine_warp(x, params, out, w, h)

    fake = types.ModuleType("fake_fused")
    fake.affine_warp = affine_warp
    from fastnet.kernels import KernelSet

    assert conformance.check(KernelSet(fake), names=["affine_warp"]) != []


# --------------------------------------------------------------------------
# Augment
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(shift=-1), ValueError, r"Augment shift must be >= 0, got -1"),
    (dict(rotate=200), ValueError, r"Augment rotate must be in \[0, 180\], got 200"),
    (dict(scale=1.0), ValueError, r"Augment scale must be in \[0, 1\), got 1.0"),
    (dict(scale=-0.1), ValueError, r"Augment scale must be in \[0, 1\), got -0.1"),
    (dict(shift="2"), TypeError, r"Augment shift must be a real number, got '2'"),
    (dict(shift=float("nan")), TypeError, r"Augment shift must be a real number"),
    (dict(image_shape=28), ValueError, r"Augment image_shape must be a pair \(height, width\), got 28"),
    (dict(image_shape=(28, 0)), ValueError, r"Augment image_shape\[1\] must be a positive integer, got 0"),
])
def test_bad_arguments_name_themselves(kwargs, error, message):
    with pytest.raises(error, match=message):
        Augment(**kwargs)


def test_fit_refuses_rows_that_are_not_images_before_changing_anything():
    rng = np.random.default_rng(0)
    X = rng.random((40, 785)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = fastnet.MLP([785, 4, 3], seed=0)
    with pytest.raises(ValueError, match=r"785 features per row are not a square image: give "
                                         r"Augment\(\.\.\., image_shape=\(height, width\)\)"):
        model.fit(X, y, epochs=1, augment=Augment(shift=1))
    assert not model.built and model.n_iter_ == 0
    with pytest.raises(ValueError, match=r"image_shape=\(28, 28\) has 784 pixels but the data has 785 features"):
        model.fit(X, y, epochs=1, augment=Augment(shift=1, image_shape=(28, 28)))
    with pytest.raises(TypeError, match=r"augment must be a fastnet.Augment, got \{'shift': 1\}"):
        model.fit(X, y, epochs=1, augment={"shift": 1})
    model.fit(X, y, epochs=1, augment=Augment(shift=1, image_shape=(5, 157)))  # a non-square image
    assert model.n_iter_ == 1


def test_draws_differ_per_row_and_repeat_with_the_seed():
    aug = Augment(shift=2, rotate=10, scale=0.1)
    p = aug.draw(np.random.default_rng(3), 50, (28, 28))
    assert p.shape == (50, 6) and len(np.unique(p[:, 2])) == 50
    np.testing.assert_array_equal(p, aug.draw(np.random.default_rng(3), 50, (28, 28)))
    # every parameter stays in range: |angle| <= 10 degrees, scale in [0.9, 1.1]
    det = p[:, 0] * p[:, 4] - p[:, 1] * p[:, 3]  # 1 / scale**2
    assert np.all((det >= 1 / 1.1**2 - 1e-12) & (det <= 1 / 0.9**2 + 1e-12))
    angle = np.degrees(np.arctan2(p[:, 3], p[:, 0]))
    assert np.all(np.abs(angle) <= 10 + 1e-9) and np.abs(angle).max() > 5
    # all ranges 0: the identity for every row
    np.testing.assert_allclose(Augment().draw(np.random.default_rng(3), 5, (4, 4)), np.tile(one(shape=(4, 4)), (5, 1)),
                               atol=1e-15)


# --------------------------------------------------------------------------
# fit(augment=...)
# --------------------------------------------------------------------------
def _images(n=96, side=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, side * side)).astype(np.float32)
    y = rng.integers(0, 3, n)
    return X, y


def _weights(model):
    return list(model.get_weights().values())


def _fit(augment, seed=0, **kw):
    X, y = _images()
    model = fastnet.MLP([36, 16, 3], dropout=0.2, seed=seed)
    history = model.fit(X, y, epochs=3, batch_size=32, lr=1e-2, augment=augment, **kw)
    return model, history


def test_all_ranges_zero_trains_exactly_as_without_augmentation():
    plain, h0 = _fit(None)
    zero, h1 = _fit(Augment(shift=0, rotate=0, scale=0))
    assert len(_weights(plain)) == 4
    for a, b in zip(_weights(plain), _weights(zero)):
        np.testing.assert_array_equal(a, b)
    assert h0["loss"] == h1["loss"]


def test_augmented_training_is_deterministic_given_the_seed_and_differs_from_plain():
    aug = Augment(shift=1.5, rotate=15, scale=0.1)
    a, _ = _fit(aug)
    b, _ = _fit(aug)
    c, _ = _fit(aug, seed=1)
    plain, _ = _fit(None)
    for x, y in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(_weights(a)[0], _weights(c)[0])
    assert not np.array_equal(_weights(a)[0], _weights(plain)[0])


def test_augmentation_touches_training_rows_only_and_never_validation_or_inference(monkeypatch):
    X, y = _images(120)
    Xv, yv = _images(30, seed=1)
    model = fastnet.MLP([36, 16, 3], seed=0)
    model.build(36)
    seen, drawn = [], []
    real = model.backend_.kernel_set.affine_warp

    def spy(x, params, out, h, w):
        seen.append(np.array(x))
        drawn.append(np.array(params))
        real(x, params, out, h, w)
        assert not np.array_equal(out, x)  # the rows the model trains on are distorted ones

    monkeypatch.setattr(model.backend_.kernel_set, "affine_warp", spy)  # a spy: calls the real kernel
    history = model.fit(X, y, epochs=2, batch_size=32, validation_data=(Xv, yv),
                        augment=Augment(shift=2, rotate=20))
    rows = np.concatenate(seen)
    assert len(rows) == 2 * len(X)  # every training row once per epoch, nothing else
    train = {r.tobytes() for r in X}
    assert all(r.tobytes() in train for r in rows)
    assert not {r.tobytes() for r in Xv} & {r.tobytes() for r in rows}
    # a distortion of its own for every row of every step and epoch (not one per batch
    # position, not the same each epoch)
    params = np.concatenate(drawn)
    assert params.shape == (240, 6) and len(np.unique(params[:, 2])) == 240
    n_calls = len(seen)
    # the validation figures are those of the plain validation images
    result = model.evaluate(Xv, yv, return_dict=True)
    assert history["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-6)
    assert history["val_accuracy"][-1] == result["accuracy"]
    # inference never augments: predict is the plain network on the plain rows
    W = _weights(model)
    assert [w.shape for w in W] == [(36, 16), (16,), (16, 3), (3,)]
    hidden = np.maximum(X @ W[0] + W[1], 0)
    logits = hidden @ W[2] + W[3]
    np.testing.assert_array_equal(model.predict(X), logits.argmax(1))
    model.predict_proba(Xv)
    assert len(seen) == n_calls
    # the run's augmentation lived in the run (fastnet.train.fit._Run), not on the model
    assert not [k for k, v in vars(model).items() if "augment" in k.lower() or type(v).__name__.startswith("_Augment")]


def test_validation_split_rows_are_not_augmented_and_data_is_left_as_given(monkeypatch):
    X, y = _images(100)
    keep = X.copy()
    model = fastnet.MLP([36, 8, 3], seed=0)
    model.build(36)
    seen = []
    real = model.backend_.kernel_set.affine_warp

    def spy(x, params, out, h, w):
        seen.append(np.array(x))
        real(x, params, out, h, w)

    monkeypatch.setattr(model.backend_.kernel_set, "affine_warp", spy)  # a spy: calls the real kernel
    # opt-out kept: shuffle=False, as the rows' order is what this test checks
    model.fit(X, y, epochs=1, batch_size=16, validation_split=0.2, shuffle=False,
              augment=Augment(shift=2))
    rows = np.concatenate(seen)
    np.testing.assert_array_equal(rows, X[:80])  # unshuffled: the first 80 rows, in order; the last 20 held out
    np.testing.assert_array_equal(X, keep)  # the caller's data (and the device copy) untouched


def test_rng_state_holds_the_augmentation_stream():
    a, _ = _fit(Augment(shift=1))
    state = a.backend_.get_rng_state()
    first = a.backend_.augment_rng.random(3)
    a.backend_.set_rng_state(state)
    np.testing.assert_array_equal(a.backend_.augment_rng.random(3), first)

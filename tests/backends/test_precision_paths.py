"""The precision paths, where the mutation audit found bugs the other tests let through
(issue 27, item 3): fp16's loss scaler (its documented defaults, a large finite gradient
sum) and the bf16 GEMM of CPU training steps (NaN payloads, ties, two operands of one
shape).

Oracles: fastnet.backends.precision's docstring (2**16 at first, doubling after 2000 good steps,
halved on overflow: PyTorch's GradScaler defaults), float64 sums computed here, and
``ml_dtypes.bfloat16`` (an independent float32 -> bfloat16 conversion, round to nearest
even) for the rounding.
"""
import numpy as np
import pytest

from fastnet.backends import gemm_onednn
from fastnet.backends import precision as P

needs_onednn = pytest.mark.skipif(not gemm_onednn.available(), reason="oneDNN is not installed")


def test_the_loss_scaler_s_defaults_are_the_documented_ones():
    s = P.LossScaler()
    assert (s.scale, s.growth_interval, s.growth, s.backoff) == (65536.0, 2000, 2.0, 0.5)
    assert s.get_state() == {"scale": 65536.0, "good_steps": 0, "skipped": 0}


def test_a_large_finite_gradient_is_not_an_overflow():
    """Every gradient finite, but their float32 sum would overflow (4 x 3e38 > 3.4e38): the
    step goes on, divided by the scale; the check is "is every gradient finite"."""
    s = P.LossScaler(scale=2.0)
    g = np.full(4, 3e38, np.float32)
    assert s.unscale(np, g)
    np.testing.assert_array_equal(g, np.full(4, 1.5e38, np.float32))
    assert s.get_state() == {"scale": 2.0, "good_steps": 1, "skipped": 0}
    g[2] = -np.inf
    assert not s.unscale(np, g) and s.get_state() == {"scale": 1.0, "good_steps": 0, "skipped": 1}


def _bf16(x):
    """float32 -> bfloat16 -> float32 by ml_dtypes (round to nearest even)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with np.errstate(invalid="ignore"):  # (NaNs cast)
        return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


@needs_onednn
def test_the_rounding_kernel_matches_ml_dtypes_on_ties_and_keeps_every_nan_a_nan():
    one = 0x3F800000
    bits = np.array([one + 0x8000,            # 1 + 2**-8: a tie, to even (1.0)
                     one + 0x18000,           # 1 + 3 * 2**-8: a tie, to even (1 + 2**-6)
                     one + 0x7FFF, one + 0x8001,
                     0xBF808000,              # -(1 + 2**-8): a tie, to even (-1.0)
                     0x7F800001,              # a NaN whose payload is all in the low 16 bits
                     0xFF800100, 0x7FC00000, 0x7F800000, 0x00000001], np.uint32)
    got = np.empty(bits.size, np.uint16)
    gemm_onednn._round_bf16_kernel()(bits, got)
    values = bits.view(np.float32)
    up = (got.astype(np.uint32) << np.uint32(16)).view(np.float32)
    want = _bf16(values)
    nan = np.isnan(values)
    assert np.isnan(up[nan]).all()
    np.testing.assert_array_equal(up[~nan], want[~nan])


@needs_onednn
def test_a_nan_operand_gives_nan_products_not_infinities():
    a = np.ones((2, 3), np.float32)
    a.view(np.uint32)[0, 1] = 0x7F800001  # a NaN (signalling) with a low-bits payload
    b = np.ones((3, 2), np.float32)
    out = gemm_onednn.Bf16Matmul()(a, b, np.empty((2, 2), np.float32))
    assert np.isnan(out[0]).all() and (out[1] == 3).all()


@needs_onednn
def test_two_operands_of_one_shape_are_rounded_each_into_its_own_buffer():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((8, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    want = _bf16(a).astype(np.float64) @ _bf16(b).astype(np.float64)
    mm = gemm_onednn.Bf16Matmul()
    got = mm(a, b, np.empty((8, 8), np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    got = mm(a, b.T, np.empty((8, 8), np.float32))  # and with a transposed view of one shape
    np.testing.assert_allclose(got, _bf16(a).astype(np.float64) @ _bf16(b).T.astype(np.float64),
                               rtol=1e-5, atol=1e-5)

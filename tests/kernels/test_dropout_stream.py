"""The dropout masks' counter-based generator: splitmix64 on (key, counter, element).

Checked against splitmix64's published first outputs for seed 0 and against a
plain-Python (arbitrary-precision integer) implementation written here, not
against another array implementation that could share a mistake.
"""
import numpy as np
import pytest

from fastnet.kernels import cpu, reference

M64 = (1 << 64) - 1


def splitmix64_output(key, position):
    """The ``position``-th output (1-based) of splitmix64 seeded with ``key``, in Python ints."""
    z = (key + 0x9E3779B97F4A7C15 * position) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def python_mask(shape, rate, key, counter, dtype, start=0):
    bits = 24 if np.dtype(dtype) == np.float32 else 53
    T = np.dtype(dtype).type
    scale = T(1.0 / (1.0 - rate))
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    for i in range(flat.size):
        h = splitmix64_output(key, (counter << 32) + start + i + 1)
        u = (h >> (64 - bits)) / float(1 << bits)  # exact: bits <= 53
        flat[i] = scale if u >= float(T(rate)) else 0
    return out


def test_python_splitmix64_matches_the_published_sequence():
    # splitmix64 seeded with 0: the first three outputs of the reference C code.
    assert [splitmix64_output(0, p) for p in (1, 2, 3)] == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("impl", [reference, cpu], ids=["reference", "cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,rate,key,counter", [
    ((1, 1), 0.5, 0, 0),
    ((3, 7), 0.2, 12345, 1),
    ((4, 33), 0.9, M64 - 4, 7),          # key near 2**64: sums wrap modulo 2**64
    ((2, 5), 0.5, 99, (1 << 33) + 3),    # counter << 32 wraps too
])
def test_mask_matches_python_integers(impl, dtype, shape, rate, key, counter):
    keep = np.full(shape, np.nan, dtype)
    impl.dropout_mask(keep, rate, key, counter)
    np.testing.assert_array_equal(keep, python_mask(shape, rate, key, counter, dtype))


@pytest.mark.parametrize("impl", [reference, cpu], ids=["reference", "cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_start_gives_the_rows_of_a_larger_call(impl, dtype):
    # a data-parallel rank's rows 3..6 of a 7-row global batch: the masks one process draws there
    full = np.empty((7, 5), dtype)
    impl.dropout_mask(full, 0.4, 77, 9)
    rows = np.empty((4, 5), dtype)
    impl.dropout_mask(rows, 0.4, 77, 9, start=3 * 5)
    np.testing.assert_array_equal(rows, full[3:])
    np.testing.assert_array_equal(rows, python_mask((4, 5), 0.4, 77, 9, dtype, start=15))


def test_first_element_of_key_0_counter_0_is_the_first_splitmix_output():
    # u = 0xE220A839... / 2**64 = 0.883: kept at rate 0.88, dropped at rate 0.89.
    for rate, expected in ((0.88, 1 / 0.12), (0.89, 0.0)):
        keep = np.empty((1, 1), np.float64)
        cpu.dropout_mask(keep, rate, 0, 0)
        assert keep[0, 0] == pytest.approx(expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_is_bit_identical_to_reference_on_large_arrays(dtype):
    a = np.empty((257, 511), dtype)
    b = np.empty_like(a)
    reference.dropout_mask(a, 0.3, 2**63 + 11, 5)
    cpu.dropout_mask(b, 0.3, 2**63 + 11, 5)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_drop_fraction_and_scale(rate):
    keep = np.empty((400, 500), np.float32)
    cpu.dropout_mask(keep, rate, 7, 0)
    dropped = (keep == 0).mean()
    # 200,000 Bernoulli draws: the standard deviation of the fraction is < 0.0012
    assert abs(dropped - rate) < 0.006
    assert set(np.unique(keep)) == {0.0, np.float32(1 / (1 - rate))}


def test_counters_and_keys_give_independent_masks():
    a, b, c = (np.empty((100, 100), np.float32) for _ in range(3))
    cpu.dropout_mask(a, 0.5, 1, 0)
    cpu.dropout_mask(b, 0.5, 1, 1)
    cpu.dropout_mask(c, 0.5, 2, 0)
    for x, y in ((a, b), (a, c), (b, c)):
        agree = (x == y).mean()
        assert 0.47 < agree < 0.53  # independent halves agree half the time


def test_rows_do_not_repeat_within_a_call():
    keep = np.empty((64, 64), np.float32)
    cpu.dropout_mask(keep, 0.5, 3, 0)
    assert len({row.tobytes() for row in keep}) == 64

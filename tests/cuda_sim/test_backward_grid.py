"""The activation backward kernels on a grid of column chunks *and* row blocks (issue 26, item 6).

Each block sums its rows of its columns; a column chunk's blocks leave their partial sums in a
scratch buffer and the last one to arrive adds them in a fixed order, so ``db`` is the same bits
run after run.  Shapes here give the session's small launches (``conftest.SIM_LAUNCH``: blocks
of 8 x 4 threads, at most 2 blocks) more than one row block.
"""
import zlib

import numpy as np
import pytest

from fastnet.kernels import cuda, reference


# (the helpers of test_cuda_kernels.py, in short)
def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def backward_inputs(act, shape, dtype, rng):
    z = rng.normal(0.0, 3.0, size=shape).astype(dtype)
    getattr(reference, f"{act}_fwd")(z, np.zeros(shape[1], dtype))
    return z, rng.normal(size=shape).astype(dtype)


def expected(name, *args):
    copies = [a.astype(np.float64) for a in args]
    getattr(reference, name)(*copies)
    return copies


def run(name, *args):
    """Call ``cuda.<name>``; check it launched its own kernel, once."""
    cuda._BOUND.clear()
    getattr(cuda, name)(*args)
    assert {key[0] for key in cuda._BOUND} == {getattr(cuda, f"_k_{name}")}, name


def assert_close(got, want, dtype, what):
    big = max(1.0, float(np.abs(want).max(initial=0.0)))
    rtol, atol = (2e-5, 2e-6 * big) if dtype == np.float32 else (1e-12, 1e-13 * big)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def grid_of(name, shape, dtype=np.float32):
    """``(grid, block)`` the wrapper ``cuda.<name>`` launches for ``shape``, without running it."""
    seen = []
    launch = cuda._launch
    cuda._launch = lambda kernel, grid, block, like, *args: seen.append((grid, block))
    try:
        a = np.zeros(shape, dtype)
        getattr(cuda, name)(a, a, a.copy(), np.zeros(shape[1], dtype))
    finally:
        cuda._launch = launch
    (config,) = seen
    return config


def test_rows_get_blocks_of_their_own():
    old = cuda.set_launch_config(bwd_block=(32, 8), max_blocks=1024)
    try:
        # width 256, batch 128: 8 column chunks x 16 row blocks (it was 8 blocks)
        assert grid_of("relu_bwd", (128, 256)) == ((8, 16), (32, 8))
        # 10 columns: 16 x 16 threads, one chunk, a row block per 16 rows
        assert grid_of("identity_bwd", (1000, 10)) == ((1, 63), (16, 16))
        # never more than MAX_BLOCKS blocks; one row block when the columns fill the grid
        assert grid_of("tanh_bwd", (1024, 4096)) == ((128, 8), (32, 8))
        assert grid_of("tanh_bwd", (64, 32 * 2000)) == ((1024, 1), (32, 8))
        assert grid_of("relu_bwd", (0, 256)) == ((8, 1), (32, 8))
    finally:
        cuda.set_launch_config(**old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 5), (9, 3), (37, 1), (33, 8)])
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_backward_over_row_blocks(act, shape, dtype):
    assert grid_of(f"{act}_bwd", shape)[0][1] > 1  # more than one row block
    a, dy = backward_inputs(act, shape, dtype, rng_for("rows", act, shape))
    dz, db = poisoned(shape, dtype), poisoned(shape[1], dtype)
    _, _, want_dz, want_db = expected(f"{act}_bwd", a, dy, dz, db)
    run(f"{act}_bwd", a, dy, dz, db)
    assert_close(dz, want_dz, dtype, "dz")
    assert_close(db, want_db, dtype, "db")


def test_column_chunks_and_row_blocks_together():
    old = cuda.set_launch_config(max_blocks=6)
    try:
        assert grid_of("tanh_bwd", (9, 20)) == ((3, 2), (8, 4))
        a, dy = backward_inputs("tanh", (9, 20), np.float32, rng_for("chunks"))
        dz, db = poisoned(a.shape, np.float32), poisoned(20, np.float32)
        _, _, want_dz, want_db = expected("tanh_bwd", a, dy, dz, db)
        run("tanh_bwd", a, dy, dz, db)
        assert_close(dz, want_dz, np.float32, "dz")
        assert_close(db, want_db, np.float32, "db")
    finally:
        cuda.set_launch_config(**old)


def test_a_grid_that_strides_over_column_chunks_and_rows():
    """The kernel takes any grid: here 2 x 3 blocks over 5 column chunks of 8 and 11 rows."""
    a, dy = backward_inputs("sigmoid", (11, 40), np.float64, rng_for("stride"))
    dz, db = poisoned(a.shape, np.float64), poisoned(40, np.float64)
    _, _, want_dz, want_db = expected("sigmoid_bwd", a, dy, dz, db)
    part, count = np.full(3 * 40, np.nan), np.zeros(5, np.int32)
    cuda._launch(cuda._k_sigmoid_bwd, (2, 3), (8, 4), a, a, dy, dz, db, part, count)
    assert_close(dz, want_dz, np.float64, "dz")
    assert_close(db, want_db, np.float64, "db")
    assert (count == 0).all()  # left ready for the next launch


def test_in_place_and_deterministic_over_row_blocks():
    shape = (40, 5)
    a, dy = backward_inputs("leaky_relu", shape, np.float32, rng_for("det-rows"))
    _, _, want_dz, want_db = expected("leaky_relu_bwd", a, dy, dy.copy(), np.zeros(5, np.float32))
    outs = []
    for _ in range(2):
        g, db = dy.copy(), poisoned(5, np.float32)
        cuda.leaky_relu_bwd(a, g, g, db)  # dz is dy
        outs.append((g, db))
    assert_close(outs[0][0], want_dz, np.float32, "dz")
    assert_close(outs[0][1], want_db, np.float32, "db")
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    part, count = cuda._SCRATCH[(np.ndarray, 0, np.dtype(np.float32))]
    assert (count == 0).all()


def test_scratch_is_bounded_by_the_grid():
    """Partial sums: row blocks x columns <= MAX_BLOCKS x block columns, whatever the batch."""
    cuda._SCRATCH.clear()
    for n in (9, 40, 1000):
        a, dy = backward_inputs("relu", (n, 3), np.float32, rng_for("bound", n))
        cuda.relu_bwd(a, dy, dy.copy(), np.zeros(3, np.float32))
    ((part, count),) = cuda._SCRATCH.values()
    bx, _ = cuda._bwd_block(3)
    assert part.size <= cuda.MAX_BLOCKS * bx and count.size == 1


def test_gelu_over_row_blocks():
    """GELU's backward reads the saved input: the same kernel factory, more row blocks."""
    rng = rng_for("gelu-rows")
    x = rng.normal(size=(40, 5)).astype(np.float32)
    dy = rng.normal(size=(40, 5)).astype(np.float32)
    dz, db = poisoned(x.shape, np.float32), poisoned(5, np.float32)
    ref_dz, ref_db = np.empty(x.shape), np.zeros(5)
    reference.gelu_bwd(x.astype(np.float64), dy.astype(np.float64), ref_dz, ref_db)
    run("gelu_bwd", x, dy, dz, db)
    assert_close(dz, ref_dz, np.float32, "dz")
    assert_close(db, ref_db, np.float32, "db")

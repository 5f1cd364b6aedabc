"""Device launches per training step on the CUDA backend, counted on the CuPy contract
(issue 26, item 6; ``fastnet.cuda_sim.contract.launch_counter``).

A steady-state step is the launches between the ends of steps 2 and 3 of an epoch.  The count
is what the step's code asks of the device (fastnet's numba kernels, CuPy's kernels as CuPy 14
dispatches each call, GEMMs), so on the full 784-256-256-10 network the simulated kernels are
replaced by launches that compute nothing (the simulator needs ~30 s a step at that size); a
narrow network with the kernels simulated counts the same.

784-256-256-10, ReLU, softmax cross-entropy, Adam, batch 128, shuffled (docs/pages/architecture.md,
"Launches per training step on CUDA"):

==========  ======  =====  ====  =====  ==========
            numba   cupy   gemm  total  workspaces
==========  ======  =====  ====  =====  ==========
before      13      7      8     28     2
after       13      6      8     27     0
==========  ======  =====  ====  =====  ==========

Before, the batch loss was ``rows.sum(out=<float64 slot>)``: CuPy's CUB routine summed it in
float32 into a temporary (with a pool workspace) and a second kernel cast it into the slot.
"""
import numpy as np
import pytest

import fastnet
from fastnet.cuda_sim import contract as C
from fastnet.cuda_sim import device_array as D
from fastnet.kernels import cuda as kcuda

SIZES = [784, 256, 256, 10]
#: One steady-state step of SIZES with Adam (see the module docstring).
NUMBA = {"_k_relu_fwd": 2, "_k_identity_fwd": 1, "_k_softmax_xent": 1,
         "_k_relu_bwd": 2, "_k_identity_bwd": 1, "_k_adam_update": 6}
CUPY = {"take": 2, "sum": 2, "argmax": 1, "equal": 1}  # gather X, y; batch loss; correct count
GEMMS = {"matmul": 8}  # 3 forward, 3 dW, 2 dX (the first layer needs no input gradient)
STEP = {"numba": 13, "cupy": 6, "gemm": 8, "collective": 0}

#: Few simulated threads, no reduction trees wider than a thread: the narrow network's real run.
FAST_LAUNCH = dict(block=4, row_block=1, bwd_block=(1, 1), max_blocks=1)


def data(n_features, n=3 * 128, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, n_features), dtype=np.float32), rng.integers(0, 10, n)


def steady_step(sizes, **fit):
    """The launches of step 3 of a 3-step epoch (a :class:`LaunchCount` difference)."""
    X, y = data(sizes[0])
    model = fastnet.MLP(sizes, activation="relu", backend="cuda-sim", seed=0)
    marks = []

    class Marks(fastnet.Callback):
        def on_step_end(self, model, epoch, step):
            marks.append(count.snapshot())

    with C.launch_counter() as count:
        model.fit(X, y, epochs=1, batch_size=128, optimizer="adam", callbacks=[Marks()], on_nan="ignore", **fit)
    assert len(marks) == 3
    second, third = marks[1], marks[2]
    return {"by_kind": {k: third["by_kind"][k] - second["by_kind"][k] for k in C.LAUNCH_KINDS},
            "by_name": {n: c - second["by_name"].get(n, 0) for n, c in third["by_name"].items()
                        if c != second["by_name"].get(n, 0)},
            "workspaces": third["workspaces"] - second["workspaces"]}


@pytest.fixture
def kernels_compute_nothing(monkeypatch):
    """Launch through ``_launch`` (which counts) but run nothing: the count needs no results."""
    monkeypatch.setattr(kcuda, "_bind", lambda kernel, grid, block, stream: lambda *args: None)
    kcuda._BOUND.clear()
    yield
    kcuda._BOUND.clear()


def test_launches_per_step_784_256_256_10_adam(kernels_compute_nothing):
    step = steady_step(SIZES)
    assert step["by_kind"] == STEP
    assert step["by_name"] == {**NUMBA, **CUPY, **GEMMS}
    assert step["workspaces"] == 0  # no pool allocation inside a call either


def test_the_same_count_with_the_kernels_simulated():
    old = kcuda.set_launch_config(**FAST_LAUNCH)
    try:
        step = steady_step([20, 16, 16, 10])
    finally:
        kcuda.set_launch_config(**old)
    assert step["by_kind"] == STEP and step["by_name"] == {**NUMBA, **CUPY, **GEMMS}


def test_with_cupys_cub_block_reductions(kernels_compute_nothing, monkeypatch):
    """Where CuPy finds nvcc its reduction kernels go through CUB block reductions: the batch
    loss (a column sum) stays one kernel; the correct count, a whole-array sum in
    ``Network._correct``, becomes two passes and a workspace."""
    monkeypatch.setattr(D, "CUB_BLOCK_REDUCTIONS", True)
    step = steady_step(SIZES)
    assert step["by_kind"] == dict(STEP, cupy=7)
    assert step["by_name"]["sum"] == 3 and step["workspaces"] == 1


def test_unshuffled_steps_gather_nothing(kernels_compute_nothing):
    step = steady_step(SIZES, shuffle=False)  # opt-out kept: shuffle=False is the subject
    assert step["by_kind"] == dict(STEP, cupy=4)
    assert "take" not in step["by_name"]


# --------------------------------------------------------------------------
# the contract's count of CuPy calls
# --------------------------------------------------------------------------
def test_launch_counter_counts_cupy_calls_as_cupy_launches_them():
    xp = C.module()
    rows = xp.asarray(np.ones(128, np.float32))
    slots = xp.zeros(4, dtype=np.float64)
    logits = xp.asarray(np.ones((128, 10), np.float32))
    with C.launch_counter() as outer:
        with C.launch_counter() as c:
            rows.sum(axis=0, out=slots[0:1], keepdims=True)  # the step's batch loss, before
        assert c.by_name == {"sum/cub": 1, "sum/copy": 1} and c.workspaces == 2
        with C.launch_counter() as c:
            rows.reshape(128, 1).sum(axis=0, dtype=np.float64, out=slots[1:2])  # after
            xp.sum(rows.reshape(128, 1).astype(np.float64), axis=0, dtype=np.float64, out=slots[2:3])
        assert c.by_name == {"sum": 2, "astype": 1} and c.workspaces == 0
        with C.launch_counter() as c:
            rows[3:7]
            rows.reshape(2, 64)
            xp.empty(3)
            logits.T
        assert c.total == 0  # views and uninitialised allocations launch nothing
        with C.launch_counter() as c:
            xp.matmul(logits.T, logits)
            _ = logits @ logits.T
            xp.exp(rows, out=rows)
            rows += 1
            xp.copyto(rows, rows)
            xp.zeros(3)
            xp.argmax(logits, axis=1)
            logits.argmax()  # CUB: the pair, its cast to an index
        assert c.by_kind == {"numba": 0, "cupy": 7, "gemm": 2, "collective": 0}
        assert c.by_name["argmax/cub"] == 1 and c.by_name["argmax/astype"] == 1
    assert outer.total == 2 + 3 + 0 + 9  # nested counters: the outer one saw all
    assert not D.ACTIVE_COUNTS


def test_numba_kernels_on_contract_arrays_are_counted():
    xp = C.module()
    kcuda.use_array_module(xp)
    old = kcuda.set_launch_config(**FAST_LAUNCH)
    try:
        z, b = xp.zeros((2, 3), dtype=np.float32), xp.ones(3, dtype=np.float32)
        kcuda.relu_bwd(z, z, z, b)  # (its first launch makes the backward kernels' scratch)
        with C.launch_counter() as c:
            kcuda.relu_fwd(z, b)
            kcuda.relu_bwd(z, z, z, b)
            kcuda.relu_fwd(z[:0], b)  # no rows: no launch
        assert c.by_name == {"_k_relu_fwd": 1, "_k_relu_bwd": 1} and c.by_kind["numba"] == 2
        with C.launch_counter() as c:
            kcuda.relu_fwd(np.zeros((2, 3), np.float32), np.ones(3, np.float32))  # NumPy: not the contract's
        assert c.total == 0
    finally:
        kcuda.set_launch_config(**old)

"""Device memory that does not grow with the number of calls (issue 26, item 4).

``fastnet.kernels.cuda`` passes each device array to its kernels as a numba view made once
per (address, shape, strides, dtype) and kept in ``_VIEWS``.  A view that held a reference to
its array kept alive every array ever passed to a kernel (inference outputs per chunk, label
slices, per-call loss buffers) until the table filled.  Here every device array given to a
kernel is followed by a weak reference to the memory behind it: after the calls return, the
memory still alive must not grow with the number of calls.
"""
import gc
import weakref

import numpy as np
import pytest

import fastnet
from fastnet.cuda_sim import contract as C
from fastnet import datasets
from fastnet.kernels import cuda as kcuda

#: Few simulated threads per launch, reductions of one thread (fast under the simulator).
TINY_LAUNCH = dict(block=4, row_block=1, bwd_block=(1, 1), max_blocks=1)


@pytest.fixture(autouse=True, scope="module")
def tiny_launches():
    old = kcuda.set_launch_config(**TINY_LAUNCH)
    yield
    kcuda.set_launch_config(**old)


def _memory_of(a):
    """The NumPy array that owns the memory of contract array ``a`` (the base of its views)."""
    h = a._a
    while isinstance(h.base, np.ndarray):
        h = h.base
    return h


class KernelArguments:
    """Weak references to the memory behind every device array passed to a kernel."""

    def __init__(self, monkeypatch):
        self.refs = []
        launch = kcuda._launch

        def spy(kernel, grid, block, like, *args):
            self.refs += [weakref.ref(_memory_of(a)) for a in args if isinstance(a, C.ndarray)]
            return launch(kernel, grid, block, like, *args)

        monkeypatch.setattr(kcuda, "_launch", spy)

    def held_bytes(self):
        """Bytes of that memory still allocated (after a garbage collection)."""
        gc.collect()
        alive = {id(m): m for m in (r() for r in self.refs) if m is not None}
        return sum(m.nbytes for m in alive.values())


def blobs(n, seed=0):
    X, y = datasets.make_blobs(n_samples=n, seed=seed)
    return X.astype(np.float32), y


def model(**kw):
    return fastnet.MLP([2, 8, 3], backend="cuda-sim", seed=0, **kw)


def test_predict_and_evaluate_keep_no_memory_per_call(monkeypatch):
    """100 calls, predict and evaluate in turn: each makes its own layer outputs and loss
    buffers (evaluate on fewer rows: its loss kernel is slow to simulate)."""
    X, y = blobs(200)
    m = model()
    m.fit(X, y, epochs=1, batch_size=50)
    args = KernelArguments(monkeypatch)

    def calls(n):
        for i in range(n):
            m.predict(X) if i % 2 == 0 else m.evaluate(X[:16], y[:16])
        return args.held_bytes()

    after_10 = calls(10)
    after_100 = calls(90)
    per_predict = 200 * (8 + 3) * 4  # one predict's layer outputs alone
    assert after_100 == after_10, (after_10, after_100, per_predict)
    # What stays alive is the model's own: its biases.
    assert after_100 == sum(b.nbytes for name, b in m.parameters() if name.endswith(".b"))


def test_unshuffled_epochs_keep_no_label_slices(monkeypatch):
    """``shuffle=False`` passes slices of the fit's label array to the loss kernel, one per step.
    (Opt-out kept: shuffle=False is the subject.)"""
    X, y = blobs(64)
    m = model()
    args = KernelArguments(monkeypatch)
    m.fit(X, y, epochs=2, batch_size=16, shuffle=False)
    first = args.held_bytes()
    for _ in range(5):
        m.fit(X, y, epochs=2, batch_size=16, shuffle=False)
    assert args.held_bytes() == first


def test_a_view_holds_no_reference_to_its_array():
    xp = C.module()
    a = xp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    memory = weakref.ref(_memory_of(a))
    v = kcuda._view(a)
    np.testing.assert_array_equal(v, [[0, 1, 2], [3, 4, 5]])
    v[1, 2] = 7.0  # the view is the array's memory
    assert float(a[1, 2]) == 7.0
    del a
    gc.collect()
    assert memory() is None


def test_views_of_strided_reversed_and_empty_arrays():
    xp = C.module()
    a = xp.asarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    for v, want in [(a[::-1, 1::2], np.arange(12.0).reshape(3, 4)[::-1, 1::2]), (a[:0], np.zeros((0, 4)))]:
        view = kcuda._view(v)
        assert view.shape == want.shape and (view.strides == v.strides or not view.size)
        np.testing.assert_array_equal(view, want)
    kcuda._view(a[::-1, 1::2])[0, 0] = -1.0  # row 2, column 1 of a
    assert float(a[2, 1]) == -1.0


def test_views_in_use_stay_when_the_table_is_full(monkeypatch):
    """Least recently used views go first: a buffer used at every step keeps its view."""
    monkeypatch.setattr(kcuda, "MAX_VIEWS", 3)
    kcuda._VIEWS.clear()
    xp = C.module()
    kept = xp.zeros(4, dtype=np.float32)
    view = kcuda._view(kept)
    others = [xp.zeros(5 + i, dtype=np.float32) for i in range(10)]
    for o in others:
        kcuda._view(o)
        assert kcuda._view(kept) is view
        assert len(kcuda._VIEWS) <= 3


def test_no_view_is_made_after_the_first_epoch(monkeypatch):
    """The persistent buffers (and, unshuffled, the same label slices) get their views in the
    first epoch; later steps make none."""
    X, y = blobs(64)
    made = []
    make = kcuda._make_view
    monkeypatch.setattr(kcuda, "_make_view", lambda a: made.append(a.shape) or make(a))

    class Epochs(fastnet.Callback):
        def on_epoch_end(self, model, epoch, logs):
            made.append(("epoch", epoch))

    for shuffle in (True, False):  # both orders are the subject
        made.clear()
        m = model(dropout=0.2)
        # opt-out kept: diagnose=False, as the doctor's forward pass after the last epoch makes a
        # view of its own (64 x 8), which is not a training step's
        m.fit(X, y, epochs=3, batch_size=16, shuffle=shuffle, diagnose=False, callbacks=[Epochs()])
        first = made.index(("epoch", 1))
        assert made[first:] == [("epoch", 1), ("epoch", 2), ("epoch", 3)], (shuffle, made[first:])

"""The data-parallel step (fastnet.train.distributed) in one process, where the mutation audit
found bugs the other tests let through (issue 27, item 3): the ranks' shares of a global
batch, the start-of-fit check of the ranks' data and settings, rank 0's random state.

Each test runs a real ``fit`` as rank 1 of 2 through a fake communicator whose partner
(rank 0) is described by the test: its broadcasts hand this rank what rank 0 holds.
Oracles: the module's docstring (consecutive shares, the first ranks one row short; every
rank starts from rank 0's random state; ranks must train on the same data and settings).
"""
import numpy as np
import pytest

import fastnet
from fastnet.train import distributed as D


class Rank1(D.Communicator):
    """Rank 1 of 2.  ``root(obj)`` gives rank 0's version of a broadcast object (default:
    the same as this rank's); every sum is twice this rank's (its partner mirrors it)."""

    name = "fake"
    rank, size = 1, 2
    local_rank, local_size = 1, 2

    def __init__(self, root=None):
        self.root = root or (lambda obj: obj)

    def allreduce(self, buf, what=""):
        buf *= 2

    def broadcast(self, buf, what=""):
        pass

    def broadcast_object(self, obj, what=""):
        return self.root(obj)


class ShareComm(D.Communicator):
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("size, m, shares", [
    (2, 1, [0, 1]),      # a last global batch of one row: rank 0 gets none
    (2, 5, [2, 3]),
    (3, 5, [1, 2, 2]),
    (3, 7, [2, 2, 3]),
    (4, 7, [1, 2, 2, 2]),
])
def test_the_first_ranks_are_the_ones_a_row_short(size, m, shares):
    rows = [D.DataParallel(ShareComm(r, size), 8).rows(100, m) for r in range(size)]
    assert [n for _, n in rows] == shares
    assert [lo for lo, _ in rows] == list(100 + np.cumsum([0] + shares[:-1]))


def _data():
    X = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
    return X, np.arange(40) % 2


def _settings(obj):
    return isinstance(obj, dict) and "data" in obj and "rows" in obj


def test_ranks_with_the_same_images_but_other_labels_are_refused():
    X, y = _data()
    y_root = y.copy()
    y_root[7] = 1 - y_root[7]  # rank 0 has one other label
    root_digest = D._digest(X, y_root)
    assert root_digest != D._digest(X, y)
    comm = Rank1(lambda obj: {**obj, "data": root_digest} if _settings(obj) else obj)
    model = fastnet.MLP([5, 4, 2], seed=0, backend="cpu")
    with pytest.raises(D.DistributedError, match=r"rank 1 of 2: .*differ from rank 0.*data="):
        model.fit(X, y, epochs=1, batch_size=8, distributed=comm)
    # the same labels: it trains
    fastnet.MLP([5, 4, 2], seed=0, backend="cpu").fit(X, y, epochs=1, batch_size=8,
                                                      distributed=Rank1())


def test_a_setting_only_rank_0_has_is_a_difference():
    """Ranks of other fastnet versions send other sets of settings: a key rank 0 has and this
    rank lacks must fail the check, not be skipped."""
    X, y = _data()
    comm = Rank1(lambda obj: {**obj, "new_setting": 1} if _settings(obj) else obj)
    with pytest.raises(D.DistributedError, match=r"new_setting=None where rank 0 has new_setting=1"):
        fastnet.MLP([5, 4, 2], seed=0, backend="cpu").fit(X, y, epochs=1, batch_size=8,
                                                          distributed=comm)


def test_a_rank_starts_from_rank_0s_random_state():
    """Without a seed each rank draws its own random state; fit must start every rank from
    rank 0's (its shuffles, dropout masks and augmentations), as the docstring says."""
    X, y = _data()
    root = fastnet.MLP([5, 4, 2], seed=123, backend="cpu").build(5)
    root.backend_.permutation(40)  # rank 0's streams moved on
    root_state = root.backend_.get_rng_state()
    comm = Rank1(lambda obj: root_state if isinstance(obj, dict) and "dropout_key" in obj else obj)
    model = fastnet.MLP([5, 4, 2], seed=7, backend="cpu", dropout=0.5)
    assert model.build(5).backend_.get_rng_state() != root_state
    seen = []

    class AtStart(fastnet.Callback):
        def on_train_begin(self, model):
            seen.append(model.backend_.get_rng_state())

    model.fit(X, y, epochs=1, batch_size=8, distributed=comm, callbacks=[AtStart()])
    assert seen == [root_state]

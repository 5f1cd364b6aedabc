"""fastnet.train.interrupt and the signal path of ``fit``, where the mutation audit found bugs the
operator tests let through (issue 27, item 3): a second signal swallowed instead of stopping at
once, and a signal after an epoch's last step undoing that complete epoch.

Oracles: the module's documentation (``fastnet.train.interrupt``: "A second signal stops at once
(``KeyboardInterrupt``)"; the epoch cut short is undone, a signal "at an epoch's end" leaves
``undone`` None) and a model trained uninterrupted for the same epochs, compared bit for bit.
The signals are real (``os.kill`` to this process)."""
import os
import signal

import numpy as np
import pytest

import fastnet
from fastnet.train.interrupt import TrainingInterrupted

STEPS = 12  # 600 rows at batch_size=50


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 20)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(int) + (X[:, 3] > 1)
    return X, y


def _model():
    return fastnet.MLP([20, 16, 3], seed=3)


class _Signals(fastnet.Callback):
    """Sends ``signum`` to this process ``times`` times after step ``step`` of epoch ``epoch``;
    ``after`` records that the callback went on past the kills."""

    def __init__(self, signum, epoch, step, times=1):
        self.signum, self.epoch, self.step, self.times = signum, epoch, step, times
        self.after = []

    def on_step_end(self, model, epoch, step):
        if (epoch, step) == (self.epoch, self.step):
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)
            self.after.append((epoch, step))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_at_once_with_a_keyboard_interrupt(signum):
    X, y = _data()
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    twice = _Signals(signum, 2, 3, times=2)
    with pytest.raises(KeyboardInterrupt) as info:
        _model().fit(X, y, epochs=3, batch_size=50, callbacks=[twice])
    # at once: raised by the second kill itself, inside the callback, not at the next step boundary
    assert type(info.value) is KeyboardInterrupt and not isinstance(info.value, TrainingInterrupted)
    assert "a second time" in str(info.value)
    assert twice.after == []
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are put back all the same


def test_a_signal_after_an_epochs_last_step_keeps_that_epoch():
    X, y = _data()
    m = _model()
    with pytest.raises(TrainingInterrupted) as info:
        m.fit(X, y, epochs=3, batch_size=50, callbacks=[_Signals(signal.SIGTERM, 2, STEPS)])
    exc = info.value
    assert (exc.completed, exc.undone) == (2, None)  # a complete epoch: nothing to undo
    assert "at the end of an epoch" in str(exc) and "holds epoch 2" in str(exc)
    assert m.n_iter_ == 2 and len(m.history_.history["loss"]) == 2
    two = _model()
    two.fit(X, y, epochs=2, batch_size=50)
    for name, w in two.get_weights().items():  # epoch 2 kept, bit for bit
        np.testing.assert_array_equal(m.get_weights()[name], w)

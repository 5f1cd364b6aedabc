"""fastnet.backends.threads, where the mutation audit found bugs the tuner's tests let through
(issue 27, item 3): ``FASTNET_THREADS`` read case-sensitively, a tuner for a pool of one
thread, the candidates of odd counts.

Oracles: the module's documentation (``NoTuner``: nothing to tune with one thread;
candidates ``n``, ``n // 2`` and 1) and hand-counted candidate lists.
"""
# Opt-out kept (issue 27): monkeypatch sets FASTNET_THREADS: its parsing is the subject.
import pytest

from fastnet.backends import threads


@pytest.mark.parametrize("text, mode", [("auto", "auto"), ("Fixed", "fixed"), (" AUTO ", "auto"),
                                        ("FIXED\n", "fixed")])
def test_the_mode_is_read_whatever_its_case_and_spaces(monkeypatch, text, mode):
    monkeypatch.setenv(threads.ENV, text)
    assert threads.mode() == mode


def test_the_mode_defaults_to_auto_and_refuses_other_words(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.mode() == "auto"
    monkeypatch.setenv(threads.ENV, "fix")
    with pytest.raises(ValueError, match="FASTNET_THREADS must be 'auto' or 'fixed', got 'fix'"):
        threads.mode()


def _pool(count, applied):
    return ("test-pool", lambda: count, applied.append)


def test_a_pool_of_one_thread_is_not_tuned(monkeypatch):
    monkeypatch.setenv(threads.ENV, "auto")
    applied = []
    assert isinstance(threads.tuner(work=("kills", 1), pool=_pool(1, applied)), threads.NoTuner)
    assert isinstance(threads.tuner(work=("kills", 0), pool=_pool(None, applied)), threads.NoTuner)
    assert applied == []  # nothing set
    two = threads.tuner(work=("kills", 2), pool=_pool(2, applied))
    assert isinstance(two, threads.ThreadTuner) and two.options == [2, 1]
    two.close()
    monkeypatch.setenv(threads.ENV, "fixed")
    assert isinstance(threads.tuner(work=("kills", 3), pool=_pool(4, applied)), threads.NoTuner)


def test_the_middle_candidate_is_half_rounded_down():
    assert threads.candidates(1) == [1]
    assert threads.candidates(5) == [5, 2, 1]
    assert threads.candidates(7) == [7, 3, 1]
    assert threads.candidates(4) == [4, 2, 1]


def test_the_same_work_with_another_thread_count_gets_a_tuner_of_its_own(monkeypatch):
    """The docstring: runs of the same work *and the same configured thread count* continue one
    tuner.  With 4 threads configured now (2 before), the tuner must try 4, 2 and 1, and put
    back 4 at the end, not the 2 of the earlier runs."""
    monkeypatch.setenv(threads.ENV, "auto")
    applied = []
    two = threads.tuner(work=("kills", "count"), pool=_pool(2, applied))
    two.close()
    assert threads.tuner(work=("kills", "count"), pool=_pool(2, applied)) is two
    four = threads.tuner(work=("kills", "count"), pool=_pool(4, applied))
    assert four is not two and four.configured == 4 and four.options == [4, 2, 1]
    applied.clear()
    four.close()
    assert applied == [4]


def test_a_near_tie_keeps_the_running_choice_not_the_configured_count():
    """Another count must be clearly (8%) faster than *the running one* to replace it: after
    a probe chose 1 thread (2 threads were slow), a later probe where 2 threads are only 4%
    faster keeps 1, rather than going back to the configured 2 on a near tie."""
    clock = {"t": 0.0}
    speed = {1: 4e-3, 2: 8e-3}  # seconds a step: at first, 2 threads are slow (a busy core)
    tuner = threads.ThreadTuner(2, clock=lambda: clock["t"], apply=lambda n: None)

    def train(seconds):
        end = clock["t"] + seconds
        while clock["t"] < end:
            clock["t"] += speed[tuner.threads]
            tuner.step_done(True)

    train(1.0)
    assert tuner.decisions and set(tuner.decisions) == {1}
    first = len(tuner.decisions)
    speed.update({1: 5e-3, 2: 4.8e-3})  # now 2 threads are 4% faster: within the noise
    train(6.0)
    later = tuner.decisions[first:]
    assert len(later) >= 2 and set(later) == {1}

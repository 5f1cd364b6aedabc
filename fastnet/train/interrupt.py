"""Ctrl-C (SIGINT) and SIGTERM during training: stop at a step boundary, keep what is done.

While ``fit`` runs in the main thread of one process, :class:`StopSignals` replaces
Python's default handlers of SIGINT and SIGTERM (only those: a handler the program set
itself is left alone) with one that records the signal.  The training loop looks at it
after each step: it stops there, puts the weights, optimizer state and random state
back to the end of the last complete epoch (an epoch cut short is undone, so the model,
its ``n_iter_``, its history and any checkpoint agree), runs the callbacks'
``on_train_end`` (a :class:`~fastnet.train.checkpoint.ModelCheckpoint` has the last complete
epoch; ``EarlyStopping`` puts its best weights back) and raises
:class:`TrainingInterrupted`.  A second signal stops at once (``KeyboardInterrupt``).

:class:`TrainingInterrupted` is a ``KeyboardInterrupt``, so code written for Ctrl-C
handles SIGTERM the same way; its ``exit_status`` is the conventional ``128 + signal``
(130 for SIGINT, 143 for SIGTERM), which ``fastnet train`` exits with after saving.
"""
from __future__ import annotations

import signal
import threading
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended the work in progress; ``signum``, ``exit_status`` (128 + signum)."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name
        self.exit_status = 128 + self.signum
        super().__init__(message or f"interrupted by {self.signal_name}")


class TrainingInterrupted(Interrupted):
    """``fit`` stopped at a step boundary on SIGINT/SIGTERM.

    ``completed``: the epochs the model holds (``model.n_iter_``) after the epoch cut short,
    if any, was undone; ``undone``: ``(epoch, steps done, steps of the epoch)`` of that epoch,
    or None when the signal came at an epoch's end."""

    def __init__(self, signum: int, completed: int, undone: tuple[int, int, int] | None) -> None:
        self.completed, self.undone = completed, undone
        where = (f"during epoch {undone[0]} (after step {undone[1]} of {undone[2]}; that epoch's steps were undone)"
                 if undone else "at the end of an epoch")
        super().__init__(signum, f"training stopped by {signal.Signals(signum).name} {where}: the model holds "
                                 f"epoch {completed}")


def sigterm_as_interrupt(signum, frame):
    """A SIGTERM handler raising :class:`Interrupted` (as Python's SIGINT handler raises
    ``KeyboardInterrupt``): ``fastnet``'s command line sets it; ``fit`` replaces it while it trains."""
    raise Interrupted(signum)


_REPLACEABLE = {signal.SIGINT: (signal.default_int_handler,),
                signal.SIGTERM: (signal.SIG_DFL, sigterm_as_interrupt)}


class StopSignals:
    """While the ``with`` block runs (in the main thread, when ``enabled``): the first SIGINT or
    SIGTERM is recorded in ``signum`` for the training loop to stop at its next step boundary;
    a second one raises ``KeyboardInterrupt`` at once.  Elsewhere (another thread, a
    data-parallel fit, a handler the program set) nothing changes and ``signum`` stays None."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.signum: int | None = None
        self.undone: tuple[int, int, int] | None = None  # set by the training loop: the epoch cut short
        self._previous: dict[int, Any] = {}  # what signal.getsignal returned

    def __enter__(self) -> StopSignals:
        self.signum, self.undone = None, None
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig, defaults in _REPLACEABLE.items():
                current = signal.getsignal(sig)
                if current in defaults:
                    self._previous[sig] = current
                    signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} a second time: stopped at once")
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

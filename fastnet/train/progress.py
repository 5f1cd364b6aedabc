"""Progress display for long work: tqdm bars on stderr, and a line per epoch.

:func:`bar` is the one place a bar is made (training epochs and downloads alike).
tqdm throttles its own redraws (``mininterval``), so an update costs a training
step ~nothing; a disabled bar is a stand-in whose methods do nothing.
"""
from __future__ import annotations

import sys
import time

MININTERVAL = 0.2  # seconds between redraws of a bar


class _NoBar:
    """What :func:`bar` returns when disabled: tqdm's methods, doing nothing."""

    n = 0

    def update(self, n=1):
        pass

    def close(self):
        pass


def bar(total, desc, unit="it", enabled=True, stream=None, leave=True, **options):
    """A tqdm progress bar on ``stream`` (default ``sys.stderr``), or a no-op when disabled.

    ``options`` go to :class:`tqdm.tqdm` (e.g. ``unit_scale=True`` for bytes); redraws
    are at least ``mininterval`` = :data:`MININTERVAL` seconds apart unless given.  tqdm
    is imported on the first enabled bar only, so ``import fastnet`` stays fast.
    """
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    options.setdefault("mininterval", MININTERVAL)
    return tqdm(total=total, desc=desc, unit=unit, leave=leave,
                file=stream if stream is not None else sys.stderr, **options)


def format_logs(logs):
    """``loss 0.1234  accuracy 0.9650  val_loss ...`` from an epoch's logs."""
    parts = []
    for key, value in logs.items():
        if value is None or key == "seconds":
            continue
        if key == "lr":
            parts.append(f"lr {value:.3g}")
        else:
            parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)


def is_terminal(stream):
    """Whether ``stream`` redraws a line in place: a terminal, or a Jupyter notebook cell's
    output (ipykernel's streams) -- not a log file."""
    if type(stream).__module__.partition(".")[0] == "ipykernel":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _flush_stdout():
    """Flush ``sys.stdout`` (when there is one, still open): written before a line on stderr, so
    that the two streams redirected to one file (``> log 2>&1``) keep the program's order."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):  # a closed or broken stdout: nothing to keep in order
        pass


class EpochProgress:
    """A bar over the steps of one epoch (cleared when done), then one summary line.

    The bar is drawn only with ``show_bar=True`` and when ``stream`` is a terminal: in a log
    file (stderr redirected) each epoch is exactly one complete line, with no ``\\r``.
    """

    def __init__(self, epoch, epochs, steps, enabled=True, stream=None, show_bar=True):
        self.enabled = enabled
        if not enabled:
            return
        self.stream = stream or sys.stderr
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.t0 = time.perf_counter()
        self._bar = bar(steps, f"epoch {epoch}/{epochs}", unit="step", stream=self.stream, leave=False,
                        enabled=show_bar and is_terminal(self.stream))

    def update(self, step):
        """``step`` steps of this epoch are done (tqdm decides when to redraw)."""
        if self.enabled:
            self._bar.update(step - self._bar.n)

    def abandon(self):
        """The epoch ends without its line (interrupted): the bar is cleared."""
        if self.enabled:
            self._bar.close()

    def close(self, logs, n_samples):
        if not self.enabled:
            return
        self._bar.close()
        _flush_stdout()  # what the program printed before (headers, block-buffered in a log) comes first
        seconds = logs.get("seconds") or (time.perf_counter() - self.t0)
        rate = n_samples / seconds if seconds > 0 else float("inf")
        self.stream.write(f"epoch {self.epoch}/{self.epochs}  {format_logs(logs)}  "
                          f"{seconds:.2f}s ({rate:,.0f} samples/s)\n")
        self.stream.flush()

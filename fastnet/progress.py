"""Progress display for long work: a bar per epoch and a line per epoch.

Uses tqdm when it is installed, else a small text bar on stderr.  Updates are
throttled to a few per second so the training step pays ~nothing for them.
"""
from __future__ import annotations

import sys
import time


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


class EpochProgress:
    """A bar over the steps of one epoch, then one summary line."""

    def __init__(self, epoch, epochs, steps, enabled=True, stream=None):
        self.enabled = enabled
        if not enabled:
            return
        self.stream = stream or sys.stderr
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.t0 = time.perf_counter()
        self._next = self.t0 + 0.2
        self._bar = None
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step",
                             leave=False, file=self.stream, mininterval=0.2)
        except ImportError:
            pass

    def update(self, step):
        if not self.enabled:
            return
        now = time.perf_counter()
        if now < self._next and step < self.steps:
            return
        self._next = now + 0.2
        if self._bar is not None:
            self._bar.n = step
            self._bar.refresh()
            return
        width = 30
        done = int(width * step / self.steps)
        self.stream.write(f"\repoch {self.epoch}/{self.epochs} [{'#' * done}{'.' * (width - done)}] "
                          f"{step}/{self.steps}")
        self.stream.flush()

    def close(self, logs, n_samples):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self.stream.write("\r" + " " * 70 + "\r")
        seconds = logs.get("seconds") or (time.perf_counter() - self.t0)
        rate = n_samples / seconds if seconds > 0 else float("inf")
        self.stream.write(f"epoch {self.epoch}/{self.epochs}  {format_logs(logs)}  "
                          f"{seconds:.2f}s ({rate:,.0f} samples/s)\n")
        self.stream.flush()

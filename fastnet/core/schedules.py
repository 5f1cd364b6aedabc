"""Learning-rate schedules.

A schedule maps the training progress, measured in epochs (a float: step
``s`` of an epoch of ``S`` steps in epoch ``e`` is ``e + s / S``), and the
base rate to the rate of that step.  It runs on the host once per step: a few
float operations, no device work.  Reduce-on-plateau depends on validation
results, so it is a callback (:class:`fastnet.core.callbacks.ReduceLROnPlateau`).
"""
from __future__ import annotations

import math

from fastnet.core.validation import check_choice


class Schedule:
    """Constant rate; base class.  ``total_epochs`` is set by ``fit``."""

    name = "constant"
    total_epochs = 1

    def __call__(self, epoch, base_lr):
        return base_lr

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "total_epochs")
        return f"{type(self).__name__}({fields})"


Constant = Schedule


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    name = "step"

    def __init__(self, step_size=10, gamma=0.1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.step_size, self.gamma = step_size, gamma

    def __call__(self, epoch, base_lr):
        return base_lr * self.gamma ** math.floor(epoch / self.step_size)


class Exponential(Schedule):
    """``base_lr * gamma ** epoch`` (continuous in the epoch)."""

    name = "exponential"

    def __init__(self, gamma=0.9):
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.gamma = gamma

    def __call__(self, epoch, base_lr):
        return base_lr * self.gamma**epoch


class Cosine(Schedule):
    """Linear warm-up for ``warmup`` epochs, then cosine decay to ``min_lr``."""

    name = "cosine"

    def __init__(self, warmup=0.0, min_lr=0.0):
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 epochs, got {warmup!r}")
        if min_lr < 0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr!r}")
        self.warmup, self.min_lr = warmup, min_lr

    def __call__(self, epoch, base_lr):
        if epoch < self.warmup:
            return base_lr * (epoch + 1e-12) / self.warmup
        span = max(self.total_epochs - self.warmup, 1e-12)
        frac = min((epoch - self.warmup) / span, 1.0)
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * frac))


class OneCycle(Schedule):
    """Smith's one-cycle: rise from ``base_lr / div_factor`` to ``base_lr`` over
    ``pct_start`` of training, then cosine down to ``base_lr / final_div``."""

    name = "onecycle"

    def __init__(self, pct_start=0.3, div_factor=25.0, final_div=1e4):
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
        self.pct_start, self.div_factor, self.final_div = pct_start, div_factor, final_div

    def __call__(self, epoch, base_lr):
        frac = min(epoch / max(self.total_epochs, 1e-12), 1.0)
        lo, hi, end = base_lr / self.div_factor, base_lr, base_lr / self.final_div
        if frac < self.pct_start:
            t = frac / self.pct_start
            return lo + (hi - lo) * 0.5 * (1 - math.cos(math.pi * t))
        t = (frac - self.pct_start) / (1 - self.pct_start)
        return end + (hi - end) * 0.5 * (1 + math.cos(math.pi * t))


SCHEDULES = {c.name: c for c in (Constant, StepDecay, Exponential, Cosine, OneCycle)}


def get_schedule(schedule: str | Schedule | None) -> Schedule:
    """A :class:`Schedule` from ``None``, a name or an instance."""
    if schedule is None:
        return Constant()
    if isinstance(schedule, Schedule):
        return schedule
    check_choice("lr_schedule", schedule, tuple(SCHEDULES))
    return SCHEDULES[schedule]()

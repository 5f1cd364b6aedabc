"""What the training doctor returns: :class:`Diagnosis` records, a printable list of them, and
the number formats their texts use."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Diagnosis", "Diagnoses", "CODES"]

CODES = ("lr_too_high", "noisy_batches", "overfitting", "inputs_not_standardized", "saturated_units",
         "exploding", "vanishing", "dead_relu", "always_on")


@dataclass
class Diagnosis:
    """One problem found in a training run.

    Attributes
    ----------
    code : str
        Stable identifier, one of :data:`CODES` (e.g. ``"overfitting"``).
    title : str
        One line: what is wrong, with the key number.
    explanation : str
        What the data show and why it is a problem.
    suggestion : str
        What to change, concretely (argument values included).
    evidence : dict
        The numbers the decision rests on (epochs, losses, norms, fractions).
    """

    code: str
    title: str
    explanation: str
    suggestion: str
    evidence: dict = field(default_factory=dict)

    def __str__(self):
        return (f"[{self.code}] {self.title}\n"
                f"  why: {self.explanation}\n"
                f"  fix: {self.suggestion}")


class Diagnoses(list):
    """A list of :class:`Diagnosis` that prints as a report."""

    @property
    def codes(self):
        return [d.code for d in self]

    def __str__(self):
        if not self:
            return "fastnet diagnose: no problem found."
        head = f"fastnet diagnose: {len(self)} problem{'s' if len(self) > 1 else ''} found"
        return "\n".join([head] + [str(d) for d in self])


def fmt(x):
    """A number for a diagnosis text: 3 significant digits, ``"?"`` for None."""
    if x is None:
        return "?"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def times(x):
    """A ratio as ``"13x"``, ``"2.4e+06x"`` when huge."""
    if x < 10:
        return f"{x:.1f}x"
    return f"{x:.0f}x" if x < 1e4 else f"{x:.1e}x"


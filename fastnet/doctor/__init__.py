"""The training doctor: say why a training run went wrong, and what to change.

:func:`diagnose` reads a run's :class:`~fastnet.core.callbacks.History` (and,
when given, the model, its per-layer norms and a sample of the inputs) and
returns a list of :class:`Diagnosis`, empty for a healthy run::

    history = model.fit(X, y, epochs=20, validation_split=0.1,
                        callbacks=[NormRecorder()])
    for d in fastnet.diagnose(history, model, X):
        print(d)

What each detector needs, and what it looks for:

=========================  =====================  ==============================================
code                       needs                  fires when
=========================  =====================  ==============================================
lr_too_high                history                the loss became NaN/inf; or the first epoch's
                                                  loss is 1.2x the initial loss (the first
                                                  batch's of an untrained model, plus two of
                                                  its standard errors) or 2.5x a blind
                                                  guess's when that is unknown (a fit that
                                                  continues training); or the loss
                                                  jumps, rises or oscillates (batches > 8)
noisy_batches              history.params         batches of <= 8 samples and a jagged loss curve
overfitting                val_loss               validation loss rose after its best epoch while
                                                  the training loss kept falling (unless the run
                                                  was stopped early)
inputs_not_standardized    X                      feature scales far from 1 (RMS > 10 or < 0.01),
                                                  or > 3 with saturated sigmoid/tanh units
saturated_units            model, X               sigmoid/tanh units saturated > 50% of the time
exploding                  norms                  weights or gradients non-finite, a weight norm
                                                  5x larger within one epoch (or 10x in all and
                                                  still growing 10%/epoch), or first-layer
                                                  gradients 100x the last layer's
vanishing                  norms                  first-layer gradients < 1/100 of the last
                                                  layer's, or weights shrunk below 1/10
dead_relu                  model, X               >= 50% of a ReLU layer's units never active
always_on                  model, X               >= 80% of a ReLU layer's live units active on
                                                  more than 80% of the samples (a linear layer)
=========================  =====================  ==============================================

The detectors live in :mod:`fastnet.doctor.curves` (the first three) and
:mod:`fastnet.doctor.network` (the others), and read a :class:`~fastnet.doctor.run.Run`;
this module runs them in order.  Their thresholds are constants of those modules
(importable from here too), chosen from measured healthy and failing runs
(healthy MNIST and toy runs stay well inside them).  ``norms`` come
from a :class:`NormRecorder` (``model.norms_``); ``history.params`` (set by
``fit``: ``batch_size``, ``n_samples``, ``optimizer``, ``lr``, ``initial_loss``,
``initial_loss_se``) tells the batch size and the loss before the first step (an
estimate of the whole set's from the first batch's rows, and its standard error); without them the
batch-size detector is skipped and the first-epoch check compares with a
blind guess's loss instead.  A run stopped by a NaN loss is recognised from
NaN in ``history["loss"]`` (``on_nan="ignore"``), from ``history.diverged``
(``{"epoch", "step", "loss"}``, set by fit under ``on_nan="restore"``) or
from the ``error`` argument (the ``TrainingDivergedError`` of ``on_nan="raise"``).
"""
from __future__ import annotations

import numpy as np

from fastnet.doctor.curves import (  # noqa: F401  (the thresholds, importable from here as before)
    BLOWUP_FACTOR, BLOWUP_FACTOR_CHANCE, INITIAL_LOSS_MIN_BATCH, INITIAL_LOSS_Z, OVERFIT_RISE, OVERFIT_RISE_OF_GAIN,
    RISE_FACTOR, ROUGH_MIN_SPAN, ROUGH_TRAIN, ROUGH_TRAIN_SMALL_BATCH, ROUGH_VAL_SMALL_BATCH, SMALL_BATCH, SPIKE_FACTOR,
    SPIKE_MIN_RISE, check_lr, check_noisy_batches, check_overfitting)
from fastnet.doctor.network import (  # noqa: F401
    ALWAYS_ON_LAYER, DEAD_FRACTION, GRAD_RATIO_EXPLODING, GRAD_RATIO_VANISHING, INPUT_SCALE_HIGH,
    INPUT_SCALE_HIGH_SATURATED, INPUT_SCALE_LOW, SATURATED_LAYER, WEIGHT_GROWTH, WEIGHT_JUMP, WEIGHT_SHRINK,
    WEIGHT_STILL_GROWING, check_always_on, check_dead, check_exploding, check_inputs, check_saturation,
    check_vanishing)
from fastnet.doctor.results import CODES, Diagnoses, Diagnosis
from fastnet.doctor.run import Run, input_scale_stats
from fastnet.doctor.norms import NormRecorder

__all__ = ["Diagnosis", "Diagnoses", "Report", "diagnose", "NormRecorder", "FastnetWarning", "CODES",
           "input_scale_stats"]

#: Rows of ``X`` :func:`diagnose` reads when the history does not say how many ``fit``'s doctor read.
DEFAULT_MAX_SAMPLES = 10_000


class Report(Diagnoses):
    """What :func:`diagnose` returns: a list of :class:`Diagnosis` that shows as the report
    itself, however it is shown (``print``, echoed at the REPL, in a notebook cell)."""

    def __repr__(self):
        return str(self)

    def _repr_pretty_(self, printer, cycle):  # IPython, Jupyter
        printer.text(str(self))


class FastnetWarning(UserWarning):
    """A training diagnosis, as emitted by ``fit`` (filter with ``warnings.simplefilter``)."""


def diagnose(history=None, model=None, X=None, *, norms=None, error=None, max_samples=None):
    """Find what went wrong in a training run, and say what to change.

    Parameters
    ----------
    history : History, optional
        What ``fit`` returned, or ``model.history_`` (the default).  Uses
        ``loss``, ``val_loss``, ``val_accuracy``; ``history.params`` (batch size)
        and ``history.diverged`` (where the loss became NaN) when present.
    model : Sequential, optional
        Needed for activation statistics and the blind-guess loss; its
        ``norms_`` (from :class:`NormRecorder`) are used when ``norms`` is None.
    X : array (n_samples, n_features), optional
        Training inputs (a sample is enough): enables the input-scale, dead-,
        always-on- and saturated-unit checks.
    norms : dict, optional
        A :class:`NormRecorder` log; default ``model.norms_``.
    error : TrainingDivergedError, optional
        The exception ``fit`` raised when the loss became NaN.
    max_samples : int, optional
        Rows of ``X`` used (evenly spaced).  Default: as many as the end-of-fit
        doctor of the run read (``history.params["doctor_rows"]``, about 1% of
        the rows trained on, 500 to 2000), so that for the same ``X`` the report's
        figures are the ``FastnetWarning``'s of ``fit``; 10,000 for a history
        that does not say.

    Returns
    -------
    Report
        A list of :class:`Diagnosis` (empty when nothing is wrong) that shows
        as the report: ``print`` it, or echo it at the REPL or in a notebook.
    """
    if history is None:
        if model is None:
            raise TypeError("diagnose needs a history or a model (whose history_ is used)")
        history = model.history_
    if norms is None and model is not None:
        norms = getattr(model, "norms_", None)
    if max_samples is None:
        max_samples = (getattr(history, "params", None) or {}).get("doctor_rows", DEFAULT_MAX_SAMPLES)
    # A diverged run has inf/NaN weights and losses: that is what is being diagnosed, not news.
    with np.errstate(all="ignore"):
        run = Run(history, model, X, norms, error, max_samples)
        found = []
        for check in (check_lr, check_noisy_batches, check_overfitting):
            d = check(run)
            if d is not None:
                found.append(d)
        inputs = check_inputs(run)
        if inputs is not None:
            found.append(inputs)
        for check in (lambda r: check_saturation(r, inputs is not None), check_exploding, check_vanishing,
                      check_dead, check_always_on):
            d = check(run)
            if d is not None:
                found.append(d)
    return Report(_group_follow_ons(found, run))


#: What a diverged run (a learning rate too high) leaves behind: reported under that cause.
FOLLOW_ONS = ("exploding", "vanishing", "saturated_units", "dead_relu", "always_on")


def _group_follow_ons(found, run):
    """One cause, one warning: when the loss diverged and the learning rate is the cause, the
    weights it blew up and the units it killed are listed under it, not as problems of their own."""
    cause = next((d for d in found if d.code == "lr_too_high"), None)
    if cause is None or run.diverged is None:
        return found
    follow = [d for d in found if d.code in FOLLOW_ONS]
    if not follow:
        return found
    cause.explanation += " It also left: " + "; ".join(f"{d.title.lower()} ({d.code})" for d in follow) + "."
    cause.evidence["follow_on"] = {d.code: d.evidence for d in follow}
    return [d for d in found if d.code not in FOLLOW_ONS]

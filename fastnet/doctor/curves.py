"""The doctor's checks on the learning curves: lr_too_high, noisy_batches, overfitting."""
from __future__ import annotations

import math

import numpy as np

from fastnet.doctor.network import INPUT_SCALE_HIGH, weights_shrank
from fastnet.doctor.results import Diagnosis, fmt, times
from fastnet.doctor.run import chance_loss, learning_curve, learning_rate
from fastnet.core.optimizers import OPTIMIZERS

#: First-epoch mean loss above this multiple of the loss before training (``history.params
#: ["initial_loss"]``) means the first steps diverged (measured: healthy runs <= 0.75x, too high an lr >= 1.7x).
BLOWUP_FACTOR = 1.2
#: Without the initial loss, the same against a blind guess's loss (ln k); a fresh network's loss can
#: be 2x that with large initial logits, so the bar is higher.
BLOWUP_FACTOR_CHANCE = 2.5
#: The initial loss is one batch's: trusted from batches of this size up ...
INITIAL_LOSS_MIN_BATCH = 16
#: ... and raised by this many of its standard errors (``history.params["initial_loss_se"]``, from
#: the batch's rows) before ``BLOWUP_FACTOR`` applies: one batch of 32 rows measured 1.10 (standard
#: error 0.084) where the whole set's loss before training was 1.345.
INITIAL_LOSS_Z = 2.0
#: Fewer training samples than this: a first epoch's loss says nothing about the learning
#: rate (one or two samples fit or miss by luck), so only divergence is reported.
MIN_SAMPLES = 16
#: A loss jump: at least this multiple of the best loss so far ...
SPIKE_FACTOR = 2.0
#: ... and at least this fraction of max(first loss, blind-guess loss) in absolute terms.
SPIKE_MIN_RISE = 0.1
#: Roughness (sum of the rises / range of the curve) of a training loss that oscillates.
ROUGH_TRAIN = 0.25
#: Smallest range a roughness is measured against, as a fraction of the first loss.
ROUGH_MIN_SPAN = 0.2
#: Training loss at the end above this multiple of the first epoch's: a rising loss.
RISE_FACTOR = 1.25
#: Batches of at most this many samples are "small" (their gradients are mostly noise).
SMALL_BATCH = 8
#: Roughness of the training / validation loss that makes a small-batch curve "jagged".
ROUGH_TRAIN_SMALL_BATCH = 0.1
ROUGH_VAL_SMALL_BATCH = 0.3
#: Overfitting: the validation loss rose by this fraction of its best value ...
OVERFIT_RISE = 0.1
#: ... and by this fraction of what it had improved from epoch 1 to its best.
OVERFIT_RISE_OF_GAIN = 0.05


def _roughness(curve, level=0.0):
    """Sum of the rises of a curve over its range: 0 when it never goes up.

    The range counts as at least ``ROUGH_MIN_SPAN`` of the curve's start (or of
    ``level``), so the jitter of a flat curve is not mistaken for oscillation.
    """
    c = curve[np.isfinite(curve)]
    if len(c) < 3:
        return 0.0
    span = max(c.max() - c.min(), ROUGH_MIN_SPAN * max(abs(c[0]), level))
    if span <= 0:
        return 0.0
    return float(np.clip(np.diff(c), 0, None).sum() / span)


def _spike(curve, floor):
    """``(epoch_index, best_before, value)`` of the largest jump over the best loss so far, or None."""
    best = None
    for i in range(1, len(curve)):
        prior = np.nanmin(curve[:i]) if np.isfinite(curve[:i]).any() else np.nan
        v = curve[i]
        if not (np.isfinite(prior) and np.isfinite(v)):
            continue
        if v >= SPIKE_FACTOR * prior and v - prior >= SPIKE_MIN_RISE * floor:
            if best is None or v - prior > best[2] - best[1]:
                best = (i, float(prior), float(v))
    return best


def check_lr(run):
    params, model = run.params, run.model
    lr = learning_rate(params, model)
    lr_txt = f"lr={fmt(lr)}" if lr is not None else "the learning rate"
    lower = f"lr={fmt(lr / 10)}" if lr is not None else "a learning rate 10x lower"
    opt = params.get("optimizer") or getattr(getattr(model, "optimizer_", None), "name", None)
    findings, evidence = [], {"lr": lr, "optimizer": opt}
    loss = run.loss
    if run.diverged is not None:
        d = run.diverged
        where = f"epoch {d.get('epoch', '?')}" + (f", step {d['step']}" if d.get("step") else "")
        findings.append(f"the training loss became {fmt(d.get('loss'))} at {where}")
        evidence["diverged"] = d
    # With small batches a jagged curve is the noisy_batches finding; with shrinking
    # weights a rising loss is weight decay's doing (the vanishing finding).
    defer = run.batch_size is not None and run.batch_size <= SMALL_BATCH
    defer = defer or bool(weights_shrank(run.norms))
    # Unscaled inputs make every step erratic: that finding comes first (inputs_not_standardized).
    defer = defer or (run.inputs is not None and run.inputs["max_rms"] > INPUT_SCALE_HIGH)
    n_samples = params.get("n_samples")
    few = isinstance(n_samples, (int, np.integer)) and n_samples < MIN_SAMPLES
    if loss is not None and len(loss) and np.isfinite(loss[0]) and not few:
        chance = chance_loss(model)
        initial = params.get("initial_loss")
        # the loss before training is that of the fit call that recorded it: compared with the
        # first epoch of that call only (a history of several calls starts earlier)
        same_call = params.get("initial_epoch", run.epoch(0)) == run.epoch(0)
        trusted = (isinstance(initial, (int, float, np.floating)) and math.isfinite(initial) and initial > 0
                   and (run.batch_size or 0) >= INITIAL_LOSS_MIN_BATCH and same_call)
        se = params.get("initial_loss_se") if trusted else None
        se = float(se) if isinstance(se, (int, float, np.floating)) and math.isfinite(se) else 0.0
        if trusted and loss[0] > BLOWUP_FACTOR * (initial + INITIAL_LOSS_Z * se):
            spread = f" ± {fmt(se)}, from the first batch" if se > 0 else ""
            findings.append(
                f"the first epoch's mean loss, {fmt(loss[0])}, is {times(loss[0] / initial)} the loss before "
                f"training ({fmt(initial)}{spread}): the first steps made the network worse")
            evidence["first_loss"], evidence["initial_loss"] = float(loss[0]), float(initial)
            evidence["initial_loss_se"] = se
        elif not trusted and chance is not None and loss[0] > BLOWUP_FACTOR_CHANCE * chance[0]:
            findings.append(
                f"the first epoch's mean loss, {fmt(loss[0])}, is {times(loss[0] / chance[0])} the loss of "
                f"blind guessing ({chance[1]} = {fmt(chance[0])}): the first steps made the network worse")
            evidence["first_loss"], evidence["chance_loss"] = float(loss[0]), chance[0]
        finite = loss[np.isfinite(loss)]
        if len(finite) >= 3 and not defer:
            floor = max(finite[0], chance[0] if chance else 0.0)
            spike = _spike(loss, floor)
            rough = _roughness(loss, chance[0] if chance else 0.0)
            if spike is not None:
                i, prior, value = spike
                findings.append(f"the training loss jumped from {fmt(prior)} to {fmt(value)} at epoch "
                                f"{run.epoch(i)}")
                evidence["spike"] = {"epoch": run.epoch(i), "from": prior, "to": value}
            elif len(finite) >= 3 and finite[-1] > RISE_FACTOR * finite[0]:
                findings.append(f"the training loss rose from {fmt(finite[0])} to {fmt(finite[-1])}")
                evidence["rise"] = {"from": float(finite[0]), "to": float(finite[-1])}
            if rough >= ROUGH_TRAIN:
                ups = int((np.diff(finite) > 0).sum())
                findings.append(f"it went up in {ups} of {len(finite) - 1} epochs (roughness {rough:.2f})")
                evidence["roughness"] = rough
    if not findings:
        return None
    title = "Learning rate too high" + (f" ({lr_txt} with {opt})" if lr is not None and opt else "")
    explanation = ("; ".join(findings) + ". Steps that are too large overshoot the minimum: the loss "
                   "climbs, oscillates or overflows instead of falling.")
    if run.inputs is not None and (run.inputs["max_rms"] > INPUT_SCALE_HIGH):
        explanation += (" Unscaled inputs (see inputs_not_standardized) make every step larger, so fix "
                        "them first.")
    suggestion = (f"lower the learning rate about 10x ({lower}); keep lowering it until the loss falls "
                  "smoothly. A decaying schedule (lr_schedule=\"cosine\") also helps")
    if opt in OPTIMIZERS and OPTIMIZERS[opt].adaptive:
        suggestion += f"; {opt} usually starts well at lr=1e-3."
    else:
        suggestion += "; or optimizer=\"adam\" with lr=1e-3."
    return Diagnosis("lr_too_high", title, explanation, suggestion, evidence)


def check_noisy_batches(run):
    bs = run.batch_size
    if bs is None or bs > SMALL_BATCH or run.loss is None:
        return None
    finite = run.loss[np.isfinite(run.loss)]
    if len(finite) < 3:
        return None
    chance = chance_loss(run.model)
    level = chance[0] if chance else 0.0
    rough_train = _roughness(run.loss, level)
    rough_val = _roughness(run.val, level) if run.val is not None else 0.0
    spike = _spike(run.loss, max(finite[0], chance[0] if chance else 0.0))
    jagged = rough_train >= ROUGH_TRAIN_SMALL_BATCH or rough_val >= ROUGH_VAL_SMALL_BATCH or spike is not None
    if not jagged:
        return None
    n = run.params.get("n_samples")
    steps = run.params.get("steps") or (-(-n // bs) if n else None)
    parts = [f"batches of {bs} sample{'s' if bs > 1 else ''}"]
    if steps:
        parts.append(f"{steps} noisy steps per epoch")
    facts = [f"training-loss roughness {rough_train:.2f}"]
    if run.val is not None:
        facts.append(f"validation-loss roughness {rough_val:.2f}")
    if spike is not None:
        facts.append(f"a jump from {fmt(spike[1])} to {fmt(spike[2])} at epoch {run.epoch(spike[0])}")
    explanation = (f"With {', '.join(parts)}, each gradient is estimated from too few samples to represent "
                   f"the data: the steps follow the noise and the learning curve is jagged "
                   f"({'; '.join(facts)}; 0 means a curve that never goes up).")
    suggestion = ("use batch_size=32 to 128 (and raise the learning rate with it if training slows), or keep "
                  "the small batches and lower the learning rate ~10x.")
    return Diagnosis("noisy_batches", f"Batches too small (batch_size={bs}): noisy learning curve",
                     explanation, suggestion,
                     {"batch_size": bs, "steps_per_epoch": steps, "roughness_train": rough_train,
                      "roughness_val": rough_val if run.val is not None else None})


def check_overfitting(run):
    val, loss = run.val, run.loss
    if val is None or loss is None or len(val) < 3 or not np.all(np.isfinite(val)):
        return None
    planned = run.params.get("epochs")
    if isinstance(planned, (int, np.integer)) and len(val) < planned and run.diverged is None:
        return None  # stopped early (EarlyStopping): the cure for overfitting is already applied
    best = int(np.argmin(val))
    if best > len(val) - 3:
        return None  # fewer than two epochs after the best: too early to tell
    tail = float(np.mean(val[-2:]))
    rise = tail - val[best]
    gain = val[0] - val[best]
    if rise < OVERFIT_RISE * val[best] or rise < OVERFIT_RISE_OF_GAIN * gain:
        return None
    if not (np.isfinite(loss[best]) and np.isfinite(loss[-1]) and loss[-1] < loss[best]):
        return None  # the training loss rose too: that is not overfitting
    if loss[-1] >= val[best]:
        return None  # it does not even fit the training set better than it generalised: not memorising
    began = run.epoch(best + 1)
    best_epoch = run.epoch(best)
    last = run.epoch(len(val) - 1)
    explanation = (f"the validation loss was lowest at epoch {best_epoch} ({fmt(val[best])}) and rose to "
                   f"{fmt(val[-1])} by epoch {last}, while the training loss kept falling "
                   f"({fmt(loss[best])} -> {fmt(loss[-1])}): from epoch {began} on, the network learns the "
                   f"training samples by heart instead of what generalises.")
    acc = learning_curve(run.history, "val_accuracy")
    if acc is not None and np.all(np.isfinite(acc)):
        explanation += f" Validation accuracy: {acc[best]:.3f} at epoch {best_epoch}, {acc[-1]:.3f} at the end"
        explanation += (": it held up, but the model grew over-confident on the samples it gets wrong."
                        if acc[-1] >= acc[best] else ".")
    suggestion = (f"stop at the best epoch: early_stopping=EarlyStopping(patience=3, restore_best=True) would "
                  f"have kept epoch {best_epoch}'s weights; regularise (weight_decay=1e-4, or dropout=0.2 on "
                  "MLP), use a smaller network, or train on more data.")
    return Diagnosis("overfitting", f"Overfitting from epoch {began}", explanation, suggestion,
                     {"best_epoch": best_epoch, "began": began, "best_val_loss": float(val[best]),
                      "last_val_loss": float(val[-1]), "train_loss_at_best": float(loss[best]),
                      "last_train_loss": float(loss[-1])})

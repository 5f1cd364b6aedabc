"""The doctor's checks on the network: its inputs, hidden units, weights and gradients
(inputs_not_standardized, saturated_units, exploding, vanishing, dead_relu, always_on)."""
from __future__ import annotations

import math

import numpy as np

from fastnet.doctor.activations import ALWAYS_ON_FRACTION
from fastnet.doctor.results import Diagnosis, fmt, times
from fastnet.kernels.reference import ACTIVATIONS
from fastnet.core.layers import canonical_activation

#: Feature RMS (sqrt(mean^2 + std^2)) beyond which inputs are "not standardized".
INPUT_SCALE_HIGH = 10.0
INPUT_SCALE_LOW = 0.01
#: With saturated sigmoid/tanh units, a lower bar for the input scale.
INPUT_SCALE_HIGH_SATURATED = 3.0
#: Mean fraction of samples on which a sigmoid/tanh layer's units are saturated.
SATURATED_LAYER = 0.5
#: Exploding weights: a layer's weight norm multiplied by this much within one epoch ...
WEIGHT_JUMP = 5.0
#: ... or grown this much in all and still growing by this factor per epoch at the end.
WEIGHT_GROWTH = 10.0
WEIGHT_STILL_GROWING = 1.1
#: Weight norm below this fraction of its initial value: vanishing weights.
WEIGHT_SHRINK = 0.1
#: Median first-layer / last-layer gradient norm ratio: vanishing below, exploding above.
GRAD_RATIO_VANISHING = 1e-2
GRAD_RATIO_EXPLODING = 1e2
#: Fraction of a ReLU layer's units that are dead for a diagnosis.
DEAD_FRACTION = 0.5
#: Fraction of a ReLU layer's live units that are active on > ALWAYS_ON_FRACTION of samples.
ALWAYS_ON_LAYER = 0.8


def _saturation_summary(stats):
    layers = [s for s in stats if s.saturated is not None]
    return [(s.name, s.activation, s.saturated_fraction) for s in layers]


def check_inputs(run):
    info = run.inputs
    if info is None:
        return None
    sat = _saturation_summary(run.stats)
    first_sat = sat[0][2] if sat and run.stats and run.stats[0].saturated is not None else 0.0
    high = info["max_rms"] > INPUT_SCALE_HIGH
    low = info["max_rms"] < INPUT_SCALE_LOW
    saturating = first_sat > SATURATED_LAYER and info["max_rms"] > INPUT_SCALE_HIGH_SATURATED
    if not (high or low or saturating):
        return None
    j = info["argmax_rms"]
    mean, std = info["mean"], info["std"]
    if low:
        what = (f"all features are tiny: the largest RMS is {fmt(info['max_rms'])} (feature {j}), so the "
                "first layer's outputs barely change with the input and its gradients are tiny")
    else:
        what = (f"feature {j} has mean {fmt(mean[j])} and standard deviation {fmt(std[j])} (RMS "
                f"{fmt(info['max_rms'])}; median std over features {fmt(info['median_std'])}), where the "
                "initial weights assume inputs of scale ~1: pre-activations are huge, and the loss surface is "
                "steep along the large features and flat along the small ones")
    if sat and sat[0][2] >= 0.1:
        name, act, frac = sat[0]
        what += (f"; the {act} units of {name} are saturated on {frac:.0%} of (unit, sample) pairs, where "
                 "their gradient is ~0")
    suggestion = ("standardize the features with the training set's statistics: "
                  "`X_train, X_test, _ = fastnet.datasets.standardize(X_train, X_test)`")
    if info["pixels"]:
        suggestion = "these look like 8-bit pixels: divide by 255 (X = X / 255.0), or " + suggestion
    return Diagnosis("inputs_not_standardized",
                     f"Inputs not standardized (largest feature RMS {fmt(info['max_rms'])})",
                     what + ".", suggestion,
                     {"max_rms": info["max_rms"], "feature": j, "mean": float(mean[j]), "std": float(std[j]),
                      "median_std": info["median_std"], "pixels": info["pixels"],
                      "saturated": {n: f for n, _, f in sat}})


def check_saturation(run, inputs_flagged):
    if inputs_flagged:
        return None  # already explained by the input scale
    bad = [(n, a, f) for n, a, f in _saturation_summary(run.stats) if f > SATURATED_LAYER]
    if not bad:
        return None
    desc = ", ".join(f"{n} ({a}) {f:.0%}" for n, a, f in bad)
    explanation = (f"saturated units (sigmoid output < 0.01 or > 0.99, |tanh| > 0.99) pass almost no gradient, so "
                   f"their weights stop learning; saturated share of (unit, sample) pairs: {desc}. The inputs are "
                   "of reasonable scale, so the weights themselves grew too large (often from a learning rate "
                   "too high).")
    suggestion = ("lower the learning rate, add weight_decay (e.g. 1e-4), or use activation=\"relu\" in the "
                  "hidden layers.")
    return Diagnosis("saturated_units", f"Saturated {bad[0][1]} units in {bad[0][0]} ({bad[0][2]:.0%} of the time)",
                     explanation, suggestion, {n: f for n, _, f in bad})


def _norm_series(norms, kind, name):
    return np.array(norms[kind][name], dtype=np.float64)


def check_exploding(run):
    norms = run.norms
    if not norms or not norms.get("epochs"):
        return None
    findings, evidence = [], {}
    epochs = norms["epochs"]
    for name in norms["layers"]:
        w = _norm_series(norms, "weight", name)
        g = _norm_series(norms, "grad", name)
        bad = ~np.isfinite(w) | ~np.isfinite(g)
        if bad.any():
            i = int(np.argmax(bad))
            findings.append(f"{name}'s {'weights' if not np.isfinite(w[i]) else 'gradient'} became "
                            f"{fmt(w[i] if not np.isfinite(w[i]) else g[i])} at epoch {epochs[i]}")
            evidence[name] = {"non_finite_at": epochs[i]}
            continue
        w0 = norms["initial_weight"][name]
        if w0 <= 0:
            continue
        path = np.concatenate([[w0], w])
        steps = path[1:] / np.maximum(path[:-1], 1e-30)
        jump = int(np.argmax(steps))
        growth = float(w[-1] / w0)
        # Abrupt (one epoch multiplies the norm) or still going (large and growing at the end). A slow
        # growth that has levelled off is how small nets fit sharp targets (XOR), not an explosion.
        if steps[jump] >= WEIGHT_JUMP or (growth >= WEIGHT_GROWTH and steps[-1] >= WEIGHT_STILL_GROWING):
            when = (f", {times(steps[jump])} of it in epoch {epochs[jump]}" if steps[jump] >= WEIGHT_JUMP
                    else ", and still growing")
            findings.append(f"{name}'s weight norm grew {times(growth)}, from {fmt(w0)} to {fmt(w[-1])}{when}")
            evidence[name] = {"initial_weight": w0, "weight": float(w[-1]), "growth": growth,
                              "largest_epoch_growth": float(steps[jump]), "at_epoch": epochs[jump]}
    ratio = _grad_ratio(norms)
    if ratio is not None and ratio[0] > GRAD_RATIO_EXPLODING:
        findings.append(f"the first layer's gradients are {times(ratio[0])} the last layer's (median over epochs)")
        evidence["grad_ratio_first_to_last"] = ratio[0]
    if not findings:
        return None
    explanation = ("; ".join(findings) + ". Updates proportional to ever larger gradients make the weights "
                   "grow until activations saturate or overflow.")
    suggestion = "lower the learning rate, add weight_decay (e.g. 1e-4), and standardize the inputs."
    if getattr(run.model, "loss", None) == "sse":
        suggestion += (" The \"sse\" loss sums over the batch, so its gradients grow with batch_size: "
                       "loss=\"mse\" averages instead.")
    return Diagnosis("exploding", "Exploding weights or gradients", explanation, suggestion, evidence)


def _grad_ratio(norms):
    layers = norms["layers"]
    if len(layers) < 2:
        return None
    first = _norm_series(norms, "grad", layers[0])
    last = _norm_series(norms, "grad", layers[-1])
    ok = np.isfinite(first) & np.isfinite(last)
    if not ok.any():
        return None
    f, l_ = float(np.median(first[ok])), float(np.median(last[ok]))
    if l_ <= 0:
        return None
    return f / l_, f, l_


def _hidden_activations(model):
    from fastnet.core.layers import Dense

    return {layer.activation for layer in model.layers[:-1] if isinstance(layer, Dense) and layer.activation}


def weights_shrank(norms):
    """Names of the layers whose weight norm fell below WEIGHT_SHRINK of its initial value."""
    if not norms or not norms.get("epochs"):
        return []
    out = []
    for name in norms["layers"]:
        w = norms["weight"][name][-1]
        w0 = norms["initial_weight"][name]
        if w0 > 0 and math.isfinite(w) and w <= WEIGHT_SHRINK * w0:
            out.append(name)
    return out


def check_vanishing(run):
    norms = run.norms
    if not norms or not norms.get("epochs"):
        return None
    findings, evidence = [], {}
    layers = norms["layers"]
    ratio = _grad_ratio(norms)
    # ReLU derivatives are 0 or 1: tiny gradients in a ReLU net mean dead units
    # (the dead_relu check), not a product of small derivatives.
    saturating = run.model is None or any(ACTIVATIONS[canonical_activation(a)].saturated
                                          for a in _hidden_activations(run.model))
    if ratio is not None and saturating and len(layers) >= 3 and ratio[0] < GRAD_RATIO_VANISHING:
        r, f, l_ = ratio
        per_layer = ", ".join(f"{n} {fmt(float(np.median(_norm_series(norms, 'grad', n))))}" for n in layers)
        how = "is zero" if f == 0 else f"is {times(1 / r)} smaller than the last layer's ({fmt(l_)})"
        findings.append(f"the first layer's gradient norm ({fmt(f)}) {how}; median per layer, input to "
                        f"output: {per_layer}")
        evidence["grad_ratio_first_to_last"] = r
    for name in weights_shrank(norms):
        w = _norm_series(norms, "weight", name)
        w0 = norms["initial_weight"][name]
        findings.append(f"{name}'s weight norm shrank to {w[-1] / w0:.1%} of its initial value "
                        f"({fmt(w0)} -> {fmt(w[-1])})")
        evidence[name] = {"initial_weight": w0, "weight": float(w[-1])}
    if not findings:
        return None
    acts = sorted(_hidden_activations(run.model)) if run.model is not None else []
    explanation = "; ".join(findings) + "."
    if "grad_ratio_first_to_last" in evidence:
        explanation += (" Each sigmoid/tanh layer multiplies the backpropagated gradient by its derivative "
                        "(at most 0.25 for sigmoid), so early layers barely learn.")
    suggestion = ("use activation=\"relu\" (or \"tanh\" rather than \"sigmoid\") in the hidden layers, fewer "
                  "layers, or optimizer=\"adam\"; if the weights shrank, lower weight_decay.")
    title = "Vanishing gradients" if "grad_ratio_first_to_last" in evidence else "Vanishing weights"
    if acts:
        evidence["hidden_activations"] = acts
    return Diagnosis("vanishing", title, explanation, suggestion, evidence)


def _relu_layers(stats):
    return [s for s in stats if ACTIVATIONS.get(s.activation) is not None and ACTIVATIONS[s.activation].dies]


def check_dead(run):
    bad = [s for s in _relu_layers(run.stats) if s.dead_fraction >= DEAD_FRACTION and len(s.dead) >= 2]
    if not bad:
        return None
    desc = "; ".join(f"{s.name}: {len(s.dead)} of {s.units} units ({s.dead_fraction:.0%})" for s in bad)
    explanation = (f"these ReLU units output 0 on every one of the {bad[0].n_samples} samples checked, so they "
                   f"get no gradient and can never recover: {desc}. Usual cause: a step too large pushed their "
                   "bias/weights far negative (learning rate too high, or unscaled inputs).")
    suggestion = ("lower the learning rate, standardize the inputs, or use activation=\"leaky_relu\" (its "
                  "units keep a small gradient).")
    return Diagnosis("dead_relu", f"Dead ReLU units ({desc})", explanation, suggestion,
                     {s.name: {"dead": int(len(s.dead)), "units": s.units} for s in bad})


def check_always_on(run):
    bad = []
    for s in _relu_layers(run.stats):
        live = s.units - len(s.dead)
        if live >= 4 and len(s.always_on) >= ALWAYS_ON_LAYER * live:
            bad.append((s, live))
    if not bad:
        return None
    desc = "; ".join(f"{s.name}: {len(s.always_on)} of {live} live units" for s, live in bad)
    explanation = (f"units active on more than {ALWAYS_ON_FRACTION:.0%} of the samples are in their linear part "
                   f"nearly always, so the layer computes an almost linear function: {desc}. Usual cause: inputs "
                   "that are not centred (a large positive mean) push every pre-activation the same way.")
    suggestion = ("center the inputs (fastnet.datasets.standardize), or lower the learning rate if the biases "
                  "grew large.")
    return Diagnosis("always_on", f"ReLU units almost always active ({desc})", explanation, suggestion,
                     {s.name: {"always_on": int(len(s.always_on)), "live": live} for s, live in bad})

"""Make the pictures and the diagnosis transcripts of docs/pages/doctor.md from real runs.

    python examples/make_docs_plots.py [--out docs/pages] [--subset 10000]

Needs MNIST (cached by ``fastnet.datasets.load_mnist``) and matplotlib
(``pip install ".[plot]"``).  About a minute on a 2-core CPU.

Runs, all seeded:

1. a healthy MNIST run, 784-128-10 ReLU, Adam, on a 10k-image subset:
   learning curves, confusion matrix, first-layer weights, the inputs that most
   activate hidden units, top-3 guesses, per-layer norms, unit activity;
2. the classic spirals toy set: the decision boundary of a 2-64-64-3 net;
3. failing runs, diagnosed by ``fastnet.diagnose``: raw 0-255 pixels into a
   sigmoid net; Adam with an SGD learning rate; overfitting a 500-image subset.
   Their printed reports are written to ``OUT/diagnosis_*.txt``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

import fastnet
from fastnet.doctor.activations import activation_stats
from fastnet.datasets import load_mnist, spirals
from fastnet.doctor import NormRecorder, diagnose
from fastnet.core.metrics import classification_report, top_k_accuracy
from fastnet.plots import (
    plot_activation_stats,
    plot_confusion_matrix,
    plot_decision_boundary,
    plot_first_layer_weights,
    plot_history,
    plot_norms,
    plot_top_activating,
    plot_top_k,
)


def mnist(subset):
    (xtr, ytr), (xte, yte) = load_mnist(verbose=False)
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    return (flat(xtr[:subset]), ytr[:subset]), (flat(xte), yte)


def report(name, model, history, X, out, command):
    """Diagnose a run, print the report and keep it as docs/pages/diagnosis_<name>.txt."""
    found = diagnose(history, model, X)
    text = f">>> {command}\n{found}\n"
    print(text)
    with open(os.path.join(out, f"diagnosis_{name}.txt"), "w") as f:
        f.write(text)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "pages"))
    parser.add_argument("--subset", type=int, default=10_000)
    args = parser.parse_args(argv)
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    (Xtr_raw, ytr), (Xte_raw, yte) = mnist(args.subset)
    Xtr = Xtr_raw.astype(np.float32) / 255.0
    Xte = Xte_raw.astype(np.float32) / 255.0
    Xval, yval = Xte[:2000], yte[:2000]

    # 1. A healthy MNIST run ----------------------------------------------------
    model = fastnet.MLP([784, 128, 10], activation="relu", backend="cpu", seed=0)
    history = model.fit(Xtr, ytr, epochs=8, optimizer="adam", lr=1e-3, batch_size=128, weight_decay=1e-3,
                        validation_data=(Xval, yval), callbacks=[NormRecorder()])
    proba = model.predict_proba(Xte)
    print(f"healthy run: test accuracy {model.score(Xte, yte):.4f}, top-3 {top_k_accuracy(yte, proba, 3):.4f}")
    print(classification_report(yte, proba))
    plot_history(history, os.path.join(out, "history.png"),
                 title="MNIST 784-128-10 ReLU, Adam lr=1e-3, weight_decay=1e-3, 10k training images")
    plot_confusion_matrix(yte, proba, os.path.join(out, "confusion_matrix.png"))
    plot_first_layer_weights(model, os.path.join(out, "first_layer_weights.png"), max_units=40, cols=10)
    plot_top_activating(model, Xte, os.path.join(out, "top_activating.png"), units=None, k=8)
    plot_top_k(model, Xte, os.path.join(out, "top_k.png"), y=yte, k=3, n=12, select="uncertain")
    plot_norms(model.norms_, os.path.join(out, "norms.png"))
    plot_activation_stats(activation_stats(model, Xtr), os.path.join(out, "activation_stats.png"))
    report("healthy", model, history, Xtr, out,
           "fastnet.diagnose(history, model, X_train)   # 784-128-10 relu, adam lr=1e-3, weight_decay=1e-3, X / 255")

    # 2. Decision boundary on a 2-D toy set -----------------------------------------
    Xs, ys = spirals(600, 3, noise=0.2, seed=0)
    Xs = (Xs * 2).astype(np.float32)
    toy = fastnet.MLP([2, 64, 64, 3], activation="relu", backend="cpu", seed=0)
    toy.fit(Xs, ys, epochs=60, optimizer="adam", lr=0.01, batch_size=32, lr_schedule="cosine")
    plot_decision_boundary(toy, Xs, ys, os.path.join(out, "decision_boundary.png"),
                           title="Spirals: 2-64-64-3 ReLU net, decision regions and confidence")

    # 3. Failing runs, diagnosed --------------------------------------------------
    # (a) The tutorials' sigmoid net, fed raw 0-255 pixels.
    bad = fastnet.MLP([784, 128, 10], activation="sigmoid", backend="cpu", seed=0)
    h_bad = bad.fit(Xtr_raw, ytr, epochs=5, optimizer="sgd", lr=0.5, batch_size=64,
                    validation_data=(Xval * 255, yval), callbacks=[NormRecorder()])
    plot_history(h_bad, os.path.join(out, "failing_unscaled_history.png"),
                 title="Failing: raw 0-255 pixels into a sigmoid net (SGD lr=0.5)")
    plot_activation_stats(activation_stats(bad, Xtr_raw), os.path.join(out, "failing_unscaled_activations.png"),
                          title="Raw pixels: the sigmoid units are saturated nearly always")
    report("unscaled", bad, h_bad, Xtr_raw, out,
           "fastnet.diagnose(history, model, X_train)   # 784-128-10 sigmoid, sgd lr=0.5, raw 0-255 pixels")
    # The same net with X / 255, for comparison.
    good = fastnet.MLP([784, 128, 10], activation="sigmoid", backend="cpu", seed=0)
    h_good = good.fit(Xtr, ytr, epochs=5, optimizer="sgd", lr=0.5, batch_size=64, validation_data=(Xval, yval),
                      callbacks=[NormRecorder()])
    report("scaled", good, h_good, Xtr, out,
           "fastnet.diagnose(history, model, X_train / 255)   # the same run with the pixels scaled")
    print(f"unscaled: val accuracy {h_bad['val_accuracy'][-1]:.3f}; scaled: {h_good['val_accuracy'][-1]:.3f}")

    # (b) An SGD learning rate given to Adam (300x its usual 1e-3).
    hot = fastnet.MLP([784, 128, 10], activation="relu", backend="cpu", seed=0)
    h_hot = hot.fit(Xtr, ytr, epochs=8, optimizer="adam", lr=0.3, batch_size=128,
                    validation_data=(Xval, yval), callbacks=[NormRecorder()])
    plot_history(h_hot, os.path.join(out, "failing_lr_history.png"), title="Failing: Adam lr=0.3 on MNIST")
    plot_norms(hot.norms_, os.path.join(out, "failing_lr_norms.png"), title="Adam lr=0.3: per-layer norms")
    report("lr", hot, h_hot, Xtr, out,
           "fastnet.diagnose(history, model, X_train)   # 784-128-10 relu, adam lr=0.3")

    # (c) Overfitting: 500 training images, a wide net, many epochs.
    over = fastnet.MLP([784, 512, 10], activation="relu", backend="cpu", seed=0)
    h_over = over.fit(Xtr[:500], ytr[:500], epochs=40, optimizer="adam", lr=1e-3, batch_size=32,
                      validation_data=(Xval, yval), callbacks=[NormRecorder()])
    plot_history(h_over, os.path.join(out, "failing_overfit_history.png"),
                 title="Failing: 784-512-10 on 500 images, 40 epochs (overfitting)")
    report("overfit", over, h_over, Xtr[:500], out,
           "fastnet.diagnose(history, model, X_train)   # 784-512-10 relu, adam, 500 images, 40 epochs")
    print(f"done in {time.perf_counter() - t0:.0f} s; files in {out}")
    return 0


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(main())

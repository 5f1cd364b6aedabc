"""Width x batch sweep, fastnet beside PyTorch (tuned), interleaved (``fastnet bench --sweep``).

Two hidden ReLU layers of each width, Adam 1e-3, softmax cross-entropy; per cell the
systems alternate epoch by epoch (after one warm-up epoch each) on the same shuffled
rows, and the cell's figure is the median over rounds of
``pytorch-tuned seconds / fastnet seconds`` (above 1: fastnet is faster).
"""
from __future__ import annotations

import statistics

import numpy as np

from fastnet.cli.bench import systems as bench_systems
from fastnet.cli.bench.interleaved import measure, round_ratios

WIDTHS = (64, 256, 1024)
BATCHES = (32, 128, 1024)
FASTNET, BASELINE = "fastnet-fused", "pytorch-tuned"


def sweep_config(width, batch):
    return dict(hidden=[width, width], activation="relu", optimizer="adam", lr=1e-3, batch_size=batch)


def default_systems():
    return [bench_systems.FastnetSystem("cpu", "fused"), bench_systems.TorchSystem(tuned=True)]


def run_sweep(X, y, widths=WIDTHS, batches=BATCHES, rounds=5, seed=0, make_systems=None, progress=None):
    """One cell per (width, batch): epoch seconds per system, per-round ratios and their
    median; plus the median over the cells."""
    make_systems = make_systems or default_systems
    rng = np.random.default_rng(seed)
    cells = []
    for w in widths:
        for b in batches:
            times = measure(make_systems(), X, y, sweep_config(w, b), rounds, rng, seed,
                            bench_systems.labelled(progress, f"w{w} b{b}"))
            ratios = round_ratios(times[BASELINE], times[FASTNET])
            cells.append({"width": w, "batch": b, "epoch_seconds": times, "ratios_per_round": ratios,
                          "ratio": statistics.median(ratios),
                          "median_epoch_seconds": {k: statistics.median(v) for k, v in times.items()}})
    return {"widths": list(widths), "batches": list(batches), "rounds": rounds, "rows": len(X),
            "ratio": f"{BASELINE} seconds / {FASTNET} seconds, median over rounds",
            "cells": cells, "median_ratio": statistics.median(c["ratio"] for c in cells)}


def _grid(result):
    by = {(c["width"], c["batch"]): c["ratio"] for c in result["cells"]}
    return np.array([[by[(w, b)] for b in result["batches"]] for w in result["widths"]])


def format_sweep(result):
    """Markdown: widths down, batch sizes across, fastnet's speed-up over pytorch-tuned."""
    grid = _grid(result)
    lines = ["| hidden width (x2) | " + " | ".join(f"batch {b}" for b in result["batches"]) + " |",
             "|---|" + "---:|" * len(result["batches"])]
    for w, row in zip(result["widths"], grid):
        lines.append(f"| {w} | " + " | ".join(f"{r:.2f}x" for r in row) + " |")
    lines.append(f"\nmedian over the {grid.size} cells: {result['median_ratio']:.2f}x "
                 f"(each cell: {result['ratio']}; {result['rows']} rows per epoch, {result['rounds']} rounds)")
    return "\n".join(lines)


def plot_sweep(result, path):
    """A heatmap PNG of the ratios, each cell annotated; colour centred on 1."""
    from matplotlib.colors import TwoSlopeNorm

    from fastnet.plots.figure import new_figure, save_figure

    grid = _grid(result)
    span = max(abs(np.log(grid)).max(), 0.05)
    fig = new_figure(5.2, 4.2)
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="RdYlGn", norm=TwoSlopeNorm(1.0, np.exp(-span), np.exp(span)))
    ax.set_xticks(range(len(result["batches"])), [str(b) for b in result["batches"]])
    ax.set_yticks(range(len(result["widths"])), [str(w) for w in result["widths"]])
    ax.set_xlabel("batch size")
    ax.set_ylabel("hidden width (2 layers, ReLU, Adam)")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.2f}x", ha="center", va="center", fontsize=11)
    ax.set_title(f"fastnet speed-up over PyTorch (tuned)\nmedian of per-round ratios; "
                 f"all cells: {result['median_ratio']:.2f}x", fontsize=10)
    fig.colorbar(im, ax=ax, label=f"{BASELINE} s / {FASTNET} s")
    save_figure(fig, path)
    return path

"""bench/gemm_in_step.py: the step's GEMMs timed in the step, alone and after a sweep."""
import importlib.util
from pathlib import Path

import numpy as np

import fastnet.cli

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gemm_in_step.py"


def test_every_gemm_of_the_timed_epoch_is_a_row_and_the_sums_add_up(monkeypatch, capsys):
    rng = np.random.default_rng(0)
    X = rng.random((2000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 2000)
    monkeypatch.setattr(fastnet.cli, "load_mnist_arrays", lambda **kw: ((X, y), (X, y)))
    spec = importlib.util.spec_from_file_location("gemm_in_step", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--batch", "64", "--hidden", "16", "--repeats", "2", "--sweep-mb", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| a")]
    # 2,000 rows at batch 64: 31 steps of 64 rows and one of 16; 5 GEMMs a step (x@W1, x.T@dy;
    # h@W2, h.T@dy, dy@W2.T) -> 5 shapes at 64 rows and 5 at 16
    assert len(rows) == 10
    calls = [int(r.split("|")[2]) for r in rows]
    assert sorted(calls) == [1] * 5 + [31] * 5
    assert "| a (64x784) @ b (784x16) | 31 |" in out and "| a.T (784x64) @ b (64x16) | 31 |" in out
    assert "| a (64x10) @ b.T (10x16) | 31 |" in out   # dy @ W2.T
    total = [line for line in out.splitlines() if line.startswith("| the epoch's GEMMs")][0]
    sums = [float(v) for v in total.split("|")[3:6]]
    per_row = [[float(v) for v in r.split("|")[3:6]] for r in rows]
    for i, printed in enumerate(sums):   # (µs rounded per row, seconds to 6 decimals)
        assert abs(printed - sum(c * f[i] for c, f in zip(calls, per_row)) / 1e6) <= 0.5e-6 * (sum(calls) + 1)

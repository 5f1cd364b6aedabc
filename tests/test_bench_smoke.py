"""One short round of the benchmark machinery on tiny data (fastnet/benchmark.py, bench/bench_kernels.py).

These check that the benchmarks run and that their arithmetic (FLOP counts, samples/s, ratios,
the table) is right; they time nothing worth reading.
"""
import importlib.util
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fastnet import benchmark as B

BENCH_KERNELS = Path(__file__).resolve().parent.parent / "bench" / "bench_kernels.py"


def test_flops_per_sample_by_hand():
    """784-128-10: weights 100,352 + 1,280 = 101,632; 6 * 101,632 - 2 * 100,352 = 409,088.
    784-512-512-10: 401,408 + 262,144 + 5,120 = 668,672; 6 * 668,672 - 2 * 401,408 = 3,209,216."""
    assert B.sizes(B.CONFIGS["sigmoid128-sgd"]) == [784, 128, 10]
    assert B.flops_per_sample([784, 128, 10]) == 409_088
    assert B.flops_per_sample(B.sizes(B.CONFIGS["relu512x2-adam"])) == 3_209_216
    assert B.flops_per_sample([3, 2]) == 6 * 6 - 2 * 6


def _tiny(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    X = rng.random((n, 784), dtype=np.float32) * 0.1
    X[np.arange(n), y] += 1.0  # a learnable signal
    return X, y


def test_run_one_round_on_tiny_data():
    X, y = _tiny()
    systems = [B.FastnetSystem("cpu", "fused"), B.FastnetSystem("cpu", "reference"), B.NumpyScratchSystem()]
    seen = []
    rows = B.run(X, y, configs=["sigmoid128-sgd"], systems=systems, rounds=2,
                 progress=lambda c, s, r, n: seen.append((c, s, r, n)))
    assert [r["system"] for r in rows] == ["fastnet-fused", "fastnet-reference", "numpy-scratch"]
    assert seen == [("sigmoid128-sgd", s.name, r, 2) for r in (1, 2) for s in systems]
    fps = 409_088
    for row in rows:
        assert row["config"] == "sigmoid128-sgd" and row["rounds"] == 2
        assert row["ratio_to_pytorch"] is None  # no PyTorch among the systems
        assert len(row["epoch_seconds"]) == 2 and min(row["epoch_seconds"]) > 0
        assert row["samples_per_s"] == pytest.approx(256 / statistics.median(row["epoch_seconds"]), rel=1e-12)
        assert row["gflops"] == pytest.approx(fps * row["samples_per_s"] / 1e9, rel=1e-12)
        assert row["pct_of_ceiling"] == pytest.approx(100 * row["gflops"] / row["gemm_ceiling_gflops"], rel=1e-12)
    table = B.format_table(rows).splitlines()
    assert table[0].startswith("| config | system | samples/s") and len(table) == 2 + 3
    assert table[2].startswith("| sigmoid128-sgd | fastnet-fused | ") and "| - |" in table[2]
    assert 0.0 <= systems[0].accuracy(X, y) <= 1.0


def test_ratio_to_pytorch_is_median_of_round_ratios(monkeypatch):
    """With a stand-in named "pytorch" whose epochs take known times, ratio = median(t_torch / t_sys)."""
    clock = iter(np.cumsum([0.0] + [1.0] * 1000).tolist())
    monkeypatch.setattr(B, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(B, "gemm_ceiling", lambda sizes, batch: 100.0)

    class Fake(B.System):
        def __init__(self, name):
            self.name = name

        def setup(self, X, y, config, seed):
            pass

        def epoch(self, X, y):
            pass

    X, y = _tiny(16)
    rows = B.run(X, y, configs=["sigmoid128-sgd"], systems=[Fake("pytorch"), Fake("other")], rounds=3)
    # Every timed epoch lasts exactly 1 "second" on the fake clock: ratio 1, 16 samples/s.
    assert [r["ratio_to_pytorch"] for r in rows] == [1.0, 1.0]
    assert [r["samples_per_s"] for r in rows] == [16.0, 16.0]
    assert rows[0]["gemm_ceiling_gflops"] == 100.0


def test_gemm_ceiling_and_machine_description():
    assert B.gemm_ceiling([784, 16, 10], 32, repeats=2) > 0
    text = B.machine_description()
    assert "cores" in text and "NumPy" in text


def test_fastnet_time_to_accuracy_tiny():
    X, y = _tiny(300)
    recipe = dict(hidden=[16], activation="relu", optimizer="adam", lr=1e-2, batch_size=32, epochs=3,
                  schedule="constant", dropout=0.0)
    seconds, epochs, accs = B.fastnet_time_to_accuracy(X, y, X, y, recipe, target=0.0)
    assert seconds is not None and seconds >= 0 and epochs == 1 and len(accs) == 1
    seconds, epochs, accs = B.fastnet_time_to_accuracy(X, y, X, y, recipe, target=1.01)
    assert seconds is None and epochs == 3 and len(accs) == 3


# ------------------------------------------------------------------ bench/bench_kernels.py
@pytest.fixture(scope="module")
def bench_kernels():
    if not BENCH_KERNELS.exists():
        pytest.skip(f"{BENCH_KERNELS} not found")
    spec = importlib.util.spec_from_file_location("bench_kernels_under_test", BENCH_KERNELS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_bench_kernels_cases_and_one_pair(bench_kernels):
    cases = bench_kernels.cases()
    groups = [c.group for c in cases]
    assert len(groups) == len(set(groups))
    for wanted, _ in bench_kernels.CRITERIA:
        assert wanted in groups
    case = next(c for c in cases if c.group == "sgd_update 784x512 float32")
    ref, fused, reps = bench_kernels.time_pair(case, rounds=2, target_s=1e-5)
    assert ref > 0 and fused > 0 and reps >= 1
    # Both implementations of a case compute the same update from the same inputs.
    outs = {}
    for name, module in (("fused", bench_kernels.cpu), ("reference", bench_kernels.reference)):
        arrays, scalars, inplace = case.make(np.random.default_rng(0))
        getattr(module, case.kernel)(*arrays, *scalars)
        outs[name] = arrays[0]
    np.testing.assert_allclose(outs["fused"], outs["reference"], rtol=1e-6, atol=1e-9)


def test_bench_kernels_main_filtered(bench_kernels, capsys):
    assert bench_kernels.main(["--rounds", "20", "-k", "sgd_update"]) == 0
    out = capsys.readouterr().out
    assert "| sgd_update | 784x512 | float32 |" in out
    assert "momentum_update" not in out and "adam_update" not in out
    with pytest.raises(SystemExit) as info:
        bench_kernels.main(["--rounds", "5"])
    assert info.value.code == 2

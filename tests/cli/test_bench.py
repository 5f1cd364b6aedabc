"""One short round of the benchmark machinery on tiny data (fastnet/cli/bench/systems.py, bench/bench_kernels.py).

These check that the benchmarks run and that their arithmetic (FLOP counts, samples/s, ratios,
the table) is right; they time nothing worth reading.
"""
# Opt-out kept (issue 27): monkeypatch gives the benchmark code a fake clock and GEMM ceiling (its arithmetic is
# the subject; real timings are not repeatable), small arrays instead of MNIST and sleepers
# instead of the systems timed (cost: the subject is the command's output, not the training),
# a broken predictor (the failure is the subject) and spies that call through.
import importlib.util
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fastnet.cli.bench import systems as B

BENCH_KERNELS = Path(__file__).resolve().parents[2] / "bench" / "bench_kernels.py"


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


# ============================================ interleaved rounds, load, sweep, inference, tta
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from fastnet.cli.bench import interleaved as IL  # noqa: E402
from fastnet.cli.bench import sweep as S  # noqa: E402
from process_table import alive as _alive  # noqa: E402 (tests/process_table.py)


class FakeClock:
    """Time that passes only when a Sleeper sleeps (``B.time`` while the ``clock`` fixture is on):
    the measured seconds are the planned ones exactly, however busy the machine is (real sleeps
    overshot by milliseconds under CI's load and moved a ratio out of its range)."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def __getattr__(self, name):  # time.strftime and the like: the real module's
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(B, "time", fake)  # the epochs' timer in fastnet.cli.bench.systems.measure
    return fake


class Sleeper(B.System):
    """A stand-in whose timed epochs sleep known seconds (the warm-up epoch does not sleep);
    with the ``clock`` fixture the sleep is on the fake clock."""

    def __init__(self, name, seconds, check=None):
        self.name, self.seconds, self.check = name, list(seconds), check

    def setup(self, X, y, config, seed):
        self.calls = 0

    def epoch(self, X, y):
        if self.check:
            self.check()
        if self.calls:
            B.time.sleep(self.seconds[(self.calls - 1) % len(self.seconds)])
        self.calls += 1


# fastnet vs pytorch, per round: 0.24/0.08 = 3, 0.12/0.24 = 0.5, 0.36/0.12 = 3  ->  median 3.
# A wrong figure lands far away: inverted 0.33, mean of ratios 2.17, ratio of medians 0.24/0.12 = 2.
FAST, TORCH = [0.08, 0.24, 0.12], [0.24, 0.12, 0.36]


def test_interleaved_ratio_is_baseline_over_fastnet_per_round_then_median(clock):
    X, y = _tiny(16)
    blocks = IL.run_interleaved(X, y, configs=["sigmoid128-sgd"], conditions=["none"], rounds=3,
                               make_systems=lambda: [Sleeper("fastnet-fused", FAST), Sleeper("pytorch", TORCH)])
    (blk,) = blocks
    f = blk["systems"]["fastnet-fused"]
    assert len(f["epoch_seconds"]) == 3
    for got, want in zip(f["epoch_seconds"], FAST):
        assert want <= got < want + 0.05
    per_round = f["vs"]["pytorch"]["per_round"]
    assert per_round == [b / a for a, b in zip(f["epoch_seconds"], blk["systems"]["pytorch"]["epoch_seconds"])]
    assert per_round == pytest.approx([3, 0.5, 3], rel=0.2)
    assert f["vs"]["pytorch"]["median"] == pytest.approx(3.0, rel=0.15)
    assert blk["systems"]["pytorch"]["vs"]["pytorch"]["median"] == 1.0
    assert "pytorch-tuned" not in f["vs"]  # only baselines that ran
    table = IL.format_interleaved(blocks)
    assert "| sigmoid128-sgd | none | fastnet-fused |" in table


def test_round_ratios_and_best_fixed_by_hand():
    assert IL.round_ratios([3.0, 1.0, 4.0], [1.0, 2.0, 2.0]) == [3.0, 0.5, 2.0]
    with pytest.raises(ValueError):
        IL.round_ratios([1.0], [1.0, 2.0])
    times = {"fastnet-fused": [1.0, 1.0, 1.0], "fastnet-1thread": [1.0, 3.0, 3.0], "fastnet-2threads": [2.0, 2.0, 2.0],
             "numpy-scratch": [2.0, 1.0, 4.0]}
    out, best = IL.summarize(times, fixed_names=["fastnet-1thread", "fastnet-2threads"])
    assert best == "fastnet-2threads"  # lowest median (2.0 < 3.0), not the lowest single round
    assert out["fastnet-fused"]["vs_best_fixed"] == {"per_round": [2.0, 2.0, 2.0], "median": 2.0}
    assert out["fastnet-fused"]["vs"]["numpy-scratch"] == {"per_round": [2.0, 1.0, 4.0], "median": 2.0}
    assert out["fastnet-1thread"]["median_epoch_seconds"] == 3.0


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_load_process_runs_through_warm_up_and_rounds_then_is_gone(monkeypatch):
    seen, checks = [], []
    real = IL.cpu_load

    def recording(condition):
        cm = real(condition)

        class Wrapper:
            def __enter__(self):
                info = cm.__enter__()
                seen.append(info)
                return info

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Wrapper()

    monkeypatch.setattr(IL, "cpu_load", recording)

    def check():  # every epoch, warm-up included, runs beside a live load
        checks.append(seen[-1] is not None and _alive(seen[-1]["pid"]))

    X, y = _tiny(16)
    blocks = IL.run_interleaved(X, y, configs=["sigmoid128-sgd"], conditions=["none", "core"], rounds=2,
                               make_systems=lambda: [Sleeper("fastnet-fused", [0.001], check)])
    assert [b["condition"] for b in blocks] == ["none", "core"]
    assert seen[0] is None and blocks[1]["load"]["pid"] == seen[1]["pid"]
    assert checks == [False] * 3 + [True] * 3  # no load for "none"; warm-up + 2 rounds under load
    assert not _alive(seen[1]["pid"])
    if hasattr(os, "sched_setaffinity"):
        assert seen[1]["core"] == max(os.sched_getaffinity(0))


def test_load_process_is_killed_when_the_measurement_fails():
    with pytest.raises(RuntimeError, match="boom"):
        with IL.cpu_load("core") as info:
            assert _alive(info["pid"])
            raise RuntimeError("boom")
    assert not _alive(info["pid"])
    with pytest.raises(ValueError):
        with IL.cpu_load("socket"):
            pass


def test_cli_load_json_schema(tmp_path, monkeypatch, capsys, clock):
    from fastnet import cli

    X, y = _tiny(16)
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda **kw: ((X, y), (X, y)))
    monkeypatch.setattr(IL, "default_systems", lambda fixed: [
        Sleeper("fastnet-fused", [0.002]), *(Sleeper(f"fastnet-{k}thread", [0.003]) for k in fixed),
        Sleeper("pytorch", [0.004]), Sleeper("pytorch-tuned", [0.004]), Sleeper("numpy-scratch", [0.004])])
    out = tmp_path / "il.json"
    assert cli.main(["bench", "--load", "both", "--rounds", "2", "--configs", "sigmoid128-sgd",
                     "--fixed-threads", "1", "--json", str(out)]) == 0
    assert "| sigmoid128-sgd | core | fastnet-fused |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    for key in ("machine", "threadpool_info", "git_commit", "git_dirty", "cpu_count", "conditions", "blocks"):
        assert key in data
    assert data["conditions"] == ["none", "core"] and data["fixed_threads"] == [1]
    assert [b["condition"] for b in data["blocks"]] == ["none", "core"]
    for blk in data["blocks"]:
        f = blk["systems"]["fastnet-fused"]
        assert len(f["epoch_seconds"]) == 2
        for base in IL.BASELINES:
            assert len(f["vs"][base]["per_round"]) == 2
            assert f["vs"][base]["median"] == statistics.median(f["vs"][base]["per_round"])


def test_fixed_thread_system_limits_blas_and_onednn_during_the_epoch():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastnet.backends import gemm_onednn

    s = IL.FastnetFixedThreads(1)
    assert s.name == "fastnet-1thread" and IL.FastnetFixedThreads(4).name == "fastnet-4threads"
    before = os.environ.get("FASTNET_THREADS")
    # where oneDNN loads it may run fastnet's GEMMs (bf16; float32 by choice): its pool is
    # pinned too, and put back
    onednn = gemm_onednn.get_num_threads() if gemm_onednn.available() else None
    if onednn is not None and onednn < 2:
        gemm_onednn.set_num_threads(2)
    with IL.fixed_threads(1):
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert all(i["num_threads"] == 1 for i in blas)
        assert os.environ["FASTNET_THREADS"] == "fixed"  # fastnet's own thread tuner off
        if onednn is not None:
            assert gemm_onednn.get_num_threads() == 1
    assert os.environ.get("FASTNET_THREADS") == before
    if onednn is not None:
        assert gemm_onednn.get_num_threads() == max(2, onednn)
        gemm_onednn.set_num_threads(onednn)
    X, y = _tiny(64)
    s.setup(X, y, B.CONFIGS["sigmoid128-sgd"], 0)
    s.epoch(X, y)
    assert 0.0 <= s.accuracy(X, y) <= 1.0


def test_sweep_nine_cells_table_and_png(tmp_path, clock):
    X, y = _tiny(16)
    # per round 3, 0.5, 3: median 3; the ratio of the median times would be 2
    result = S.run_sweep(X, y, rounds=3, make_systems=lambda: [Sleeper("fastnet-fused", [0.01, 0.03, 0.015]),
                                                              Sleeper("pytorch-tuned", [0.03, 0.015, 0.045])])
    assert len(result["cells"]) == 9
    assert {(c["width"], c["batch"]) for c in result["cells"]} == {(w, b) for w in S.WIDTHS for b in S.BATCHES}
    for c in result["cells"]:
        t = c["epoch_seconds"]
        assert c["ratios_per_round"] == [b / a for a, b in zip(t["fastnet-fused"], t["pytorch-tuned"])]
        assert c["ratios_per_round"] == pytest.approx([3.0, 0.5, 3.0])  # (the fake clock: exact)
        assert c["ratio"] == statistics.median(c["ratios_per_round"]) == pytest.approx(3.0)
    assert result["median_ratio"] == statistics.median(c["ratio"] for c in result["cells"])
    table = S.format_sweep(result).splitlines()
    assert len([ln for ln in table if ln.startswith("| ") and ln[2].isdigit()]) == 3
    png = S.plot_sweep(result, tmp_path / "sweep.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_sweep_real_systems_one_small_cell():
    pytest.importorskip("torch")
    X, y = _tiny(64)
    result = S.run_sweep(X, y, widths=(8,), batches=(16,), rounds=1)
    (cell,) = result["cells"]
    assert set(cell["epoch_seconds"]) == {"fastnet-fused", "pytorch-tuned"} and cell["ratio"] > 0


def test_inference_outputs_agree_and_table():
    pytest.importorskip("onnxruntime")
    from fastnet.cli.bench import inference as N

    X, y = _tiny(200)
    result = N.run_inference(X, y, X[:50], N.Settings(hidden=(16, 16), rounds=2, calls=20, latency_rounds=2))
    ran = {"fastnet", "onnxruntime"} | ({"pytorch"} if N.installed("pytorch") else set())
    assert set(result["systems"]) == ran and set(result["not_run"]) == set(N.SYSTEMS) - ran
    assert max(result["max_abs_diff_from_fastnet"].values()) < 1e-5
    for name, s in result["systems"].items():
        assert len(s["seconds"]) == 2 and s["latency_calls"] == 20
        assert s["rows_per_s"] == pytest.approx(50 / statistics.median(s["seconds"]))
        assert s["fastnet_speedup_per_round"] == [a / b for a, b in zip(s["seconds"],
                                                                         result["systems"]["fastnet"]["seconds"])]
        assert s["latency_us_p90"] >= s["latency_us_median"] > 0
    assert result["systems"]["fastnet"]["fastnet_speedup"] == 1.0
    table = N.format_inference(result)
    assert "| onnxruntime |" in table and "each system in its own process" in table


def _record_workers(monkeypatch, module):
    """The worker processes ``module`` starts (its ``subprocess.Popen``), in a list filled as they start."""
    started, real = [], module.subprocess.Popen

    def popen(cmd, **kw):
        started.append(real(cmd, **kw))
        return started[-1]

    monkeypatch.setattr(module.subprocess, "Popen", popen)
    return started


def test_inference_runs_each_system_in_its_own_process(monkeypatch):
    # the workers are other processes, and they are gone after the run
    pytest.importorskip("onnxruntime")
    from fastnet.cli.bench import inference as N

    started = _record_workers(monkeypatch, N)
    X, y = _tiny(100)
    N.run_inference(X, y, X[:20], N.Settings(hidden=(8,), rounds=1, calls=4, latency_rounds=1),
                    systems=("fastnet", "onnxruntime"))
    assert [p.args[-2] for p in started] == ["fastnet", "onnxruntime"]
    assert len({p.pid for p in started} | {os.getpid()}) == 3
    assert all(p.returncode == 0 for p in started)


def test_inference_rounds_are_shared_by_sets_of_fresh_workers(monkeypatch):
    # two sets: the second started once the first set's workers are gone, in the reverse
    # order; round r (throughput and latency) run by set r % 2 on its own rows; the system
    # that goes first moves on each round
    pytest.importorskip("onnxruntime")
    from fastnet.cli.bench import inference as N

    started, asked, real_popen, real_ask = [], [], N.subprocess.Popen, N._ask

    def popen(cmd, **kw):
        started.append(real_popen(cmd, **kw))
        return started[-1]

    def ask(proc, name, line):
        alive = sum(p.poll() is None for p in started)
        asked.append((name, line, proc.pid, alive))
        return real_ask(proc, name, line)

    monkeypatch.setattr(N.subprocess, "Popen", popen)
    monkeypatch.setattr(N, "_ask", ask)
    X, y = _tiny(100)
    result = N.run_inference(X, y, X[:20], N.Settings(hidden=(8,), rounds=3, calls=8, latency_rounds=4),
                             systems=("fastnet", "onnxruntime"))
    assert [p.args[-2] for p in started] == ["fastnet", "onnxruntime", "onnxruntime", "fastnet"]
    assert all(alive == 2 for *_, alive in asked)  # never a first set's worker beside the second's
    first, second = {p.pid for p in started[:2]}, {p.pid for p in started[2:]}
    batches = [(name, pid) for name, line, pid, _ in asked if line == "batch"]
    # set 1: rounds 0 and 2 (fastnet first, then onnxruntime first); set 2: round 1
    assert [name for name, _ in batches] == ["fastnet", "onnxruntime", "onnxruntime", "fastnet",
                                             "onnxruntime", "fastnet"]
    assert [pid in first for _, pid in batches] == [True] * 4 + [False] * 2
    rows = [(name, line, pid in first) for name, line, pid, _ in asked if line.startswith("rows")]
    assert rows == [("fastnet", "rows 0 2", True), ("onnxruntime", "rows 0 2", True),
                    ("onnxruntime", "rows 4 2", True), ("fastnet", "rows 4 2", True),
                    ("onnxruntime", "rows 2 2", False), ("fastnet", "rows 2 2", False),
                    ("fastnet", "rows 6 2", False), ("onnxruntime", "rows 6 2", False)]
    assert result["sets"] == 2 and result["set_of_round"] == [0, 1, 0]
    assert result["set_of_latency_round"] == [0, 1, 0, 1]
    fast = result["systems"]["fastnet"]
    assert fast["pids"] == [started[0].pid, started[3].pid]
    assert len(fast["seconds"]) == 3 and fast["latency_calls"] == 8 and len(fast["latency_us_median_per_round"]) == 4
    assert len(fast["small_batch_threads_per_round"]) == 4
    assert all(p.returncode == 0 for p in started)
    assert "the rounds shared by 2 sets of worker processes" in N.format_inference(result)
    with pytest.raises(ValueError, match="sets must be a positive integer, got 0"):
        N.run_inference(X, y, X[:20], N.Settings(hidden=(8,), sets=0))


def test_cli_inference_sets_reach_the_run(monkeypatch, capsys):
    from fastnet import cli
    from fastnet.cli.bench import inference as N

    X, y = _tiny(16)
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda **kw: ((X, y), (X, y)))
    seen = []

    def stand_in(Xtr, ytr, Xte, settings=N.Settings(), systems=N.SYSTEMS):
        seen.append(settings)
        return {"model": "16-8-10 relu", "train_epochs": 1, "train_rows": len(Xtr), "rows": len(Xte), "rounds": 1,
                "sets": settings.sets, "max_abs_diff_from_fastnet": {"fastnet": 0.0}, "not_run": {},
                "systems": {"fastnet": {"rows_per_s": 1.0, "fastnet_speedup": 1.0, "latency_us_median": 1.0,
                                        "latency_us_p90": 1.0}}}

    monkeypatch.setattr(N, "run_inference", stand_in)
    assert cli.main(["bench", "--inference", "--sets", "3"]) == 0
    assert cli.main(["bench", "--inference"]) == 0
    assert [s.sets for s in seen] == [3, N.Settings().sets]
    assert "the rounds shared by 3 sets" in capsys.readouterr().out


def test_inference_refuses_to_time_disagreeing_systems(monkeypatch):
    # a worker whose outputs differ from fastnet's (the ONNX file of another model): refused
    # before anything is timed, and the workers are ended
    pytest.importorskip("onnxruntime")
    import fastnet
    from fastnet.cli.bench import inference as N

    real = fastnet.MLP.to_onnx

    def other_weights(self, path=None):
        other = fastnet.MLP(self.sizes, backend="cpu", seed=123)
        other.build(self.sizes[0])
        return real(other, path)

    monkeypatch.setattr(fastnet.MLP, "to_onnx", other_weights)
    monkeypatch.setattr(N, "_ask", lambda proc, name, line, real=N._ask: (
        pytest.fail("timed before the outputs were compared") if line == "batch" else real(proc, name, line)))
    X, y = _tiny(100)
    with pytest.raises(RuntimeError, match="disagree"):
        N.run_inference(X, y, X[:20], N.Settings(hidden=(8,), rounds=1, calls=4, latency_rounds=1),
                        systems=("fastnet", "onnxruntime"))


_TTA_SAME = dict(hidden=[16, 16], activation="relu", optimizer="adam", lr=1e-2, batch_size=32)
_TTA_RECIPE = dict(hidden=[16], activation="relu", optimizer="adam", lr=1e-2, batch_size=32, epochs=3,
                   schedule="onecycle", dropout=0.0)


def _tta(monkeypatch, systems, target, max_epochs):
    """run_tta on tiny data, recording the worker processes it starts."""
    from fastnet.cli.bench import tta as T

    started = _record_workers(monkeypatch, T)
    X, y = _tiny(300)
    result = T.run_tta(B.TrainTest(X, y, X, y), target=target, recipe=_TTA_RECIPE, systems=systems,
                       max_epochs=max_epochs, same_config=_TTA_SAME)
    return result, started


def test_tta_runs_each_system_in_a_process_of_its_own_and_stops_it_at_the_target(monkeypatch):
    result, started = _tta(monkeypatch, ("fastnet-same", "fastnet-best"), target=0.0, max_epochs=4)
    assert [p.args[-2] for p in started] == ["fastnet-same", "fastnet-best"]
    assert len({p.pid for p in started} | {os.getpid()}) == 3 and all(p.returncode == 0 for p in started)
    for comparison in ("same_recipe", "best_vs_best"):
        r = result[comparison]["fastnet"]
        # any accuracy reaches 0.0: one epoch each, its own seconds
        assert r["epochs"] == 1 and len(r["epoch_seconds"]) == 1 and r["seconds"] == r["epoch_seconds"][0] > 0
        assert "pytorch" not in result[comparison] and result[comparison]["ratio"] is None
    assert {p.pid for p in started} == {result[c]["fastnet"]["pid"] for c in ("same_recipe", "best_vs_best")}
    assert result["cpu"] and result["not_run"] == {}
    text = T_format(result)
    assert "| same recipe | fastnet |" in text and "| best recipe vs best recipe | fastnet |" in text
    assert "each system in its own process" in text and "He-normal" in text


def test_tta_sets_run_fresh_workers_each_on_its_own_seed_in_turn_reversed(monkeypatch):
    from fastnet.cli.bench import tta as T

    started = _record_workers(monkeypatch, T)
    X, y = _tiny(300)
    result = T.run_tta_sets(B.TrainTest(X, y, X, y), sets=3, target=0.0, recipe=_TTA_RECIPE,
                            systems=("fastnet-same", "fastnet-best"), max_epochs=2, same_config=_TTA_SAME)
    # three sets of two fresh workers, the second set started (and taking turns) in reverse
    assert [p.args[-2] for p in started] == ["fastnet-same", "fastnet-best", "fastnet-best", "fastnet-same",
                                             "fastnet-same", "fastnet-best"]
    assert len({p.pid for p in started}) == 6 and all(p.returncode == 0 for p in started)
    runs = result["sets"]
    assert [r["seed"] for r in runs] == [0, 1, 2]
    assert [r["order"] for r in runs] == [["fastnet-same", "fastnet-best"], ["fastnet-best", "fastnet-same"],
                                          ["fastnet-same", "fastnet-best"]]
    # each set's own seed: its own starting weights
    assert len({r["same_recipe"]["fastnet"]["init_sha"] for r in runs}) == 3
    assert [r["same_recipe"]["fastnet"]["pid"] for r in runs] == [started[i].pid for i in (0, 3, 4)]
    assert result["same_recipe"]["sets"] == 3 and result["same_recipe"]["reached"] == 0  # no PyTorch side
    assert "| same recipe | 3 | 1, 1, 1 |" in T.format_summary(result)


@pytest.mark.parametrize("sets", [0, -1, 1.5, True])
def test_tta_sets_are_checked_before_any_worker_starts(monkeypatch, sets):
    from fastnet.cli.bench import tta as T

    started = _record_workers(monkeypatch, T)
    X, y = _tiny(50)
    with pytest.raises(ValueError, match="sets must be a positive integer"):
        T.run_tta_sets(B.TrainTest(X, y, X, y), sets=sets, systems=("fastnet-same",))
    assert started == []


def test_tta_summary_is_the_median_over_the_sets_where_both_reached_the_target():
    from fastnet.cli.bench import tta as T

    def part(fast, torch, fast_epochs, torch_epochs):
        return {"ratio": None if fast is None or torch is None else fast / torch,
                "fastnet": {"seconds": fast, "epochs": None if fast is None else len(fast_epochs),
                            "epoch_seconds": fast_epochs},
                "pytorch": {"seconds": torch, "epochs": None if torch is None else len(torch_epochs),
                            "epoch_seconds": torch_epochs}}

    s = T.summary([part(4.0, 8.0, [1.0] * 4, [2.0] * 4),        # 0.5, epochs 0.5
                   part(None, 6.0, [1.0] * 15, [2.0] * 3),      # fastnet short of the target
                   part(5.0, 6.25, [1.0] * 5, [2.0, 2.25, 2.0]),  # 0.8
                   part(3.0, 4.0, [1.0, 1.0, 1.0], [2.0, 2.0])])  # 0.75
    assert s["ratios"] == [0.5, None, 0.8, 0.75]
    assert s["ratio"] == 0.75 and s["reached"] == 3 and s["sets"] == 4
    assert s["epoch_ratio"] == 0.5  # every set: fastnet's median epoch 1.0 s, PyTorch's 2.0 s
    assert s["epochs"] == {"fastnet": [4, None, 5, 3], "pytorch": [4, 3, 3, 2]}
    text = T.format_summary({"target": 0.98, "same_recipe": s})
    assert "| same recipe | 4 | 4, -, 5, 3 | 4, 3, 3, 2 | 0.50x, -, 0.80x, 0.75x | 0.75x | 0.50x |" in text


def test_cli_tta_sets_reach_the_run(monkeypatch, capsys):
    from fastnet import cli
    from fastnet.cli.bench import commands as C
    from fastnet.cli.bench import tta as T

    X, y = _tiny(16)
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda **kw: ((X, y), (X, y)))
    seen = []

    def stand_in(data, target=0.98, recipe=None, seed=0, progress=None, **kw):
        seen.append(seed)
        return {"processes": "each system in its own", "cpu": "cpu", "cpu_flags": [], "machine": "m",
                "not_run": {}, "target": target, "seed": seed, "order": []}

    monkeypatch.setattr(T, "run_tta", stand_in)
    assert cli.main(["bench", "--tta", "0.5", "--sets", "2"]) == 0
    assert seen == [0, 1]
    seen.clear()
    assert cli.main(["bench", "--tta", "0.5"]) == 0
    assert len(seen) == C.DEFAULT_TTA_SETS == 3
    assert "set 3 (seed 2):" in capsys.readouterr().out


def T_format(result):
    from fastnet.cli.bench import tta as T

    return T.format_tta(result.get("same_recipe"), result.get("best_vs_best"))


def test_tta_a_target_not_reached_trains_max_epochs_or_the_recipe_s_epochs(monkeypatch):
    from fastnet.cli.bench import tta as T

    # the coordinator waits 1 s after each turn: an epoch's seconds (of a tiny model) that
    # counted the wait for the other system's turn would exceed it
    monkeypatch.setattr(T, "SETTLE_SECONDS", 1.0)
    result, _ = _tta(monkeypatch, ("fastnet-same", "fastnet-best"), target=1.01, max_epochs=4)
    same, best = result["same_recipe"]["fastnet"], result["best_vs_best"]["fastnet"]
    assert all(0 < s < 1.0 for s in same["epoch_seconds"] + best["epoch_seconds"])
    assert same["seconds"] is None and same["epochs"] is None and len(same["accuracies"]) == 4
    # fastnet's recipe is one fit of 3 epochs (its schedule): it ends there, short of max_epochs
    assert best["seconds"] is None and len(best["accuracies"]) == len(best["epoch_seconds"]) == 3
    assert "not reached in 4" in T_format(result) and "not reached in 3" in T_format(result)


def test_tta_same_recipe_starts_both_from_fastnet_s_weights(monkeypatch):
    pytest.importorskip("torch")
    import fastnet
    from fastnet.cli.bench import tta as T

    result, _ = _tta(monkeypatch, T.SYSTEMS, target=0.0, max_epochs=2)
    m = fastnet.MLP([784, 16, 16, 10], activation="relu", seed=0).build(784)
    want = T.initial_weights_sha(m.get_weights().values())
    same, best = result["same_recipe"], result["best_vs_best"]
    assert same["fastnet"]["init_sha"] == same["pytorch"]["init_sha"] == want
    assert best["pytorch"]["init_sha"] != want   # PyTorch's own initialisation
    assert same["ratio"] == same["fastnet"]["seconds"] / same["pytorch"]["seconds"]
    assert best["ratio"] == best["fastnet"]["seconds"] / best["pytorch"]["seconds"]


def test_tta_refuses_a_same_recipe_pair_that_starts_apart():
    from fastnet.cli.bench import tta as T

    T.check_same_start({"fastnet-same": {"init_sha": "a"}, "pytorch-same": {"init_sha": "a"},
                        "pytorch-best": {"init_sha": "b"}})
    T.check_same_start({"fastnet-same": {"init_sha": "a"}})
    with pytest.raises(RuntimeError, match="do not start from the same weights"):
        T.check_same_start({"fastnet-same": {"init_sha": "a"}, "pytorch-same": {"init_sha": "b"}})


def test_tta_initial_weights_sha_is_of_float32_in_fastnet_s_layout():
    import hashlib

    from fastnet.cli.bench import tta as T

    W, b = np.arange(6, dtype=np.float64).reshape(2, 3), np.ones(3)
    want = hashlib.sha256(W.astype(np.float32).tobytes() + b.astype(np.float32).tobytes()).hexdigest()
    assert T.initial_weights_sha([W, b]) == want != T.initial_weights_sha([W.T, b])


def test_bench_modes_are_exclusive(capsys):
    from fastnet import cli

    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["bench", "--load", "both", "--sweep"])
    assert info.value.code == 2


@pytest.mark.mnist
def test_each_system_trains_in_its_own_process_and_ratios_are_per_round(monkeypatch):
    """``fastnet bench --processes``: a worker process per system, interleaved rounds, and
    each ratio the baseline's seconds over the system's in the same round."""
    import os

    from fastnet.cli.bench import processes

    monkeypatch.setitem(processes._NEEDS, "jax", "no_such_library_here")  # a peer that is not installed
    result = processes.run("sigmoid128-sgd", systems=["fastnet", "numpy-scratch", "jax"],
                           baselines=("numpy-scratch",), settings=processes.Settings(rounds=3, rows=512))
    assert result["not_run"] == {"jax": "no_such_library_here is not installed"}
    fast, scratch = result["systems"]["fastnet"], result["systems"]["numpy-scratch"]
    assert len({fast["pid"], scratch["pid"], os.getpid()}) == 3
    assert len(fast["epoch_seconds"]) == len(scratch["epoch_seconds"]) == 3
    # interleaved: each round one epoch of each system, one after the other (epochs never overlap),
    # round by round within a set of workers
    epochs = sorted((start, took, name, r) for name, e in (("fastnet", fast), ("numpy-scratch", scratch))
                    for r, (start, took) in enumerate(zip(e["epoch_started"], e["epoch_seconds"])))
    assert all(later[0] - start >= took for (start, took, _, _), later in zip(epochs, epochs[1:]))
    by_set = [[r for _, _, _, r in epochs if result["set_of_round"][r] == k] for k in range(result["sets"])]
    assert by_set == [[0, 0, 2, 2], [1, 1]]
    assert len({*fast["pids"], *scratch["pids"], os.getpid()}) == 5
    ratios = [b / a for a, b in zip(fast["epoch_seconds"], scratch["epoch_seconds"])]
    assert fast["vs"]["numpy-scratch"]["per_round"] == ratios
    assert fast["vs"]["numpy-scratch"]["median"] == sorted(ratios)[1]
    assert "numpy-scratch" not in scratch["vs"] and result["cpu"] and result["rows"] == 512
    import fastnet

    assert fast["versions"]["fastnet"] == fastnet.__version__
    assert 0 <= fast["accuracy_on_training_rows"] <= 1
    table = processes.format_table(result)
    assert "| fastnet |" in table and "not run: jax (no_such_library_here is not installed)" in table

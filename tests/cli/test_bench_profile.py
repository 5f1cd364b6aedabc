"""``fastnet bench --profile`` (fastnet/cli/bench/profile.py): where an epoch's time goes.

The timings of these runs mean nothing (tiny data, a shared machine); what is checked is the
accounting: each part's own seconds (a GEMM inside a forward pass counted once, as a GEMM),
the parts adding up to the epoch, the GEMM FLOPs against a count by hand, the wrappers
calling through and leaving the model as it was, and the command's options and JSON.
"""
# Opt-outs kept (issue 27): a fake clock for the recorder (the arithmetic is the subject; real
# timings are not repeatable) and, for the command, small arrays instead of MNIST (cost: the
# command's output is the subject, not the training).
import json
import os

import numpy as np
import pytest

from fastnet.cli.bench import profile as P
from fastnet.cli.bench import systems as B


def _tiny(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    X = rng.random((n, 784), dtype=np.float32) * 0.1
    X[np.arange(n), y] += 1.0
    return X, y


def test_own_seconds_exclude_the_timed_calls_inside():
    """forward (3 + 1 s of its own) around a GEMM (2 s): forward 4, gemm 2, not forward 6."""
    now = [0.0]
    rec = P.Recorder(clock=lambda: now[0])

    def matmul(a, b, out):
        now[0] += 2.0

    gemm = rec.gemm(matmul)

    def forward():
        now[0] += 3.0
        gemm(np.empty((4, 5)), np.empty((5, 6)), None)
        now[0] += 1.0

    rec.timed("forward", forward)()
    assert rec.seconds["gemm"] == 2.0 and rec.seconds["forward"] == 4.0
    assert rec.calls["gemm"] == rec.calls["forward"] == 1
    assert rec.flops == 2 * 4 * 5 * 6
    epoch = rec.epoch(10.0)
    assert epoch["parts"]["rest"] == 4.0 and sum(epoch["parts"].values()) == 10.0
    # a GEMM made of a timed GEMM: its seconds split between the two, its FLOPs counted once
    outer = rec.gemm(lambda a, b, out: (now.__setitem__(0, now[0] + 1.0), gemm(a, b, out)))
    rec.reset()
    outer(np.empty((2, 3)), np.empty((3, 7)), None)
    assert rec.seconds["gemm"] == 3.0 and rec.flops == 2 * 2 * 3 * 7
    with pytest.raises(ValueError, match="part must be one of"):
        rec.timed("gemms", matmul)


@pytest.mark.parametrize("name, per_row", [
    # 784-512-512-10, per row: forward 2 * (784*512 + 512*512 + 512*10) = 1,337,344, dW the same,
    # dx past the first layer 2 * (512*512 + 512*10) = 534,528
    ("relu512x2-adam", 1_337_344 * 2 + 534_528),
    # 784-128-10: forward 2 * (784*128 + 128*10) = 203,264, dW the same, dx 2 * 128*10 = 2,560
    ("sigmoid128-sgd", 203_264 * 2 + 2_560),
])
def test_gemm_flops_calls_and_parts_of_an_epoch(name, per_row):
    rows, batch = 80, 32  # 3 steps, the last of 16 rows
    config = dict(B.CONFIGS[name], batch_size=batch)
    X, y = _tiny(rows)
    result = P.profile_config(X, y, config, rounds=2)
    steps, dense = 3, len(config["hidden"]) + 1
    assert result["steps"] == steps and result["rows"] == rows
    assert len(result["epoch_seconds"]) == 2 and len(result["instrumented"]) == 2
    for epoch in result["instrumented"]:
        assert epoch["gemm_flops"] == rows * per_row == rows * B.flops_per_sample(result["layer_sizes"])
        calls = epoch["calls"]
        assert calls["gemm"] == steps * (3 * dense - 1)  # forward and dW per layer, dx past the first
        assert calls["forward"] == calls["backward"] == calls["loss"] == calls["optimizer"] == steps
        assert calls["correct"] == steps and calls["gather"] == 2 * steps and calls["shuffle"] == 1
        assert calls["tuner"] == steps + 1  # step_done after each step, mark before the first
        parts = epoch["parts"]
        assert set(parts) == set(P.PARTS) and min(parts.values()) >= 0
        assert sum(parts.values()) == pytest.approx(epoch["seconds"], rel=1e-12)
    means = result["parts_mean_seconds"]
    assert sum(means.values()) == pytest.approx(result["instrumented_mean_seconds"], rel=1e-12)
    speed = result["provider_gflops"]
    assert speed["best"] == max(speed["measured"] + [speed["recorded"] or 0]) > 0
    assert len(speed["measured"]) == P.GEMM_REPEATS
    assert result["gemm_floor_seconds"] == pytest.approx(rows * per_row / speed["best"] / 1e9, rel=1e-12)
    assert result["epoch_over_floor"] == pytest.approx(
        np.median(result["epoch_seconds"]) / result["gemm_floor_seconds"], rel=1e-12)
    table = P.format_profile(name, result).splitlines()
    body = [line for line in table if line.startswith("| ") and not line.startswith("| part")]
    shown = P.shown_parts(result)
    assert "rounding" not in shown and len(shown) == len(P.PARTS) - 1  # float32: no bf16 rounding row
    assert len(body) == len(shown) + 2 and not any("rounding" in line for line in body)
    shares = [float(line.split("|")[3].strip().rstrip("%")) for line in body[:len(shown)]]
    assert sum(shares) == pytest.approx(100, abs=0.1 * len(shown))
    assert any(line.startswith("plain epoch / GEMM floor = ") for line in table)


def test_wrapped_training_is_the_same_training_and_the_model_is_left_as_it_was():
    import fastnet

    X, y = _tiny(96)
    models = [fastnet.MLP([784, 32, 10], seed=3) for _ in range(2)]
    for m in models:
        m.fit(X, y, epochs=1, batch_size=32)
    wrapped, plain = models
    loss, step = wrapped.loss_, wrapped.optimizer_.step
    rec = P.Recorder()
    with P.instrumented(wrapped, rec):
        wrapped.fit(X, y, epochs=1, batch_size=32)
    plain.fit(X, y, epochs=1, batch_size=32)
    assert rec.calls["optimizer"] == 3  # (the doctor after the fit runs forward passes, no steps)
    got, want = wrapped.get_weights(), plain.get_weights()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    for obj, names in ((wrapped.backend_, ("matmul", "gather", "permutation", "thread_tuner")),
                       (wrapped, ("_forward", "_backward", "_correct")), (wrapped.optimizer_, ("step",))):
        assert not set(names) & set(vars(obj)), (obj, set(names) & set(vars(obj)))
    assert wrapped.loss_ is loss and wrapped.optimizer_.step == step
    # put back even when the fit fails
    with pytest.raises(ValueError):
        with P.instrumented(wrapped, rec):
            wrapped.fit(X, y[:10], epochs=1)
    assert "matmul" not in vars(wrapped.backend_) and wrapped.loss_ is loss


def test_the_provider_speed_is_the_best_of_the_recorded_and_measured_figures():
    rates = iter([50.0, 70.0, 60.0])
    speed = P.provider_speed({"provider": "onednn", "gflops": {"onednn": 65.0, "numpy": 90.0}},
                             [(8, 8, 8, False, False)], 2, repeats=3,
                             measure=lambda provider, problems, threads: next(rates))
    assert speed == {"provider": "onednn", "recorded": 65.0, "measured": [50.0, 70.0, 60.0], "best": 70.0}
    speed = P.provider_speed({"provider": "numpy", "source": "the only provider here", "gflops": {}},
                             [(8, 8, 8, False, False)], 2, repeats=1, measure=lambda *a: 40.0)
    assert speed["recorded"] is None and speed["best"] == 40.0
    # fit's choice timed its steps with the optimizer's update: a figure of the step, not of the GEMMs
    speed = P.provider_speed({"provider": "mkl", "gflops": {"mkl": 95.0}, "update": "adam"},
                             [(8, 8, 8, False, False)], 2, repeats=1, measure=lambda *a: 70.0)
    assert speed["recorded"] is None and speed["best"] == 70.0


def test_cli_profile_table_and_json(tmp_path, monkeypatch, capsys):
    from fastnet import cli

    X, y = _tiny(256)
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda **kw: ((X, y), (X[:16], y[:16])))
    out = tmp_path / "profile.json"
    assert cli.main(["bench", "--profile", "--configs", "sigmoid128-sgd", "--rounds", "1", "--rows", "64",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sigmoid128-sgd: 784-128-10 sigmoid, sgd lr 0.1, batch 128, 64 rows (1 step)" in text
    # 784-128-10, one step: x @ W and x.T @ dy per layer, dy @ W.T for the second
    assert "| GEMMs (backend.matmul), 5 calls |" in text and "plain epoch / GEMM floor = " in text
    data = json.loads(out.read_text())
    assert data["kind"] == "profile" and data["rows"] == 64 and data["rounds"] == 1
    for key in ("machine", "git_commit", "git_dirty", "threadpool_info", "cpu", "parts"):
        assert key in data
    assert data["threadpool_info"] and all("/" not in pool.get("filepath", "") for pool in data["threadpool_info"])
    (name, result), = data["configs"].items()
    assert name == "sigmoid128-sgd" and result["gemm_flops"] == 64 * 409_088
    assert result["gemm_choice"]["provider"] == result["provider_gflops"]["provider"]


@pytest.mark.parametrize("other", [["--inference"], ["--sweep"], ["--processes"], ["--load", "none"],
                                   ["--tta", "0.9"]])
def test_profile_is_a_mode_of_its_own(other, capsys):
    from fastnet import cli

    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["bench", "--profile", *other])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_an_unknown_config_is_refused_by_the_parser(capsys):
    from fastnet import cli

    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["bench", "--profile", "--configs", "relu512x3-adam"])
    assert info.value.code == 2 and "invalid choice: 'relu512x3-adam'" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["bench", "--profile"]).profile is True


def test_format_says_whether_the_goal_is_met():
    parts = dict.fromkeys(P.PARTS, 0.0)
    parts.update(gemm=1.0, optimizer=0.2, rest=0.05)
    result = {"config": B.CONFIGS["relu512x2-adam"], "parts_mean_seconds": parts, "instrumented_mean_seconds": 1.25,
              "instrumented": [{"calls": dict.fromkeys(P.TIMED, 1)}], "layer_sizes": [784, 512, 512, 10],
              "rows": 100, "batch_size": 128, "steps": 1, "rounds": 3, "cpu": "a CPU", "gemm_threads": 2,
              "gemm_choice": {"source": "measured"},
              "provider_gflops": {"provider": "numpy", "recorded": None, "measured": [100.0], "best": 100.0},
              "gemm_gflops_in_epoch": 50.0, "gemm_flops": 100e9, "epoch_gflops": 80.0,
              "median_epoch_seconds": 1.3, "gemm_floor_seconds": 1.0, "epoch_over_floor": 1.3, "goal": 1.3,
              "instrumentation_overhead": 0.0, "threads": {"plain": None}}
    assert "= 1.30x (goal <= 1.3x: met)" in P.format_profile("x", result)
    result.update(median_epoch_seconds=1.4, epoch_over_floor=1.4)
    text = P.format_profile("x", result)
    assert "= 1.40x (goal <= 1.3x: not met)" in text and "largest other part: optimizer (16.0%)" in text


def _need_bf16():
    from fastnet.backends import precision

    why = precision.bf16_problem()
    if why is not None and not os.environ.get("CI"):
        pytest.skip(f"bf16 unavailable: {why}")


@pytest.mark.parametrize("on_pool", [False, True], ids=["as-measured", "updates-on-the-pool"])
def test_bf16_profile_counts_the_rounding_apart_and_its_floor_is_bfloat16_gemms(monkeypatch, on_pool):
    """precision='bf16': each step rounds a dense layer's x, W and dy once (3 per layer, timed
    as "rounding", not inside the GEMM or forward parts) -- but a W the optimizer's update
    rounded as it wrote it (on oneDNN's pool, where that was measured faster) is counted
    apart, not rounded again -- and the floor is the FLOPs at the speed of oneDNN's bfloat16
    GEMMs (measured with precision='bf16', not float32's)."""
    _need_bf16()
    from fastnet.backends import gemm_choice

    asked = []
    real = gemm_choice.measure

    def measure(provider, problems, threads, clock=None, precision="float32"):
        asked.append((provider, precision))
        return real(provider, problems, threads, precision=precision)

    monkeypatch.setattr(gemm_choice, "measure", measure)
    if on_pool:  # every update on oneDNN's 2 threads: each rounds the weights as it writes them
        from fastnet.backends import gemm_onednn as g

        monkeypatch.setenv("FASTNET_THREADS", "fixed")
        before = g.get_num_threads()
        g.set_num_threads(2)
        monkeypatch.setattr(g.FasterOf, "__call__", lambda self, key, here, pool, *args: pool(*args))
    rows, batch = 80, 32  # 3 steps
    config = dict(B.CONFIGS["sigmoid128-sgd"], batch_size=batch)
    X, y = _tiny(rows)
    try:
        result = P.profile_config(X, y, config, rounds=2, precision="bf16")
    finally:
        if on_pool:
            g.set_num_threads(before)
    steps, dense = 3, 2
    assert result["precision"] == "bf16" and result["gemm_choice"]["provider"] == "onednn"
    assert asked == [("onednn", "bf16")] * P.GEMM_REPEATS
    for epoch in result["instrumented"]:
        # (the last step's bits are left unused: fit's loop ends)
        if on_pool:
            assert epoch["calls"][P.FROM_STEPS] == (steps - 1) * dense
        else:
            assert 0 <= epoch["calls"][P.FROM_STEPS] <= (steps - 1) * dense
        assert epoch["calls"]["rounding"] + epoch["calls"][P.FROM_STEPS] == steps * 3 * dense
        assert epoch["parts"]["rounding"] > 0
        assert sum(epoch["parts"].values()) == pytest.approx(epoch["seconds"], rel=1e-12)
    assert result["gemm_floor_seconds"] == pytest.approx(
        result["gemm_flops"] / result["provider_gflops"]["best"] / 1e9, rel=1e-12)
    table = P.format_profile("sigmoid128-sgd", result)
    assert "bf16 GEMMs, provider onednn" in table
    calls = result["instrumented"][0]["calls"]
    rounded = f" (and {calls[P.FROM_STEPS]} weights {P.FROM_STEPS})" if calls[P.FROM_STEPS] else ""
    assert f"| bf16 rounding of the GEMMs' operands (precision='bf16'), {calls['rounding']} calls{rounded} |" in table


def test_bf16_wrapping_leaves_the_rounding_kernel_as_it_was():
    _need_bf16()
    import fastnet

    X, y = _tiny(64)
    model = fastnet.MLP([784, 16, 10], seed=0, precision="bf16")
    model.fit(X, y, epochs=1, batch_size=32, verbose=0)
    matmul = model.backend_._matmul
    kernel = matmul._round
    rec = P.Recorder()
    with P.instrumented(model, rec):
        assert matmul._round is not kernel
        model.fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert matmul._round is kernel and rec.calls["rounding"] == 2 * 3 * 2


def test_bf16_measure_times_gemms_on_bfloat16_operands(monkeypatch):
    """gemm_choice.measure(precision="bf16") hands oneDNN bfloat16 bits (uint16), already
    rounded: the GEMMs alone; other providers and precisions are refused by name."""
    _need_bf16()
    from fastnet.backends import gemm_choice, gemm_onednn

    seen = []
    real = gemm_onednn.matmul

    def matmul(a, b, out=None, **kwargs):
        seen.append((a.dtype, b.dtype, out.dtype))
        return real(a, b, out, **kwargs)

    monkeypatch.setattr(gemm_onednn, "matmul", matmul)
    problems = [(32, 64, 16, False, False), (64, 32, 16, True, False), (32, 16, 64, False, True)]
    assert gemm_choice.measure("onednn", problems, 1, precision="bf16") > 0
    assert seen and set(seen) == {(np.dtype(np.uint16), np.dtype(np.uint16), np.dtype(np.float32))}
    with pytest.raises(ValueError, match="precision='bf16' runs on provider 'onednn' only, got provider='numpy'"):
        gemm_choice.measure("numpy", problems, 1, precision="bf16")
    with pytest.raises(ValueError, match="precision must be 'float32' or 'bf16', got 'fp16'"):
        gemm_choice.measure("onednn", problems, 1, precision="fp16")


def test_cli_profile_bf16_json_and_refusal(tmp_path, monkeypatch, capsys):
    from fastnet import cli

    X, y = _tiny(256)
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda **kw: ((X, y), (X[:16], y[:16])))
    monkeypatch.setenv("FASTNET_CPU_FEATURES_OFF", "avx512_bf16,amx_bf16")
    assert cli.main(["bench", "--profile", "--bf16", "--configs", "sigmoid128-sgd", "--rows", "64"]) == 2
    assert "--bf16: precision='bf16' is not available here" in capsys.readouterr().err
    monkeypatch.delenv("FASTNET_CPU_FEATURES_OFF")
    _need_bf16()
    out = tmp_path / "profile.json"
    assert cli.main(["bench", "--profile", "--bf16", "--configs", "sigmoid128-sgd", "--rounds", "1", "--rows", "64",
                     "--json", str(out)]) == 0
    assert "| bf16 rounding of the GEMMs' operands (precision='bf16'), 6 calls |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["precision"] == "bf16" and data["configs"]["sigmoid128-sgd"]["precision"] == "bf16"

"""``fastnet bench --processes --busy-core`` (fastnet/cli/bench/processes.py): one core taken by
a busy loop while every system trains in its own process.

What is checked is the condition, not the timings (tiny data, a shared machine): the busy
loop is the one ``--load core`` starts, it spins through every timed epoch of every system
(started after the warm-ups of each set of workers), it is gone after the run, also when a
worker dies or on Ctrl-C, a quiet run starts none, and the result, the table and the JSON
say which; the rounds are shared by fresh sets of workers, started forward then backward.
"""
# Opt-outs kept (issue 27): spies that call through (the busy loop's start and stop, the
# workers' start), a progress callback that kills a worker or raises KeyboardInterrupt (the
# failure is the subject), and, for the command's plumbing, a stand-in for the measurement
# (cost: the options and the JSON are the subject, not the training).
import json
import os
import time

import pytest

from fastnet.cli.bench import interleaved as IL
from fastnet.cli.bench import processes as P
from process_table import alive as _alive  # (tests/process_table.py)

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table in /proc")


def _ours():
    """``{pid: command line}`` of this process's children that are bench workers or busy loops
    (zombies included: a child not reaped is still listed)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and ("fastnet.cli.bench.processes" in cmd or IL.LOAD_CODE in cmd or not cmd):
            found[int(entry)] = cmd
    return found


def _spy_on_load(monkeypatch):
    """Each use of ``interleaved.cpu_load``: its condition, the busy loop's pid (None without),
    and when the block was entered and left (this process's clock)."""
    spans, real = [], IL.cpu_load

    class Spy:
        def __init__(self, condition):
            self.cm, self.span = real(condition), {"condition": condition}

        def __enter__(self):
            info = self.cm.__enter__()
            self.span.update(pid=info and info["pid"], entered=time.time())
            spans.append(self.span)
            return info

        def __exit__(self, *exc):
            out = self.cm.__exit__(*exc)
            self.span["exited"] = time.time()
            return out

    monkeypatch.setattr(IL, "cpu_load", Spy)
    return spans


@pytest.mark.mnist
@needs_proc
def test_busy_loop_spins_through_every_timed_epoch_of_every_system_then_is_gone(monkeypatch):
    # (the default two sets of workers, a round each: a busy loop per set, after that set's warm-ups)
    spans, ready_at, at_round_ends = _spy_on_load(monkeypatch), [], []

    def progress(text):
        if text.endswith(" ready"):
            ready_at.append(time.time())
        elif text.startswith("round "):
            children = _ours()
            at_round_ends.append((children, [pid for pid, cmd in children.items() if IL.LOAD_CODE in cmd
                                             and _alive(pid)]))

    result = P.run("sigmoid128-sgd", systems=["fastnet", "numpy-scratch"], baselines=("numpy-scratch",),
                   settings=P.Settings(rounds=2, rows=256, load="core"), progress=progress)
    loads = result["load"]
    assert result["sets"] == 2 and result["set_of_round"] == [0, 1] and len(spans) == len(loads) == 2
    assert result["condition"] == "core"
    for k, (span, load) in enumerate(zip(spans, loads)):
        assert span["condition"] == "core" and load["pid"] == span["pid"] and load["code"] == IL.LOAD_CODE
        # started after the set's last warm-up, before its timed epoch; stopped after it
        assert len(ready_at) == 4 and max(ready_at[2 * k:2 * k + 2]) <= span["entered"] <= load["started"]
        assert k == 0 or spans[0]["exited"] <= min(ready_at[2:])  # (the next set's warm-ups: no busy loop)
        for name, e in result["systems"].items():
            start, seconds = e["epoch_started"][k], e["epoch_seconds"][k]
            assert span["entered"] <= start and start + seconds <= span["exited"], name
            assert load["started"] <= start and start + seconds <= load["stopped"], name
        assert load["cpu_seconds"] > 0 and not _alive(load["pid"])
        if hasattr(os, "sched_setaffinity"):
            assert load["core"] == max(os.sched_getaffinity(0))  # pinned as --load core pins it
    # at the end of each round the busy loop spins beside the set's two workers, and no other
    assert len(at_round_ends) == 2
    for (children, spinning), load in zip(at_round_ends, loads):
        assert spinning == [load["pid"]] and len(children) == 3
    assert _ours() == {}  # killed, reaped, and the workers too
    table = P.format_table(result)
    assert "each system in its own process, one core taken by a busy loop (" in table.splitlines()[0]
    for k, load in enumerate(loads):
        assert f"busy loop (set {k + 1}): pid {load['pid']} on core {load['core']}, " in table
    assert "of a core" in table


@pytest.mark.mnist
@needs_proc
def test_the_rounds_are_shared_by_fresh_sets_of_workers_started_forward_then_backward(monkeypatch):
    starts, sends, real_start, real_send = [], [], P._start, P._send
    monkeypatch.setattr(P, "_start", lambda name, *a: starts.append(name) or real_start(name, *a))
    monkeypatch.setattr(P, "_send", lambda proc, name, text: sends.append((name, text)) or real_send(proc, name, text))
    alive_at_ready = []
    result = P.run("sigmoid128-sgd", systems=["fastnet", "numpy-scratch"], baselines=("numpy-scratch",),
                   settings=P.Settings(rounds=3, rows=256),
                   progress=lambda text: text.endswith(" ready") and alive_at_ready.append(len(_ours())))
    assert result["sets"] == 2 and result["set_of_round"] == [0, 1, 0]
    assert starts == ["fastnet", "numpy-scratch", "numpy-scratch", "fastnet"]
    assert alive_at_ready == [1, 2, 1, 2]  # the second set starts once the first set's workers are gone
    # each round's shuffle seed is its index (seed 0), whichever set runs it; within a set the
    # systems take turns from a point that moves on each round
    epochs = [(n, t) for n, t in sends if t]
    assert epochs == [("fastnet", "0"), ("numpy-scratch", "0"), ("numpy-scratch", "2"), ("fastnet", "2"),
                      ("numpy-scratch", "1"), ("fastnet", "1")]
    fast = result["systems"]["fastnet"]
    assert len(set(fast["pids"])) == 2 and fast["pid"] == fast["pids"][0]
    assert len(fast["accuracy_per_set"]) == 2 and fast["accuracy_on_training_rows"] == fast["accuracy_per_set"][0]
    assert all(isinstance(t, float) for t in fast["epoch_seconds"]) and len(fast["epoch_seconds"]) == 3
    ratios = fast["vs"]["numpy-scratch"]["per_round"]
    assert ratios == [b / a for a, b in zip(fast["epoch_seconds"], result["systems"]["numpy-scratch"]["epoch_seconds"])]
    table = P.format_table(result)
    assert "the rounds shared by 2 sets of worker processes, each started afresh" in table.splitlines()[0]
    assert "accuracy on the training rows after 3 epochs (the first set's workers): " in table


@pytest.mark.parametrize("sets", [0, -1, 1.5, True])
def test_a_bad_number_of_sets_is_refused_before_any_worker_starts(monkeypatch, sets):
    monkeypatch.setattr(P, "_start", lambda *args: pytest.fail("a worker started"))
    with pytest.raises(ValueError, match=f"sets must be a positive integer, got {sets!r}"):
        P.run("sigmoid128-sgd", settings=P.Settings(sets=sets))


@pytest.mark.mnist
@needs_proc
@pytest.mark.parametrize("failure", ["a worker dies", "ctrl-c"])
def test_busy_loop_is_gone_when_a_worker_dies_or_on_ctrl_c(monkeypatch, failure):
    spans, workers, real_start = _spy_on_load(monkeypatch), [], P._start

    def start(*args):
        workers.append(real_start(*args))
        return workers[-1]

    monkeypatch.setattr(P, "_start", start)

    def progress(text):
        if text.startswith("round 1 "):
            assert _alive(spans[0]["pid"])
            if failure == "ctrl-c":
                raise KeyboardInterrupt
            workers[0].kill()
            workers[0].wait()

    expected = KeyboardInterrupt if failure == "ctrl-c" else RuntimeError
    with pytest.raises(expected):
        P.run("sigmoid128-sgd", systems=["numpy-scratch"], settings=P.Settings(rounds=3, rows=256, load="core"),
              progress=progress)
    (span,) = spans
    assert "exited" in span and not _alive(span["pid"])
    assert _ours() == {}


@pytest.mark.mnist
@needs_proc
def test_quiet_run_starts_no_busy_loop(monkeypatch):
    spans, seen = _spy_on_load(monkeypatch), []
    result = P.run("sigmoid128-sgd", systems=["numpy-scratch"], settings=P.Settings(rounds=1, rows=256),
                   progress=lambda text: seen.append(_ours()))
    assert result["condition"] == "none" and result["load"] is None
    # one round: one set of workers (the default two would start a set with nothing to run)
    assert result["sets"] == 1 and len(result["systems"]["numpy-scratch"]["pids"]) == 1
    assert all(s["condition"] == "none" and s["pid"] is None for s in spans)
    assert seen and not any(IL.LOAD_CODE in cmd for children in seen for cmd in children.values())
    assert "busy loop" not in P.format_table(result)


def test_unknown_load_is_refused_before_any_worker_starts(monkeypatch):
    monkeypatch.setattr(P, "_start", lambda *args: pytest.fail("a worker started"))
    with pytest.raises(ValueError, match="load must be one of none, core, got 'socket'"):
        P.run("sigmoid128-sgd", settings=P.Settings(load="socket"))


def _stand_in(calls):
    def run(config, settings, progress):
        calls.append(settings)
        load = [{"pid": 4321, "core": 1, "code": IL.LOAD_CODE, "started": 10.0, "stopped": 12.0,
                 "cpu_seconds": 1.9}] if settings.load == "core" else None
        return {"kind": "processes", "config": config, "rows": settings.rows, "rounds": settings.rounds,
                "condition": settings.load, "load": load, "cpu": "a CPU", "not_run": {},
                "systems": {"fastnet": {"median_epoch_seconds": 0.5, "vs": {}}}}

    return run


@pytest.mark.parametrize("busy", [True, False])
def test_cli_busy_core_reaches_the_run_the_title_and_the_json(tmp_path, monkeypatch, capsys, busy):
    from fastnet import cli

    calls = []
    monkeypatch.setattr(P, "run", _stand_in(calls))
    out = tmp_path / "p.json"
    argv = ["bench", "--processes", "--rounds", "2", "--rows", "300", "--configs", "sigmoid128-sgd",
            "--json", str(out)]
    assert cli.main(argv + ["--busy-core"] * busy) == 0
    (settings,) = calls
    assert settings.load == ("core" if busy else "none") and settings.rounds == 2 and settings.rows == 300
    title = capsys.readouterr().out.splitlines()[0]
    assert title.startswith("sigmoid128-sgd, 300 rows, 2 rounds, each system in its own process")
    assert ("one core taken by a busy loop" in title) == busy
    data = json.loads(out.read_text())
    assert data["load"] == settings.load and data["blocks"][0]["condition"] == settings.load
    assert (data["blocks"][0]["load"] or [{}])[0].get("pid") == (4321 if busy else None)
    assert settings.sets == 2  # (the default)


def test_cli_sets_reach_the_run_and_need_processes(monkeypatch, capsys):
    from fastnet import cli

    calls = []
    monkeypatch.setattr(P, "run", _stand_in(calls))
    assert cli.main(["bench", "--processes", "--sets", "3", "--configs", "sigmoid128-sgd"]) == 0
    assert calls[0].sets == 3
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda **kw: pytest.fail("MNIST loaded"))
    assert cli.main(["bench", "--sets", "3"]) == 2
    assert "--sets goes with --processes, --inference or --tta" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [[], ["--load", "core"], ["--sweep"]])
def test_cli_busy_core_needs_processes(monkeypatch, capsys, mode):
    from fastnet import cli

    monkeypatch.setattr(cli, "load_mnist_arrays", lambda **kw: pytest.fail("MNIST loaded"))
    assert cli.main(["bench", "--busy-core", *mode]) == 2
    assert "--busy-core goes with --processes" in capsys.readouterr().err


def test_cli_bf16_runs_the_bf16_systems_against_pytorch_autocast(tmp_path, monkeypatch, capsys):
    from fastnet import cli

    calls = []

    def run(config, settings, progress, systems=None, baselines=None):
        calls.append((systems, baselines))
        return {"kind": "processes", "config": config, "rows": settings.rows, "rounds": settings.rounds,
                "condition": settings.load, "load": None, "cpu": "a CPU", "not_run": {},
                "systems": {"fastnet-bf16": {"median_epoch_seconds": 0.5, "vs": {},
                                             "accuracy_on_training_rows": 0.91}}}

    monkeypatch.setattr(P, "run", run)
    out = tmp_path / "p.json"
    assert cli.main(["bench", "--processes", "--bf16", "--configs", "relu512x2-adam", "relu512x2-adam-b1024",
                     "--json", str(out)]) == 0
    assert calls == [(P.BF16_SYSTEMS, P.BF16_BASELINES)] * 2
    assert P.BF16_SYSTEMS[:2] == ("fastnet-bf16", "pytorch-autocast-tuned") and "fastnet" in P.BF16_SYSTEMS
    assert "accuracy on the training rows after 6 epochs: fastnet-bf16 0.9100" in capsys.readouterr().out
    assert json.loads(out.read_text())["bf16"] is True


def test_cli_bf16_needs_processes_or_profile(monkeypatch, capsys):
    from fastnet import cli

    monkeypatch.setattr(cli, "load_mnist_arrays", lambda **kw: pytest.fail("MNIST loaded"))
    assert cli.main(["bench", "--bf16"]) == 2
    assert "--bf16 goes with --processes or --profile" in capsys.readouterr().err


def test_cli_bf16_on_a_cpu_without_bf16_is_refused_before_any_worker(monkeypatch, capsys):
    from fastnet import cli

    monkeypatch.setenv("FASTNET_CPU_FEATURES_OFF", "avx512_bf16,amx_bf16")
    monkeypatch.setattr(P, "run", lambda *a, **k: pytest.fail("the run started"))
    assert cli.main(["bench", "--processes", "--bf16"]) == 2
    err = capsys.readouterr().err
    assert "--bf16: precision='bf16' is not available here: it needs a CPU with bfloat16" in err


@pytest.mark.mnist
def test_bf16_workers_train_in_bf16_and_the_float32_one_does_not():
    # each worker reports what it ran with: fastnet-bf16 on oneDNN's bfloat16 GEMMs, fastnet in
    # float32 (the accuracy reference); PyTorch's autocast worker where PyTorch is installed
    from fastnet.backends import precision

    why = precision.bf16_problem()
    if why is not None and not os.environ.get("CI"):
        pytest.skip(f"bf16 unavailable: {why}")
    systems = ["fastnet-bf16", "fastnet"] + (["pytorch-autocast-tuned"] if P.installed("pytorch-autocast-tuned") else [])
    result = P.run("sigmoid128-sgd", systems=systems, baselines=P.BF16_BASELINES,
                   settings=P.Settings(rounds=1, rows=512))
    bf16, f32 = result["systems"]["fastnet-bf16"], result["systems"]["fastnet"]
    assert bf16["details"] == {"precision": "bf16", "gemm_provider": "onednn",
                               "gemm_source": "precision='bf16' runs on oneDNN only"}
    assert f32["details"]["precision"] == "float32" and f32["details"]["gemm_provider"] in ("numpy", "onednn", "mkl")
    assert set(bf16["vs"]) == {"fastnet"} | ({"pytorch-autocast-tuned"} if len(systems) == 3 else set())
    # two epochs on 512 rows (about 0.26 of them right): bfloat16 GEMM inputs train as float32 does
    assert abs(bf16["accuracy_on_training_rows"] - f32["accuracy_on_training_rows"]) <= 0.05, (bf16, f32)
    if len(systems) == 3:
        assert result["systems"]["pytorch-autocast-tuned"]["details"]["precision"] == "bf16 autocast"
    else:
        assert result["not_run"] == {} or "pytorch-autocast-tuned" not in result["systems"]


@pytest.mark.mnist
def test_fastnet_reports_its_thread_counts_for_each_round(monkeypatch):
    # the thread tuner on, as users run fastnet (the suite's conftest fixes the count): each round's
    # answer carries that epoch's steps per BLAS thread count (4 steps: not a running total)
    monkeypatch.setenv("FASTNET_THREADS", "auto")
    result = P.run("sigmoid128-sgd", systems=["fastnet", "numpy-scratch"], baselines=("numpy-scratch",),
                   settings=P.Settings(rounds=3, rows=512))
    rounds = result["systems"]["fastnet"]["epoch_details"]
    assert len(rounds) == 3
    counts_here = {1, 2, os.cpu_count()}
    for d in rounds:  # 512 rows at batch 128: 4 steps an epoch
        counts = d["steps_with_threads"]
        assert sum(counts.values()) == 4 and set(counts) <= {"1", "2", str(os.cpu_count())}, counts
        assert set(d["thread_decisions"]) <= counts_here, d
    # and each set's warm-up epoch, where the first probe starts
    warm = result["systems"]["fastnet"]["warm_up_details"]
    assert len(warm) == len(result["systems"]["fastnet"]["pids"])
    assert all(sum(w["steps_with_threads"].values()) == 4 and set(w["thread_decisions"]) <= counts_here for w in warm)
    assert result["systems"]["numpy-scratch"]["epoch_details"] == [None, None, None]
    line, = [x for x in P.format_table(result).splitlines() if x.startswith("fastnet, steps per BLAS thread")]
    segments = line.split(": ", 1)[1].split("; ")
    assert len(segments) == 3
    for segment, d in zip(segments, rounds):
        shown = {k: v for k, v in d["steps_with_threads"].items() if v}
        assert segment == ", ".join(f"{k} thread{'s' * (k != '1')}: {v}" for k, v in shown.items())

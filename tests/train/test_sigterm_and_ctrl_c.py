"""A run that survives the operator (issue 30, item 5): SIGTERM and Ctrl-C stop ``fit`` at a step
boundary and keep what is done; ``fastnet train --checkpoint/--resume``; every output and
optional-dependency check before training; the model saved before the plots; a checkpoint given
to ``fastnet.load``/``fastnet evaluate``; log lines in order under block buffering.

The signals are real (``os.kill``), the command line runs in real subprocesses."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastnet
from fastnet.datasets import mnist
from fastnet.train.interrupt import TrainingInterrupted

HAVE_MNIST = (mnist.default_cache_dir() / "mnist.npz").exists()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="MNIST is not cached")


def _env(**extra):
    """The environment of a subprocess run as cron would: no PYTHONUNBUFFERED, fixed threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "FASTNET_DEBUG")}
    env.update(FASTNET_THREADS="fixed", **extra)
    return env


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 20)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(int) + (X[:, 3] > 1)
    return X, y


class _SignalAt(fastnet.Callback):
    """Sends ``signum`` to this process after step ``step`` of epoch ``epoch``."""

    def __init__(self, signum, epoch, step):
        self.signum, self.epoch, self.step = signum, epoch, step

    def on_step_end(self, model, epoch, step):
        if (epoch, step) == (self.epoch, self.step):
            os.kill(os.getpid(), self.signum)


def _model():
    return fastnet.MLP([20, 16, 3], seed=3)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_epoch_stops_at_the_step_boundary_and_undoes_the_epoch(tmp_path, monkeypatch, signum, status):
    monkeypatch.setenv("FASTNET_THREADS", "fixed")
    X, y = _data()
    ck = tmp_path / "ck.npz"
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    m = _model()
    with pytest.raises(TrainingInterrupted) as info:
        m.fit(X, y, epochs=3, batch_size=50, verbose=0, callbacks=[fastnet.ModelCheckpoint(ck),
                                                                    _SignalAt(signum, 2, 3)])
    exc = info.value
    assert isinstance(exc, KeyboardInterrupt)  # handled as Ctrl-C is
    assert (exc.signum, exc.exit_status, exc.completed, exc.undone) == (signum, status, 1, (2, 3, 12))
    assert "holds epoch 1" in str(exc) and "step 3 of 12" in str(exc)
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are put back
    one = _model()
    one.fit(X, y, epochs=1, batch_size=50, verbose=0)
    assert m.n_iter_ == 1
    for name, w in one.get_weights().items():  # epoch 2's three steps undone, bit for bit
        np.testing.assert_array_equal(m.get_weights()[name], w)
    assert fastnet.load(ck).n_iter_ == 1  # the checkpoint holds the last complete epoch
    # resumed, in process or from the checkpoint, the run ends as an uninterrupted one
    whole = _model()
    whole.fit(X, y, epochs=3, batch_size=50, verbose=0)
    m.fit(X, y, epochs=2, batch_size=50, verbose=0)
    resumed = _model()
    resumed.fit(X, y, epochs=3, batch_size=50, verbose=0, resume=ck)
    for name, w in whole.get_weights().items():
        np.testing.assert_array_equal(m.get_weights()[name], w)
        np.testing.assert_array_equal(resumed.get_weights()[name], w)


def test_outside_the_main_thread_fit_leaves_the_signals_alone():
    import threading

    X, y = _data()
    seen = []

    class Look(fastnet.Callback):
        def on_epoch_end(self, model, epoch, logs):
            seen.append(signal.getsignal(signal.SIGTERM))

    t = threading.Thread(target=lambda: _model().fit(X, y, epochs=1, verbose=0, callbacks=[Look()]))
    t.start()
    t.join()
    assert seen == [signal.SIG_DFL]


def _run_cli(args, log, **popen):
    """``python -m fastnet args > log 2>&1`` (one file, as cron's redirection)."""
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "fastnet", *map(str, args)], stdout=f, stderr=subprocess.STDOUT,
                                env=_env(), **popen)


def _accuracy(log_text):
    return float(re.search(r"test accuracy (\d\.\d+)", log_text).group(1))


@needs_mnist
def test_fastnet_train_killed_by_sigterm_after_its_first_epoch_resumes_to_the_same_result(tmp_path):
    common = ["train", "mnist", "--subset", 6000, "--epochs", 3, "--hidden", 32, "--test-subset", 2000]
    full_log = tmp_path / "full.log"
    assert _run_cli([*common, "--save", tmp_path / "full.npz"], full_log).wait(timeout=300) == 0
    text = full_log.read_text()
    # the header lines (stdout) before the epoch lines (stderr), each whole, in one redirected file
    lines = text.splitlines()
    assert lines[0].startswith("MNIST:") and lines[2].startswith("model:") and lines[3].startswith("epoch 1/3")

    log = tmp_path / "run.log"
    ck, saved = tmp_path / "ck.npz", tmp_path / "m.npz"
    proc = _run_cli([*common, "--save", saved, "--checkpoint", ck], log)
    deadline = time.monotonic() + 300
    while not re.search(r"^epoch 1/3", log.read_text(), re.M):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    text = log.read_text()
    held = int(re.search(r"training stopped by SIGTERM .*the model holds epoch (\d)", text).group(1))
    assert held in (1, 2)
    assert f"kept: {saved}" in text and f"{ck} (checkpoint of epoch {held}: continue with --resume {ck}" in text
    assert "test accuracy" not in text
    assert fastnet.load(saved).n_features_in_ == 784 and fastnet.load(ck).n_iter_ == held

    final = tmp_path / "final.npz"
    resumed_log = tmp_path / "resumed.log"
    assert _run_cli([*common, "--save", final, "--checkpoint", ck, "--resume", ck], resumed_log).wait(300) == 0
    resumed = resumed_log.read_text()
    assert f"epoch {held + 1}/3" in resumed and f"epoch {held}/3" not in resumed
    assert _accuracy(resumed) == _accuracy(full_log.read_text())
    whole, cont = fastnet.load(tmp_path / "full.npz").get_weights(), fastnet.load(final).get_weights()
    for name in whole:
        np.testing.assert_array_equal(cont[name], whole[name])


def _fake_mnist(monkeypatch):
    """``fastnet.cli``'s data: 300 random 784-feature rows, 10 classes (no MNIST needed)."""
    from fastnet import cli

    rng = np.random.default_rng(0)
    xtr, ytr = rng.random((300, 784), dtype=np.float32), rng.integers(0, 10, 300)
    xte, yte = rng.random((100, 784), dtype=np.float32), rng.integers(0, 10, 100)
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda subset=None, cache_dir=None, path=None:
                        ((xtr[:subset], ytr[:subset]), (xte, yte)))


def test_plots_without_matplotlib_fail_before_training(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["matplotlib"] = None  # as if not installed
        from fastnet.cli import main
        sys.exit(main(["train", "mnist", "--data-dir", {str(tmp_path / 'none')!r}, "--plots",
                       {str(tmp_path / 'plots')!r}, "--save", {str(tmp_path / 'm.npz')!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--plots" in proc.stderr and "matplotlib" in proc.stderr
    assert "MNIST" not in proc.stdout  # refused before the data loads, before training


@pytest.mark.parametrize("option, make, message", [
    ("--plots", lambda p: p.write_text("x"), "is not a folder"),
    ("--checkpoint", lambda p: p.mkdir(), "is a folder"),
])
def test_output_paths_are_checked_before_training(tmp_path, monkeypatch, capsys, option, make, message):
    from fastnet import cli

    _fake_mnist(monkeypatch)
    target = tmp_path / "target"
    make(target)
    assert cli.main(["train", "mnist", option, str(target), "--epochs", "1"]) == 2
    out, err = capsys.readouterr()
    assert message in err and "epoch 1/" not in err and "MNIST" not in out


def test_resume_of_a_missing_checkpoint_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from fastnet import cli

    _fake_mnist(monkeypatch)
    assert cli.main(["train", "mnist", "--resume", str(tmp_path / "no.npz"), "--epochs", "1"]) == 2
    out, err = capsys.readouterr()
    assert "--resume" in err and "no such checkpoint" in err and "MNIST" not in out


def test_the_model_is_saved_before_the_plots_are_drawn(tmp_path, monkeypatch, capsys):
    from fastnet import cli
    from fastnet import plots

    _fake_mnist(monkeypatch)

    def broken(*args, **kwargs):
        raise OSError("disk full while drawing")

    monkeypatch.setattr(plots, "write_training_plots", broken)
    saved = tmp_path / "m.npz"
    assert cli.main(["train", "mnist", "--epochs", "1", "--hidden", "8", "--quiet", "--plots", str(tmp_path / "p"),
                     "--save", str(saved)]) == 2
    assert "disk full while drawing" in capsys.readouterr().err
    assert fastnet.load(saved).n_features_in_ == 784


def test_a_checkpoint_loads_and_evaluates_as_its_model(tmp_path, monkeypatch, capsys):
    from fastnet import cli

    X, y = _data()
    ck = tmp_path / "ck.npz"
    m = _model()
    m.fit(X, y, epochs=2, verbose=0, callbacks=[fastnet.ModelCheckpoint(ck)])
    loaded = fastnet.load(ck)
    assert loaded.n_iter_ == 2
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))
    # fastnet evaluate on a checkpoint: the model it holds (784 inputs here)
    rng = np.random.default_rng(1)
    big = fastnet.MLP([784, 8, 10], seed=0)
    xtr, ytr = rng.random((200, 784), dtype=np.float32), rng.integers(0, 10, 200)
    big.fit(xtr, ytr, epochs=1, verbose=0, callbacks=[fastnet.ModelCheckpoint(tmp_path / "big.npz")])
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda subset=None, cache_dir=None, path=None:
                        ((xtr, ytr), (xtr, ytr)))
    assert cli.main(["evaluate", str(tmp_path / "big.npz")]) == 0
    expected = big.evaluate(xtr, ytr, return_dict=True)["accuracy"]
    assert f"test accuracy {expected:.4f}" in capsys.readouterr().out


def test_fit_keeps_the_programs_lines_in_order_when_both_streams_go_to_one_file(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, fastnet
        print("header: before training")
        X = np.random.default_rng(0).normal(size=(200, 5)).astype("float32")
        fastnet.MLP([5, 4, 2]).fit(X, (X[:, 0] > 0).astype(int), epochs=2)
        print("footer: after training")
    """)
    log = tmp_path / "log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", script], stdout=f, stderr=subprocess.STDOUT, env=_env(), timeout=120,
                       check=True)
    lines = [line for line in log.read_text().splitlines() if line.split(":")[0] in ("header", "footer")
             or line.startswith("epoch ")]
    assert [line.split()[0] for line in lines] == ["header:", "epoch", "epoch", "footer:"], lines

"""One writer per checkpoint or model path (issue 30, item 3).

Two runs given one checkpoint path used to both exit 0, each overwriting the other; now
the first holds ``<path>.lock`` (``fcntl.flock``) from before it resumes to its end and
the second is refused at once, its error naming the holder (pid, host, start time).
Temporary files of writers killed mid-write are removed by the next write, and a writer
SIGKILLed at random moments always leaves a checkpoint to resume from.

Oracles: the exit status and stderr of real processes, the time the refusal took, the
files left in the folder, and ``read_checkpoint``.
"""
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastnet
from fastnet.core import npzfile
from fastnet.train.checkpoint import CheckpointError, read_checkpoint, save_checkpoint

# A run that holds its checkpoint path until told to finish: it prints "locked" from
# on_train_begin (the lock is taken before that), then waits for the file `release`.
RUN = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import fastnet

    path, seed, release = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class Hold(fastnet.Callback):
        def on_train_begin(self, model):
            print("locked", flush=True)
            while not os.path.exists(release):
                time.sleep(0.02)

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.integers(0, 3, 64)
    model = fastnet.MLP([4, 8, 3], backend="cpu", seed=seed)
    t0 = time.perf_counter()
    try:
        model.fit(X, y, epochs=2,
                  callbacks=[fastnet.ModelCheckpoint(path), Hold()])
    except fastnet.CheckpointError as exc:
        print(json.dumps({"error": str(exc), "seconds": time.perf_counter() - t0}), flush=True)
        sys.exit(3)
    print(json.dumps({"done": True}), flush=True)
""")


def _start(script, *args):
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_second_run_on_the_same_checkpoint_path_is_refused_at_once(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    path = tmp_path / "c.npz"
    release = tmp_path / "release"
    first = _start(script, path, 1, release)
    try:
        assert first.stdout.readline().strip() == "locked", first.stderr.read()
        assert os.path.exists(str(path) + ".lock")
        second = subprocess.run([sys.executable, str(script), str(path), "2", str(release)], capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 3, second.stderr
        out = json.loads(second.stdout.strip().splitlines()[-1])
        assert out["seconds"] < 1.0, out  # refused at once, not after training or a timeout
        msg = out["error"]
        assert f"checkpoint {str(path)!r} is being written by another run: pid {first.pid} on host " in msg, msg
        assert "since 20" in msg and "run.py" in msg and "give this one another path" in msg, msg
    finally:
        release.touch()
        rest, err = first.communicate(timeout=120)
    assert first.returncode == 0 and '"done": true' in rest, err
    # the checkpoint is the first run's (seed 1), and nothing of the second's
    meta, _ = read_checkpoint(path)
    assert meta["config"]["seed"] == 1 and meta["history"]["epochs"] == [1, 2]
    assert not os.path.exists(str(path) + ".lock")  # released (and removed) at the end of the run
    # the path is free again: a later run takes it
    again = subprocess.run([sys.executable, str(script), str(path), "1", str(release)], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr


HOLDER = textwrap.dedent("""
    import sys, time
    from fastnet.core import npzfile
    held = npzfile.acquire(sys.argv[1])
    print("held", flush=True)
    sys.stdin.read()
""")


def test_model_save_is_refused_while_another_process_holds_the_path(tmp_path):
    path = tmp_path / "m.npz"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        m = fastnet.MLP([3, 2], backend="cpu").build(3)
        t0 = time.perf_counter()
        with pytest.raises(fastnet.ModelFileError, match=rf"model file .* is being written by another run: pid "
                                                         rf"{holder.pid} on host "):
            m.save(path)
        assert time.perf_counter() - t0 < 1.0
        assert not path.exists()
    finally:
        holder.communicate("", timeout=60)
    m.save(path)  # released by the holder's exit (even a kill would release it)
    assert fastnet.load(path).get_weights().keys() == m.get_weights().keys()


def test_two_fits_in_two_threads_on_one_path(tmp_path):
    path = tmp_path / "c.npz"
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.integers(0, 3, 64)
    started, finish = threading.Event(), threading.Event()

    class Hold(fastnet.Callback):
        def on_train_begin(self, model):
            started.set()
            finish.wait(60)

    first = threading.Thread(target=lambda: fastnet.MLP([4, 8, 3], backend="cpu", seed=1).fit(
        X, y, epochs=1, callbacks=[fastnet.ModelCheckpoint(path), Hold()]))
    first.start()
    try:
        assert started.wait(60)
        other = fastnet.MLP([4, 8, 3], backend="cpu", seed=2)
        with pytest.raises(CheckpointError, match=r"is being written by another fit in this process \(thread"):
            other.fit(X, y, epochs=1, callbacks=[fastnet.ModelCheckpoint(path)])
        assert not other.built
    finally:
        finish.set()
        first.join(60)
    assert read_checkpoint(path)[0]["config"]["seed"] == 1


def test_the_lock_is_released_however_the_fit_ends(tmp_path):
    path = tmp_path / "c.npz"
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)) * 1e4, rng.integers(0, 3, 60)
    m = fastnet.MLP([4, 8, 3], backend="cpu", seed=0)
    with pytest.raises(fastnet.TrainingDivergedError):
        m.fit(X, y, epochs=5, optimizer="sgd", lr=1e4, batch_size=10,
              callbacks=[fastnet.ModelCheckpoint(path)])
    assert not npzfile.holds_lock(path) and not os.path.exists(str(path) + ".lock")
    # a refused resume (another seed) releases it too
    m = fastnet.MLP([4, 8, 3], backend="cpu", seed=0)
    m.fit(X / 1e4, y, epochs=1, callbacks=[fastnet.ModelCheckpoint(path)])
    with pytest.raises(CheckpointError, match="seed 0 -> 9"):
        fastnet.MLP([4, 8, 3], backend="cpu", seed=9).fit(X / 1e4, y, epochs=2,
                                                          resume=path, callbacks=[fastnet.ModelCheckpoint(path)])
    assert not npzfile.holds_lock(path) and not os.path.exists(str(path) + ".lock")


def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_leftovers_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead = _dead_pid()
    m = fastnet.MLP([3, 4, 2], backend="cpu", seed=0).build(3)
    path = tmp_path / "c.npz"
    mine = [f".tmp-{dead}-abcd1234-c.npz", f".tmp-{dead}-0a1b2c3d-c.npz.prev", ".tmp-k2j4h5g6-c.npz",
            f".tmp-{os.getppid()}-zzzz9999-c.npz"]  # (the last: a live process's, removed only under the lock)
    others = [f".tmp-{dead}-abcd1234-other.npz", f".tmp-{dead}-abcd1234-xc.npz", "keep.tmp-1-c.npz"]
    for name in mine + others:
        (tmp_path / name).write_bytes(b"partial")
    save_checkpoint(m, path)
    assert sorted(os.listdir(tmp_path)) == sorted(others + ["c.npz"])
    # without the target's lock (a plain atomic write: the MNIST cache, ONNX export), only the
    # temporaries of processes that are gone are removed
    for name in mine:
        (tmp_path / name).write_bytes(b"partial")
    npzfile.atomic_write(tmp_path / "c.npz", lambda f: f.write(b"x"), keep_previous=tmp_path / "c.npz.prev")
    left = set(os.listdir(tmp_path))
    assert f".tmp-{os.getppid()}-zzzz9999-c.npz" in left and ".tmp-k2j4h5g6-c.npz" in left  # (no pid: unknown)
    assert f".tmp-{dead}-abcd1234-c.npz" not in left and f".tmp-{dead}-0a1b2c3d-c.npz.prev" not in left


def test_a_prev_that_is_already_the_same_file_leaves_no_temporary(tmp_path):
    """The audit's case: rename(2) between two links of one file does nothing, and the staged
    link used to stay behind as .tmp-<pid>-c.npz.prev."""
    p = str(tmp_path / "c.npz")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 3)), rng.integers(0, 2, 32)
    m = fastnet.MLP([3, 4, 2], backend="cpu", seed=0)
    m.fit(X, y, epochs=1)
    save_checkpoint(m, p)
    os.link(p, p + ".prev")
    m.fit(X, y, epochs=1)
    save_checkpoint(m, p)
    assert sorted(os.listdir(tmp_path)) == ["c.npz", "c.npz.prev"]
    assert read_checkpoint(p)[0]["history"]["epochs"] == [1, 2]
    assert read_checkpoint(p + ".prev")[0]["history"]["epochs"] == [1]


# A fork server: warmed once, it forks writers that train (resuming, one checkpoint per
# epoch) and SIGKILLs each at a random moment of its training; after every kill it checks
# that a checkpoint can be resumed from.
KILLER = textwrap.dedent("""
    import json, os, random, signal, sys, time, warnings
    import numpy as np
    import fastnet
    from fastnet.train.checkpoint import _read_or_previous

    folder, kills, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    path = os.path.join(folder, "c.npz")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 64)), rng.integers(0, 10, 64)
    FIT = dict(batch_size=64)

    def write(epochs):
        model = fastnet.MLP([64, 256, 10], backend="cpu", seed=0)
        resume = path if os.path.exists(path) or os.path.exists(path + ".prev") else None
        model.fit(X, y, epochs=epochs, resume=resume, callbacks=[fastnet.ModelCheckpoint(path)], **FIT)
        return model

    fastnet.MLP([64, 256, 10], backend="cpu", seed=0).fit(X, y, epochs=1, **FIT)  # warm: kernels compiled
    pick = random.Random(seed)
    report = {"kills": 0, "temporaries_seen": 0, "lock_files_seen": 0, "epochs": []}
    while report["kills"] < kills:
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_r)
            class Go(fastnet.Callback):
                def on_train_begin(self, model):
                    os.write(go_w, b"g")
            model = fastnet.MLP([64, 256, 10], backend="cpu", seed=0)
            resume = path if os.path.exists(path) or os.path.exists(path + ".prev") else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X, y, epochs=10**6, resume=resume, callbacks=[fastnet.ModelCheckpoint(path), Go()], **FIT)
            os._exit(0)
        os.close(go_w)
        os.read(go_r, 1)
        os.close(go_r)
        time.sleep(pick.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        report["kills"] += 1
        names = os.listdir(folder)
        report["temporaries_seen"] += sum(n.startswith(".tmp-") for n in names)
        report["lock_files_seen"] += "c.npz.lock" in names
        if os.path.exists(path) or os.path.exists(path + ".prev"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                meta, _ = _read_or_previous(path)  # raises if nothing can be resumed
            report["epochs"].append(meta["history"]["epochs"][-1])
    last = report["epochs"][-1]
    model = write(last + 2)  # the next run: resumes, trains two epochs, ends normally
    report["final_epochs"] = model.history_.epochs[-1]
    report["left"] = sorted(os.listdir(folder))
    print(json.dumps(report))
""")


def test_writers_killed_at_random_moments_always_leave_a_resumable_checkpoint(tmp_path):
    """>= 20 SIGKILLs of a writer, each at a random moment of its training (often mid-write):
    after each, a checkpoint to resume from; after the next run, no temporary file left."""
    folder = tmp_path / "run"
    folder.mkdir()
    # Opt-out kept: one BLAS thread and no thread tuner in the fork server, as forking a process
    # whose BLAS pool has threads running is not safe; the subject is the kills, not the speed.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "FASTNET_THREADS": "fixed"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", KILLER, str(folder), "24", str(random.randrange(10**6))],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report, f"{time.perf_counter() - t0:.1f} s")
    assert report["kills"] == 24
    assert len(report["epochs"]) >= 20  # a resumable checkpoint after (nearly) every kill
    assert report["final_epochs"] == report["epochs"][-1] + 2
    assert report["left"] == ["c.npz", "c.npz.prev"], report["left"]

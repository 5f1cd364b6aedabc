"""Failed writes, injected for real: the OS refuses them, nothing is mocked.

* a file-size limit (``RLIMIT_FSIZE``, with SIGXFSZ ignored) set in a child process
  after its warm-up, so that the checkpoint, model or cache write fails at a chosen
  size (at the first byte, inside the temporary file, at its last byte);
* a read-only folder (a read-only tmpfs mount when running as root, where file
  permissions do not stop writes; ``chmod`` otherwise);
* a 100 KB tmpfs: room for one checkpoint, not two.

Each checks that the file there before is byte-identical, that no temporary file
remains, that the error names the path and the OS's reason, and, for checkpoints,
that resuming reaches the same weights as an uninterrupted run.
"""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastnet
from fastnet import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A model whose checkpoint is about 63 KB (5,205 float32 weights, Adam's two slots).
SIZES = [20, 200, 5]
FIT = dict(batch_size=64, optimizer="adam", lr=1e-3)


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, SIZES[0])).astype(np.float32)
    return X, rng.integers(0, SIZES[-1], 256)


def fresh_model():
    return fastnet.MLP(SIZES, backend="cpu", seed=3)


def uninterrupted(epochs):
    m = fresh_model()
    m.fit(*data(), epochs=epochs, **FIT)
    return m.get_weights()


def same_weights(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".tmp"))


CHILD = textwrap.dedent("""
    import hashlib, json, os, resource, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_write_faults import data, fresh_model, FIT
    import fastnet

    path, where = sys.argv[1], sys.argv[2]
    m = fresh_model()
    X, y = data()
    m.fit(X, y, epochs=1, callbacks=[fastnet.ModelCheckpoint(path)], **FIT)  # compiles, caches, writes
    size = os.path.getsize(path)  # the next checkpoint has the same size
    before = hashlib.sha256(open(path, "rb").read()).hexdigest()
    limit = {{"first": 0, "inside": size // 2, "last": size - 1}}[where]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        m.fit(X, y, epochs=1, callbacks=[fastnet.ModelCheckpoint(path)], **FIT)
        print(json.dumps({{"error": None}}))
    except Exception as exc:
        print(json.dumps({{"error": type(exc).__name__, "message": str(exc), "n_iter": m.n_iter_,
                          "before": before}}))
""").format(tests=os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("where", ["first", "inside", "last"])
def test_checkpoint_write_refused_by_a_file_size_limit(tmp_path, where):
    path = tmp_path / "run.ckpt.npz"
    script = tmp_path / "child.py"
    script.write_text(CHILD)  # the limit is chosen in the child from its first checkpoint's size
    run = subprocess.run([sys.executable, str(script), str(path), where], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["error"] == "CheckpointError", out
    msg = out["message"]
    assert str(path) in msg and "file too large" in msg and "epoch 2" in msg, msg
    assert f"the last good checkpoint is '{path}' (epoch 1)" in msg, msg
    assert out["n_iter"] == 2  # the model in memory holds the completed epoch
    assert hashlib.sha256(path.read_bytes()).hexdigest() == out["before"]  # byte for byte as before
    assert leftovers(tmp_path) == []
    # The epoch-1 checkpoint is whole: resuming from it reaches an uninterrupted run's weights.
    resumed = fresh_model()
    h = resumed.fit(*data(), epochs=3, resume=path, **FIT)
    assert h.epochs == [2, 3]
    assert same_weights(resumed.get_weights(), uninterrupted(3))


SAVE_CHILD = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np, fastnet
    m = fastnet.MLP([20, 200, 5], backend="cpu", seed=1)
    m.build(20)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    try:
        m.save(sys.argv[1])
    except OSError as exc:
        print(type(exc).__name__, exc)
""")


@pytest.mark.parametrize("limit", [0, 10_000])
def test_model_save_refused_keeps_the_old_file(tmp_path, limit):
    path = tmp_path / "model.npz"
    old = fastnet.MLP([20, 200, 5], backend="cpu", seed=0)
    old.build(20)
    old.save(path)
    before = path.read_bytes()
    script = tmp_path / "child.py"
    script.write_text(SAVE_CHILD)
    run = subprocess.run([sys.executable, str(script), str(path), str(limit)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("OSError") and "file too large" in run.stdout and str(path) in run.stdout, run.stdout
    assert "the file already there is unchanged" in run.stdout
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert same_weights(fastnet.load(path, backend="cpu").get_weights(), old.get_weights())


CACHE_CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys, warnings
    from fastnet.datasets import load_mnist
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        (xtr, ytr), (xte, yte) = load_mnist(cache_dir=sys.argv[1], path=sys.argv[2], download=False)
    print(json.dumps({"shapes": [list(xtr.shape), list(xte.shape)], "labels": int(ytr[:100].sum()),
                      "warnings": [str(w.message) for w in seen]}))
""")


def test_mnist_cache_write_refused_leaves_no_partial_cache(tmp_path):
    from fastnet.datasets import mnist

    cached = mnist.default_cache_dir() / mnist.CACHE_NAME
    if not cached.exists():
        pytest.skip(f"MNIST is not cached at {cached}")
    (xtr, ytr), (xte, yte) = datasets.load_mnist(download=False)
    # Its four IDX files (gzipped), as a user who downloaded them would have.
    idx = tmp_path / "idx"
    idx.mkdir()
    import gzip
    import struct

    for base, arr in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        a = np.ascontiguousarray(arr, dtype=np.uint8)
        header = struct.pack(">I", 0x800 + a.ndim) + b"".join(struct.pack(">I", d) for d in a.shape)
        with gzip.open(idx / f"{base}.gz", "wb", compresslevel=1) as f:
            f.write(header + a.tobytes())
    cache = tmp_path / "cache"
    script = tmp_path / "child.py"
    script.write_text(CACHE_CHILD)
    run = subprocess.run([sys.executable, str(script), str(cache), str(idx)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["shapes"] == [[60000, 28, 28], [10000, 28, 28]] and out["labels"] == int(ytr[:100].sum())
    assert any("could not write the MNIST cache" in w and "too large" in w for w in out["warnings"]), out
    assert sorted(p.name for p in cache.iterdir()) == []  # no partial cache, no temporary file


# --------------------------------------------------------------------------
# real file systems: a read-only folder, a 100 KB tmpfs
# --------------------------------------------------------------------------
def _mount_tmpfs(folder, size):
    folder.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({run.stderr.strip() or run.returncode})")


def _umount(folder):
    subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    folder = tmp_path / "fs"
    _mount_tmpfs(folder, "100k")
    yield folder
    _umount(folder)


def test_full_disk_keeps_the_last_good_checkpoint(small_fs):
    """The issue's run: a 100 KB file system, room for one ~63 KB checkpoint, not two."""
    path = small_fs / "run.ckpt.npz"
    X, y = data()
    m = fresh_model()
    m.fit(X, y, epochs=1, callbacks=[fastnet.ModelCheckpoint(path)], **FIT)
    assert 50_000 < path.stat().st_size < 100_000
    epoch1 = path.read_bytes()
    with pytest.raises(fastnet.CheckpointError) as err:
        m.fit(X, y, epochs=3, callbacks=[fastnet.ModelCheckpoint(path)], **FIT)
    msg = str(err.value)
    assert str(path) in msg and "no space left on device" in msg and "epoch 2" in msg, msg
    assert f"the last good checkpoint is '{path}' (epoch 1)" in msg
    assert path.read_bytes() == epoch1 and leftovers(small_fs) == []
    # Free space (a bigger file system), then resume: the uninterrupted run's weights.
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_fs)], check=True)
    resumed = fresh_model()
    resumed.fit(X, y, epochs=4, resume=path, callbacks=[fastnet.ModelCheckpoint(path)], **FIT)
    assert same_weights(resumed.get_weights(), uninterrupted(4))
    assert os.path.exists(str(path) + ".prev")


def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    as_root = os.geteuid() == 0
    if as_root:
        _mount_tmpfs(folder, "1m")
    else:
        folder.mkdir()
    try:
        path = folder / "run.ckpt.npz"
        model_path = folder / "model.npz"
        X, y = data()
        m = fresh_model()
        m.fit(X, y, epochs=1, callbacks=[fastnet.ModelCheckpoint(path)], **FIT)
        m.save(model_path)
        before, model_before = path.read_bytes(), model_path.read_bytes()
        if as_root:  # root writes through file permissions: make the file system read-only
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            folder.chmod(0o555)
        reason = "read-only file system" if as_root else "permission denied"
        with pytest.raises(fastnet.CheckpointError, match=reason) as err:
            m.fit(X, y, epochs=1, callbacks=[fastnet.ModelCheckpoint(path)], **FIT)
        assert str(path) in str(err.value) and "(epoch 1)" in str(err.value)
        with pytest.raises(OSError, match=reason):
            m.save(model_path)
        assert path.read_bytes() == before and model_path.read_bytes() == model_before
        assert leftovers(folder) == []
    finally:
        if as_root:
            _umount(folder)
        else:
            folder.chmod(0o755)

"""The order of an atomic write (fastnet.core.npzfile.atomic_write), watched from outside.

A file replaced by rename survives a power cut only if its data reached the disk before the
rename did: the temporary file's ``fsync`` must come after its last byte and before the
``os.replace`` onto the real name, and the folder's ``fsync`` after the rename (that persists
the rename itself).  Without the first, a crash can leave the new name pointing at an empty
or partial file, the very thing the temporary file is there to prevent, and no test that
only reads the file back sees it.  Oracle: the calls to ``os.fsync`` and ``os.replace``, in
order, recorded by wrappers around the real ones (each file known by its inode and size).
"""
# Opt-out kept (issue 27): monkeypatch wraps os.fsync and os.replace, each still calling the real one: it
# watches their order (the subject) and replaces nothing.
import os
import stat

import numpy as np
import pytest

import fastnet
from fastnet.core import npzfile
from fastnet.datasets import mnist


@pytest.fixture
def calls(monkeypatch):
    """``[("fsync", "file"/"folder", inode, size)]`` and ``[("replace", inode, destination)]``,
    in call order; the real calls run as well."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", "folder" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino, st.st_size))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", os.stat(src).st_ino, os.path.abspath(os.fspath(dst))))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def assert_written_in_order(events, path):
    """The last write of ``path``: its data fsynced whole, then renamed onto ``path``, then the
    folder fsynced."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == path]
    assert renames, f"{path} was not written by a rename: {events}"
    at = renames[-1]
    inode = events[at][1]
    assert inode == st.st_ino  # the file renamed is the file there now
    synced = [i for i, e in enumerate(events[:at]) if e[:3] == ("fsync", "file", inode)]
    assert synced, f"the data of {path} was never fsynced before its rename: {events}"
    assert events[synced[-1]][3] == st.st_size  # fsynced once complete (after its last byte)
    folder = os.stat(os.path.dirname(path)).st_ino
    assert ("fsync", "folder", folder) in [e[:3] for e in events[at + 1:]], \
        f"the folder of {path} was not fsynced after the rename: {events}"


def test_atomic_write_fsyncs_the_data_before_the_rename(tmp_path, calls):
    path = tmp_path / "f.bin"
    npzfile.atomic_write(path, lambda f: f.write(b"x" * 5000))
    assert_written_in_order(calls, path)
    calls.clear()
    npzfile.atomic_write(path, lambda f: f.write(b"y" * 300), keep_previous=tmp_path / "f.bin.prev")
    assert_written_in_order(calls, path)  # replacing a file, the one before kept
    assert path.read_bytes() == b"y" * 300 and (tmp_path / "f.bin.prev").read_bytes() == b"x" * 5000


def test_model_files_and_checkpoints_fsync_before_the_rename(tmp_path, calls):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 5)).astype(np.float32), rng.integers(0, 3, 64)
    model = fastnet.MLP([5, 8, 3], backend="cpu", seed=0)
    ckpt = tmp_path / "run.ckpt"
    model.fit(X, y, epochs=2, callbacks=[fastnet.ModelCheckpoint(ckpt)])
    assert_written_in_order(calls, ckpt)
    model.save(tmp_path / "m.npz")
    assert_written_in_order(calls, tmp_path / "m.npz")


def test_the_mnist_cache_fsyncs_before_the_rename(tmp_path, calls):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), "y_train": np.arange(4),
              "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), "y_test": np.arange(2)}
    mnist._write_cache(tmp_path, arrays)
    assert_written_in_order(calls, tmp_path / "mnist.npz")
    assert_written_in_order(calls, tmp_path / "mnist.npz.sha256")

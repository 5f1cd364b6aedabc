"""The MNIST cache checked against known-good digests in the code (issue 30, item 6).

``mnist.npz.sha256`` beside the cache is written by fastnet, so it only detects damage: a
cache whose labels were permuted within their per-class counts (or whose test images were
blanked), given a recomputed ``.sha256``, passed every check and ``fastnet evaluate``
printed 0.1011 without a word.  The SHA-256 of each canonical array is now in the code
(``mnist.SHA256``): such a cache is rebuilt from another source, or refused.

Oracle: the digests in the code, for the real data set (when its cache is here); the same
mechanism on tiny fake data with its own digests, everywhere.
"""
# Opt-out kept (issue 27): monkeypatch turns off the mirrors and pip (no network in CI) and fits the
# expected counts and digests to small fake data sets (cost: the real MNIST is 70,000 images);
# the verification, the subject, runs unchanged.
import hashlib
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastnet.datasets import DatasetError, load_mnist, mnist, sources

COUNTS = {"train": (3, 2, 2, 2, 2, 2, 2, 2, 2, 2), "test": (1,) * 10}


def no_pip(*args):
    raise DatasetError("pip disabled in tests")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(mnist, "MIRRORS", [])
    monkeypatch.setattr(sources, "pip_download", no_pip)


def poison(cache_dir, edit):
    """Change the cached arrays with ``edit`` and write a matching ``.sha256``, as anyone can."""
    npz = Path(cache_dir) / "mnist.npz"
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez_compressed(npz, **arrays)
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    (Path(cache_dir) / "mnist.npz.sha256").write_text(f"{digest}  mnist.npz\n")


def permute_labels_within_counts(arrays):
    y = arrays["y_train"].copy()
    np.random.default_rng(1).shuffle(y)  # the same per-class counts, the labels on other images
    arrays["y_train"] = y


def blank_test_images(arrays):
    arrays["x_test"] = np.zeros_like(arrays["x_test"])


# -------------------------------------------------------------------------- fake data, everywhere
@pytest.fixture
def fake(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, counts in COUNTS.items():
        y = np.repeat(np.arange(10, dtype=np.int64), counts)
        rng.shuffle(y)
        arrays[f"x_{split}"] = rng.integers(0, 256, (len(y), 28, 28), dtype=np.uint8)
        arrays[f"y_{split}"] = y
    idx = tmp_path / "idx"
    idx.mkdir()
    for key, stem in mnist.IDX_NAMES.items():
        a = arrays[key].astype(np.uint8)
        (idx / stem).write_bytes(bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())
    # the fake data set is "canonical" here: its sizes and digests stand for MNIST's
    monkeypatch.setattr(mnist, "EXPECTED", COUNTS)
    monkeypatch.setattr(mnist, "CANONICAL_SIZES", {s: sum(c) for s, c in COUNTS.items()})
    monkeypatch.setattr(mnist, "SHA256", {k: mnist.array_sha256(v) for k, v in arrays.items()})
    return arrays, idx


@pytest.mark.parametrize("edit", [permute_labels_within_counts, blank_test_images])
def test_a_poisoned_cache_with_a_matching_sha256_is_rebuilt(fake, tmp_path, edit):
    arrays, idx = fake
    cache = tmp_path / "cache"
    load_mnist(cache_dir=cache, path=idx, download=False, verbose=False)
    poison(cache, edit)
    with pytest.warns(UserWarning, match=r"MNIST cache is corrupt and will be rebuilt: \w+ is not the canonical "
                                         r"MNIST: its sha256 is"):
        (x, y), (xt, yt) = load_mnist(cache_dir=cache, path=idx, download=False, verbose=False)
    assert np.array_equal(y, arrays["y_train"]) and np.array_equal(xt, arrays["x_test"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next load is quiet
        load_mnist(cache_dir=cache, path=idx, download=False, verbose=False)


def test_a_poisoned_cache_with_no_other_source_is_refused(fake, tmp_path):
    arrays, idx = fake
    cache = tmp_path / "cache"
    load_mnist(cache_dir=cache, path=idx, download=False, verbose=False)
    poison(cache, permute_labels_within_counts)
    with pytest.warns(UserWarning, match="is not the canonical MNIST"):
        with pytest.raises(DatasetError, match=r"corrupt: y_train is not the canonical MNIST"):
            load_mnist(cache_dir=cache, path=tmp_path / "empty", download=False, verbose=False)


def test_poisoned_idx_files_are_refused_too(fake, tmp_path):
    """The digests apply to every source, not only the cache: IDX files given by the user."""
    arrays, idx = fake
    y = arrays["y_test"][::-1].astype(np.uint8)
    (idx / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", len(y)) + y.tobytes())
    with pytest.raises(DatasetError, match=r"y_test is not the canonical MNIST"):
        load_mnist(cache_dir=tmp_path / "cache", path=idx, download=False, verbose=False)
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_other_sizes_are_not_held_to_the_digests(fake, tmp_path, monkeypatch):
    """Data sets of other sizes (tests' fakes, with EXPECTED replaced) are checked as before."""
    arrays, idx = fake
    monkeypatch.setattr(mnist, "CANONICAL_SIZES", {"train": 60000, "test": 10000})
    monkeypatch.setattr(mnist, "SHA256", {k: "0" * 64 for k in arrays})
    (x, y), _ = load_mnist(cache_dir=tmp_path / "cache", path=idx, download=False, verbose=False)
    assert np.array_equal(y, arrays["y_train"])


# -------------------------------------------------------------------------- the real data set
def _real_cache():
    path = mnist.default_cache_dir() / "mnist.npz"
    return path if path.exists() and (path.parent / "mnist.npz.sha256").exists() else None


@pytest.mark.mnist
@pytest.mark.skipif(_real_cache() is None, reason="the real MNIST cache is not here (fastnet.datasets.load_mnist())")
def test_the_real_cache_matches_the_digests_and_a_poisoned_copy_is_refused(tmp_path):
    real = _real_cache()
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(real, cache / "mnist.npz")
    shutil.copy(real.parent / "mnist.npz.sha256", cache / "mnist.npz.sha256")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (x, y), (xt, yt) = load_mnist(cache_dir=cache, download=False, verbose=False)
    assert [mnist.array_sha256(a) for a in (x, y, xt, yt)] == [mnist.SHA256[k] for k in
                                                               ("x_train", "y_train", "x_test", "y_test")]
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4] and yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    for edit in (permute_labels_within_counts, blank_test_images):
        shutil.copy(real, cache / "mnist.npz")
        poison(cache, edit)
        with pytest.warns(UserWarning, match="is not the canonical MNIST"):
            with pytest.raises(DatasetError, match="is not the canonical MNIST"):
                load_mnist(cache_dir=cache, path=tmp_path / "empty", download=False, verbose=False)

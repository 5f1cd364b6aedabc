"""Reading IDX files, the format MNIST is distributed in, one by one or a folder of them."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from fastnet.datasets._common import DatasetError

__all__ = ["read_idx"]

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


def labels_as_int64(raw):
    """Parsed IDX arrays keyed ``x_*``/``y_*``, with the labels (``y_*``) as int64."""
    return {key: arr.astype(np.int64) if key.startswith("y") else arr for key, arr in raw.items()}


def find_idx_files(folder, names):
    """Map the keys of ``names`` (key -> IDX base name) to files in ``folder``.

    Each file may be raw or have ``.gz``. Returns ``(found, missing)``: the
    paths found, and the base names (as ``name[.gz]``) of those that are not.
    """
    found, missing = {}, []
    for key, base in names.items():
        for name in (base, base + ".gz"):
            candidate = Path(folder) / name
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(base + "[.gz]")
    return found, missing


def read_idx_folder(folder, names):
    """Read every IDX file of ``names`` from ``folder`` (labels as int64).

    Raises FileNotFoundError naming the missing files, or DatasetError.
    """
    found, missing = find_idx_files(folder, names)
    if missing:
        if not found:
            raise FileNotFoundError("no IDX files there")
        raise FileNotFoundError("missing " + ", ".join(missing))
    return labels_as_int64({key: read_idx(p) for key, p in found.items()})

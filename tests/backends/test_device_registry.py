"""The device registry (``fastnet.backends.devices.DEVICES``): a backend is declared once,
and every reader of backends takes it from there.

A toy backend made of two files outside the package (its device module and its fused
kernels), imported, trains with ``fit``'s defaults; ``available_backends()``, ``fastnet
info``, the CLI's ``--backend`` and the precision checks all know it, and nothing inside
``fastnet/`` was edited for it.
"""
import importlib
import inspect
import sys

import numpy as np
import pytest

import fastnet
from fastnet.backends import devices
from fastnet.backends.precision import PrecisionUnavailableError

DEVICE_MODULE = '''
"""A toy backend: NumPy arrays under another name, one fused kernel of its own."""
import contextlib

import numpy as np

from fastnet.backends.devices import Device, register_device
from fastnet.backends.threads import NoTuner


class ToyDevice:
    xp = np

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    def to_host(self, a):
        return np.asarray(a)

    def synchronize(self):
        pass

    def gather(self, src, idx, out):
        return np.take(src, idx, axis=0, out=out)

    def order_to_device(self, order):
        return order

    def compute_env(self):
        return contextlib.nullcontext()

    def thread_tuner(self, work=None, ranks=None, pool=None):
        return NoTuner()

    def precision_matmul(self, precision, dtype):
        return None

    def compute_capability(self):
        return None

    def collective(self, host):
        raise NotImplementedError("the toy backend trains in one process")


register_device(Device("toy", "toy_kernels", ("float32",), lambda: (True, "a toy: NumPy"), ToyDevice))
'''

KERNEL_MODULE = '''
"""The toy backend's fused kernels: ReLU's forward pass, counted."""
import numpy as np

calls = 0


def relu_fwd(z, b):
    global calls
    calls += 1
    np.add(z, b, out=z)
    np.maximum(z, 0, out=z)
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_device.py").write_text(DEVICE_MODULE)
    (tmp_path / "toy_kernels.py").write_text(KERNEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    # the registry and the fused modules' table as they were, after the test
    monkeypatch.setattr(devices, "DEVICES", dict(devices.DEVICES))
    monkeypatch.setattr(fastnet.kernels, "FUSED_MODULES", dict(fastnet.kernels.FUSED_MODULES))
    importlib.import_module("toy_device")
    yield importlib.import_module("toy_kernels")
    for name in ("toy_device", "toy_kernels"):
        sys.modules.pop(name, None)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, y


def test_a_toy_backend_from_two_files_trains_with_the_defaults(toy):
    assert "toy" in fastnet.available_backends()
    assert fastnet.get_backend("toy").kernel_set.fused == ("relu_fwd",)
    X, y = _data()
    model = fastnet.MLP([4, 8, 3], backend="toy", seed=0)
    history = model.fit(X, y, epochs=5)
    assert toy.calls > 0  # its own kernel ran
    assert history["loss"][-1] < history["loss"][0]
    # the same network on the CPU with the reference table: the same arithmetic
    reference = fastnet.MLP([4, 8, 3], backend="cpu", kernels="reference", seed=0)
    reference.fit(X, y, epochs=5)
    np.testing.assert_allclose(history["loss"], reference.history_["loss"], rtol=1e-5)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), rtol=1e-4, atol=1e-6)


def test_every_reader_of_backends_knows_the_toy_backend(toy):
    from fastnet.cli import build_parser
    from fastnet.cli.info import report

    assert "toy" in devices.backend_names() and "auto" in devices.backend_names()
    assert "  toy       usable: a toy: NumPy" in report().splitlines()
    args = build_parser().parse_args(["train", "mnist", "--backend", "toy"])
    assert args.backend == "toy"
    # its precisions are its own: it declared float32 only
    with pytest.raises(PrecisionUnavailableError, match=r"precision='bf16' is not a precision of this backend, "
                                                        r"got backend='toy': the toy backend has 'float32'"):
        fastnet.MLP([4, 8, 3], backend="toy", precision="bf16")


def test_a_bad_declaration_is_refused_naming_the_field():
    make = devices.DEVICES["cpu"].make
    with pytest.raises(ValueError, match="other than 'auto'"):
        devices.register_device(devices.Device("auto", None, ("float32",), lambda: (True, ""), make))
    with pytest.raises(ValueError, match=r"precisions must start with 'float32', got \('bf16',\)"):
        devices.register_device(devices.Device("x", None, ("bf16",), lambda: (True, ""), make))
    with pytest.raises(ValueError, match="kernels must be one of"):
        devices.register_device(devices.Device("x", "no_such_kernel_module", ("float32",), lambda: (True, ""), make))
    assert "x" not in devices.DEVICES


def test_the_built_in_backends_are_declared_once():
    """The names other modules used to spell out come from the registry."""
    assert list(devices.DEVICES)[:3] == ["cpu", "cuda", "cuda-sim"]
    assert devices.DEVICES["cpu"].precisions == ("float32", "bf16") and not devices.DEVICES["cpu"].gpu
    assert devices.DEVICES["cuda"].gpu and devices.DEVICES["cuda"].kernels == "cuda"
    assert devices.DEVICES["cuda-sim"].kernels == "cuda"
    # (no list of device names spelt out by hand where backends are read)
    import fastnet.cli as cli
    import fastnet.cli.info as info
    for module in (cli, info, devices):
        source = inspect.getsource(module)
        assert '("cpu", "cuda", "cuda-sim")' not in source and '("cuda", "cuda-sim")' not in source

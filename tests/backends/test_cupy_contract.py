"""The CuPy contract (``fastnet.cuda_sim.contract``) and the CuPy glue of ``fastnet.backends.devices``.

The contract must refuse what the installed CuPy refuses (its real signatures
are read from ``cupy``, which imports here without a GPU) and count device
traffic; ``cuda_status`` must say exactly what is missing.  Kernels need the
simulator: the training runs under the contract are in ``tests/cuda_sim``.
"""
# Opt-out kept (issue 27): monkeypatch stands in for CuPy, the CUDA driver and numba.cuda, which this
# machine lacks: the subject is what fastnet does with what they report.
import importlib.metadata
import inspect

import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="the CuPy contract reads the installed CuPy's signatures")

from fastnet.backends import devices as B  # noqa: E402
from fastnet.cuda_sim import contract as C  # noqa: E402
from fastnet.cuda_sim import signatures as S  # noqa: E402

xp = C.module()


@pytest.fixture
def counts():
    before = C.COUNTERS.snapshot()
    return lambda: C.COUNTERS.since(before)


def dev(a):
    return xp.asarray(np.asarray(a))


# --------------------------------------------------------------------------
# refusals: what CuPy refuses
# --------------------------------------------------------------------------
def test_take_with_mode_is_refused_as_cupy_does():
    # cupy.take(a, indices, axis=None, out=None): "does not support `mode` option"
    assert list(inspect.signature(cupy.take).parameters) == ["a", "indices", "axis", "out"]
    a, idx, out = dev(np.arange(12.0).reshape(4, 3)), dev(np.array([2, 0])), xp.empty((2, 3))
    with pytest.raises(TypeError, match="mode"):
        xp.take(a, idx, axis=0, out=out, mode="clip")
    assert xp.take(a, idx, axis=0, out=out) is out
    np.testing.assert_array_equal(xp.asnumpy(out), [[6, 7, 8], [0, 1, 2]])


def test_implicit_host_conversion_is_refused():
    a = dev(np.arange(4.0))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="numpy.sum was given a device array"):
        np.sum(a)
    with pytest.raises(TypeError, match="numpy.exp was given a device array"):
        np.exp(a)
    with pytest.raises(TypeError, match="bool"):
        bool(a[0] > 1)
    with pytest.raises(TypeError, match="iterating"):
        list(a)
    with pytest.raises(TypeError):
        np.arange(10)[dev(np.array([1, 2]))]  # a device array indexing a host array
    with pytest.raises(TypeError, match="NumPy array"):
        a + np.ones(4)  # CuPy operators refuse NumPy operands
    with pytest.raises(TypeError, match="NumPy array"):
        xp.exp(np.ones(3))  # and so do its functions


def test_names_and_arguments_cupy_lacks_are_refused():
    a = dev(np.ones((2, 3)))
    with pytest.raises(AttributeError, match="CuPy has no function"):
        xp.not_a_cupy_function
    assert not hasattr(cupy.ndarray, "resize")
    with pytest.raises(AttributeError, match="no attribute 'resize'"):
        a.resize((3, 2))
    with pytest.raises(TypeError, match="where"):
        a.sum(where=dev(np.ones((2, 3), bool)))  # NumPy has `where`, CuPy's sum does not
    with pytest.raises(TypeError, match="where"):
        xp.add(a, a, where=dev(np.ones((2, 3), bool)))  # nor do CuPy's ufuncs
    with pytest.raises(TypeError, match="takes 1 inputs"):
        xp.exp()


def test_signatures_come_from_cupy_docstrings_for_cython_methods():
    with pytest.raises(ValueError):
        inspect.signature(cupy.ndarray.sum)  # why the docstring is parsed
    sig = S.method_signature("sum")
    assert list(sig.parameters) == ["axis", "dtype", "out", "keepdims"]
    dl = S.method_signature("__dlpack__")  # "tuple max_version=None": the C type is dropped
    assert "max_version" in dl.parameters and dl.parameters["stream"].kind is inspect.Parameter.KEYWORD_ONLY
    assert S.signature_from_doc(type("X", (), {"__doc__": "no signature here"})) is None


# --------------------------------------------------------------------------
# counting: allocations, transfers, synchronisations
# --------------------------------------------------------------------------
def test_transfers_and_allocations_are_counted(counts):
    host = np.arange(6.0).reshape(2, 3)
    a = xp.asarray(host)
    assert counts() == dict(allocations=1, host_to_device=1, device_to_host=0, synchronizations=0)
    out = xp.empty_like(a)
    xp.exp(a, out=out)
    xp.multiply(a, 2.0, out=out)
    a[1:]  # a view
    a.reshape(3, 2)  # a view
    assert counts()["allocations"] == 2  # asarray, empty_like
    b = a * 2  # a new array
    s = a.sum()  # a 0-d device array, as CuPy returns
    assert isinstance(s, C.ndarray) and s.shape == ()
    assert counts()["allocations"] == 4
    assert float(s) == 15.0 and int(a[0, 1]) == 1
    np.testing.assert_array_equal(xp.asnumpy(b), host * 2)
    assert b.get().shape == (2, 3)
    assert counts()["device_to_host"] == 4 and counts()["synchronizations"] == 4
    xp.cuda.get_current_stream().synchronize()
    assert counts()["synchronizations"] == 5
    a[0] = np.ones(3)  # assigning a host array copies it to the device
    a.set(host)
    assert counts()["host_to_device"] == 3


def test_scalar_indexing_returns_a_writable_0d_view():
    a = dev(np.zeros(4))
    v = a[2]
    assert isinstance(v, C.ndarray) and v.shape == ()
    a[1:2][...] = 5.0
    xp.sum(dev(np.ones(3)), axis=0, keepdims=True, out=a[3:4])
    np.testing.assert_array_equal(xp.asnumpy(a), [0, 5, 0, 3])


# --------------------------------------------------------------------------
# the CuPy device of fastnet.backends.devices, on the contract
# --------------------------------------------------------------------------
def test_cupy_device_on_the_contract(counts):
    d = B._CupyDevice(xp)
    X = d.asarray(np.arange(20.0).reshape(10, 2), dtype=np.float32)
    assert X.dtype == np.float32 and X.flags.c_contiguous
    out = xp.empty((3, 2), dtype=np.float32)
    order = d.order_to_device(np.array([9, 0, 4, 1, 2, 3, 5, 6, 7, 8]))
    first = order
    assert d.gather(X, order[:3], out) is out
    np.testing.assert_array_equal(d.to_host(out), [[18, 19], [0, 1], [8, 9]])
    before = C.COUNTERS.snapshot()
    again = d.order_to_device(np.arange(10))  # same size: the buffer is reused
    assert again is first
    assert C.COUNTERS.since(before) == dict(allocations=0, host_to_device=1, device_to_host=0,
                                            synchronizations=0)
    d.synchronize()
    assert C.COUNTERS.since(before)["synchronizations"] == 1
    with d.compute_env():
        pass


def test_as_array_and_set_weights_accept_device_arrays():
    from fastnet.core.validation import as_array, is_device_array

    assert as_array("x", [1, 2]).tolist() == [1, 2]
    np.testing.assert_array_equal(as_array("x", dev([[1.0, 2.0]])), [[1.0, 2.0]])
    assert is_device_array(dev([1.0])) and not is_device_array(np.ones(2))
    assert not is_device_array({"get": 1})  # a mapping with .get is not a device array
    import fastnet

    m = fastnet.MLP([2, 3, 2], backend="cpu", seed=0)
    m.build(2)
    w = {k: dev(v * 0 + 1) for k, v in m.get_weights().items()}  # CuPy-like arrays
    m.set_weights(w)
    assert all(np.all(v == 1) for v in m.get_weights().values())


# --------------------------------------------------------------------------
# cuda_status: says exactly what is missing
# --------------------------------------------------------------------------
def test_cuda_status_here_names_the_missing_driver_not_a_package():
    B.cuda_status.cache_clear()
    ok, why = B.cuda_status()
    assert not ok
    assert "driver" in why and "pip install" not in why, why


class FakeRuntime:
    def __init__(self, driver=13000, built=13000, count=1, fail=None):
        self.driver, self.built, self.count, self.fail = driver, built, count, fail

    def driverGetVersion(self):
        if self.fail == "driver":
            raise RuntimeError("cudaErrorUnknown")
        return self.driver

    def runtimeGetVersion(self):
        return self.built

    def getDeviceCount(self):
        if self.fail == "count":
            raise RuntimeError("cudaErrorNoDevice")
        return self.count


class FakeCupy:
    __version__ = "14.2.0"

    def __init__(self, **kw):
        self.cuda = type("cuda", (), {"runtime": FakeRuntime(**kw)})()


@pytest.mark.parametrize("kw,smoke,expect", [
    (dict(driver=0), None, "no NVIDIA driver"),
    (dict(driver=12040, built=13000), None, "driver supports CUDA 12.4, older than CUDA 13"),
    (dict(driver=12080, built=13020), None, "driver 580 or later"),
    (dict(driver=11080, built=12000), None, "driver 525 or later"),
    # minor-version compatibility: the oldest driver of the toolkit's major version is enough
    (dict(driver=13000, built=13020), (True, "test launch passed"), "driver CUDA 13.0, test launch"),
    (dict(driver=12000, built=12090), (True, "test launch passed"), "driver CUDA 12.0, test launch"),
    (dict(driver=13000, built=12090), (True, "test launch passed"), "driver CUDA 13.0, test launch"),
    (dict(count=0), None, "no CUDA GPU is visible"),
    (dict(fail="driver"), None, "cannot query the CUDA driver"),
    (dict(fail="count"), None, "no usable GPU"),
    ({}, (False, "libNVVM cannot be found"), "libNVVM"),
    ({}, (True, "test launch passed"), "1 CUDA device(s), driver CUDA 13.0, test launch passed"),
])
def test_cuda_status_reasons(monkeypatch, kw, smoke, expect):
    monkeypatch.setattr(B, "_import_cupy", lambda: FakeCupy(**kw))
    monkeypatch.setattr(B, "_numba_cuda_problem", lambda: None)
    monkeypatch.setattr(B, "_smoke_launch", lambda cp: smoke)
    B.cuda_status.cache_clear()
    try:
        ok, why = B.cuda_status()
    finally:
        B.cuda_status.cache_clear()
    assert ok == (smoke is not None and smoke[0])
    assert expect in why


def test_cuda_status_accepts_the_oldest_cuda13_driver_with_the_installed_cupy(monkeypatch):
    # The installed CuPy wheel's own runtime version (14.2: built with CUDA 13.2,
    # runtimeGetVersion() == 13020) against a faked r580 driver (CUDA 13.0): usable.
    runtime = cupy.cuda.runtime
    built = runtime.runtimeGetVersion()
    assert built // 1000 == 13 and built > 13000, built  # the case: a newer 13.x than the driver
    monkeypatch.setattr(runtime, "driverGetVersion", lambda: 13000)
    monkeypatch.setattr(runtime, "getDeviceCount", lambda: 1)
    monkeypatch.setattr(B, "_smoke_launch", lambda cp: (True, "faked launch"))
    B.cuda_status.cache_clear()
    try:
        ok, why = B.cuda_status()
    finally:
        B.cuda_status.cache_clear()
    assert ok, why
    assert why == "1 CUDA device(s), driver CUDA 13.0, faked launch"


def test_cuda_status_without_cupy(monkeypatch):
    def missing():
        raise ImportError("No module named 'cupy'")

    monkeypatch.setattr(B, "_import_cupy", missing)
    B.cuda_status.cache_clear()
    try:
        ok, why = B.cuda_status()
    finally:
        B.cuda_status.cache_clear()
    assert not ok and "CuPy is not importable" in why and "fastnet-mlp[cuda13]" in why


def test_numba_cuda_must_be_nvidias_and_recent(monkeypatch):
    import numba.cuda

    assert B._numba_cuda_problem() is None  # numba-cuda 0.30 here
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.25.1")
    assert "numba-cuda 0.25.1 is older than 0.26" in B._numba_cuda_problem()

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert "numba-cuda package is not installed" in B._numba_cuda_problem()
    monkeypatch.setattr(numba.cuda, "implementation", "Numba", raising=False)
    assert "built-in numba.cuda" in B._numba_cuda_problem()


def test_cuda_sim_backend_needs_the_simulator_here():
    ok, why = B.backend_status("cuda-sim")
    assert not ok and "NUMBA_ENABLE_CUDASIM=1" in why


def test_numba_cuda_not_importable(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "numba.cuda", None)
    assert "numba.cuda is not importable" in B._numba_cuda_problem()


def test_cuda_status_names_a_numba_cuda_problem(monkeypatch):
    monkeypatch.setattr(B, "_import_cupy", lambda: FakeCupy())
    monkeypatch.setattr(B, "_numba_cuda_problem", lambda: "numba's built-in numba.cuda is in use")
    B.cuda_status.cache_clear()
    try:
        assert B.cuda_status() == (False, "numba's built-in numba.cuda is in use")
    finally:
        B.cuda_status.cache_clear()


def test_gpu_array_library_version(monkeypatch):
    import sys

    assert B.gpu_array_library_version() == cupy.__version__
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert B.gpu_array_library_version().startswith("not available (")


def test_backend_names_and_auto():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        B.backend_status("tpu")
    B.cuda_status.cache_clear()
    assert B.get_backend("auto").name == "cpu"  # no GPU here
    cpu = B.get_backend("cpu", seed=1)
    again = B.get_backend(cpu)  # a Backend names its kind; a new one, with its own streams
    assert again.name == "cpu" and again is not cpu
    assert B.available_backends() == ["cpu"]


def test_cuda_backend_is_built_on_cupys_module(monkeypatch):
    # With a usable GPU, backend="cuda" is _CupyDevice on CuPy: here the contract stands in.
    monkeypatch.setattr(B, "cuda_status", lambda: (True, "stand-in"))
    monkeypatch.setattr(B, "_import_cupy", C.module)
    b = B.get_backend("cuda", seed=1)
    assert isinstance(b._device, B._CupyDevice) and b.xp is xp
    from fastnet.kernels import cuda as kcuda

    assert b.kernel_set.module is kcuda and C.ndarray in kcuda._DEVICE_TYPES
    assert b.kernel_set.relu_fwd is kcuda.relu_fwd
    reference = B.get_backend("cuda", kernels="reference").kernel_set
    assert reference.module is None and not reference.fused


def test_rng_state_round_trip_and_old_checkpoint_format():
    a = B.get_backend("cpu", seed=4)
    a.permutation(5)
    a.dropout_mask(np.empty((2, 2), np.float32), 0.5)
    state = a.get_rng_state()
    assert state["dropout_counter"] == 1
    b = B.get_backend("cpu", seed=99)
    b.set_rng_state(state)
    np.testing.assert_array_equal(a.permutation(9), b.permutation(9))
    assert (b.dropout_key, b.dropout_counter) == (a.dropout_key, 1)
    # fastnet 0.1.0 checkpoints: the NumPy generator's state alone
    c = B.get_backend("cpu", seed=99)
    c.set_rng_state(state["host"])
    assert c.dropout_counter == 0
    d = B.get_backend("cpu", seed=5)
    d.set_rng_state(state)
    np.testing.assert_array_equal(c.permutation(9), d.permutation(9))

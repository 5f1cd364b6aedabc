"""The kernel table: reference is complete, fused modules override, names derive from it.

Also the two extensions of issue 12, made the way a user extending fastnet makes
them: GELU (its reference kernels and registration only, then fused CPU/CUDA
versions) and Adagrad (its reference kernel and its optimizer class).
"""
# Opt-out kept (issue 27): monkeypatch points the name-list scan at a tmp_path tree: the scan finding a list
# is the subject.
import ast
import math
import pathlib
import types

import numpy as np
import pytest

import fastnet
from fastnet import datasets
from fastnet import cli
from fastnet.cli import info
from fastnet.core import layers
from fastnet.core import losses
from fastnet.core import optimizers
from fastnet.backends.devices import get_backend
from fastnet.kernels import KernelSet, conformance, kernel_set, overrides, reference

ROOT = pathlib.Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------
# the table and how a kernel set resolves
# --------------------------------------------------------------------------
def test_every_kernel_has_a_kind_and_every_activation_both_kernels():
    assert set(reference.KINDS) == set(reference.KERNELS)
    for name, act in reference.ACTIVATIONS.items():
        assert reference.KERNELS[f"{name}_fwd"] is act.fwd and reference.KERNELS[f"{name}_bwd"] is act.bwd
        assert act.saves in ("output", "input") and act.init in ("he", "xavier")
    assert {n for n, k in reference.KINDS.items() if k == "loss"} == set(reference.LOSS_TARGETS)


def test_registration_refuses_badly_named_kernels():
    with pytest.raises(ValueError, match="needs kernels named swish_fwd and swish_bwd"):
        reference.register_activation("swish", reference.relu_fwd, reference.relu_bwd)
    with pytest.raises(ValueError, match="names its targets"):
        reference.kernel("loss")


def test_a_module_overrides_only_what_it_defines_and_the_rest_falls_back():
    def relu_fwd(z, b):
        pass

    fake = types.ModuleType("fake_fused")
    fake.relu_fwd = relu_fwd
    ks = KernelSet(fake, "fake")
    assert ks.relu_fwd is relu_fwd and ks.fused == ("relu_fwd",)
    assert ks.sigmoid_fwd is reference.sigmoid_fwd and ks.adam_update is reference.adam_update
    assert set(ks.fallback) == set(reference.KERNELS) - {"relu_fwd"}


def test_a_misspelt_override_is_reported():
    def relu_fwdd(z, b):
        pass

    fake = types.ModuleType("fake_fused")
    relu_fwdd.__module__ = fake.__name__
    fake.relu_fwdd = relu_fwdd
    assert overrides(fake) == ["relu_fwdd"]


def test_backends_run_the_resolved_set():
    b = get_backend("cpu")
    assert isinstance(b.kernels, KernelSet) and b.kernels.module.__name__ == "fastnet.kernels.cpu"
    assert "adagrad_update" in b.kernel_set.fallback and "gelu_fwd" in b.kernel_set.fused
    r = get_backend("cpu", kernels="reference")
    assert r.kernel_set.fused == () and r.kernel_set.relu_fwd is reference.relu_fwd


def test_reference_kernels_conform_to_themselves_through_the_checker():
    # the checker itself: the reference set passes, and a wrong kernel fails
    assert conformance.check(kernel_set("cpu", "reference"), names=list(reference.KERNELS)) == []

    def wrong_sgd(w, g, lr, weight_decay):
        w -= lr * g  # weight decay dropped

    fake = types.ModuleType("fake_fused")
    fake.sgd_update = wrong_sgd
    failures = conformance.check(KernelSet(fake))
    assert failures and {f[0] for f in failures} == {"sgd_update"}


def test_fastnet_info_lists_fused_and_reference_kernels():
    lines = "\n".join(info.kernel_lines())
    cpu_line = next(line for line in info.kernel_lines() if line.strip().startswith("cpu"))
    assert "gelu_fwd" in cpu_line and "gelu_bwd" in cpu_line
    assert "reference: softmax_fwd, adagrad_update" in lines
    n = len(reference.KERNELS)
    assert f"of {n} fused" in cpu_line


# --------------------------------------------------------------------------
# every name list derives from the table and the registries
# --------------------------------------------------------------------------
def test_name_lists_follow_the_registries():
    assert set(layers.hidden_activations()) == {"linear", *reference.ACTIVATIONS}
    assert "softmax" in layers.activation_names() and "gelu" in layers.activation_names()
    assert set(losses.MeanSquaredError().accepts) == set(reference.ACTIVATIONS)
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: a.choices for a in train._actions if a.choices}
    assert set(choices["activation"]) == set(layers.hidden_activations())
    assert set(choices["optimizer"]) == set(optimizers.OPTIMIZERS) and "adagrad" in choices["optimizer"]


def test_an_activation_registered_at_run_time_is_usable():
    def swish_fwd(z, b):
        xp = reference._xp(z)
        z += b
        z *= 0.5 * xp.tanh(0.5 * z) + 0.5

    def swish_bwd(a, dy, dz, db):  # not a real swish derivative: only wiring is tested
        dz[...] = dy
        dz.sum(axis=0, out=db)

    tables = (reference.KERNELS, reference.KINDS, reference.ACTIVATIONS)
    saved = [dict(t) for t in tables]
    try:
        reference.register_activation("swish", swish_fwd, swish_bwd)
        model = fastnet.MLP([3, 4, 2], activation="swish", backend="cpu", seed=0)
        model.fit(np.random.default_rng(0).random((8, 3)), np.arange(8) % 2, epochs=1)
        assert model.backend_.kernel_set.swish_fwd is swish_fwd and "swish_fwd" in model.backend_.kernel_set.fallback
    finally:  # the tables as they were, for the other tests
        for table, before in zip(tables, saved):
            table.clear()
            table.update(before)


#: Names a hand-written list could repeat: activations, losses (and aliases), optimizers.
NAMES = set(reference.ACTIVATIONS) | set(reference.OUTPUT_ACTIVATIONS) | set(losses.LOSSES) | set(optimizers.OPTIMIZERS)
#: Assignments that are registrations: a loss's own ``accepts`` and ``aliases``.
REGISTRATIONS = {"accepts", "aliases"}


def hand_written_name_lists():
    """``(file, line, names)`` of every tuple/list/set/dict literal in the package with two
    or more activation, loss or optimizer names (the table's registrations excepted)."""
    found = []
    for path in sorted([*ROOT.joinpath("fastnet").rglob("*.py"), *ROOT.joinpath("kernels").glob("*.py")]):
        tree = ast.parse(path.read_text())
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in REGISTRATIONS
                                                    for t in node.targets):
                skip.update(id(n) for n in ast.walk(node.value))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if not isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) or not items:
                continue
            names = [e.value for e in items if isinstance(e, ast.Constant) and e.value in NAMES]
            if len(names) >= 2:
                found.append((str(path.relative_to(ROOT)), node.lineno, names))
    return found


def test_no_hand_written_list_of_activation_loss_or_optimizer_names():
    assert hand_written_name_lists() == []


def test_the_scan_finds_a_hand_written_list(tmp_path, monkeypatch):
    # the scan itself: a list like losses.py's old one is found
    source = 'accepts_all = ("identity", "sigmoid", "tanh")\nOK = ("linear",)\n'
    tree_root = tmp_path / "fastnet"
    tree_root.mkdir()
    (tree_root / "x.py").write_text(source)
    (tmp_path / "kernels").mkdir()
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert hand_written_name_lists() == [("fastnet/x.py", 1, ["identity", "sigmoid", "tanh"])]


# --------------------------------------------------------------------------
# GELU (tanh approximation)
# --------------------------------------------------------------------------
def gelu(x):
    """Hand formula: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("kernels", ["reference", "fused"])
def test_gelu_values_and_derivative(kernels):
    ks = kernel_set("cpu", kernels)
    xs = np.array([[-3.0, -1.0, -0.1, 0.0, 0.5, 1.0, 2.0, 4.0]])
    z, pre = xs.copy(), np.empty_like(xs)
    ks.gelu_fwd(z, np.zeros(xs.shape[1]), pre)
    np.testing.assert_array_equal(pre, xs)
    np.testing.assert_allclose(z[0], [gelu(v) for v in xs[0]], rtol=1e-14, atol=1e-15)
    assert abs(z[0, 5] - 0.8411919906082768) < 1e-12  # PyTorch's gelu(1.0, approximate="tanh")
    dy = np.ones_like(xs)
    dz, db = np.empty_like(xs), np.empty(xs.shape[1])
    ks.gelu_bwd(pre, dy, dz, db)
    h = 1e-6
    numeric = [(gelu(v + h) - gelu(v - h)) / (2 * h) for v in xs[0]]
    np.testing.assert_allclose(dz[0], numeric, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(db, dz.sum(axis=0))


@pytest.mark.parametrize("kernels", ["reference", "fused"])
def test_gelu_passes_gradcheck(kernels):
    # "fused": the float64 copy runs kernels/cpu.py's GELU, not the table's
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 5)), rng.integers(0, 3, 20)
    model = fastnet.MLP([5, 7, 6, 3], activation="gelu", backend="cpu", dtype="float64", seed=1)
    err = fastnet.gradcheck(model, X, y, kernels=kernels)
    assert err < 1e-6, err


def test_gelu_trains_on_cpu_and_uses_he_init():
    X, y = datasets.spirals(300, n_classes=2, noise=0.1, seed=0)
    model = fastnet.MLP([2, 32, 32, 2], activation="gelu", backend="cpu", seed=0)
    model.fit(X, y, epochs=40, optimizer="adam", lr=1e-2, batch_size=32)
    assert model.evaluate(X, y, return_dict=True)["accuracy"] > 0.95
    fresh = fastnet.MLP([2, 32, 32, 2], activation="gelu", backend="cpu", seed=0).build(2)
    W = fresh.get_weights()["dense_1.W"]
    # He-normal, the table's choice for GELU: std sqrt(2/32) = 0.25 (Xavier's would be 0.177)
    assert abs(W.std() - math.sqrt(2 / 32)) < 0.02


# --------------------------------------------------------------------------
# Adagrad
# --------------------------------------------------------------------------
def adagrad_two_steps(kernels, initial=0.0):
    b = get_backend("cpu", dtype="float64", kernels=kernels)
    w = np.array([1.0, -2.0])
    g = np.array([0.5, -1.0])
    opt = optimizers.Adagrad(lr=0.1, initial_accumulator_value=initial)
    opt.setup([w], [g], b)
    opt.step(0.1)
    first = w.copy()
    opt.step(0.1)
    return first, w, opt.state[0]["s"]


@pytest.mark.parametrize("kernels", ["reference", "fused"])
def test_adagrad_two_steps_by_hand(kernels):
    # step 1: s = g^2 = [0.25, 1]; w -= 0.1 g / sqrt(s) = [1 - 0.1, -2 + 0.1]
    # step 2: s = [0.5, 2]; w -= 0.1 g / sqrt(s) = [0.9 - 0.05/0.70711, -1.9 + 0.1/1.41421]
    first, second, s = adagrad_two_steps(kernels)
    np.testing.assert_allclose(first, [0.9, -1.9], rtol=1e-9)  # eps=1e-10 moves it by 2e-11
    np.testing.assert_allclose(second, [0.8292893218813452, -1.8292893218813452], rtol=1e-9)
    np.testing.assert_allclose(s, [0.5, 2.0], rtol=1e-12)
    # with accumulators starting at 0.1: s = [0.35, 1.1] after the first step
    first, _, _ = adagrad_two_steps(kernels, initial=0.1)
    np.testing.assert_allclose(first, [1 - 0.05 / math.sqrt(0.35), -2 + 0.1 / math.sqrt(1.1)], rtol=1e-9)


def test_adagrad_trains_on_cpu_and_survives_a_checkpoint(tmp_path):
    X, y = datasets.make_blobs(300, seed=1)
    model = fastnet.MLP([2, 16, 3], backend="cpu", seed=0)
    h = model.fit(X, y, epochs=30, optimizer="adagrad", lr=0.1, batch_size=32,
                  callbacks=[fastnet.ModelCheckpoint(tmp_path / "ck.npz")])
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    again = fastnet.MLP([2, 16, 3], backend="cpu", seed=0)
    again.fit(X, y, epochs=30, optimizer="adagrad", batch_size=32, resume=tmp_path / "ck.npz")
    assert again.optimizer_.name == "adagrad" and again.optimizer_.t == model.optimizer_.t
    np.testing.assert_array_equal(again.optimizer_.state[0]["s"], model.optimizer_.state[0]["s"])

"""Every activation, optimizer and loss the registries hold trains through ``fit`` with its
default options (the end-of-fit doctor on, the default batch size, learning rate...) and
through the command line.

The parameters come from the registries themselves (the kernel table's ``ACTIVATIONS``,
``fastnet.core.optimizers.OPTIMIZERS``, ``fastnet.core.losses.LOSSES``), never from a hand list: a
newly registered kernel is tested here the day it is added.  This is where GELU's crash in
the doctor was found (``MLP([5, 16, 3], activation="gelu").fit(X, y)`` trained, then the
doctor called ``gelu_fwd(z, b)`` by hand, without the argument GELU's forward takes).
"""
import re
import subprocess
import sys

import numpy as np
import pytest

import fastnet
from fastnet.doctor.activations import hidden_activations as unit_outputs
from fastnet.datasets import mnist
from fastnet.kernels import reference
from fastnet.core.layers import hidden_activations
from fastnet.core.losses import LOSSES
from fastnet.core.optimizers import OPTIMIZERS

# The doctor's findings on a 10-epoch toy run are expected noise; its crashes are not.
pytestmark = pytest.mark.filterwarnings("ignore::fastnet.doctor.FastnetWarning")

ACTIVATION_NAMES = list(reference.ACTIVATIONS)
OPTIMIZER_NAMES = list(OPTIMIZERS)
LOSS_NAMES = list(dict.fromkeys(cls.name for cls in LOSSES.values()))  # aliases name the same class


def test_the_registries_are_not_empty():
    # (an empty registry would make the parametrised tests below pass by running nothing)
    assert {"relu", "gelu", "identity"} <= set(ACTIVATION_NAMES)
    assert {"sgd", "adam"} <= set(OPTIMIZER_NAMES)
    assert {"cross_entropy", "mse"} <= set(LOSS_NAMES)


def data(target_kind, n=512, seed=0):
    """A learnable toy problem: 4 features, targets of the kind a loss takes."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    if target_kind == "class":
        return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int), 3
    if target_kind == "binary":
        return X, np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0], axis=1).astype(np.float32), 2
    return X, np.stack([X[:, 0] - X[:, 1], 0.5 * X[:, 2] * X[:, 3]], axis=1).astype(np.float32), 2


def assert_learns(model, history):
    loss = history["loss"]
    assert len(loss) == 10 and all(np.isfinite(loss))
    # learns something: the last epoch's loss well below the first's (both over every row;
    # history.params["initial_loss"] is estimated from one batch)
    assert loss[-1] < 0.95 * loss[0], loss  # measured: 0.55 to 0.92
    assert model.norms_["epochs"] == list(range(1, 11))  # the doctor's recorder ran (diagnose=True)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_every_activation_trains_with_fits_defaults(activation):
    X, y, k = data("class")
    model = fastnet.MLP([4, 16, k], activation=activation, seed=0)
    history = model.fit(X, y)  # every option at its default: diagnose on, adam, 10 epochs...
    assert_learns(model, history)
    # and what the doctor reads is the model's own forward pass
    (h,) = unit_outputs(model, X[:64])
    w = model.get_weights()
    logits = h @ w["dense_1.W"] + w["dense_1.b"]
    np.testing.assert_array_equal(np.argmax(logits, axis=1), model.predict(X[:64]))


@pytest.mark.parametrize("optimizer", OPTIMIZER_NAMES)
def test_every_optimizer_trains_with_fits_defaults(optimizer):
    X, y, k = data("class")
    model = fastnet.MLP([4, 16, k], seed=0)
    assert_learns(model, model.fit(X, y, optimizer=optimizer))  # its default learning rate


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_trains_with_fits_defaults(loss):
    X, y, k = data(LOSSES[loss].target_kind)
    model = fastnet.MLP([4, 16, k], loss=loss, seed=0)  # the output activation that goes with it
    assert_learns(model, model.fit(X, y))


@pytest.mark.mnist
@pytest.mark.skipif(not (mnist.default_cache_dir() / "mnist.npz").exists(),
                    reason=f"MNIST is not cached at {mnist.default_cache_dir() / 'mnist.npz'}")
@pytest.mark.parametrize("activation", hidden_activations())  # the CLI's --activation choices
def test_every_activation_trains_through_the_command_line(activation):
    # opt-out kept: --subset 3000 and one epoch (cost: 7 trainings; the subject is that each trains)
    proc = subprocess.run([sys.executable, "-m", "fastnet", "train", "mnist", "--activation", activation,
                           "--subset", "3000", "--test-subset", "1000", "--epochs", "1", "--hidden", "32"],
                           capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"784-32-10 {activation}" in proc.stdout
    assert "fastnet diagnose:" in proc.stdout  # the doctor ran on the trained model
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", proc.stdout).group(1))
    assert accuracy > 0.3, proc.stdout  # one epoch of 22 steps; chance is 0.1

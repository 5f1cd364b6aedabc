"""fastnet.integrations.tune's pure parts (no Ray run), where the mutation audit found bugs the sweep
tests let through (issue 27, item 3): which rows validate, the class count of a subset,
the ranking's tie-break, ``stopped_early``, ASHA's ``max_t`` from a grid.

Oracles: the module's docstring (validation rows are the last ones; class ids; ties by
the lower ``val_loss``; ``epochs`` is ASHA's ``max_t``) on hand-made data and fake results.
"""
import os
from types import SimpleNamespace

import numpy as np
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("ray", reason="pip install '.[ray]' to run the Ray Tune tests")

from ray import tune  # noqa: E402

import fastnet.integrations.tune as ft  # noqa: E402


def test_the_validation_rows_are_the_last_ones():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 3
    (Xt, yt), (Xv, yv) = ft.split_data({"validation_split": 0.25}, (X, y))
    assert Xt[:, 0].tolist() == list(range(0, 30, 2)) and yt.tolist() == (np.arange(15) % 3).tolist()
    assert Xv[:, 0].tolist() == list(range(30, 40, 2)) and yv.tolist() == [0, 1, 2, 0, 1]
    # with a subset: the last rows of the first `subset`
    (_, _), (Xv, _) = ft.split_data({"validation_split": 0.5, "subset": 8}, (X, y))
    assert Xv[:, 0].tolist() == [8, 10, 12, 14]


def test_the_output_layer_has_a_unit_per_class_id_even_when_a_subset_lacks_some():
    # labels 0 and 2 only: class ids 0..2, three output units (a subset of MNIST may lack a digit)
    assert ft._n_classes(np.array([0, 2, 2, 0]), np.array([2])) == 3
    assert ft._n_classes(np.array([5, 5]), np.array([1])) == 6
    assert ft._n_classes(np.array([0, 1, 2]), np.array([1])) == 3
    assert ft._n_classes(np.array(["cat", "dog"]), np.array(["cat"])) == 2  # not ids: one per label
    assert ft._n_classes(np.eye(4)[[0, 1]], np.eye(4)[[1]]) == 4  # one-hot rows


def _result(metrics, config=None, error=None):
    return SimpleNamespace(metrics=metrics, config=config or {}, error=error)


def test_equal_accuracies_rank_the_lower_val_loss_first():
    worse = _result({"val_accuracy": 0.9, "val_loss": 0.5})
    better = _result({"val_accuracy": 0.9, "val_loss": 0.3})
    top = _result({"val_accuracy": 0.95, "val_loss": 0.9})
    failed = _result({"val_accuracy": float("nan"), "val_loss": 0.1})
    assert ft._ranked([failed, worse, better, top], "val_accuracy", "max") == [top, better, worse, failed]
    # by val_loss (min): ties broken by the higher val_accuracy
    a = _result({"val_loss": 0.3, "val_accuracy": 0.8})
    b = _result({"val_loss": 0.3, "val_accuracy": 0.9})
    assert ft._ranked([a, b], "val_loss", "min") == [b, a]


def test_a_trial_that_ran_all_its_epochs_did_not_stop_early():
    full = ft._row(_result({"epoch": 3, "val_accuracy": 0.9, "val_loss": 0.2}, {"lr": 0.1, "epochs": 3}), ["lr"])
    cut = ft._row(_result({"epoch": 2, "val_accuracy": 0.5, "val_loss": 0.9}, {"lr": 0.2, "epochs": 3}), ["lr"])
    assert full["stopped_early"] is False and full["epochs_run"] == 3 and full["status"] == "OK"
    assert cut["stopped_early"] is True and cut["epochs_run"] == 2 and cut["lr"] == 0.2
    default = ft._row(_result({"epoch": ft.DEFAULTS["epochs"]}, {"lr": 0.1}), ["lr"])
    assert default["stopped_early"] is False


def test_asha_runs_to_the_largest_epochs_of_a_grid():
    assert ft._max_epochs({"epochs": tune.grid_search([6, 2, 4])}) == 6
    assert ft._max_epochs({"epochs": 3}) == 3 and ft._max_epochs({}) == ft.DEFAULTS["epochs"]
    sched = ft._scheduler("asha", ft._max_epochs({"epochs": tune.grid_search([6, 2])}), 1, 2)
    assert sched._max_t == 6

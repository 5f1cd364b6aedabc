"""fastnet.integrations.sklearn against scikit-learn's own MLPClassifier (issue 31): alpha, warm_start,
coefs_/intercepts_, best_loss_, validation_scores_/best_validation_score_, ConvergenceWarning,
the install hint.

The oracle is scikit-learn's estimator itself.  Where the trajectories are compared, it starts
from fastnet's initial weights (its ``_init_coef`` returns them; nothing else of it is changed):
same rows, same batches (``shuffle=False``), plain SGD on both sides, so its loss, penalty,
stopping rule, validation split and weight restore decide what it reports."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402

import fastnet  # noqa: E402
from fastnet.integrations.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] + 0.3 * X[:, 2] > 0.5)


def _pair(**kw):
    """(scikit-learn's estimator starting from fastnet's initial weights, fastnet's), both SGD."""
    X, y = _data()
    kw = {**dict(hidden_layer_sizes=(16,), batch_size=64, max_iter=300, learning_rate_init=0.1, shuffle=False,
                 random_state=0), **kw}
    start = fastnet.MLP([X.shape[1], 16, 3], activation="relu", output="softmax", loss="cross_entropy",
                        dtype="float64", seed=0).get_weights()
    layers = iter([(start[k], start[k[:-1] + "b"]) for k in start if k.endswith(".W")])

    class Oracle(SkClassifier):
        def _init_coef(self, fan_in, fan_out, dtype):
            w, b = next(layers)
            assert w.shape == (fan_in, fan_out)
            return w.astype(dtype), b.astype(dtype)

    return Oracle(solver="sgd", momentum=0.0, nesterovs_momentum=False, **kw), MLPClassifier(optimizer="sgd", **kw)


def _fit(est, X, y):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    return [w for w in caught if issubclass(w.category, ConvergenceWarning)]


# (n_iter_no_change, tol, alpha, early_stopping): the n_iter_ table of the closing note
SETTINGS = [(2, 1e-3, 1e-4, False), (5, 3e-4, 1e-2, False), (10, 2e-4, 1e-3, False),
            (3, 1e-3, 1e-2, True), (1, 1e-4, 1e-4, True)]


@pytest.mark.parametrize("n_iter_no_change,tol,alpha,early_stopping", SETTINGS)
def test_n_iter_losses_and_weights_are_scikit_learns(n_iter_no_change, tol, alpha, early_stopping):
    X, y = _data()
    sk, fn = _pair(n_iter_no_change=n_iter_no_change, tol=tol, alpha=alpha, early_stopping=early_stopping)
    sk_warned, fn_warned = _fit(sk, X, y), _fit(fn, X, y)
    assert fn.n_iter_ == sk.n_iter_
    assert len(fn_warned) == len(sk_warned)
    np.testing.assert_allclose(fn.loss_curve_, sk.loss_curve_, rtol=1e-9)  # alpha's penalty included
    if early_stopping:
        assert fn.best_loss_ is None is sk.best_loss_
        np.testing.assert_allclose(fn.validation_scores_, sk.validation_scores_)
        assert fn.best_validation_score_ == sk.best_validation_score_
    else:
        assert fn.validation_scores_ is None is sk.validation_scores_ and fn.best_validation_score_ is None
        np.testing.assert_allclose(fn.best_loss_, sk.best_loss_, rtol=1e-9)
    for mine, theirs in zip(fn.coefs_ + fn.intercepts_, sk.coefs_ + sk.intercepts_):  # (best ones put back)
        np.testing.assert_allclose(mine, theirs, rtol=1e-7, atol=1e-9)


def test_the_settings_stop_before_max_iter():
    """The table is about the stopping rule: each setting stops before max_iter."""
    X, y = _data()
    for n_iter_no_change, tol, alpha, early_stopping in SETTINGS:
        sk, _ = _pair(n_iter_no_change=n_iter_no_change, tol=tol, alpha=alpha, early_stopping=early_stopping)
        assert _fit(sk, X, y) == [] and sk.n_iter_ < 300


def test_alpha_changes_training_as_scikit_learns():
    """alpha=0.1 against alpha=0: the penalty is in the loss and the weights, on both sides."""
    X, y = _data()
    for alpha in (0.0, 0.1):
        sk, fn = _pair(alpha=alpha, max_iter=20)
        _fit(sk, X, y), _fit(fn, X, y)
        np.testing.assert_allclose(fn.loss_curve_, sk.loss_curve_, rtol=1e-9)
        np.testing.assert_allclose(fn.coefs_[0], sk.coefs_[0], rtol=1e-7, atol=1e-9)
    sk0, _ = _pair(alpha=0.0, max_iter=20)
    _fit(sk0, X, y)
    assert np.abs(sk0.coefs_[0] - fn.coefs_[0]).max() > 1e-3  # alpha made a difference


def test_warm_start_continues_as_scikit_learns():
    """Two warm fits of 4 then 30 epochs: the same n_iter_, loss_curve_ (extended), best_loss_
    (carried) and weights as scikit-learn's; the second fit's network is a new object."""
    X, y = _data()
    sk, fn = _pair(warm_start=True, max_iter=4, n_iter_no_change=2, tol=1e-3, alpha=1e-3)
    _fit(sk, X, y), _fit(fn, X, y)
    first = fn.model_
    before = first.get_weights()
    sk.set_params(max_iter=200), fn.set_params(max_iter=200)
    _fit(sk, X, y), _fit(fn, X, y)
    assert fn.n_iter_ == sk.n_iter_ < 200 and len(fn.loss_curve_) == len(sk.loss_curve_) == 4 + sk.n_iter_
    np.testing.assert_allclose(fn.loss_curve_, sk.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(fn.best_loss_, sk.best_loss_, rtol=1e-9)
    for mine, theirs in zip(fn.coefs_, sk.coefs_):
        np.testing.assert_allclose(mine, theirs, rtol=1e-7, atol=1e-9)
    assert fn.model_ is not first and all((before[k] == v).all() for k, v in first.get_weights().items())
    assert fn.t_ == sk.t_
    # without warm_start, fit starts over
    fresh = fn.set_params(warm_start=False, max_iter=4)
    _fit(fresh, X, y)
    assert len(fresh.loss_curve_) == 4


def test_warm_start_refuses_other_classes():
    X, y = _data()
    clf = MLPClassifier((4,), max_iter=2, warm_start=True, random_state=0)
    _fit(clf, X, y)
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same classes"):
        clf.fit(X, np.minimum(y, 1))


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regressor"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_attributes_named_and_shaped_as_scikit_learns(kind, early_stopping):
    X, y = _data()
    y = {"binary": y > 0, "multiclass": y, "multilabel": np.stack([y > 0, y > 1], axis=1).astype(int),
         "regressor": X[:, 0] - X[:, 1]}[kind]
    kw = dict(hidden_layer_sizes=(7, 6), max_iter=3, early_stopping=early_stopping, random_state=0)
    sk, fn = (SkRegressor(**kw), MLPRegressor(**kw)) if kind == "regressor" else \
        (SkClassifier(**kw), MLPClassifier(**kw))
    _fit(sk, X, y), _fit(fn, X, y)
    names = ["coefs_", "intercepts_", "n_iter_", "loss_", "loss_curve_", "best_loss_", "validation_scores_",
             "best_validation_score_", "n_outputs_", "n_layers_", "out_activation_", "t_", "n_features_in_"]
    for name in names:
        mine, theirs = getattr(fn, name), getattr(sk, name)
        assert type(mine) is type(theirs) or isinstance(theirs, float) and isinstance(mine, float), name
        if isinstance(theirs, list):
            assert [np.shape(a) for a in mine] == [np.shape(a) for a in theirs], name
            assert [np.asarray(a).dtype for a in mine] == [np.asarray(a).dtype for a in theirs], name
        elif isinstance(theirs, (int, str)):
            assert mine == theirs, name


def test_two_classes_coefs_give_predict_proba():
    """For two classes, coefs_/intercepts_ are scikit-learn's single logistic unit."""
    X, y = _data()
    clf = MLPClassifier((8,), max_iter=5, random_state=0)
    _fit(clf, X, y > 0)
    W, b = clf.coefs_, clf.intercepts_
    z = np.maximum(X @ W[0] + b[0], 0) @ W[1] + b[1]
    np.testing.assert_allclose(1 / (1 + np.exp(-z[:, 0])), clf.predict_proba(X)[:, 1], rtol=1e-10)


def test_convergence_warning_as_scikit_learns():
    X, y = _data()
    sk, fn = SkClassifier((4,), max_iter=3, random_state=0), MLPClassifier((4,), max_iter=3, random_state=0)
    (theirs,), (mine,) = _fit(sk, X, y), _fit(fn, X, y)
    assert str(mine.message) == str(theirs.message)
    assert mine.filename == __file__  # pointed at the caller's fit
    with warnings.catch_warnings():  # partial_fit does not warn, as scikit-learn's
        warnings.simplefilter("error", ConvergenceWarning)
        MLPClassifier((4,), random_state=0).partial_fit(X, y, classes=[0, 1, 2])
        MLPRegressor((4,), random_state=0).partial_fit(X, X[:, 0])
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(2\) reached"):
        MLPRegressor((4,), max_iter=2, random_state=0).fit(X, X[:, 0])


def test_defaults_of_shared_parameters_are_scikit_learns():
    for mine, theirs in ((MLPClassifier(), SkClassifier()), (MLPRegressor(), SkRegressor())):
        shared = set(mine.get_params()) & set(theirs.get_params())
        assert {"alpha", "warm_start", "tol", "n_iter_no_change", "validation_fraction"} <= shared
        assert {k: mine.get_params()[k] for k in shared} == {k: theirs.get_params()[k] for k in shared}


@pytest.mark.parametrize("name,value,exc", [("alpha", -1.0, ValueError), ("alpha", "big", TypeError),
                                             ("warm_start", "yes", TypeError),
                                             ("validation_fraction", 1.5, ValueError)])
def test_bad_values_named(name, value, exc):
    X, y = _data()
    with pytest.raises(exc, match=name):
        MLPClassifier((4,), max_iter=2, early_stopping=True, **{name: value}).fit(X, y)


def test_import_without_scikit_learn_says_how_to_install():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import fastnet.integrations.sklearn\nexcept ModuleNotFoundError as e:\n    print(e.name, '|', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("sklearn |") and 'pip install ".[sklearn]"' in out.stdout, out.stdout

"""fastnet.integrations.sklearn: scikit-learn's own estimator checks, none marked as expected to fail;
pipelines, grid search on MNIST with string labels, joblib (issue 13, item 1)."""
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks  # noqa: E402

from fastnet.cli import load_mnist_arrays  # noqa: E402
from fastnet.integrations.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

ESTIMATORS = [MLPClassifier(), MLPRegressor()]


@parametrize_with_checks(ESTIMATORS)  # no expected_failed_checks: every check must pass
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=["classifier", "regressor"])
def test_every_check_ran_and_passed(estimator):
    # the count in one place: none skipped for want of a package, none failed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(clone(estimator), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert failed == []
    # skipped by scikit-learn itself: array-API checks need SCIPY_ARRAY_API=1, and there is
    # no decision_function to check
    assert skipped <= {"check_array_api_input", "check_classifiers_multilabel_output_format_decision_function"}
    assert len(results) >= 55


@pytest.fixture(scope="module")
def mnist_strings():
    (X, y), (Xt, yt) = load_mnist_arrays(subset=2000)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    return X, names[y], Xt[:500], names[yt[:500]]


def test_grid_search_in_a_pipeline_on_mnist_with_string_labels(mnist_strings, tmp_path):
    import joblib

    X, y, Xt, yt = mnist_strings
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=15, random_state=0, dtype="float32"))
    search = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(32,), (64,)]}, cv=3, n_jobs=2)
    search.fit(X, y)
    pred = search.predict(Xt)
    assert pred.dtype.kind == "U" and set(pred) <= set(y)
    assert (pred == yt).mean() > 0.85
    assert list(search.best_estimator_[-1].classes_) == sorted(set(y))
    joblib.dump(search.best_estimator_, tmp_path / "m.joblib")
    again = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_array_equal(again.predict(Xt), pred)
    np.testing.assert_array_equal(again.predict_proba(Xt), search.predict_proba(Xt))


def test_labels_class_weight_and_multilabel():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = np.where(X[:, 0] > 0.8, 7, np.where(X[:, 1] > 0, -3, 10))  # non-contiguous integers, imbalanced
    clf = MLPClassifier((16,), max_iter=300, learning_rate_init=1e-2, random_state=0).fit(X, y)
    assert list(clf.classes_) == [-3, 7, 10] and set(clf.predict(X)) <= {-3, 7, 10}
    assert clf.score(X, y) > 0.9
    balanced = MLPClassifier((16,), max_iter=300, learning_rate_init=1e-2, random_state=0,
                             class_weight="balanced").fit(X, y)
    rare = y == 7
    assert (balanced.predict(X)[rare] == 7).mean() >= (clf.predict(X)[rare] == 7).mean()
    # (both recalls are 1.0 here: the class weights show in the probabilities of the rare class,
    # the same seed training otherwise the same network; measured 0.982 against 0.972)
    assert balanced.predict_proba(X)[rare, 1].mean() > clf.predict_proba(X)[rare, 1].mean()
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0], axis=1).astype(int)
    multi = MLPClassifier((16,), max_iter=300, learning_rate_init=1e-2, random_state=0).fit(X, Y)
    assert multi.predict(X).shape == (300, 2) and (multi.predict(X) == Y).mean() > 0.9
    with pytest.raises(TypeError, match=r"toarray"):
        import scipy.sparse

        clf.predict(scipy.sparse.csr_matrix(X))


def test_regressor_multi_output_and_partial_fit():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 3))
    Y = np.stack([X[:, 0] - X[:, 1], 2 * X[:, 2]], axis=1)
    reg = MLPRegressor((32,), max_iter=300, learning_rate_init=1e-2, random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (200, 2) and reg.score(X, Y) > 0.9
    inc = MLPRegressor((16,), random_state=0)
    for _ in range(5):
        inc.partial_fit(X, Y[:, 0])
    assert inc.n_iter_ == 5 and inc.predict(X).shape == (200,)



def test_a_failed_fit_keeps_the_fitted_estimator():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = np.array(["cat", "dog", "owl"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)]
    clf = MLPClassifier((8,), max_iter=20, random_state=0).fit(X, y)
    before = clf.predict(X)
    with pytest.raises(ValueError):
        clf.fit(X, np.array(list("abcd"))[rng.integers(0, 4, 200)], sample_weight=np.ones(199))
    assert list(clf.classes_) == ["cat", "dog", "owl"] and (clf.predict(X) == before).all()
    fresh = MLPClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="not in classes_"):
        fresh.partial_fit(X, y, classes=["cat", "dog"])
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        fresh.predict(X)
    with pytest.raises(ValueError, match="max_iter must be a positive integer, got 0"):
        MLPClassifier(max_iter=0).fit(X, y)


def test_early_stopping_holds_out_a_random_stratified_split():
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 2))
    y = np.sort(np.where(X[:, 0] > 1.6, "c", np.where(X[:, 1] > 0, "a", "b")))  # sorted: "c" rows last
    X = X[np.argsort(np.where(X[:, 0] > 1.6, "c", np.where(X[:, 1] > 0, "a", "b")), kind="stable")]
    clf = MLPClassifier((16,), max_iter=200, learning_rate_init=1e-2, early_stopping=True, random_state=0).fit(X, y)
    assert clf.model_.history_.params["n_samples"] == 180  # 10% held out
    # scikit-learn's split (train_test_split(test_size=validation_fraction, random_state), not the
    # last rows, which would hold out all 8 "c" rows; stratified for two classes only, as
    # scikit-learn's): the weights put back score best_validation_score_ on its held-out rows
    _, Xv, _, yv = train_test_split(X, y, test_size=0.1, random_state=0)
    assert set(yv) != {"c"}
    assert (clf.predict(Xv) == yv).mean() == clf.best_validation_score_ == max(clf.validation_scores_)
    binary = MLPClassifier((4,), max_iter=3, early_stopping=True, random_state=0).fit(X, y == "c")
    _, Xv, _, yv = train_test_split(X, y == "c", test_size=0.1, random_state=0, stratify=y == "c")
    assert (binary.predict(Xv) == yv).mean() == binary.best_validation_score_
    inc = MLPClassifier((8,), early_stopping=True, random_state=0)
    inc.partial_fit(X[:5], y[:5], classes=["a", "b", "c"])  # partial_fit: all rows, no split
    assert inc.model_.history_.params["n_samples"] == 5


# ------------------------------------------------------- class_weight and sample_weight
@pytest.mark.parametrize("class_weight", ["balanced", {-3: 1.0, 7: 4.0, 10: 0.25}])
@pytest.mark.parametrize("with_sample_weight", [False, True], ids=["class_weight", "class_weight*sample_weight"])
def test_class_weight_multiplies_sample_weight(class_weight, with_sample_weight):
    """Oracle: scikit-learn's ``compute_sample_weight(class_weight, y)`` times ``sample_weight``,
    given by hand as the sample weights of an estimator without class_weight, trains the same
    network (same seed, same rows)."""
    from sklearn.utils.class_weight import compute_sample_weight

    rng = np.random.default_rng(3)
    X = rng.standard_normal((240, 4))
    y = np.where(X[:, 0] > 0.9, 7, np.where(X[:, 1] > 0, -3, 10))  # imbalanced, non-contiguous
    sw = rng.uniform(0.1, 3.0, len(y)) if with_sample_weight else None
    by_hand_weights = compute_sample_weight(class_weight, y) * (1.0 if sw is None else sw)
    kw = dict(hidden_layer_sizes=(8,), max_iter=4, learning_rate_init=1e-2, random_state=0)
    weighted = MLPClassifier(class_weight=class_weight, **kw).fit(X, y, sample_weight=sw)
    by_hand = MLPClassifier(**kw).fit(X, y, sample_weight=by_hand_weights)
    without = MLPClassifier(**kw).fit(X, y, sample_weight=sw)
    w, h, o = (m.model_.get_weights() for m in (weighted, by_hand, without))
    for k in w:
        np.testing.assert_allclose(w[k], h[k], rtol=1e-12, atol=1e-14, err_msg=k)
    # and the comparison discriminates: the class weights change the training
    assert max(np.abs(w[k] - o[k]).max() for k in w) > 1e-3


# ------------------------------------------------------------- n_iter_no_change
def _stopping_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)


@pytest.mark.parametrize("early_stopping", [False, True], ids=["training_loss", "validation_score"])
@pytest.mark.parametrize("n_iter_no_change", [1, 3, 5])
def test_n_iter_no_change_stops_at_scikit_learns_epoch(n_iter_no_change, early_stopping):
    """Oracle: scikit-learn's own MLPClassifier/MLPRegressor on the same data.  tol=10: no epoch
    improves the training loss (or the validation accuracy / R^2) by 10, so the stopping epoch
    follows from the rule alone, not from the arithmetic: scikit-learn's n_iter_ is 3, 5, 7 for
    n_iter_no_change 1, 3, 5 (the first epoch improves on the infinite start, then
    n_iter_no_change + 1 epochs without improvement)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from sklearn.neural_network import MLPRegressor as SkRegressor

    X, y = _stopping_data()
    kw = dict(hidden_layer_sizes=(8,), max_iter=50, tol=10.0, n_iter_no_change=n_iter_no_change,
              early_stopping=early_stopping, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        expected = SkClassifier(**kw).fit(X, y).n_iter_
        expected_reg = SkRegressor(**kw).fit(X, X[:, 0] - X[:, 1]).n_iter_
    assert expected == expected_reg == n_iter_no_change + 2  # the oracle, as documented above
    assert MLPClassifier(**kw).fit(X, y).n_iter_ == expected
    assert MLPRegressor(**kw).fit(X, X[:, 0] - X[:, 1]).n_iter_ == expected_reg


class _Run:
    """What the stopping callback reads and writes of a model."""

    def __init__(self):
        self.stop_training = False
        self.weights = {"w": np.zeros(1)}

    def get_weights(self):
        return {k: v.copy() for k, v in self.weights.items()}

    def set_weights(self, weights):
        self.weights = weights


def _sklearn_stopping_epoch(values, n_iter_no_change, tol, early_stopping):
    """The epoch at which scikit-learn's own rule (``_update_no_improvement_count`` of an
    MLPClassifier, fed ``values`` as its epoch losses or validation scores) stops, else None."""
    from sklearn.neural_network import MLPClassifier as SkClassifier

    sk = SkClassifier(n_iter_no_change=n_iter_no_change, tol=tol, early_stopping=early_stopping)
    sk._no_improvement_count, sk.loss_curve_, sk.validation_scores_ = 0, [], []
    sk.best_loss_, sk.best_validation_score_ = np.inf, -np.inf
    sk.coefs_ = sk.intercepts_ = []
    feed = iter(values)
    sk._score = lambda X, y, sample_weight=None: next(feed)
    for epoch, value in enumerate(values, 1):
        if not early_stopping:
            sk.loss_curve_.append(value)
        sk._update_no_improvement_count(early_stopping, None, None, None)
        if sk._no_improvement_count > sk.n_iter_no_change:
            return epoch
    return None


@pytest.mark.parametrize("early_stopping", [False, True], ids=["training_loss", "validation_score"])
def test_the_stopping_rule_is_scikit_learns_on_any_curve(early_stopping):
    """Oracle: scikit-learn's ``_update_no_improvement_count`` on the same curves, with a tol
    near the steps, so that the rule's details decide: the best follows improvements smaller
    than tol, a step of exactly tol, the count reset by one good epoch."""
    from fastnet.integrations.sklearn import _NoImprovementStop

    if not hasattr(sklearn.neural_network.MLPClassifier, "_update_no_improvement_count"):
        pytest.skip("this scikit-learn has no _update_no_improvement_count")
    rng = np.random.default_rng(0)
    curves = [[1.0, 0.9, 0.85, 0.8, 0.75, 0.74, 0.73, 0.72, 0.71, 0.7],  # steps of tol, then below
              [1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93],            # creeping: best follows
              [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5]]                   # one good epoch resets
    curves += [list(np.cumsum(rng.choice([-0.1, -0.05, -0.02, 0.0, 0.03], 30)) + 5) for _ in range(200)]
    stops = set()
    for curve in curves:
        values = [-v for v in curve] if early_stopping else curve  # a score rises where a loss falls
        for n_iter_no_change in (1, 2, 4):
            expected = _sklearn_stopping_epoch(values, n_iter_no_change, 0.05, early_stopping)
            feed = iter(values)
            rule = _NoImprovementStop(n_iter_no_change, 0.05, (lambda model: next(feed)) if early_stopping else None)
            run = _Run()
            rule.on_train_begin(run)
            got = None
            for epoch, value in enumerate(values, 1):
                rule.on_epoch_end(run, epoch, {"loss": value})
                if run.stop_training:
                    got = epoch
                    break
            assert got == expected, (curve, n_iter_no_change)
            stops.add(expected)
    assert None in stops and len(stops) > 5  # curves that stop at many epochs, and some never


def test_early_stopping_puts_back_the_weights_of_the_best_validation_score():
    from fastnet.integrations.sklearn import _NoImprovementStop

    scores = iter([0.5, 0.8, 0.7, 0.8, 0.6])  # the best is epoch 2's (epoch 4 only equals it)
    rule = _NoImprovementStop(10, 1e-4, lambda model: next(scores))
    run = _Run()
    rule.on_train_begin(run)
    for epoch in range(1, 6):
        run.weights = {"w": np.array([float(epoch)])}
        rule.on_epoch_end(run, epoch, {"loss": 1.0})
    rule.on_train_end(run)
    assert run.weights["w"][0] == 2.0

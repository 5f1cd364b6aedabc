"""fastnet.sklearn: scikit-learn's own estimator checks, none marked as expected to fail;
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
from fastnet.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

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
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 2))
    y = np.sort(np.where(X[:, 0] > 1.6, "c", np.where(X[:, 1] > 0, "a", "b")))  # sorted: "c" rows last
    X = X[np.argsort(np.where(X[:, 0] > 1.6, "c", np.where(X[:, 1] > 0, "a", "b")), kind="stable")]
    clf = MLPClassifier((16,), max_iter=200, learning_rate_init=1e-2, early_stopping=True, random_state=0).fit(X, y)
    assert clf.model_.history_.params["n_samples"] == 180  # 10% held out
    assert (clf.predict(X)[y == "c"] == "c").mean() > 0.5  # the rare last class was trained on
    inc = MLPClassifier((8,), early_stopping=True, random_state=0)
    inc.partial_fit(X[:5], y[:5], classes=["a", "b", "c"])  # partial_fit: all rows, no split
    assert inc.model_.history_.params["n_samples"] == 5

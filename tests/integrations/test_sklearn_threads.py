"""The scikit-learn wrappers under threads (issue 30, item 7): a re-fit while other threads
predict gives each prediction from the old model or the new one, never a mix or an error; a
pickle taken mid-fit from another thread is a consistent estimator (the previous fit whole)."""
import pickle
import threading

import numpy as np

from fastnet.integrations.sklearn import MLPClassifier, MLPRegressor


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    return X, rng


def _while_fitting(fit, work):
    """Run ``work()`` repeatedly in 4 threads until ``fit()`` (this thread) ends; their results."""
    done = threading.Event()
    results, errors = [], []

    def loop():
        while not done.is_set():
            try:
                results.append(work())
            except Exception as exc:  # every error is a failure of the contract
                errors.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        fit()
    finally:
        done.set()
        for t in threads:
            t.join()
    return results, errors


def test_a_refit_with_other_labels_while_threads_predict_gives_old_or_new_never_a_mix():
    X, rng = _blobs()
    y_old = (X[:, 0] > 0).astype(int)  # labels 0, 1
    y_new = np.array(["a", "b", "c"])[np.digitize(X[:, 1], [-0.5, 0.5])]  # other labels, another rule
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, random_state=0).fit(X, y_old)
    old = clf.predict(X)
    results, errors = _while_fitting(lambda: clf.fit(X, y_new), lambda: clf.predict(X))
    new = clf.predict(X)
    assert set(new) <= {"a", "b", "c"} and not np.array_equal(old, new)
    assert errors == []
    assert len(results) > 10
    mixed = [r for r in results if not (np.array_equal(r, old) or np.array_equal(r, new))]
    assert mixed == []


def test_a_pickle_taken_mid_fit_is_a_consistent_estimator():
    X, _ = _blobs()
    y = X[:, 0] - 2 * X[:, 1]
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=60, n_iter_no_change=100, random_state=0)
    first, errors = _while_fitting(lambda: reg.fit(X, y), lambda: pickle.dumps(reg))
    assert errors == []
    fits = {60: reg.predict(X)}
    second, errors = _while_fitting(lambda: reg.set_params(max_iter=30).fit(X, -y), lambda: pickle.dumps(reg))
    assert errors == []
    fits[30] = reg.predict(X)
    assert first and second
    # taken during the first fit: the unfitted estimator (or, once it is published, the fit whole)
    states = [pickle.loads(blob) for blob in first]
    assert any(not hasattr(back, "model_") for back in states)
    # taken during the re-fit: the first fit whole (or the second, once published)
    states += [pickle.loads(blob) for blob in second]
    assert any(getattr(back, "n_iter_", None) == 60 for back in states[len(first):])
    for back in states:
        if hasattr(back, "model_"):
            assert back.n_iter_ == back.model_.n_iter_ == len(back.loss_curve_) in fits
            np.testing.assert_array_equal(back.predict(X), fits[back.n_iter_])
        else:
            assert not hasattr(back, "n_iter_") and not hasattr(back, "n_features_in_")

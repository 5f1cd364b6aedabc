"""Labels on the core API (issue 13, item 3): fit takes any labels, keeps classes_,
predict returns them; evaluate, score, validation data, model files and pickles follow."""
import pickle

import numpy as np
import pytest

import fastnet

rng = np.random.default_rng(0)
X = rng.standard_normal((120, 3))
IDS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


def fit(y, **kw):
    m = fastnet.MLP([3, 8, 3], backend="cpu", seed=0)
    m.fit(X, y, epochs=40, optimizer="adam", lr=0.02, **kw)
    return m


@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "owl"]), np.array([-3, 7, 10]), np.array([1, 2, 3])],
                         ids=["strings", "non-contiguous", "one-based"])
def test_any_labels_train_like_ids_and_come_back(labels):
    y = labels[IDS]
    by_label, by_id = fit(y), fit(IDS)
    assert list(by_label.classes_) == sorted(labels.tolist()) == labels.tolist()  # label i is output i
    np.testing.assert_array_equal(by_label.predict_proba(X), by_id.predict_proba(X))
    pred = by_label.predict(X)
    assert pred.dtype == y.dtype and set(pred) <= set(labels)
    np.testing.assert_array_equal(pred, labels[by_id.predict(X)])  # same network, labels for ids
    assert by_label.evaluate(X, y)[1] == by_id.evaluate(X, IDS)[1] > 0.8
    assert by_label.score(X, y) == by_id.score(X, IDS)
    guesses, _ = by_label.predict_top_k(X[:4], 2)
    assert guesses.dtype == y.dtype and (guesses[:, 0] == pred[:4]).all()


def test_ids_keep_their_meaning():
    m = fit(IDS)
    assert list(m.classes_) == [0, 1, 2]
    m2 = fastnet.MLP([3, 8, 10], backend="cpu", seed=0)
    m2.fit(X, IDS, epochs=1)  # ids 0..2 of 10 outputs: ids, not 3 labels
    assert list(m2.classes_) == list(range(10))


def test_validation_data_and_later_fits_use_the_first_fits_labels():
    y = np.array(["cat", "dog", "owl"])[IDS]
    m = fit(y, validation_data=(X[:30], y[:30]))
    assert "val_accuracy" in m.history_
    m.fit(X[:60], y[:60], epochs=1)  # a subset: same classes_
    assert list(m.classes_) == ["cat", "dog", "owl"]
    before = m.get_weights()
    with pytest.raises(ValueError, match=r"y holds labels the model was not trained on: y\[0\] = 'emu'"):
        m.fit(X[:2], ["emu", "cat"], epochs=1)
    with pytest.raises(ValueError, match=r"validation_data\[1\] holds labels the model was not trained on"):
        m.fit(X, y, epochs=1, validation_data=(X[:2], ["cat", "yak"]))
    np.testing.assert_array_equal(m.get_weights()["dense_0.W"], before["dense_0.W"])
    with pytest.raises(ValueError, match="was not trained on"):
        m.evaluate(X[:2], ["yak", "cat"])


def test_a_failed_first_fit_sets_no_labels():
    m = fastnet.MLP([3, 8, 3], backend="cpu", seed=0)
    with pytest.raises(ValueError, match="validation_split"):
        m.fit(X, np.array(["a", "b", "c"])[IDS], validation_split=1.5)
    assert m.classes_ is None and not m.built


def test_too_many_or_too_few_labels_are_refused():
    m = fastnet.MLP([3, 8, 3], backend="cpu", seed=0)
    with pytest.raises(ValueError, match=r"y holds 2 distinct labels \('a', 'b'\), but the output layer has 3 units"):
        m.fit(X, np.where(IDS > 0, "a", "b"))


def test_labels_survive_model_files_clones_and_pickles(tmp_path):
    y = np.array(["cat", "dog", "owl"])[IDS]
    m = fit(y)
    m.save(tmp_path / "m.npz")
    for other in (fastnet.load(tmp_path / "m.npz"), m.clone(), pickle.loads(pickle.dumps(m))):
        assert list(other.classes_) == ["cat", "dog", "owl"]
        np.testing.assert_array_equal(other.predict(X), m.predict(X))

"""Models pickle and deep-copy (issue 13, item 2); model files stay pickle-free."""
import copy
import multiprocessing
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnet


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 5)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


def fitted(data, **kw):
    X, y = data
    m = fastnet.MLP([5, 8, 3], backend="cpu", seed=0, dropout=0.2, **kw)
    m.fit(X, y, epochs=3, batch_size=32, optimizer="adam", lr=1e-2)
    return m


@pytest.mark.parametrize("copier", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy],
                         ids=["pickle", "deepcopy"])
def test_a_fitted_model_round_trips_and_trains_on_identically(data, copier):
    X, y = data
    m = fitted(data)
    c = copier(m)
    assert type(c) is type(m) and c.sizes == m.sizes and c is not m
    np.testing.assert_array_equal(c.predict_proba(X), m.predict_proba(X))
    assert c.history_.history == m.history_.history and c.n_iter_ == 3
    assert c.optimizer_.name == "adam" and c.optimizer_.t == m.optimizer_.t
    # weights, Adam's moments, the data order and the dropout stream all carried over:
    # both train on to the same numbers
    h1 = m.fit(X, y, epochs=2, batch_size=32, optimizer="adam", lr=1e-2)
    h2 = c.fit(X, y, epochs=2, batch_size=32, optimizer="adam", lr=1e-2)
    assert h1["loss"] == h2["loss"]
    np.testing.assert_array_equal(c.predict_proba(X), m.predict_proba(X))


def test_the_copy_is_independent(data):
    X, y = data
    m = fitted(data)
    c = copy.deepcopy(m)
    before = m.predict_proba(X)
    c.fit(X, y, epochs=2, optimizer="adam")
    np.testing.assert_array_equal(m.predict_proba(X), before)
    assert not np.array_equal(c.predict_proba(X), before)


def test_an_unfitted_model_round_trips(data):
    X, y = data
    m = fastnet.Sequential([fastnet.Dense(8, "tanh"), fastnet.Dense(3, "softmax")], backend="cpu", seed=4)
    c = pickle.loads(pickle.dumps(m))
    assert not c.built and c.optimizer_ is None
    m.fit(X, y, epochs=2)
    c.fit(X, y, epochs=2)
    np.testing.assert_array_equal(c.predict(X), m.predict(X))


def _predict_in_child(blob, X):
    return pickle.loads(blob).predict_proba(X)


def test_a_pickled_model_predicts_in_another_process(data):
    X, _ = data
    m = fitted(data)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_predict_in_child, (pickle.dumps(m), X))
    np.testing.assert_array_equal(got, m.predict_proba(X))


def test_an_unavailable_backend_unpickles_onto_the_cpu_with_a_warning(data, tmp_path):
    X, _ = data
    m = fitted(data)
    state = m.__getstate__()
    state["backend"] = "cuda"  # as pickled on a GPU machine; no GPU here
    blob = tmp_path / "m.pkl"
    blob.write_bytes(pickle.dumps(state))
    code = textwrap.dedent(f"""
        import pickle, warnings, numpy as np, fastnet
        m = fastnet.MLP.__new__(fastnet.MLP)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            m.__setstate__(pickle.loads(open({str(blob)!r}, "rb").read()))
        print(m.backend_.name, [str(x.message) for x in w if x.category is RuntimeWarning])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("cpu ") and "pickled on the 'cuda' backend, which is not available here" in out


def test_model_files_still_refuse_pickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, __fastnet__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(fastnet.ModelFileError):
        fastnet.load(path)

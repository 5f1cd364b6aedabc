"""Inputs refused or flagged as scikit-learn would (issue 30, item 7): DataFrame column names
checked at predict, categorical and other non-numeric columns refused by name, values beyond
the model's dtype refused as an input error, a warning on single-class targets."""
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import fastnet
from fastnet.doctor import FastnetWarning
from fastnet.integrations.sklearn import MLPClassifier


def _frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    y = (X["a"] + 0.5 * X["b"] > 0).astype(int).to_numpy()
    return X, y


def _fitted(X, y):
    m = fastnet.MLP([3, 16, 2], seed=0)
    m.fit(X, y, verbose=0)
    return m


@pytest.mark.parametrize("change", ["reordered", "renamed", "dropped and added"])
def test_dataframe_columns_other_than_fits_are_refused_as_scikit_learn_refuses_them(change):
    X, y = _frame()
    other = {"reordered": X[["b", "a", "c"]], "renamed": X.rename(columns={"c": "z"}),
             "dropped and added": X[["a", "b"]].assign(d=X["c"])}[change]
    oracle = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
        oracle.predict(other)
    m = _fitted(X, y)
    assert list(m.feature_names_in_) == ["a", "b", "c"]
    for method in (m.predict, m.predict_proba, lambda X: m.evaluate(X, y)):
        with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
            method(other)
    with pytest.raises(ValueError, match="feature names should match"):
        m.fit(other, y, epochs=1, verbose=0)  # a fit continuing on other columns too
    np.testing.assert_array_equal(m.predict(X), m.predict(X.to_numpy()))  # the same columns: as before


def test_an_array_after_a_dataframe_fit_warns_as_scikit_learn_does():
    X, y = _frame()
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        LogisticRegression().fit(X, y).predict(X.to_numpy())
    m = _fitted(X, y)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        m.predict(X.to_numpy())


@pytest.mark.parametrize("column, shown", [
    (pd.Categorical([1, 2, 3] * 100), "category"),
    (pd.Categorical(["u", "v", "w"] * 100), "category"),
    (np.array(["u", "v", "w"] * 100, dtype=object), "(object|str)"),  # (pandas 3 infers its str dtype)
])
def test_categorical_and_object_columns_are_refused_naming_them(column, shown):
    X, y = _frame()
    bad = X.assign(c=column)
    m = fastnet.MLP([3, 8, 2])
    with pytest.raises(TypeError, match=rf"X has non-numeric columns: 'c' \({shown}\)"):
        m.fit(bad, y)
    assert not m.built
    fitted = _fitted(X, y)
    with pytest.raises(TypeError, match=rf"X has non-numeric columns: 'c' \({shown}\)"):
        fitted.predict(bad)
    with pytest.raises(TypeError, match=r"non-numeric columns: 'c'"):
        MLPClassifier(max_iter=2).fit(bad, y)


@pytest.mark.parametrize("where", ["fit", "predict", "validation_data"])
def test_values_beyond_float32_are_an_input_error_not_a_divergence(where):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 4))  # float64
    y = (X[:, 0] > 0).astype(int)
    huge = X.copy()
    huge[7, 2] = 1e300
    m = fastnet.MLP([4, 8, 2])
    argument = "validation_data[0]" if where == "validation_data" else "X"
    with pytest.raises(ValueError, match=rf"{re_escape(argument)} holds 1 value beyond the range of the model's "
                                         rf"float32.*{re_escape(argument)}\[7, 2\] = 1e\+300"):
        if where == "fit":
            m.fit(huge, y)
        elif where == "validation_data":
            m.fit(X, y, validation_data=(huge, y))
        else:
            m.fit(X, y, verbose=0)
            m.predict(huge)
    assert not m.built or where == "predict"


def re_escape(text):
    import re

    return re.escape(text)


def test_a_single_class_target_warns_at_fit():
    X, _ = _frame()
    with pytest.warns(FastnetWarning, match=r"y holds a single class \(0\) in its 300 training rows"):
        fastnet.MLP([3, 8, 2]).fit(X.to_numpy(), np.zeros(300, dtype=int))
    with pytest.warns(FastnetWarning, match=r"y holds a single class \(1\)"):
        fastnet.MLP([3, 8, 1], output="sigmoid", loss="binary_crossentropy").fit(X.to_numpy(), np.ones(300))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fastnet.MLP([3, 8, 2]).fit(*_frame())
    assert not [w for w in seen if "single class" in str(w.message)]

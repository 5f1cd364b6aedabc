"""fastnet.core.validation's input guards, where the mutation audit found bugs the guards' tests let
through (issue 27, item 3): only values above the float32 range refused (not those below it),
and bool DataFrame columns accepted.

Oracles: NumPy (``np.float32(-1e300)`` is ``-inf``) and the documented rule of
``fastnet.core.validation.check_columns`` ("categorical ..., object, string, bool and date columns
are refused, named"), as scikit-learn's encoders expect them encoded first."""
import re

import numpy as np
import pandas as pd
import pytest

import fastnet


@pytest.mark.parametrize("where", ["fit", "predict"])
def test_values_below_the_float32_range_are_refused_as_those_above_it(where):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 4))  # float64
    y = (X[:, 0] > 0).astype(int)
    tiny = X.copy()
    tiny[5, 1] = -1e300
    with np.errstate(over="ignore"):
        assert np.isneginf(tiny.astype(np.float32)[5, 1])  # what the model would have trained on
    m = fastnet.MLP([4, 8, 2])
    with pytest.raises(ValueError, match=re.escape("X holds 1 value beyond the range of the model's float32")
                       + r".*" + re.escape("X[5, 1] = -1e+300")):
        if where == "fit":
            m.fit(tiny, y)
        else:
            m.fit(X, y)
            m.predict(tiny)
    assert not m.built or where == "predict"


def test_bool_columns_are_refused_naming_them():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int).to_numpy()
    bad = X.assign(flag=X["b"] > 0)
    assert str(bad.dtypes["flag"]) == "bool"
    m = fastnet.MLP([4, 8, 2])
    with pytest.raises(TypeError, match=r"X has non-numeric columns: 'flag' \(bool\)"):
        m.fit(bad, y)
    assert not m.built

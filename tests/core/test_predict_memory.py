"""predict's peak memory for large inputs (issue 30, item 7): the result and one chunk's arrays,
never a converted copy of the whole input nor a second copy of the result.  Measured with
tracemalloc, which NumPy reports its array memory to."""
import tracemalloc

import numpy as np

import fastnet


def _peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_predict_proba_on_many_rows_takes_the_result_and_a_chunk_not_a_copy_of_x():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300_000, 20))  # float64, 48 MB; the model is float32
    m = fastnet.MLP([20, 16, 3], seed=0)
    m.fit(X[:2000], (X[:2000, 0] > 0).astype(int) + (X[:2000, 1] > 0), epochs=1, verbose=0)
    expected = np.concatenate([m.predict_proba(X[i:i + 50_000]) for i in range(0, len(X), 50_000)])
    p, peak = _peak(lambda: m.predict_proba(X))
    np.testing.assert_array_equal(p, expected)  # chunked the same way: the same bits
    result = p.nbytes  # 3.6 MB
    assert peak < result + 2_000_000, f"peak {peak / 1e6:.1f} MB for a {result / 1e6:.1f} MB result"
    labels, peak = _peak(lambda: m.predict(X))  # labels made chunk by chunk: no (n, k) probabilities
    np.testing.assert_array_equal(labels, np.argmax(expected, axis=1))
    assert peak < labels.nbytes + 2_000_000, f"peak {peak / 1e6:.1f} MB for {labels.nbytes / 1e6:.1f} MB of labels"

"""scikit-learn's GridSearchCV of ``fastnet.integrations.sklearn.MLPClassifier`` on a Dask cluster (issue 16).

A ``distributed.LocalCluster`` of 2 worker processes, one thread each, runs the
search's fits through joblib's ``"dask"`` backend; the same search with
``n_jobs=1`` in this process must give the same best parameters and the same
scores.  Worker processes rather than threads: the estimator and the data travel
pickled, as to a real cluster's workers, and each worker's BLAS has one thread
(Dask's nanny sets ``OPENBLAS_NUM_THREADS=1`` before a worker starts), so the
reference below, run with one BLAS thread too, is bit for bit the same training;
the cluster starts in ~5 s here.  ``FASTNET_THREADS=fixed`` (tests/conftest.py)
reaches the workers through the environment they inherit.

Dask is optional for fastnet, but CI installs the ``dask`` extra: there (``CI``
set), a missing Dask fails instead of skipping.
"""
import os
import re

import numpy as np
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("distributed", reason="pip install '.[dask]' to run the Dask tests")

import joblib  # noqa: E402
from distributed import Client, LocalCluster, get_task_stream  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from fastnet.integrations.sklearn import MLPClassifier  # noqa: E402


pytestmark = pytest.mark.processes

GRID = {"learning_rate_init": [1e-3, 1e-2], "hidden_layer_sizes": [(16,), (64,)]}
CV = 3


def _search(n_jobs):
    X, y = load_digits(return_X_y=True)
    X, y = X[:600] / 16.0, y[:600]  # 600 of the 8x8 digits, in [0, 1]
    estimator = MLPClassifier(max_iter=40, n_iter_no_change=40, random_state=0)  # all 40 epochs (n_iter_no_change >= 1, as scikit-learn)
    return GridSearchCV(estimator, GRID, cv=CV, n_jobs=n_jobs).fit(X, y)


@pytest.fixture(scope="module")
def dask_run():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            search = _search(n_jobs=-1)
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        pids = client.run(os.getpid)
        yield search, stream.data, executed, pids


def test_grid_search_on_dask_equals_the_serial_search(dask_run):
    search = dask_run[0]
    with threadpool_limits(1, user_api="blas"):  # as on the workers
        serial = _search(n_jobs=1)
    assert search.best_params_ == serial.best_params_
    assert search.cv_results_["params"] == serial.cv_results_["params"]
    for key in [f"split{i}_test_score" for i in range(CV)] + ["mean_test_score", "std_test_score"]:
        np.testing.assert_allclose(search.cv_results_[key], serial.cv_results_[key], rtol=0, atol=1e-12, err_msg=key)
    assert list(search.cv_results_["rank_test_score"]) == list(serial.cv_results_["rank_test_score"])
    # the search learned something, and the grid matters: not all candidates score alike
    assert search.best_score_ > 0.7 and np.ptp(search.cv_results_["mean_test_score"]) > 0.05


def test_the_fits_ran_on_the_dask_workers(dask_run):
    _, tasks, executed, pids = dask_run
    fits = [t for t in tasks if "_fit_and_score" in str(t["key"])]
    # joblib sends the fits in batches, named for the number of calls in each
    calls = [re.search(r"_fit_and_score_(\d+)_calls", str(t["key"])) for t in fits]
    assert fits and all(calls), [t["key"] for t in tasks]
    assert sum(int(c.group(1)) for c in calls) == len(GRID["learning_rate_init"]) * len(GRID["hidden_layer_sizes"]) * CV
    assert {t["worker"] for t in fits} <= set(executed) and sum(executed.values()) >= len(fits)
    assert os.getpid() not in pids.values()  # worker processes, not this one

"""scikit-learn's GridSearchCV of fastnet's MLPClassifier, its fits spread over a Dask cluster.

    pip install '.[dask,sklearn]'
    python examples/dask_grid_search.py                       # a local cluster of 2 worker processes
    python examples/dask_grid_search.py --address tcp://host:8786   # a cluster already running

Nothing fastnet-specific happens here: ``fastnet.integrations.sklearn.MLPClassifier`` is a
scikit-learn estimator, so joblib's ``"dask"`` backend sends GridSearchCV's fits
(candidates x folds) to the Dask workers.  Each worker process has one thread and,
as Dask's nanny starts it, one BLAS thread (``OPENBLAS_NUM_THREADS=1``): fastnet's
BLAS thread tuner then has nothing to tune, and a seed gives the same scores as
the search with ``n_jobs=1`` (``tests/integrations/test_dask.py`` checks that).

The grid: 2 widths x 2 learning rates x 2 schedules on 10,000 MNIST training
images, 3-fold cross-validation (24 fits of 8 epochs), float32.  Printed: the
candidates' mean validation accuracy, best first, the best parameters, their test
accuracy (refitted on all 10,000 images) and the wall time.
"""
import argparse
import time

import joblib
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV

from fastnet.cli import load_mnist_arrays
from fastnet.integrations.sklearn import MLPClassifier

GRID = {
    "hidden_layer_sizes": [(64,), (256,)],
    "learning_rate_init": [1e-3, 3e-3],
    "schedule": ["constant", "cosine"],
}


def markdown(rows):
    keys = list(rows[0])
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                     + ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", default=None, help="a running Dask scheduler (default: start a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="local cluster: worker processes (default 2)")
    parser.add_argument("--subset", type=int, default=10000, help="MNIST training images (default 10000)")
    args = parser.parse_args()

    (X, y), (X_test, y_test) = load_mnist_arrays(subset=args.subset)
    if args.address:
        client = Client(args.address)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    print(f"Dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
    estimator = MLPClassifier(max_iter=8, n_iter_no_change=8, batch_size=128, dtype="float32", random_state=0)
    t0 = time.perf_counter()
    with joblib.parallel_backend("dask"):
        search = GridSearchCV(estimator, GRID, cv=3, n_jobs=-1).fit(X, y)
    seconds = time.perf_counter() - t0
    results = search.cv_results_
    rows = sorted(({"hidden": list(p["hidden_layer_sizes"]), "lr": p["learning_rate_init"],
                    "schedule": p["schedule"], "mean val accuracy": float(m), "std": float(s),
                    "fit seconds": float(t)}
                   for p, m, s, t in zip(results["params"], results["mean_test_score"], results["std_test_score"],
                                         results["mean_fit_time"])),
                  key=lambda row: -row["mean val accuracy"])
    print(markdown(rows))
    print(f"best: {search.best_params_} (mean val accuracy {search.best_score_:.4f}); "
          f"test accuracy {search.score(X_test, y_test):.4f}; search and refit {seconds:.1f} s")
    client.close()


if __name__ == "__main__":  # the worker processes import this file: they must not run it
    main()

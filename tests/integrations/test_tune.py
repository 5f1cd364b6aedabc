"""Ray Tune sweeps of fastnet models (issue 16): ``fastnet.integrations.tune`` on a local Ray with 2 CPUs.

One sweep of 4 trials (4 learning rates, one width, ASHA, 4 epochs on 2,000 MNIST
images: 1,500 to train, 500 to validate) runs once for the module, ~15 s here; the
tests read its results.  Two of the learning rates are hopeless (1e-5 and 3e-6:
chance-level accuracy after an epoch), two are good (3e-3, 1e-3).  Tune expands a
grid with its first key (alphabetically: ``lr``) varying fastest, and starts the
trials in that order, two at a time: the two good rates start first,
so by the time a bad trial ends its first epoch, good trials have recorded theirs
at ASHA's first rung, and ASHA stops it there.  Another sweep of one trial that
crashes once checks that Tune's restore continues from the checkpoint.

Ray is optional for fastnet, but CI installs the ``ray`` extra: there (``CI`` set),
a missing Ray fails instead of skipping.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("ray", reason="pip install '.[ray]' to run the Ray Tune tests")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import fastnet  # noqa: E402
from fastnet.backends import threads  # noqa: E402
import fastnet.integrations.tune as ft  # noqa: E402

pytestmark = pytest.mark.processes

GOOD, BAD = [3e-3, 1e-3], [1e-5, 3e-6]
EPOCHS = 4
FIXED = {"depth": 1, "epochs": EPOCHS, "subset": 2000, "validation_split": 0.25, "batch_size": 64}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    # this module's callbacks travel to the trials by value (the workers cannot import it)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def sweep(local_ray, tmp_path_factory):
    space = {"lr": tune.grid_search(GOOD + BAD), "width": tune.grid_search([32]), **FIXED}
    return ft.run_sweep(space, scheduler="asha", grace_period=1, reduction_factor=2,
                        # verbose=0: Ray's status tables (opt-out kept: Ray's output, not fastnet's)
                        storage_path=tmp_path_factory.mktemp("ray_results"), verbose=0)


def _epochs(result):
    return list(result.metrics_dataframe["epoch"])


def test_every_trial_reports_validation_metrics_after_each_epoch(sweep):
    results = sweep.results
    assert len(results) == 4 and not results.errors
    for result in results:
        df = result.metrics_dataframe
        k = len(df)
        assert 1 <= k <= EPOCHS
        # one report per epoch, after it: epoch 1 first, none skipped or repeated
        assert _epochs(result) == list(range(1, k + 1)) == list(df["training_iteration"])
        assert np.isfinite(df["val_loss"]).all() and ((df["val_accuracy"] >= 0) & (df["val_accuracy"] <= 1)).all()
        assert not df["diverged"].any()
        # 500 validation rows: accuracies are multiples of 1/500
        assert np.allclose(df["val_accuracy"] * 500, np.round(df["val_accuracy"] * 500))


def test_asha_stops_the_hopeless_learning_rates_at_its_first_rung(sweep):
    by_lr = {}
    for result in sweep.results:
        by_lr.setdefault(result.config["lr"], []).append(result)
    for lr in BAD:
        for result in by_lr[lr]:
            assert _epochs(result) == [1], (lr, result.config, _epochs(result))
    assert max(len(_epochs(r)) for lr in GOOD for r in by_lr[lr]) == EPOCHS  # the best ones ran to the end
    rows = {(row["lr"], row["width"]): row for row in sweep.table}
    assert len(rows) == 4
    for row in rows.values():
        assert row["stopped_early"] == (row["epochs_run"] < EPOCHS) and row["status"] == "OK"
    assert all(rows[(lr, w)]["stopped_early"] for lr in BAD for w in (32,))


def test_the_best_config_is_well_above_chance_and_the_bad_rates(sweep):
    assert sweep.best_config["lr"] in GOOD
    best = sweep.best_metrics["val_accuracy"]
    assert best >= 0.8  # chance: 0.1
    assert best == max(r.metrics["val_accuracy"] for r in sweep.results)
    bad = [r.metrics["val_accuracy"] for r in sweep.results if r.config["lr"] in BAD]
    assert max(bad) < 0.3 and best > max(bad) + 0.5
    assert sweep.table[0]["val_accuracy"] == best  # the table is sorted best first
    assert "| lr | width | epochs_run |" in sweep.markdown()


def _check_checkpoint(result):
    """The trial's last checkpoint, restored, predicts its validation rows with its last reported accuracy."""
    model = ft.load_model(result.checkpoint)
    metrics = result.metrics
    assert model.n_iter_ == metrics["epoch"]
    _, (X_val, y_val) = ft.split_data(result.config)
    with threadpool_limits(1, user_api="blas"):  # as in the trial: one BLAS thread
        accuracy = float(np.mean(model.predict(X_val) == y_val))
        evaluated = model.evaluate(X_val, y_val, return_dict=True)
    assert accuracy == metrics["val_accuracy"]
    assert evaluated["accuracy"] == metrics["val_accuracy"]
    # (the trial validated on its training GEMMs' library, oneDNN where measured fastest, and
    # evaluate runs NumPy's: the same loss but for the last bits, 3e-9 relative measured; a
    # checkpoint of another epoch is off by far more)
    assert evaluated["loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)


def test_the_best_checkpoint_restores_a_model_with_the_reported_accuracy(sweep):
    _check_checkpoint(sweep.results[[r.config for r in sweep.results].index(sweep.best_config)])
    model = sweep.best_model()
    assert isinstance(model, fastnet.Sequential) and [layer.units for layer in model.layers] == [
        sweep.best_config["width"], 10]
    # the checkpoint's folder (a local path here) does as well as the Checkpoint
    again = ft.load_model(sweep.best_checkpoint.path)
    assert all(np.array_equal(again.get_weights()[k], w) for k, w in model.get_weights().items())


def test_a_stopped_trial_keeps_the_checkpoint_of_its_last_epoch(sweep):
    stopped = next(r for r in sweep.results if r.config["lr"] in BAD)
    _check_checkpoint(stopped)


def onednn_threads():
    """oneDNN's thread count in this process (None without oneDNN)."""
    from fastnet.backends import gemm_onednn

    return gemm_onednn.get_num_threads() if gemm_onednn.available() else None


class CrashOnce(fastnet.Callback):
    """Logs each epoch a trial trains (and its process) to ``log``; raises once, after epoch ``at``."""

    def __init__(self, log, at):
        self.log, self.at = str(log), at

    def on_epoch_end(self, model, epoch, logs):
        with open(self.log, "a") as f:
            f.write(json.dumps({"epoch": epoch, "pid": os.getpid(), "val_loss": logs["val_loss"],
                                "blas": threads.blas_threads(), "tuner": os.environ.get(threads.ENV),
                                "onednn": onednn_threads(),
                                "gemm": (model.history_.params.get("gemm") or {}).get("provider")}) + "\n")
        if epoch == self.at and not os.path.exists(self.log + ".crashed"):
            open(self.log + ".crashed", "w").close()
            raise RuntimeError(f"a crash after epoch {epoch}, on purpose")


def test_a_failed_trial_resumes_from_its_checkpoint_as_if_uninterrupted(local_ray, tmp_path, monkeypatch):
    from fastnet.cli import load_mnist_arrays

    (X, y), _ = load_mnist_arrays(subset=2000)
    config = {**FIXED, "lr": 3e-3, "width": 32, "schedule": "cosine", "subset": None}
    log = tmp_path / "epochs.log"
    sweep = ft.run_sweep(config, data=(X, y), scheduler=None, max_failures=1, callbacks=[CrashOnce(log, at=2)],
                         storage_path=tmp_path / "ray_results", verbose=0)  # Ray's status tables, not fastnet's
    assert (tmp_path / "epochs.log.crashed").exists()
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    # the second run trained epochs 3 and 4 only, in another process
    assert [s["epoch"] for s in seen] == [1, 2, 3, 4]
    assert seen[1]["pid"] != seen[2]["pid"]
    # one CPU per trial: one thread for NumPy's BLAS and for oneDNN's pool (which runs the
    # GEMMs where it loads; Ray's OMP_NUM_THREADS says so too, unless the user set it), and
    # fit's thread tuner off
    assert all(s["blas"] == 1 and s["tuner"] == "fixed" and s["onednn"] in (1, None) for s in seen), seen
    assert (seen[0]["onednn"] is None) == (onednn_threads() is None), seen
    result = sweep.results[0]
    assert not sweep.results.errors and _epochs(result) == [1, 2, 3, 4]
    # the same training without Tune (one BLAS thread, as a trial has; the GEMM provider the
    # trial's processes chose, which this process could measure otherwise on a busy machine and
    # its sums differ in the last bits): every epoch's validation loss equal, so weights, Adam's
    # moments, the data order and the cosine schedule all resumed
    assert len({s["gemm"] for s in seen}) == 1, seen  # (the second process took the first's, cached)
    if seen[0]["gemm"] is not None:
        monkeypatch.setenv("FASTNET_CPU_GEMM", seen[0]["gemm"])
    (Xt, yt), (Xv, yv) = ft.split_data(config, (X, y))
    reference = ft.build_model(config, 784, 10)
    with threads.gemm_threads(1):
        history = reference.fit(Xt, yt, epochs=EPOCHS, batch_size=64, optimizer="adam", lr=3e-3,
                                lr_schedule="cosine", validation_data=(Xv, yv))
    assert list(result.metrics_dataframe["val_loss"]) == history["val_loss"]
    assert list(result.metrics_dataframe["val_accuracy"]) == history["val_accuracy"]
    assert [s["val_loss"] for s in seen] == history["val_loss"]


def test_a_diverging_trial_reports_it_and_ends(monkeypatch):
    """In this process, with Tune's report and get_checkpoint stood in for."""
    reports = []

    class FakeTune:
        Checkpoint = ray.tune.Checkpoint

        @staticmethod
        def report(metrics, checkpoint=None):
            reports.append(metrics)

        @staticmethod
        def get_checkpoint():
            return None

        @staticmethod
        def get_context():
            raise RuntimeError("not in a trial")

    monkeypatch.setattr(ft, "ray_tune", FakeTune)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 20)) * 100, rng.integers(0, 3, 300)
    ft.trainable({"lr": 1e4, "optimizer": "sgd", "width": 16, "epochs": 5, "batch_size": 30}, data=(X, y))
    assert reports and reports[-1]["diverged"] is True
    assert reports[-1]["val_accuracy"] == 0.0 and reports[-1]["val_loss"] == float("inf")
    assert all(r["diverged"] is False for r in reports[:-1])
    assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1)) and len(reports) < 5


@pytest.mark.parametrize("config, message", [
    ({"lr": -0.1}, "config['lr'] must be > 0, got -0.1"),
    ({"width": 0}, "config['width'] must be a positive integer, got 0"),
    ({"schedule": "linear"}, "config['schedule'] must be one of"),
    ({"optimizer": "adamm"}, "config['optimizer'] must be one of"),
    ({"learning_rate": 0.1}, "unknown config key(s) ['learning_rate']"),
    ({"hidden": [64], "width": 32}, "give config['hidden']"),
    ({"validation_split": 1.0}, "config['validation_split'] must be in (0, 1)"),
])
def test_bad_configs_are_refused_with_the_key_and_value(config, message):
    with pytest.raises(ValueError) as info:
        ft.resolve_config(config)
    assert message in str(info.value)


def test_a_sweep_checks_its_space_before_starting_ray():
    with pytest.raises(ValueError, match=r"config\['schedule'\] must be one of .* got 'linear'"):
        ft.run_sweep({"schedule": tune.grid_search(["cosine", "linear"])})
    with pytest.raises(ValueError, match=r"param_space\['epochs'\] must be a number or a grid_search"):
        ft.run_sweep({"epochs": tune.randint(1, 5)})
    with pytest.raises(ValueError, match=r"scheduler must be 'asha', 'fifo', None"):
        ft.run_sweep({"lr": 1e-3}, scheduler="hyperband")


def test_defaults_and_hidden_sizes():
    s = ft.resolve_config({"width": 64, "depth": 3})
    assert s["hidden"] == [64, 64, 64] and s["lr"] == ft.DEFAULTS["lr"]
    assert ft.resolve_config({"hidden": [300, 100]})["hidden"] == [300, 100]
    assert ft.resolve_config({"depth": 0})["hidden"] == []
    model = ft.build_model({"hidden": [30, 20], "dropout": 0.1}, 12, 4)
    assert model.sizes == [12, 30, 20, 4]


def test_import_fastnet_does_not_import_ray():
    code = "import sys, fastnet, fastnet.integrations.sklearn; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_ray_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "fastnet.integrations.tune")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    with pytest.raises(ImportError, match=r"pip install '\.\[ray\]' in fastnet's clone"):
        import fastnet.integrations.tune  # noqa: F401


def test_a_trial_pins_every_gemm_pool_to_its_cpus(monkeypatch):
    """Whatever OMP_NUM_THREADS says (Ray sets it for a trial unless the user did): the
    trial's CPUs are the thread count of NumPy's BLAS and of oneDNN's pool, which runs the
    GEMMs where it loads; and the thread tuner is off."""
    from types import SimpleNamespace

    from fastnet.backends import gemm_onednn

    resources = SimpleNamespace(required_resources={"CPU": 1})
    monkeypatch.setattr(ft.ray_tune, "get_context", lambda: SimpleNamespace(get_trial_resources=lambda: resources))
    monkeypatch.delenv(threads.ENV, raising=False)
    onednn = gemm_onednn.get_num_threads() if gemm_onednn.available() else None
    with threadpool_limits(2, user_api="blas"):
        if onednn is not None:
            gemm_onednn.set_num_threads(2)
        try:
            ft._pin_blas_threads()
            assert os.environ[threads.ENV] == "fixed"
            assert threads.blas_threads() in (1, None)
            assert onednn is None or gemm_onednn.get_num_threads() == 1
        finally:
            if onednn is not None:
                gemm_onednn.set_num_threads(onednn)


"""A Ray Tune sweep never ranks a trial that ended in ERROR as the best (issue 30, item 7): a
trial that reported a high accuracy and then failed is ranked after every finished one, and
``best_config``/``best_checkpoint`` come from a finished trial.  Tune's Tuner is replaced by one
returning the results Tune would (no Ray cluster is started)."""
from types import SimpleNamespace

import pytest

ft = pytest.importorskip("fastnet.integrations.tune")


class _Grid(list):
    @property
    def errors(self):
        return [r.error for r in self if r.error is not None]


def _result(name, accuracy, error=None):
    return SimpleNamespace(config={"lr": name}, error=error, checkpoint=f"checkpoint of {name}",
                           metrics={"val_accuracy": accuracy, "val_loss": 1 - accuracy, "epoch": 1,
                                    "diverged": False, "time_total_s": 1.0})


@pytest.fixture
def tune_returns(monkeypatch):
    def install(results):
        monkeypatch.setattr(ft.ray, "is_initialized", lambda: True)
        for name in ("with_parameters", "with_resources"):
            monkeypatch.setattr(ft.ray_tune, name, lambda fn, *a, **k: fn)
        for name in ("TuneConfig", "RunConfig", "CheckpointConfig", "FailureConfig"):
            monkeypatch.setattr(ft.ray_tune, name, lambda *a, **k: SimpleNamespace(**k))
        monkeypatch.setattr(ft.ray_tune, "Tuner", lambda *a, **k: SimpleNamespace(fit=lambda: _Grid(results)))
    return install


def test_a_trial_that_ended_in_error_is_never_the_best(tune_returns):
    failed = _result(0.1, 0.99, error=RuntimeError("worker died after epoch 1"))
    finished, worse = _result(0.01, 0.90), _result(0.001, 0.80)
    tune_returns([failed, finished, worse])
    with pytest.warns(RuntimeWarning, match="1 of 3 trials failed"):
        sweep = ft.run_sweep({"lr": ft.ray_tune.grid_search([0.1, 0.01, 0.001]), "epochs": 1}, data=[None] * 2,
                             scheduler=None, verbose=0)
    assert sweep.best_config == {"lr": 0.01} and sweep.best_checkpoint == "checkpoint of 0.01"
    assert [row["status"] for row in sweep.table] == ["OK", "OK", "ERROR"]
    assert ft._ranked([failed, worse, finished], "val_loss", "min") == [finished, worse, failed]


def test_a_sweep_whose_trials_all_failed_says_so(tune_returns):
    tune_returns([_result(0.1, 0.99, error=RuntimeError("out of memory"))])
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="every trial .* ended in ERROR.*out of memory"):
        ft.run_sweep({"lr": ft.ray_tune.grid_search([0.1]), "epochs": 1}, data=[None] * 2, scheduler=None, verbose=0)

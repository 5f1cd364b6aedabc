"""ModelCheckpoint with Keras's arguments and meanings (issue 31): filepath format fields,
monitor/mode/save_best_only, save_weights_only, initial_value_threshold, save_freq; what
fastnet cannot do is refused before training, naming the argument.

Oracle: Keras's documented behaviour (keras.io/api/callbacks/model_checkpoint): the file is
written at the end of each epoch, or with save_best_only only when the monitored value beats
the best so far (min for losses, max for names with "acc" under mode="auto"), the format
fields filled from ``epoch`` (1-based in the name) and the epoch logs."""
import os

import numpy as np
import pytest

import fastnet
from fastnet import ModelCheckpoint


class Feed(fastnet.Callback):
    """Replaces the epoch's val_loss/val_accuracy with scripted values (before the checkpoint)."""

    def __init__(self, values):
        self.values = list(values)

    def on_epoch_end(self, model, epoch, logs):
        logs["val_loss"] = self.values[epoch - 1]
        logs["val_accuracy"] = 1.0 - self.values[epoch - 1]


def _fit(callbacks, epochs=5, validation=True):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] > 0).astype(int)
    m = fastnet.MLP([3, 4, 2], seed=0)
    m.fit(X, y, epochs=epochs, verbose=0, callbacks=callbacks, validation_split=0.2 if validation else 0.0)
    return m


CURVE = [0.9, 0.7, 0.8, 0.6, 0.65]  # improves at epochs 1, 2, 4 (Keras: strictly better)


def test_filepath_format_fields_one_file_per_epoch(tmp_path):
    pattern = str(tmp_path / "ck-{epoch:02d}-{val_loss:.2f}.npz")
    _fit([Feed(CURVE), ModelCheckpoint(pattern)])
    assert sorted(p for p in os.listdir(tmp_path) if not p.endswith((".lock", ".prev"))) == \
        ["ck-01-0.90.npz", "ck-02-0.70.npz", "ck-03-0.80.npz", "ck-04-0.60.npz", "ck-05-0.65.npz"]
    fastnet.load(tmp_path / "ck-03-0.80.npz")  # a training checkpoint, readable as a model


@pytest.mark.parametrize("monitor,mode,saved", [("val_loss", "auto", [1, 2, 4]), ("val_accuracy", "auto", [1, 2, 4]),
                                                ("val_loss", "max", [1])])
def test_save_best_only_saves_when_the_monitor_improves(tmp_path, monitor, mode, saved):
    pattern = str(tmp_path / "best-{epoch}.npz")
    _fit([Feed(CURVE), ModelCheckpoint(pattern, monitor=monitor, mode=mode, save_best_only=True)])
    assert sorted(int(p[5:-4]) for p in os.listdir(tmp_path) if p.endswith(".npz")) == saved


def test_save_best_only_one_file_holds_the_best_epoch(tmp_path, capsys):
    path = tmp_path / "best.npz"
    cb = ModelCheckpoint(path, save_best_only=True, verbose=1)
    record = Record()
    _fit([Feed(CURVE), record, cb])
    best = fastnet.load(path).get_weights()
    for k, w in best.items():
        np.testing.assert_array_equal(w, record.weights[3][k])  # epoch 4's (0.6), not the last
    err = capsys.readouterr().err
    assert "Epoch 1: val_loss improved from inf to 0.90000, saving model to" in err
    assert "Epoch 3: val_loss did not improve from 0.70000" in err
    assert cb.best == 0.6


class Record(fastnet.Callback):
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, model, epoch, logs):
        self.weights.append(model.get_weights())


def test_initial_value_threshold_and_weights_only(tmp_path):
    path = tmp_path / "w.npz"
    record = Record()
    _fit([Feed(CURVE), record, ModelCheckpoint(path, save_best_only=True, initial_value_threshold=0.65,
                                               save_weights_only=True)])
    saved = fastnet.load(path).get_weights()  # a model file (model.save), epoch 4's (0.6 < 0.65)
    for k, w in saved.items():
        np.testing.assert_array_equal(w, record.weights[3][k])
    never = tmp_path / "never.npz"
    _fit([Feed(CURVE), ModelCheckpoint(never, save_best_only=True, initial_value_threshold=0.1)])
    assert not never.exists()


def test_plain_use_keeps_resuming(tmp_path):
    path = tmp_path / "ck.npz"
    m = _fit([ModelCheckpoint(path, every=2)], epochs=3)
    assert fastnet.load(path).n_iter_ == 3 == m.n_iter_  # every=2 and the end of training


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(save_freq=100), ValueError, r"save_freq=100: fastnet saves at the end of epochs only"),
    (dict(mode="best"), ValueError, r"mode must be 'auto', 'min' or 'max', got 'best'"),
    (dict(save_best_only="yes"), TypeError, r"save_best_only must be True or False, got 'yes'"),
    (dict(filepath="ck-{step}.npz"), ValueError, r"names 'step': a format field may name the epoch or an epoch log"),
    (dict(filepath="w.h5", save_weights_only=True), ValueError, r"'w.h5': save_weights_only .* must end in .npz"),
    (dict(monitor=2), TypeError, r"monitor must be the name of an epoch log .* every=N"),
])
def test_refused_before_training_naming_the_argument(kwargs, exc, match):
    kwargs = {"filepath": "ck.npz", **kwargs}
    with pytest.raises(exc, match=match):
        ModelCheckpoint(**kwargs)


def test_a_field_or_monitor_missing_from_the_logs_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"names 'val_loss', which is not in the epoch logs \(have: \['accuracy'"):
        _fit([ModelCheckpoint(str(tmp_path / "{val_loss}.npz"))], validation=False)
    with pytest.raises(ValueError, match=r"monitor='val_loss' is not in the epoch logs"):
        _fit([ModelCheckpoint(tmp_path / "b.npz", save_best_only=True)], validation=False)

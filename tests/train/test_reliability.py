"""Bad input, numerical faults, interrupted training and damaged files: nothing lost."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastnet
from fastnet import datasets

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3))
Y = (X[:, 0] > 0).astype(int)


def _fitted(**kw):
    m = fastnet.MLP([3, 8, 2], backend="cpu", seed=0, **kw)
    m.fit(X, Y, epochs=2, optimizer="adam", batch_size=16)
    return m


def _state_hash(model):
    h = hashlib.sha256()
    for name, w in sorted(model.get_weights().items()):
        h.update(name.encode() + w.tobytes())
    if model.optimizer_ is not None:
        h.update(str(model.optimizer_.t).encode())
        for st in model.optimizer_.state:
            for k, v in sorted(st.items()):
                h.update(k.encode() + model.backend_.to_host(v).tobytes())
    return h.hexdigest()


X_NAN = X.copy()
X_NAN[3, 1] = np.nan
X_NAN[7, 0] = np.inf

# (description, call(model), exception, message pattern)
BAD_INPUTS = [
    ("bool X", lambda m: m.fit(X > 0, Y), TypeError, r"X must hold real numbers, got dtype bool"),
    ("object X", lambda m: m.fit(X.astype(object), Y), TypeError, r"got dtype object"),
    ("string X", lambda m: m.fit(X.astype(str), Y), TypeError, r"got dtype <U\d+ \(string\)"),
    ("NaN/inf in X", lambda m: m.fit(X_NAN, Y), ValueError,
     r"X contains 2 NaN or infinite values; the first is X\[3, 1\] = nan"),
    ("NaN in y", lambda m: m.fit(X, np.where(np.arange(40) == 5, np.nan, Y)), ValueError,
     r"y contains 1 NaN or infinite value; the first is y\[5\] = nan"),
    ("label out of range", lambda m: m.fit(X, np.where(np.arange(40) == 9, 7, Y)), ValueError,
     r"y holds class ids outside \[0, 2\): y\[9\] = 7 \(1 such labels\)"),
    ("non-integer label", lambda m: m.fit(X, Y + 0.5), ValueError,
     r"y must hold integer class ids, got [01].5 at y\[0\]"),
    ("negative label", lambda m: m.fit(X, -Y), ValueError, r"class ids outside \[0, 2\): y\[\d+\] = -1"),
    ("empty X", lambda m: m.fit(np.zeros((0, 3)), []), ValueError, r"X is empty: shape \(0, 3\)"),
    ("1-D X", lambda m: m.fit(np.zeros(3), [0, 1, 0]), ValueError,
     r"X must be 2-D \(n_samples, n_features\), got shape \(3,\); for one sample use X.reshape\(1, -1\), for one feature X.reshape\(-1, 1\)"),
    ("lengths differ", lambda m: m.fit(X, Y[:30]), ValueError, r"X and y have different lengths: 40 and 30"),
    ("wrong feature count", lambda m: m.fit(X[:, :2], Y), ValueError,
     r"X has 2 features per sample, but the model expects 3"),
    ("batch_size 0", lambda m: m.fit(X, Y, batch_size=0), ValueError, r"batch_size must be a positive integer or None, got 0"),
    ("lr 0", lambda m: m.fit(X, Y, lr=0.0), ValueError, r"lr must be > 0, got 0.0"),
    ("lr nan", lambda m: m.fit(X, Y, lr=float("nan")), TypeError, r"lr must be a real number, got nan"),
    ("unknown optimizer", lambda m: m.fit(X, Y, optimizer="sdg"), ValueError, r"got 'sdg' \(did you mean 'sgd'\?\)"),
    ("unknown schedule", lambda m: m.fit(X, Y, lr_schedule="cosine_warm"), ValueError, r"did you mean 'cosine'"),
    ("unknown on_nan", lambda m: m.fit(X, Y, on_nan="skip"), ValueError, r"on_nan must be one of .* got 'skip'"),
    ("bad validation_data", lambda m: m.fit(X, Y, validation_data=X), ValueError, r"validation_data must be a pair"),
    ("validation y out of range", lambda m: m.fit(X, Y, validation_data=(X, Y + 5)), ValueError,
     r"validation_data\[1\] holds class ids outside"),
    ("one-hot rows not one-hot", lambda m: m.fit(X, np.ones((40, 2))), ValueError, r"rows are not one-hot"),
    ("bad callback", lambda m: m.fit(X, Y, callbacks=[print]), TypeError, r"callbacks\[0\] must be a fastnet Callback"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_leaves_model_unchanged(case):
    _, call, exc, pattern = case
    model = _fitted()
    before = _state_hash(model)
    n_iter = model.n_iter_
    with pytest.raises(exc, match=pattern):
        call(model)
    assert _state_hash(model) == before
    assert model.n_iter_ == n_iter


def test_bad_input_on_unfitted_model_builds_nothing():
    model = fastnet.MLP([3, 8, 2], backend="cpu", seed=0)
    with pytest.raises(ValueError):
        model.fit(X, Y + 0.5)  # fractions are no labels (Y + 5 would be: two labels, 5 and 6)
    assert not model.built and model.classes_ is None
    with pytest.raises(fastnet.NotFittedError, match="not fitted yet: call fit before predict"):
        model.predict(X)


def test_integer_X_is_converted():
    m = fastnet.MLP([3, 4, 2], backend="cpu", seed=0)
    m.fit((X * 10).astype(np.int64), Y, epochs=1)
    assert m.predict((X * 10).astype(np.int32)).shape == (40,)


def test_batch_size_larger_than_data_is_full_batch():
    m = fastnet.MLP([3, 4, 2], backend="cpu", seed=0)
    h = m.fit(X, Y, epochs=1, batch_size=1000)
    assert h.params["batch_size"] == 40 and h.params["steps"] == 1


def test_predict_errors():
    m = _fitted()
    with pytest.raises(ValueError, match=r"X has 5 features per sample, but the model expects 3"):
        m.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"X contains 1 NaN"):
        m.predict_proba(X_NAN[:4])
    reg = fastnet.MLP([3, 2, 1], loss="mse", backend="cpu", seed=0)
    reg.fit(X, X[:, 0], epochs=1)
    with pytest.raises(TypeError, match=r"predict_proba is for classifiers; this model's loss is 'mse'"):
        reg.predict_proba(X)


# ---------------------------------------------------------------- numerical faults
def test_nan_loss_raises_names_epoch_and_step_and_restores():
    Xb, yb = datasets.make_blobs(n_samples=300, seed=0)
    m = fastnet.MLP([2, 32, 3], backend="cpu", seed=0)
    m.fit(Xb, yb, epochs=2, optimizer="sgd", lr=0.1, batch_size=30)
    good = m.get_weights()
    with pytest.raises(fastnet.TrainingDivergedError, match=r"at epoch 3, step \d+ of 10; .*restored") as info:
        m.fit(Xb * 1e4, yb, epochs=3, optimizer="sgd", lr=1e4, batch_size=30)
    assert info.value.epoch == 3 and 1 <= info.value.step <= 10
    for name, w in m.get_weights().items():
        assert np.array_equal(w, good[name]), name
    assert m.n_iter_ == 2 and all(np.isfinite(m.history_["loss"]))


def test_weights_that_overflow_in_the_last_update_are_a_divergence_though_every_loss_was_finite():
    """A step's loss is taken before its update: one full-batch step per epoch whose update sends
    the weights past float32's range leaves every recorded loss finite."""
    Xb, yb = datasets.make_blobs(n_samples=60, seed=0)
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    with pytest.raises(fastnet.TrainingDivergedError, match=r"weights became infinite or NaN .* at epoch 1, step 1 "
                       r"of 1; .*restored") as info:
        m.fit(Xb * 100, yb, epochs=1, optimizer="sgd", lr=3e38, batch_size=60)
    assert info.value.epoch == 1 and info.value.step == 1
    assert all(np.all(np.isfinite(w)) for w in m.get_weights().values())  # the initial weights, put back
    assert np.isfinite(m.predict_proba(Xb)).all()


def test_the_step_named_is_the_first_non_finite_loss_or_the_last_step():
    from fastnet.train.fit import _first_bad_step

    assert _first_bad_step(np.array([1.0, np.inf, np.nan, 2.0]), 4) == 2
    assert _first_bad_step(np.array([np.nan, 1.0]), 2) == 1
    assert _first_bad_step(np.ones(5), 5) == 5  # all finite: the weights overflowed in the last update


def test_nan_restore_mode_warns_and_stops():
    Xb, yb = datasets.make_blobs(n_samples=300, seed=0)
    m = fastnet.MLP([2, 32, 3], backend="cpu", seed=0)
    with pytest.warns(RuntimeWarning, match=r"epoch 1, step \d+ of 10"):
        h = m.fit(Xb * 1e4, yb, epochs=5, optimizer="sgd", lr=1e4, batch_size=30, on_nan="restore")
    assert len(h) == 0
    for w in m.get_weights().values():
        assert np.all(np.isfinite(w))


@pytest.mark.parametrize("kernels", ["fused", "reference"])
@pytest.mark.parametrize("loss,output", [("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid"),
                                         ("sse", "sigmoid")])
def test_losses_and_sigmoid_finite_for_huge_logits(kernels, loss, output):
    m = fastnet.MLP([1, 2], activation="linear", output=output, loss=loss, backend="cpu",
                    dtype="float32", kernels=kernels, seed=0)
    m.build(1)
    m.set_weights({"dense_0.W": [[1.0, -1.0]], "dense_0.b": [0.0, 0.0]})
    x = np.array([[1e4], [-1e4], [0.0]])
    y = np.array([0, 1, 0]) if loss == "cross_entropy" else np.array([[1, 0], [0, 1], [1, 1.0]])
    loss_value, grads = m.gradients(x, y)
    assert np.isfinite(loss_value)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    assert np.all(np.isfinite(m.predict_proba(x) if loss != "sse" else m.predict(x)))


# ---------------------------------------------------------------- checkpoints
CHILD = textwrap.dedent("""
    import os, signal, sys, numpy as np, fastnet
    from fastnet import datasets

    class KillMidEpoch(fastnet.Callback):
        # SIGKILL this process at step 300 of epoch 3 (of 750): no chance to clean up.
        def on_step_end(self, model, epoch, step):
            if epoch == 3 and step == 300:
                os.kill(os.getpid(), signal.SIGKILL)

    X, y = datasets.make_blobs(n_samples=6000, seed=1)
    m = fastnet.MLP([2, 64, 3], backend="cpu", seed=7, dropout=0.1)
    m.fit(X, y, epochs=int(sys.argv[2]), batch_size=8, optimizer="adam", lr_schedule="cosine",
          callbacks=[fastnet.ModelCheckpoint(sys.argv[1]), KillMidEpoch()])
    print("finished", flush=True)
""")


def _train_fresh(epochs):
    X, y = datasets.make_blobs(n_samples=6000, seed=1)
    m = fastnet.MLP([2, 64, 3], backend="cpu", seed=7, dropout=0.1)
    m.fit(X, y, epochs=epochs, batch_size=8, optimizer="adam", lr_schedule="cosine")
    return m, X, y


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    ckpt = tmp_path / "run.ckpt.npz"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    epochs = 5
    proc = subprocess.run([sys.executable, str(script), str(ckpt), str(epochs)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "finished" not in proc.stdout
    meta_epochs = json.loads(np.load(ckpt)["__fastnet__"].tobytes())["history"]["epochs"]
    assert meta_epochs == [1, 2]

    reference, X, y = _train_fresh(epochs)
    resumed = fastnet.MLP([2, 64, 3], backend="cpu", seed=7, dropout=0.1)
    h = resumed.fit(X, y, epochs=epochs, batch_size=8, optimizer="adam", lr_schedule="cosine", resume=ckpt)
    assert h.epochs == [3, 4, 5] and resumed.n_iter_ == 5
    for name, w in reference.get_weights().items():
        assert np.array_equal(w, resumed.get_weights()[name]), name
    assert resumed.loss_curve_ == reference.loss_curve_


def test_damaged_checkpoint_is_detected_and_previous_kept(tmp_path):
    path = tmp_path / "c.npz"
    Xb, yb = datasets.make_blobs(n_samples=200, seed=0)
    m = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    m.fit(Xb, yb, epochs=2, optimizer="adam", callbacks=[fastnet.ModelCheckpoint(path)])
    prev = str(path) + ".prev"
    assert os.path.exists(prev)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    fresh = fastnet.MLP([2, 8, 3], backend="cpu", seed=0)
    # resume falls back on the previous good one, and says so.
    with pytest.warns(RuntimeWarning, match=r"truncated or damaged.*resuming from the previous checkpoint"):
        h = fresh.fit(Xb, yb, epochs=3, optimizer="adam", resume=path)
    assert h.epochs == [2, 3]  # .prev holds the state after epoch 1
    # A missing checkpoint too (a crash between two renames, a deleted file).
    path.unlink()
    with pytest.warns(RuntimeWarning, match=r"does not exist.*resuming from the previous checkpoint"):
        h = fastnet.MLP([2, 8, 3], backend="cpu", seed=0).fit(Xb, yb, epochs=3, optimizer="adam", resume=path)
    assert h.epochs == [2, 3]
    # Neither usable: refused, naming both.
    with open(prev, "r+b") as f:
        f.truncate(100)
    with pytest.raises(fastnet.CheckpointError, match=r"does not exist.*previous checkpoint is unusable too.*truncated"):
        fastnet.MLP([2, 8, 3], backend="cpu", seed=0).fit(Xb, yb, epochs=3, optimizer="adam", resume=path)
    # One flipped byte inside an array: the zip still opens, the checksum catches it.
    from fastnet.train.checkpoint import save_checkpoint

    path = tmp_path / "flipped.npz"
    save_checkpoint(m, path)
    raw = bytearray(path.read_bytes())
    weights = m.get_weights()["dense_0.W"].tobytes()
    at = bytes(raw).find(weights)
    assert at > 0
    raw[at + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(fastnet.CheckpointError, match=r"failed its checksum|damaged"):
        fastnet.MLP([2, 8, 3], backend="cpu", seed=0).fit(Xb, yb, epochs=3, optimizer="adam", resume=path)


# ---------------------------------------------------------------- model files
def _write_npz(path, meta, **arrays):
    arrays["__fastnet__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_model_file_refusals(tmp_path):
    m = _fitted()
    good = tmp_path / "good.npz"
    m.save(good)
    meta = json.loads(np.load(good)["__fastnet__"].tobytes())
    weights = m.get_weights()

    newer = tmp_path / "newer.npz"
    _write_npz(newer, {**meta, "format_version": 99}, **weights)
    with pytest.raises(fastnet.ModelFileError, match=r"format version 99; this fastnet reads up to 1"):
        fastnet.load(newer)

    pickled = tmp_path / "pickle.npz"
    np.savez(pickled, __fastnet__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
             **{"dense_0.W": np.array([object()], dtype=object)})
    with pytest.raises(fastnet.ModelFileError, match=r"pickle|Object arrays"):
        fastnet.load(pickled)

    wrong_shape = tmp_path / "shape.npz"
    _write_npz(wrong_shape, meta, **{**weights, "dense_0.W": np.zeros((5, 8))})
    with pytest.raises(fastnet.ModelFileError, match=r"dense_0.W has shape \(5, 8\)"):
        fastnet.load(wrong_shape)

    absurd = tmp_path / "absurd.npz"
    big = json.loads(json.dumps(meta))
    big["config"]["layers"][0]["units"] = 10**12
    _write_npz(absurd, big, **weights)
    with pytest.raises(fastnet.ModelFileError, match=r"declares .* parameters"):
        fastnet.load(absurd)

    not_ours = tmp_path / "other.npz"
    np.savez(not_ours, a=np.zeros(3))
    with pytest.raises(fastnet.ModelFileError, match=r"not a fastnet model file"):
        fastnet.load(not_ours)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(fastnet.ModelFileError, match=r"cannot read model file"):
        fastnet.load(garbage)


# ---------------------------------------------------------------- threads
def test_two_models_in_two_threads_do_not_interfere():
    Xb, yb = datasets.make_blobs(n_samples=600, seed=0)

    def train(seed, out):
        m = fastnet.MLP([2, 32, 3], backend="cpu", seed=seed, dropout=0.2)
        m.fit(Xb, yb, epochs=3, batch_size=16, optimizer="adam")
        out[seed] = m.get_weights()

    alone = {}
    train(1, alone)
    train(2, alone)
    together = {}
    threads = [threading.Thread(target=train, args=(s, together)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in (1, 2):
        for name, w in alone[seed].items():
            assert np.array_equal(w, together[seed][name]), (seed, name)

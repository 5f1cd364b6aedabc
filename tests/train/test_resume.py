"""A resume is all or nothing, and continues only its own run (issue 30, items 3 and 4).

``fit(resume=path)`` checks everything (the file, the model, the data, the run's settings)
before anything changes: after any refusal the model is bit for bit as before (weights,
optimizer state and step count, n_iter_, history, classes, random state, built or not).
A checkpoint of another run (another seed, optimizer, learning rate, weight decay, batch
size, dtype or number of training rows) is refused, the differences named, unless
``resume_strict=False``.

Oracle: a snapshot of the model's whole state before the call, compared after it.
"""
# Opt-out kept (issue 27): monkeypatch makes set_rng_state fail half-way: the rollback is the subject.
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastnet
from fastnet.train.checkpoint import CheckpointError, read_checkpoint, restore_checkpoint
from file_checksums import arrays_sha256, with_checksums  # (tests/file_checksums.py)

rng = np.random.default_rng(0)
X = rng.standard_normal((120, 6))
Y = rng.integers(0, 3, 120)


FIT = dict(epochs=5, batch_size=32, optimizer="adam")


def mlp(sizes=(6, 8, 3), **kw):
    return fastnet.MLP(list(sizes), backend="cpu", **{"seed": 0, **kw})


def read_npz(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(arrays.pop("__fastnet__").tobytes()), arrays


def write_npz(path, meta, arrays, checksums=True):
    if checksums:
        meta = with_checksums(meta, arrays)
    np.savez(path, __fastnet__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The checkpoint of a run (seed 0, Adam lr 1e-3, batch 32, 120 rows, float32) after epoch 2."""
    d = tmp_path_factory.mktemp("ckpt")
    path = d / "good.npz"
    mlp().fit(X, Y, epochs=2, batch_size=32, optimizer="adam",
              callbacks=[fastnet.ModelCheckpoint(path)])
    os.unlink(str(path) + ".prev")
    return path


def state(m):
    """Everything a resume could change, as comparable bytes."""
    s = {"built": m.built, "n_iter": m.n_iter_, "epochs": list(m.history_.epochs),
         "history": json.dumps(m.history_.history), "classes": None if m.classes_ is None else m.classes_.tolist(),
         "rng": json.dumps(m.backend_.get_rng_state()), "optimizer": None, "weights": None,
         "optimizer_object": id(m.optimizer_), "loss_scaler": repr(getattr(m, "loss_scaler_", None)),
         "layers": [sorted(vars(layer)) for layer in m.layers], "dtype": m.dtype}
    if m.built:
        s["weights"] = {k: (v.dtype.str, v.tobytes()) for k, v in m.get_weights().items()}
        s["n_features_in_"] = m.n_features_in_
    if m.optimizer_ is not None:
        st = m.optimizer_.get_state()
        s["optimizer"] = (st["config"], st["t"], [{k: v.tobytes() for k, v in d.items()} for d in st["slots"]])
    return s


def redo(good, path, edit_meta=None, edit_arrays=None, checksums=True):
    meta, arrays = read_npz(good)
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    write_npz(path, meta, arrays, checksums)
    return path


def _nan(arrays):
    arrays["param/dense_1.b"] = np.full_like(arrays["param/dense_1.b"], np.nan)


def _tamper_weight(arrays):
    arrays["param/dense_0.W"] = arrays["param/dense_0.W"].copy()
    arrays["param/dense_0.W"][0, 0] += 0.5


def _other_width(tmp, good):
    path = tmp / "wide.npz"
    mlp((10, 8, 3)).fit(np.zeros((40, 10)), np.arange(40) % 3, epochs=1, batch_size=32,
                        callbacks=[fastnet.ModelCheckpoint(path)])
    return path


def _other_architecture(tmp, good):
    path = tmp / "other-arch.npz"
    mlp((6, 16, 3)).fit(X, Y, epochs=1, batch_size=32,
                        callbacks=[fastnet.ModelCheckpoint(path)])
    return path


# kind -> (make the file (tmp, good) -> path, fit arguments, model factory, message pattern)
KINDS = {
    "missing file": (lambda t, g: t / "nope.npz", {}, None, r"does not exist"),
    "truncated": (lambda t, g: (t / "cut.npz").write_bytes(g.read_bytes()[:999]) and t / "cut.npz", {}, None,
                  r"truncated or damaged"),
    "a weight altered (CRCs valid)": (lambda t, g: redo(g, t / "w.npz", edit_arrays=_tamper_weight, checksums=False),
                                      {}, None, r"failed its checksum: the file is damaged"),
    "optimizer.t altered (outside the arrays)": (
        lambda t, g: redo(g, t / "t.npz", edit_meta=lambda m: m["optimizer"].__setitem__("t", 30), checksums=False),
        {}, None, r"failed its checksum: the metadata"),
    "optimizer config broken (checksums redone)": (
        lambda t, g: redo(g, t / "oc.npz", edit_meta=lambda m: m["optimizer"].__setitem__("config", {"lr": 1})),
        {}, None, r"damaged optimizer state"),
    "random state broken (checksums redone)": (
        lambda t, g: redo(g, t / "rs.npz", edit_meta=lambda m: m["rng_state"]["host"].__setitem__("state", 7)),
        {}, None, r"damaged metadata: rng_state"),
    "history broken (checksums redone)": (
        lambda t, g: redo(g, t / "h.npz", edit_meta=lambda m: m["history"]["history"].__setitem__("loss", [1.0])),
        {}, None, r"damaged metadata: history"),
    "NaN weights (checksums redone)": (lambda t, g: redo(g, t / "nan.npz", edit_arrays=_nan), {}, None,
                                       r"param/dense_1\.b holds 3 non-finite values"),
    "newer format": (lambda t, g: redo(g, t / "v.npz", edit_meta=lambda m: m.__setitem__("format_version", 9)),
                     {}, None, r"written by a newer fastnet"),
    "another architecture": (_other_architecture, {}, None, r"holds a different architecture"),
    "another input width than the model's": (_other_width, {}, None,
                                              r"holds a model of 10 input features; this model takes 6"),
    "another input width than X's (no input_dim)": (
        _other_width, {}, lambda: fastnet.Sequential([fastnet.Dense(8, "relu"), fastnet.Dense(3, "softmax")],
                                                     backend="cpu", seed=0),
        r"holds a model of 10 input features, but X has 6 features per sample"),
    "another seed": (lambda t, g: g, {}, lambda: mlp(seed=1), r"seed 0 -> 1"),
    "another lr": (lambda t, g: g, {"lr": 0.01}, None, r"lr 0\.001 -> 0\.01"),
    "another optimizer": (lambda t, g: g, {"optimizer": "sgd"}, None, r"optimizer 'adam' -> 'sgd'"),
    "another weight decay": (lambda t, g: g, {"weight_decay": 0.1}, None, r"weight_decay 0\.0 -> 0\.1"),
    "another batch size": (lambda t, g: g, {"batch_size": 16}, None, r"batch size 32 -> 16"),
    "another dtype": (lambda t, g: g, {}, lambda: mlp(dtype="float64"), r"dtype 'float32' -> 'float64'"),
    "other training rows": (lambda t, g: g, {"X": X[:100], "y": Y[:100]}, None, r"training rows 120 -> 100"),
    "other classes": (lambda t, g: g, {"y": np.array(["a", "b", "c"])[Y]}, None,
                      r"trained on the classes \[0, 1, 2\], and y's are \['a', 'b', 'c'\]"),
    "another number of ranks": (
        lambda t, g: redo(g, t / "dp.npz", edit_meta=lambda m: m.__setitem__(
            "distributed", {"ranks": 2, "batch_size_per_rank": 16})), {}, None,
        r"was written by a training of 2 ranks at batch_size=16 per rank, and this fit runs one process"),
}


@pytest.mark.parametrize("before", ["fitted", "unfitted"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_refused_resume_leaves_the_model_bit_identical(kind, before, good, tmp_path):
    make, args, factory, pattern = KINDS[kind]
    path = make(tmp_path, good)
    model = (factory or mlp)()
    args = dict(args)
    Xf, yf = args.pop("X", X), args.pop("y", Y)
    error = CheckpointError
    if before == "fitted":
        model.fit(X, Y, epochs=1, batch_size=32)
        if kind == "other classes":  # fit's own label check refuses them first: the model knows its labels
            error, pattern = ValueError, r"y holds class ids outside \[0, 3\)"
        if model.input_dim is None:  # (the Sequential is built now: its own width is compared first)
            pattern = r"holds a model of 10 input features; this model takes 6"
    before_state = state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no fallback, no "resuming with changed settings")
        with pytest.raises(error, match=pattern):
            model.fit(Xf, yf, resume=path, **{**FIT, **args})
    assert state(model) == before_state
    if before == "fitted" and kind not in ("another seed", "another dtype"):
        # and the model trains on as if nothing had happened
        model.fit(X, Y, epochs=1, batch_size=32)
        assert model.n_iter_ == 2


def test_the_audits_tampered_resume(good, tmp_path):
    """m.fit(epochs=1); m.fit(epochs=5, resume=tampered) raised AttributeError with the weights
    changed and Adam's t 10 -> 30; now a CheckpointError, and nothing changed."""
    bad = redo(good, tmp_path / "bad.npz", edit_meta=lambda m: m["optimizer"].__setitem__("config", {"lr": 1}))
    m = mlp()
    m.fit(X, Y, epochs=1, batch_size=32)
    t, weights = m.optimizer_.t, m.get_weights()
    with pytest.raises(CheckpointError):
        m.fit(X, Y, resume=bad, **FIT)
    assert m.optimizer_.t == t == 4 and m.n_iter_ == 1
    assert all(np.array_equal(w, m.get_weights()[k]) for k, w in weights.items())


def test_an_unbuilt_model_refused_for_its_width_stays_unbuilt(tmp_path, good):
    """The audit's NumPy "output array does not match result of ndarray.take" (an unbuilt
    Sequential, 100-column X, a 784-input checkpoint): refused first, and left unbuilt."""
    path = tmp_path / "784.npz"
    fastnet.MLP([784, 8, 3], backend="cpu", seed=0).fit(np.zeros((40, 784)), np.arange(40) % 3, epochs=1,
                                                        callbacks=[fastnet.ModelCheckpoint(path)])
    m = fastnet.Sequential([fastnet.Dense(8, "relu"), fastnet.Dense(3, "softmax")], backend="cpu", seed=0)
    with pytest.raises(CheckpointError, match=r"holds a model of 784 input features, but X has 100 features"):
        m.fit(np.zeros((40, 100)), np.arange(40) % 3, epochs=2, resume=path)
    assert not m.built
    built = fastnet.MLP([100, 8, 3], backend="cpu", seed=0)
    with pytest.raises(CheckpointError, match=r"holds a model of 784 input features; this model takes 100"):
        built.fit(np.zeros((40, 100)), np.arange(40) % 3, epochs=2, resume=path)


def test_a_failure_while_applying_is_rolled_back(good, monkeypatch):
    """Past the checks only an interrupt or a MemoryError can stop a restore; it is undone too."""
    for before in ("fitted", "unfitted"):
        m = mlp()
        if before == "fitted":
            m.fit(X, Y, epochs=1, batch_size=32)
        snapshot = state(m)
        real = m.backend_.set_rng_state
        calls = []

        def interrupted(s, real=real, calls=calls):
            calls.append(1)
            if len(calls) == 1:  # after the weights and the optimizer were set
                raise KeyboardInterrupt
            real(s)

        monkeypatch.setattr(m.backend_, "set_rng_state", interrupted)
        with pytest.raises(KeyboardInterrupt):
            restore_checkpoint(m, good, fit={"optimizer": "adam", "batch_size": 32, "X": X})
        monkeypatch.undo()
        assert state(m) == snapshot, before


def test_resume_strict_false_continues_deliberately_and_says_what_it_kept(good):
    meta, _ = read_checkpoint(good)
    t_saved = meta["optimizer"]["t"]
    # another batch size: Adam's state kept, its step count continues
    m = mlp()
    with pytest.warns(RuntimeWarning, match=r"changed settings \(resume_strict=False\): batch size 32 -> 16\. "
                                            r"Kept from the checkpoint: weights \(epoch 2\), history, random state, "
                                            r"adam state \(t=8\)"):
        h = m.fit(X, Y, resume=good, resume_strict=False, **{**FIT, "batch_size": 16})
    assert h.epochs == [3, 4, 5] and m.optimizer_.t == t_saved + 3 * 8
    # another learning rate: the optimizer starts afresh, and the warning says so
    m = mlp(seed=5)
    with pytest.warns(RuntimeWarning, match=r"seed 0 -> 5; lr 0\.001 -> 0\.01\. .*the optimizer state is not kept"):
        h = m.fit(X, Y, resume=good, resume_strict=False, **{**FIT, "lr": 0.01})
    assert h.epochs == [3, 4, 5] and m.optimizer_.lr == 0.01 and m.optimizer_.t == 3 * 4


def test_same_settings_resume_quietly_and_match_an_uninterrupted_run(good):
    straight = mlp()
    straight.fit(X, Y, **FIT)
    resumed = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = resumed.fit(X, Y, resume=good, **FIT)
    assert h.epochs == [3, 4, 5]
    for k, w in straight.get_weights().items():
        assert np.array_equal(w, resumed.get_weights()[k]), k
    # an optimizer given as an object like the checkpoint's is the same run too
    again = mlp()
    again.fit(X, Y, resume=good, **{**FIT, "optimizer": fastnet.Adam(lr=1e-3)})
    assert again.optimizer_.t == straight.optimizer_.t


def test_checkpoints_without_the_run_settings_still_resume(good, tmp_path):
    """Checkpoints written before this change: no "run" (batch size, rows) and no metadata
    checksum; the rest is still compared."""
    meta, arrays = read_npz(good)
    del meta["run"], meta["meta_sha256"]
    old = tmp_path / "old.npz"
    write_npz(old, meta, arrays, checksums=False)
    h = mlp().fit(X, Y, resume=old, **{**FIT, "batch_size": 16})  # (the batch size is not known: not compared)
    assert h.epochs == [3, 4, 5]
    with pytest.raises(CheckpointError, match="seed 0 -> 3"):
        mlp(seed=3).fit(X, Y, resume=old, **FIT)


HOLDER = textwrap.dedent("""
    import sys
    from fastnet.core import npzfile
    npzfile.acquire(sys.argv[1])
    print("held", flush=True)
    sys.stdin.read()
""")


def test_a_run_refused_for_its_checkpoint_path_changes_nothing(good, tmp_path):
    """The lock is taken before the resume: a second run on a path held elsewhere is refused
    before it restores anything."""
    target = tmp_path / "c.npz"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        m = mlp()
        m.fit(X, Y, epochs=1, batch_size=32)
        snapshot = state(m)
        with pytest.raises(CheckpointError, match=rf"is being written by another run: pid {holder.pid}"):
            m.fit(X, Y, resume=good, callbacks=[fastnet.ModelCheckpoint(target)], **FIT)
        assert state(m) == snapshot
    finally:
        holder.communicate("", timeout=60)

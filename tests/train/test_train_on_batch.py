"""``model.train_on_batch``: one optimizer step of ``fit``'s, for a training loop of one's own.

A loop of ``train_on_batch`` over the batches ``fit(shuffle=False)`` makes, in the same order,
ends with the same weights, to the last bit; the same SGD and Adam steps as PyTorch's from the
same initial weights; the batch is checked with ``fit``'s messages and a bad one changes nothing;
a step allocates no array once the buffers exist.

Opt-out kept: ``shuffle=False`` in the fits compared with a loop of steps, because the loop
feeds the batches in order and the comparison is bit for bit (the order is the subject).
"""
import tracemalloc

import numpy as np
import pytest

import fastnet

RNG = np.random.default_rng(0)
X = RNG.normal(size=(700, 20)).astype(np.float32)
Y = RNG.integers(0, 5, 700)
BS = 128


def batches(X, y, bs=BS, w=None):
    for s in range(0, len(X), bs):
        yield (X[s:s + bs], y[s:s + bs]) + (() if w is None else (w[s:s + bs],))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "momentum", "rmsprop"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_loop_of_train_on_batch_is_fit_without_shuffling(optimizer, dropout):
    fitted = fastnet.MLP([20, 32, 16, 5], seed=1, dropout=dropout, backend="cpu")
    fitted.fit(X, Y, epochs=2, batch_size=BS, shuffle=False, optimizer=optimizer)
    looped = fastnet.MLP([20, 32, 16, 5], seed=1, dropout=dropout, backend="cpu")
    looped.attach_optimizer(fastnet.core.optimizers.get_optimizer(optimizer))
    for _ in range(2):
        for xb, yb in batches(X, Y):  # the last batch is partial (700 = 5 * 128 + 60)
            looped.train_on_batch(xb, yb)
    a, b = fitted.get_weights(), looped.get_weights()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert looped.optimizer_.t == fitted.optimizer_.t == 12
    assert looped.n_iter_ == 0 and len(looped.history_) == 0  # epochs are fit's


def test_sample_weight_is_used_as_given_and_fit_scales_it_to_mean_one():
    w = RNG.uniform(0, 3, len(X))
    fitted = fastnet.MLP([20, 16, 5], seed=2, backend="cpu")
    fitted.fit(X, Y, epochs=1, batch_size=BS, shuffle=False, sample_weight=w, optimizer="sgd")
    looped = fastnet.MLP([20, 16, 5], seed=2, backend="cpu")
    looped.attach_optimizer(fastnet.SGD())
    for xb, yb, wb in batches(X, Y, w=w * len(w) / w.sum()):  # fit's scaling, done by hand
        looped.train_on_batch(xb, yb, sample_weight=wb)
    a, b = fitted.get_weights(), looped.get_weights()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
    # The batch loss is Keras's: sum(w_i * loss_i) / m
    m = fastnet.MLP([20, 16, 5], seed=3, backend="cpu").build(20)
    xb, yb, wb = X[:50], Y[:50], w[:50]
    rows = np.array([m.evaluate(xb[i:i + 1], yb[i:i + 1])[0] for i in range(50)])
    loss, _ = m.train_on_batch(xb, yb, sample_weight=wb)
    assert loss == pytest.approx((wb * rows).sum() / 50, rel=1e-5)


def test_class_weight_is_a_sample_weight_per_class():
    cw = {0: 2.0, 3: 0.5}
    a = fastnet.MLP([20, 16, 5], seed=4, backend="cpu")
    b = fastnet.MLP([20, 16, 5], seed=4, backend="cpu")
    xb, yb = X[:BS], Y[:BS]
    la = a.train_on_batch(xb, yb, class_weight=cw)
    lb = b.train_on_batch(xb, yb, sample_weight=np.vectorize(lambda c: cw.get(c, 1.0))(yb))
    assert la == lb
    assert all(np.array_equal(a.get_weights()[k], b.get_weights()[k]) for k in a.get_weights())
    with pytest.raises(ValueError, match="needs the whole training set's class counts"):
        a.train_on_batch(xb, yb, class_weight="balanced")


def test_returns_the_batch_loss_before_the_update_as_evaluate_does():
    m = fastnet.MLP([20, 16, 5], seed=5, backend="cpu")
    m.build(20)
    before = m.evaluate(X[:BS], Y[:BS])
    result = m.train_on_batch(X[:BS], Y[:BS])
    assert isinstance(result, list) and len(result) == 2
    assert result[0] == pytest.approx(before[0], rel=1e-5) and result[1] == before[1]
    assert set(m.train_on_batch(X[:BS], Y[:BS], return_dict=True)) == {"loss", "accuracy"}
    reg = fastnet.MLP([20, 8, 1], loss="mse", seed=0, backend="cpu")
    t = X[:, 0] * 2.0
    assert isinstance(reg.train_on_batch(X[:BS], t[:BS]), float)
    assert reg.train_on_batch(X[:BS], t[:BS], return_dict=True).keys() == {"loss"}


def test_builds_the_model_and_attaches_fits_default_optimizer():
    seq = fastnet.Sequential([fastnet.Dense(8, "relu"), fastnet.Dense(5, "softmax")], seed=0, backend="cpu")
    seq.train_on_batch(X[:10], Y[:10])
    assert seq.built and seq.n_features_in_ == 20
    assert isinstance(seq.optimizer_, fastnet.Adam) and seq.optimizer_.lr == 1e-3 and seq.optimizer_.t == 1
    # an optimizer attached before the input size is known is the one used
    seq2 = fastnet.Sequential([fastnet.Dense(8, "relu"), fastnet.Dense(5, "softmax")], seed=0, backend="cpu")
    sgd = seq2.attach_optimizer(fastnet.SGD(lr=0.05))
    seq2.train_on_batch(X[:10], Y[:10])
    assert seq2.optimizer_ is sgd and sgd.t == 1


def test_a_bad_batch_is_refused_with_fits_messages_and_changes_nothing():
    m = fastnet.MLP([20, 16, 5], seed=6, backend="cpu")
    m.train_on_batch(X[:BS], Y[:BS])
    before, t = m.get_weights(), m.optimizer_.t
    bad = X[:BS].copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.train_on_batch(bad, Y[:BS])
    with pytest.raises(ValueError, match=r"labels other than class ids in \[0, 5\)"):
        m.train_on_batch(X[:BS], Y[:BS] + 5)
    with pytest.raises(ValueError, match="features per sample"):
        m.train_on_batch(X[:BS, :10], Y[:BS])
    with pytest.raises(ValueError, match="different lengths"):
        m.train_on_batch(X[:BS], Y[:BS - 1])
    with pytest.raises(ValueError, match="integer class ids.*loss=\"mse\""):
        m.train_on_batch(X[:BS], X[:BS, 0])
    after = m.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before) and m.optimizer_.t == t
    # lists, float64 rows and labels of a fitted model's classes_ take fit's path
    lab = fastnet.MLP([20, 8, 5], seed=0, backend="cpu")
    names = np.array(list("abcde"))[Y]
    lab.fit(X, names, epochs=1)
    loss, acc = lab.train_on_batch(X[:BS].astype(np.float64).tolist(), names[:BS].tolist())
    assert np.isfinite(loss) and 0 <= acc <= 1


def test_a_step_allocates_no_array():
    m = fastnet.MLP([784, 64, 10], seed=0, backend="cpu")
    xb = RNG.random((BS, 784))  # float64: copied into the model's float32 buffer
    yb = RNG.integers(0, 10, BS)
    for _ in range(3):
        m.train_on_batch(xb, yb)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(20):
            m.train_on_batch(xb, yb)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 16_000, peak  # a batch is 128 x 784 x 4 = 401,408 bytes


# ----------------------------------------------------------------------------- PyTorch
def _torch_twin(model, torch, dtype):
    layers = []
    dense = [layer for layer in model.layers if isinstance(layer, fastnet.Dense)]
    for i, layer in enumerate(dense):
        lin = torch.nn.Linear(layer.n_in, layer.units).to(getattr(torch, dtype))
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(layer.W).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(layer.b)))
        layers.append(lin)
        if i < len(dense) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_same_steps_as_pytorch(name, dtype):
    torch = pytest.importorskip("torch")
    model = fastnet.MLP([20, 32, 16, 5], seed=7, backend="cpu", dtype=dtype)
    opt = model.attach_optimizer(fastnet.SGD(lr=0.1) if name == "sgd" else fastnet.Adam(learning_rate=1e-2))
    net = _torch_twin(model, torch, dtype)
    topt = (torch.optim.SGD(net.parameters(), lr=0.1) if name == "sgd"
            else torch.optim.Adam(net.parameters(), lr=1e-2, betas=(opt.beta1, opt.beta2), eps=opt.eps))
    lossf = torch.nn.CrossEntropyLoss()
    for _ in range(3):
        for xb, yb in batches(X, Y):
            ours, _ = model.train_on_batch(xb, yb)
            topt.zero_grad()
            loss = lossf(net(torch.from_numpy(xb.astype(dtype))), torch.from_numpy(yb))
            loss.backward()
            topt.step()
            assert ours == pytest.approx(loss.item(), rel=1e-9 if dtype == "float64" else 1e-5)
    dense = [layer for layer in model.layers if isinstance(layer, fastnet.Dense)]
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for layer, lin in zip(dense, linears):
        np.testing.assert_allclose(layer.W, lin.weight.detach().numpy().T, atol=1e-5, rtol=0)
        np.testing.assert_allclose(layer.b, lin.bias.detach().numpy(), atol=1e-5, rtol=0)
    assert opt.t == 18

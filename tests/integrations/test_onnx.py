"""ONNX export (issue 13, item 4): every activation of the kernel table, each output kind;
ONNX Runtime's outputs equal fastnet's on 1,000 MNIST rows; the checker passes."""
import subprocess
import sys

import numpy as np
import pytest

import fastnet
from fastnet.cli import load_mnist_arrays
from fastnet.kernels.reference import ACTIVATIONS, ONNX_OPS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def mnist():
    # opt-out kept: a subset (cost; the export's agreement with predict does not depend on the size)
    (X, y), (Xt, yt) = load_mnist_arrays(subset=2000)
    return X, y, Xt[:1000]


def run_onnx(proto, X):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["Y"], {"X": X})[0]


def trained(X, y, activation="relu", output=None, loss=None, dropout=0.0):
    model = fastnet.MLP([784, 32, 16, 10 if output != "sigmoid" else 1], activation=activation, output=output,
                        loss=loss, dropout=dropout, backend="cpu", seed=0)
    target = y if output is None else (y[:, None] % 2 if output == "sigmoid" else np.eye(10)[y])
    model.fit(X, target, epochs=2, batch_size=128, optimizer="adam", lr=2e-3)
    return model


def test_every_activation_of_the_table_has_an_onnx_form():
    assert all(ONNX_OPS.get(a) for a in ACTIVATIONS) and ONNX_OPS["softmax"] == ("Softmax", {"axis": 1})


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_hidden_activations_match_onnx_runtime(mnist, activation):
    X, y, Xt = mnist
    model = trained(X, y, activation=activation, dropout=0.1)
    proto = model.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert not any(n.op_type == "Dropout" for n in proto.graph.node)
    got = run_onnx(proto, Xt)
    np.testing.assert_allclose(got, model.predict_proba(Xt), rtol=1e-5, atol=1e-5)
    assert (got.argmax(axis=1) == model.predict(Xt)).mean() > 0.999


@pytest.mark.parametrize("output, loss", [("sigmoid", None), ("linear", "mse")])
def test_sigmoid_and_linear_outputs_match_onnx_runtime(mnist, output, loss):
    X, y, Xt = mnist
    model = trained(X, y, output=output, loss=loss)
    got = run_onnx(model.to_onnx(), Xt)
    want = model.predict_proba(Xt)[:, 1:] if output == "sigmoid" else model.predict(Xt)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    last = model.to_onnx().graph.node[-1].op_type
    assert last == ("Sigmoid" if output == "sigmoid" else "Identity")


def test_unfitted_model_is_refused():
    with pytest.raises(fastnet.NotFittedError, match="to_onnx"):
        fastnet.MLP([4, 3], backend="cpu").to_onnx()


def test_cli_export_writes_a_file_onnx_runtime_runs(mnist, tmp_path):
    X, y, Xt = mnist
    model = trained(X, y, activation="gelu")
    model.save(tmp_path / "m.npz")
    proc = subprocess.run([sys.executable, "-m", "fastnet", "export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "opset 20" in proc.stdout and "Gelu" in proc.stdout
    got = run_onnx(onnx.load(tmp_path / "m.onnx"), Xt[:50])
    np.testing.assert_allclose(got, model.predict_proba(Xt[:50]), rtol=1e-5, atol=1e-5)

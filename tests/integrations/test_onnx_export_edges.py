"""ONNX export, where the mutation audit found bugs the other tests let through (issue 27,
item 3): a float64 model's parameters written as float64 initializers into a float32
graph, and the pinned IR version.

Oracles: ONNX Runtime running the exported graph (against ``predict_proba``), and the
module's docstring (float32 input ``X``; opset 20 and IR version 9, pinned).
"""
import numpy as np
import pytest

import fastnet

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(proto, X):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["Y"], {"X": X})[0]


def test_a_float64_model_exports_a_float32_graph_onnx_runtime_runs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    model = fastnet.MLP([6, 8, 3], dtype="float64", backend="cpu", seed=0)
    model.fit(X, y, epochs=3, batch_size=16, lr=1e-2)
    proto = model.to_onnx()
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in proto.graph.initializer)
    got = _run(proto, X.astype(np.float32))
    np.testing.assert_allclose(got, model.predict_proba(X), rtol=1e-4, atol=1e-5)


def test_the_opset_and_the_ir_version_are_the_pinned_ones(tmp_path):
    model = fastnet.MLP([3, 2], backend="cpu", seed=0).build(3)
    proto = model.to_onnx(tmp_path / "m.onnx")
    assert proto.ir_version == 9
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 20)]
    again = onnx.load(str(tmp_path / "m.onnx"))
    assert again.ir_version == 9
    X = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(_run(again, X), model.predict_proba(X), rtol=1e-5, atol=1e-6)

"""ONNX export: ``model.to_onnx(path)`` and ``fastnet export model.npz model.onnx``.

The graph is the model at inference: per Dense layer ``MatMul`` + ``Add`` and the
activation's operator (from the kernel table's ``ONNX_OPS``: ``Relu``,
``Sigmoid``, ``Tanh``, ``LeakyRelu``, ``Gelu`` with ``approximate="tanh"``...),
Dropout omitted, then the output activation the loss owns (``Softmax`` over the
classes, ``Sigmoid``; nothing for regression).  Input ``X`` is float32
``(batch, n_features)`` with a free batch dimension; the output ``Y`` holds what
``predict_proba`` returns for softmax classifiers (the probabilities), the sigmoid
probabilities per output for binary ones, the values for regression.

The opset (20, the first with ``Gelu``) and the IR version (9) are pinned to what a
current ONNX Runtime reads.  Needs ``pip install ".[onnx]"`` (``onnx``, and
``onnxruntime`` to run the result).
"""
from __future__ import annotations

import os

import numpy as np

from fastnet.kernels.reference import ONNX_OPS
from fastnet.core.layers import Dense, canonical_activation

#: The ONNX opset and IR version of exported graphs.
OPSET = 20
IR_VERSION = 9
INSTALL_HINT = 'ONNX export needs the onnx package: pip install ".[onnx]" in fastnet\'s clone'


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return onnx


def _activation_node(helper, name, x, out):
    op = ONNX_OPS.get(name)
    if op is None:
        raise ValueError(f"activation {name!r} has no ONNX form in the kernel table (ONNX_OPS): "
                         "register one with onnx=(op_type, attributes)")
    op_type, attrs = op
    return helper.make_node(op_type, [x], [out], name=out, **attrs)


def to_onnx(model, path=None):
    """The model as an ``onnx.ModelProto`` (checked with ``onnx.checker``); written to
    ``path`` too when given.  The model must be fitted (or built)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    model._check_fitted("to_onnx")
    nodes, inits = [], []
    x = "X"
    weights = model.get_weights()
    for layer in model.layers:
        if not isinstance(layer, Dense):  # Dropout: identity at inference
            continue
        W = weights[f"{layer.name}.W"].astype(np.float32)
        inits.append(numpy_helper.from_array(W, f"{layer.name}.W"))
        nodes.append(helper.make_node("MatMul", [x, f"{layer.name}.W"], [f"{layer.name}.matmul"],
                                      name=f"{layer.name}.matmul"))
        x = f"{layer.name}.matmul"
        if layer.use_bias:
            inits.append(numpy_helper.from_array(weights[f"{layer.name}.b"].astype(np.float32), f"{layer.name}.b"))
            nodes.append(helper.make_node("Add", [x, f"{layer.name}.b"], [f"{layer.name}.z"], name=f"{layer.name}.add"))
            x = f"{layer.name}.z"
        if layer.kernel_activation != "identity":
            nodes.append(_activation_node(helper, layer.kernel_activation, x, f"{layer.name}.a"))
            x = f"{layer.name}.a"
    output = model.loss_.fused_activation or canonical_activation(None)
    nodes.append(_activation_node(helper, output, x, "Y"))
    graph = helper.make_graph(
        nodes, f"fastnet_{type(model).__name__}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", model.n_features_in_])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", model.n_outputs_])],
        initializer=inits,
    )
    proto = helper.make_model(graph, producer_name="fastnet", opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        from fastnet.core.npzfile import atomic_write

        atomic_write(os.fspath(path), lambda f: f.write(proto.SerializeToString()))
    return proto

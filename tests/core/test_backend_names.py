"""Names: a layer's Backend object is ``backend_`` (set by build), as the model's; a Backend's
KernelSet is ``kernel_set`` (``kernels`` is the setting's name, ``"fused"`` or ``"reference"``,
on the model).  The old names still read, with a DeprecationWarning."""
import warnings

import numpy as np
import pytest

import fastnet
import fastnet.kernels.reference


def test_a_built_layer_names_its_backend_object_as_the_model_does():
    model = fastnet.MLP([4, 8, 3], seed=0)
    model.fit(np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32),
              np.arange(40) % 3, epochs=1, verbose=0)
    dense = model.layers[0]
    assert dense.backend_ is model.backend_ and model.backend == model.backend_.name
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # nothing in a fit or predict reads the old name
        model.fit(np.ones((8, 4), np.float32), np.arange(8) % 3, epochs=1, verbose=0)
        model.predict(np.ones((2, 4), np.float32))
    with pytest.warns(DeprecationWarning, match="Layer.backend_"):
        assert dense.backend is model.backend_
    with pytest.warns(DeprecationWarning, match="Layer.backend_"):  # a custom layer's build setting it
        dense.backend = model.backend_
    assert dense.backend_ is model.backend_ and "backend" not in vars(dense)


def test_the_backends_kernel_table_is_kernel_set_and_kernels_names_the_setting():
    model = fastnet.MLP([4, 8, 3], kernels="reference", seed=0)
    model.build(4)
    b = model.backend_
    assert model.kernels == b.kernels_name == "reference"
    assert b.kernel_set.relu_fwd is fastnet.kernels.reference.relu_fwd
    with pytest.warns(DeprecationWarning, match="Backend.kernel_set"):
        assert b.kernels is b.kernel_set
    table = b.kernel_set
    with pytest.warns(DeprecationWarning, match="Backend.kernel_set"):
        b.kernels = table
    assert b.kernel_set is table and "kernels" not in vars(b)

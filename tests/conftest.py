"""Shared fixtures: backends and kernel sets to parametrize over."""
import numpy as np
import pytest

import fastnet

# Backends usable here; cuda joins on a GPU machine, cuda-sim runs in its own process.
BACKENDS = [b for b in fastnet.available_backends() if b != "cuda-sim"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=["fused", "reference"])
def kernels(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

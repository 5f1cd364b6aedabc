"""Shared fixtures: backends and kernel sets to parametrize over."""
import os

import numpy as np
import pytest

# fit's BLAS thread tuner (fastnet.threads) chooses by timing, and OpenBLAS's results differ
# in the last bits between thread counts: the suite compares runs bit for bit, so it trains
# with the thread count as configured. tests/test_thread_tuner.py turns the tuner back on.
os.environ.setdefault("FASTNET_THREADS", "fixed")

import fastnet  # noqa: E402

# Backends usable here; cuda joins on a GPU machine, cuda-sim runs in its own process.
BACKENDS = [b for b in fastnet.available_backends() if b != "cuda-sim"]


def pytest_collection_modifyitems(config, items):
    """Inside the README test's own run of the suite (tests/test_readme_commands.py, which
    CI runs) the tests marked ``processes`` or ``once`` are skipped: the outer run has just
    run them, and running them twice would take CI past its 20 minutes."""
    if os.environ.get("FASTNET_README_NESTED"):
        skip = pytest.mark.skip(reason="run by the outer run of the suite; not again in the README test's run")
        for item in items:
            if item.get_closest_marker("processes") or item.get_closest_marker("once"):
                item.add_marker(skip)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=["fused", "reference"])
def kernels(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

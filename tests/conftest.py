"""Shared fixtures: backends and kernel sets to parametrize over."""
import os

import numpy as np
import pytest

# fit's BLAS thread tuner (fastnet.backends.threads) chooses by timing, and OpenBLAS's results differ
# in the last bits between thread counts: the suite compares runs bit for bit, so it trains
# with the thread count as configured. tests/backends/test_thread_tuner.py turns the tuner back on.
os.environ.setdefault("FASTNET_THREADS", "fixed")

import fastnet  # noqa: E402

# Backends usable here; cuda joins on a GPU machine, cuda-sim runs in its own process.
BACKENDS = [b for b in fastnet.available_backends() if b != "cuda-sim"]


def _runs_readme_test():
    return bool(os.environ.get("CI") or os.environ.get("FASTNET_README_TEST"))


def pytest_collection_modifyitems(config, items):
    """Each test runs once per CI, in one of two runs of the suite.

    CI (``.ci/run``) runs the suite, and inside it ``tests/test_readme_commands.py`` runs
    README's second command, the whole suite again, in a fresh clone (``FASTNET_README_NESTED``
    set there).  The tests marked ``processes`` or ``once`` run in the outer run only; the
    others run in the nested run only when ``FASTNET_CI_SPLIT=1`` (``.ci/run`` sets it), so
    CI runs no test twice; without it (a local run, ``FASTNET_README_TEST=1``) the outer
    run runs everything."""
    marked = lambda item: item.get_closest_marker("processes") or item.get_closest_marker("once")  # noqa: E731
    if os.environ.get("FASTNET_README_NESTED"):
        skip = pytest.mark.skip(reason="run by the outer run of the suite; not again in the README test's run")
        for item in items:
            if marked(item):
                item.add_marker(skip)
    elif os.environ.get("FASTNET_CI_SPLIT") == "1":
        if not _runs_readme_test():
            raise pytest.UsageError("FASTNET_CI_SPLIT=1 leaves the unmarked tests to the README test's nested "
                                    "run, which runs only with CI or FASTNET_README_TEST set")
        skip = pytest.mark.skip(reason="run by the README test's nested run of the suite (FASTNET_CI_SPLIT=1)")
        for item in items:
            if not marked(item):
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

"""pytest-benchmark: MNIST training throughput, one epoch per round.

    pytest bench/test_bench_mnist.py --benchmark-json=bench-mnist.json

Each benchmark is one system (fastnet fused, fastnet reference, fastnet on CUDA
when usable, PyTorch CPU, scikit-learn, the tutorials' NumPy loop) on one
configuration of ``fastnet.cli.bench.systems.CONFIGS``.  One warm-up epoch (JIT
compilation, caches) runs before timing; GPU rounds synchronise inside the
timed function.  ``extra_info`` holds samples/s, GFLOP/s, and the GEMM ceiling
measured in the same session at the same shapes (NumPy float32 GEMMs), with
the fraction of it reached.  Ratios between systems are in ``fastnet bench``,
which interleaves the rounds of all systems; read pytest-benchmark's own
comparison columns with the caution that its rounds run one system after
another.
"""
import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from fastnet.cli.bench import systems as B  # noqa: E402
from fastnet.cli import load_mnist_arrays  # noqa: E402

SYSTEMS = {s.name: s for s in B.available_systems()}
_CEILINGS = {}


@pytest.fixture(scope="module")
def mnist():
    (X, y), _ = load_mnist_arrays()
    return X, y


@pytest.mark.parametrize("system", sorted(SYSTEMS))
@pytest.mark.parametrize("config", list(B.CONFIGS))
def test_epoch(benchmark, mnist, config, system):
    X, y = mnist
    cfg = B.CONFIGS[config]
    sizes = B.sizes(cfg)
    if config not in _CEILINGS:
        _CEILINGS[config] = B.gemm_ceiling(sizes, cfg["batch_size"])
    s = SYSTEMS[system]
    s.setup(X, y, cfg, 0)
    order = np.random.default_rng(0).permutation(len(X))
    Xo, yo = X[order], y[order]
    s.epoch(Xo, yo)  # warm-up
    s.synchronize()

    def one_epoch():
        s.epoch(Xo, yo)
        s.synchronize()

    benchmark.group = config
    benchmark.pedantic(one_epoch, rounds=3, iterations=1)
    sps = len(X) / benchmark.stats.stats.median
    gflops = B.flops_per_sample(sizes) * sps / 1e9
    benchmark.extra_info.update({
        "samples_per_s": sps, "gflops": gflops, "gemm_ceiling_gflops": _CEILINGS[config],
        "fraction_of_ceiling": gflops / _CEILINGS[config],
    })

"""pytest-benchmark: fused CPU kernels and reference kernels, side by side.

    pytest bench/test_bench_kernels.py --benchmark-min-rounds=20

The cases are those of ``bench/bench_kernels.py`` (the standalone script that
prints the speed-up table); here each case is two benchmarks, ``fused`` and
``reference``, in one group per kernel/shape/dtype, so pytest-benchmark's
table shows them next to each other.  Warm-up (JIT or cache load, first-touch
page faults) happens before timing; every round runs enough calls to last
~0.1 ms, except where repeated in-place calls would drift into denormals:
those restore their inputs before each single-call round.
"""
import time

import pytest

pytest.importorskip("pytest_benchmark")
pytest.importorskip("numba")

import bench_kernels  # noqa: E402  (bench/ is on sys.path: pytest inserts the test's folder)

from fastnet.kernels import cpu, reference  # noqa: E402

CASES = bench_kernels.cases()
MODULES = {"fused": cpu, "reference": reference}


@pytest.mark.parametrize("impl", list(MODULES))
@pytest.mark.parametrize("case", CASES, ids=[c.group.replace(" ", "-") for c in CASES])
def test_kernel(benchmark, request, case, impl):
    fn, restore = case.instantiate(MODULES[impl])
    for _ in range(3):
        restore()
        fn()
    restore()
    t0 = time.perf_counter()
    fn()
    single = max(time.perf_counter() - t0, 1e-7)
    rounds = max(20, request.config.getoption("benchmark_min_rounds") or 0)
    benchmark.group = case.group
    benchmark.extra_info.update(kernel=case.kernel, shape=list(case.shape), dtype=str(case.dtype.__name__), impl=impl)
    if case.max_reps < 1000:
        # Drift-prone in place (dz = dy * f'(a) again and again): fresh inputs each round.
        benchmark.pedantic(fn, setup=restore, rounds=rounds, iterations=1, warmup_rounds=1)
    else:
        iterations = int(min(case.max_reps, max(1, round(1e-4 / single))))
        restore()
        benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)

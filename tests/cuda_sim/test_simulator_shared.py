"""numba's simulator gives every thread of a block one shared array (fastnet.kernels.cuda
puts a lock around the simulator's check-then-make of it)."""
import sys
import threading

import numpy as np

import fastnet.kernels.cuda  # noqa: F401  (applies the lock)


def test_every_thread_of_a_block_gets_the_same_shared_array():
    # Without the lock, 16 threads asking at once (as a block's threads do in the first
    # statement of a reduction kernel) got more than one array in about 1 round of 6 here;
    # a reduction then read another array's uninitialised memory.
    from numba.cuda.simulator import kernelapi

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(50):
            shared = kernelapi.FakeCUDAShared(0)
            barrier, got = threading.Barrier(16), []

            def ask():
                barrier.wait()
                got.append(shared.array(8, np.float32))

            threads = [threading.Thread(target=ask) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(got) == 16 and len({id(a) for a in got}) == 1
            # a second call site is an array of its own, as the simulator keys them
            assert shared.array(8, np.float32) is not got[0]
    finally:
        sys.setswitchinterval(old)

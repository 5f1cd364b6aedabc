"""The CuPy contract: the part of CuPy fastnet uses, checked against the real CuPy and simulated for the cuda-sim backend."""

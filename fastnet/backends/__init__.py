"""Devices, precisions, thread counts and GEMM providers."""

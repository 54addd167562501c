"""The float32 GEMM peak of this machine: the ceiling of any im2col convolution.

    python -m benchmarks.gemm            # GFLOP/s at 1 and 2 threads, and the BLAS kernel

An im2col convolution spends its time in one matrix product (plus the copies
around it), so the fastest it can possibly run is the speed of NumPy's BLAS
on a large square float32 product. benchmarks/conv.py measures that peak in
the same run as the convolutions and reports each convolution as a fraction
of it.
"""

from __future__ import annotations

import time

import numpy as np


def blas_info() -> dict:
    """The BLAS library NumPy calls, as threadpoolctl sees it (name, version, kernel, threads)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"blas": "unknown (threadpoolctl not installed)"}
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return {
                "blas": pool.get("internal_api"),
                "blas_version": pool.get("version"),
                "blas_kernel": pool.get("architecture"),
                "blas_threads": pool.get("num_threads"),
            }
    return {"blas": "not found by threadpoolctl"}


def gemm_peak(size: int = 1024, repeats: int = 10, clock=time.perf_counter) -> float:
    """GFLOP/s of the fastest of `repeats` float32 (size x size) @ (size x size) products.

    A product of two n x n matrices takes 2 n^3 floating-point operations.
    Run it inside `threadpool_limits(t)` to measure t threads.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    for _ in range(3):  # warm-up: threads started, pages touched
        np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        np.matmul(a, b, out=out)
        best = min(best, clock() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    from threadpoolctl import threadpool_limits

    print(blas_info())
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            print(f"{threads} thread(s): {gemm_peak():.1f} GFLOP/s (float32, 1024^3)")


if __name__ == "__main__":
    main()

"""The float32 GEMM peak of this machine: the ceiling of any im2col convolution.

    python -m benchmarks.gemm            # GFLOP/s at 1 and 2 threads, and the BLAS kernel
    python -m benchmarks.gemm --shapes 64x576x1024 576x64x1024 576x1024x64

An im2col convolution spends its time in one matrix product (plus the copies
around it), so the fastest it can possibly run is the speed of NumPy's BLAS
on a large square float32 product. benchmarks/conv.py measures that peak in
the same run as the convolutions and reports each convolution as a fraction
of it.

BLAS does not reach that peak on every shape. `--shapes MxKxN ...` times the
products (M, K) @ (K, N) themselves, so that a convolution's own GEMMs can be
set beside the peak. With K = C*KH*KW and P = the pixels of one batch chunk
(images per chunk * OH * OW, see conv_arrays.plan), a conv2d step makes

    forward          (C_out, K) @ (K, P)        C_out x K x P
    input gradient   (K, C_out) @ (C_out, P)    K x C_out x P
    weight gradient  (K, P) @ (P, C_out)        K x P x C_out   (C_out x P x K when K < C_out)

e.g. 64x576x1024 576x64x1024 576x1024x64 for the generic (32,64,32,32)x(64,64,3,3)
layer, whose chunks hold one image (P = 32*32).
"""

from __future__ import annotations

import argparse
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
    return product_rate(size, size, size, repeats, clock)


def product_rate(M: int, K: int, N: int, repeats: int = 20, clock=time.perf_counter) -> float:
    """GFLOP/s of the fastest of `repeats` float32 products (M, K) @ (K, N): 2 M K N operations."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    out = np.empty((M, N), dtype=np.float32)
    for _ in range(3):  # warm-up: threads started, pages touched
        np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        np.matmul(a, b, out=out)
        best = min(best, clock() - start)
    return 2 * M * K * N / best / 1e9


def _shape(text: str) -> tuple[int, int, int]:
    try:
        M, K, N = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MxKxN, e.g. 64x576x1024, got {text!r}"
        ) from None
    if min(M, K, N) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return M, K, N


def main(argv: list[str] | None = None) -> None:
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gemm")
    parser.add_argument("--shapes", type=_shape, nargs="*", default=[], help="MxKxN products")
    args = parser.parse_args(argv)

    print(blas_info())
    for threads in (1, 2):
        # one thread: this thread's CPU time, which other processes barely disturb
        clock = time.thread_time if threads == 1 else time.perf_counter
        with threadpool_limits(threads, user_api="blas"):
            peak = gemm_peak(clock=clock)
            print(f"{threads} thread(s): {peak:.1f} GFLOP/s (float32, 1024^3)")
            for M, K, N in args.shapes:
                rate = product_rate(M, K, N, clock=clock)
                print(f"    {M}x{K}x{N}: {rate:.1f} GFLOP/s ({rate / peak:.0%} of the peak)")


if __name__ == "__main__":
    main()

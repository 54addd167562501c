"""Lanes: one convolution's batch split over the CPU's threads, one BLAS thread in each.

A convolution on the CPU is a chain: im2col, a GEMM, a transposed copy, and
col2im in the backward pass. Left to itself, NumPy's BLAS (OpenBLAS) spreads
each GEMM over all its threads, but everything around the GEMMs runs on the
calling thread while the other cores wait. A lane instead takes a share of
the batch and runs the whole chain for it, im2col to col2im, with BLAS held to
one thread; with one lane per core, every core works through every part of
the convolution.

Lanes are used only inside `with lanes.threads():` (the training loop and the
benchmarks enter it), which holds BLAS at one thread for as long as it lasts.
That is not a detail. After each multi-threaded GEMM, OpenBLAS's idle threads
spin for up to about 0.1 s before they sleep, and a lane started in that time
shares its core with a spinning thread. Lanes between multi-threaded GEMMs
made a DCGAN-28 training step 1.4x slower; with BLAS at one thread throughout,
0.88x the time of the step without lanes (2 cores, median of 10 pairs of
blocks).

Rules that keep the result exact and deterministic:

- each lane owns a contiguous run of batch chunks and writes the outputs of
  its own images only: no two threads ever write the same element;
- what lanes must add up (the weight gradient, summed over the batch) each
  lane sums apart, and the partial sums are added afterwards in lane order,
  so the result does not depend on which thread finished first. (It can
  differ in the last bits from the one-lane result, which adds the chunks in
  another order.)

Work on cupy arrays never uses lanes: the GPU runs it all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

_lanes = 1  # lanes for CPU convolutions now: above 1 only inside `threads()`
_blas: Any = None  # threadpoolctl's handles on the BLAS libraries NumPy loaded
_pool: ThreadPoolExecutor | None = None
_inside = threading.local()  # .active is True on a thread that is running a lane


def _blas_libraries() -> list:
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas


@contextmanager
def threads(n: int | None = None) -> Iterator[int]:
    """Run CPU convolutions in `n` lanes (default: BLAS's thread count), BLAS at one thread.

    Yields the number of lanes. On leaving, BLAS gets its thread count back. Nested
    uses keep the outer number unless they give their own.
    """
    global _lanes
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"lanes.threads: n must be a positive int or None, got {n!r}")
    libraries = _blas_libraries()
    before = [lib.num_threads for lib in libraries]
    outer = _lanes
    if n is None:
        n = outer if outer > 1 else max([1] + before)
    for lib in libraries:
        lib.set_num_threads(1)
    _lanes = n
    try:
        yield n
    finally:
        _lanes = outer
        for lib, count_before in zip(libraries, before):
            lib.set_num_threads(count_before)


def count() -> int:
    """The lanes a convolution started now would use (1 outside `threads()` and in a lane)."""
    return 1 if getattr(_inside, "active", False) else _lanes


def split(items: Sequence, n: int) -> list[list]:
    """`items` cut into n contiguous runs of (nearly) equal length, none empty (5, 2: 3 + 2)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    runs, start = [], 0
    for lane in range(n):
        stop = start + size + (lane < extra)
        runs.append(list(items[start:stop]))
        start = stop
    return runs


def run(work: Callable[[list], Any], items: Sequence, n: int) -> list:
    """[work(run) for run in split(items, n)], each run on its own thread.

    The calling thread takes the first run itself. Returns the results in lane
    order; an exception in any lane is raised here, after every lane has ended.
    """
    runs = split(items, n)
    if len(runs) == 1:
        return [work(runs[0])]
    global _pool
    if _pool is None or _pool._max_workers < len(runs) - 1:
        _pool = ThreadPoolExecutor(max_workers=len(runs) - 1, thread_name_prefix="tinygen-lane")
    others = [_pool.submit(_in_lane, work, lane_run) for lane_run in runs[1:]]
    try:
        first = _in_lane(work, runs[0])
    finally:
        wait(others)  # no lane outlives the call, even when the first one failed
    return [first] + [future.result() for future in others]


def _in_lane(work: Callable[[list], Any], lane_run: list) -> Any:
    _inside.active = True
    try:
        return work(lane_run)
    finally:
        _inside.active = False

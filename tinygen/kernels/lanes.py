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
  lane sums apart, and the partial sums are added afterwards in lane order
  (`run_summed`),
  so the result does not depend on which thread finished first. (It can
  differ in the last bits from the one-lane result, which adds the chunks in
  another order.)

The layers between convolutions use lanes as well (`over_range`): the ReLU and
LeakyReLU of a large array are cut into one flat piece per lane, batch
normalization into one run of channels per lane.

Work on cupy arrays never uses lanes: the GPU runs it all.

The calling thread runs the first lane; lanes 2, 3, ... run on this module's
own worker threads, made on first use. The end of the file says how they wait
for work, and why they poll a flag for a moment before they sleep.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

_lanes = 1  # lanes for CPU convolutions now: above 1 only inside `threads()`
_workers: list[_Worker] = []  # the threads that run lanes 2, 3, ... (created on first use)
_run_lock = threading.Lock()  # one run() at a time owns the workers
_inside = threading.local()  # .active is True on a thread that is running a lane


def _blas_libraries() -> list:
    """threadpoolctl's handles on every BLAS library loaded now (under 1 ms).

    Asked anew on each `threads()`: a library loaded later (SciPy brings its own
    OpenBLAS) would otherwise keep all its threads.
    """
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


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
    (When another thread is already running lanes, the runs go one after the
    other on this thread instead.)
    """
    runs = split(items, n)
    if len(runs) == 1 or not _run_lock.acquire(blocking=False):
        return [_in_lane(work, lane_run) for lane_run in runs]
    try:
        while len(_workers) < len(runs) - 1:
            _workers.append(_Worker(len(_workers) + 1))
        for worker, lane_run in zip(_workers, runs[1:]):
            worker.submit(work, lane_run)
        outcomes = [_outcome(work, runs[0])]
        outcomes += [worker.outcome() for worker in _workers[: len(runs) - 1]]
    finally:
        _run_lock.release()
    for ok, value in outcomes:
        if not ok:
            raise value
    return [value for _, value in outcomes]


def run_summed(work: Callable[[list], Any], items: Sequence, n: int) -> Any:
    """The sum of `run(work, items, n)`'s results, added in lane order (into the first):
    the same sum, to the last bit, whichever lane ended first."""
    shares = run(work, items, n)
    total = shares[0]
    for share in shares[1:]:
        total += share
    return total


def over_range(work: Callable[[int, int], Any], size: int, elements: int | None = None) -> None:
    """work(start, stop) over [0, size), the range cut into one piece per lane.

    For kernels whose pieces are independent: the rectifiers over a flat array,
    batch normalization over its channels. Each lane writes its own piece of the
    output. When the whole range touches fewer than RANGE_MIN_ELEMENTS array
    elements (`elements`, by default `size`), or with one lane, work(0, size)
    runs here alone: handing a piece to another thread costs tens of microseconds.
    """
    n = count()
    if n < 2 or size < 2 or (size if elements is None else elements) < RANGE_MIN_ELEMENTS:
        work(0, size)
        return
    pieces = [(lane * size // n, (lane + 1) * size // n) for lane in range(n)]
    run(lambda lane_run: [work(start, stop) for start, stop in lane_run], pieces, n)


# over_range() splits ranges of at least this many elements. Measured on the 2-core
# machine, training steps at batch 64 in blocks alternating with nothing split (arrays of
# 200,000 to 800,000 elements): ConvVAE-28 0.96-0.97 of the time (the rectifiers), DCGAN-28
# 0.94 (the rectifiers and batch normalization; 0.99 with the rectifiers alone).
RANGE_MIN_ELEMENTS = 1 << 16


def _in_lane(work: Callable[[list], Any], lane_run: list) -> Any:
    _inside.active = True
    try:
        return work(lane_run)
    finally:
        _inside.active = False


def _outcome(work: Callable[[list], Any], lane_run: list) -> tuple[bool, Any]:
    """(True, result) or (False, the exception): a lane's outcome, raised by run() later."""
    try:
        return True, _in_lane(work, lane_run)
    except BaseException as error:  # noqa: BLE001 (re-raised by run() once every lane ended)
        return False, error


# ---------------------------------------------------------------------------
# The worker threads, and why they poll before they sleep
# ---------------------------------------------------------------------------
#
# A thread that sleeps (on a lock, an Event, a queue) leaves its core idle, and
# on a virtual machine an idle core is handed back to the host. Waking it again
# took 12 microseconds right after it had worked, 52 after 1 ms idle and 125
# after 5 ms (seen here, a ThreadPoolExecutor on the 2-core machine), paid once
# to start a lane and once more to wake the caller at its end, some 15 times
# per ConvVAE training step. So a worker that has finished a lane keeps polling
# its flag for SPIN_SECONDS before it sleeps, as OpenMP's threads do (PyTorch's
# included), and the caller polls for the end of the lanes in the same way. The
# polling runs in a Numba kernel that releases the GIL (cpu.wait_for_flag) and
# offers its core to other threads every few microseconds (its docstring says
# why); without Numba, the threads sleep at once. Measured on the 2-core machine,
# training steps at batch 64 in blocks alternating with SPIN_SECONDS = 0:
# DCGAN-28 0.94 of the time, ConvVAE-28 0.98 to 1.0.

SPIN_SECONDS = 0.002  # how long an idle thread polls for work before it sleeps


class _Worker:
    """One thread that runs the lanes it is handed, one at a time."""

    def __init__(self, number: int) -> None:
        self.start = _Signal()  # a lane is waiting for this thread
        self.done = _Signal()  # its outcome is ready
        self.task: tuple[Callable[[list], Any], list] | None = None
        self.result: tuple[bool, Any] = (True, None)
        name = f"tinygen-lane-{number}"
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def submit(self, work: Callable[[list], Any], lane_run: list) -> None:
        self.task = (work, lane_run)
        self.start.send()

    def outcome(self) -> tuple[bool, Any]:
        self.done.wait()
        return self.result

    def _serve(self) -> None:
        while True:
            self.start.wait()
            work, lane_run = self.task
            self.result = _outcome(work, lane_run)
            self.task = None
            self.done.send()


class _Signal:
    """A message from one thread to one other: "go on". A flag that the receiver
    polls, and an Event that it sleeps on once it has polled for SPIN_SECONDS.

    The Event is set only for a receiver that sleeps: setting it takes a few
    microseconds, during which the sender holds the GIL that the receiver needs.
    Measured, 2 lanes of 200 us of GIL-free work each: a run took 41 us longer
    than one lane alone with the Event set every time, 30 us with this. (Too
    little to show in a training step: 1.00 of the time.)
    """

    def __init__(self) -> None:
        self.flag = np.zeros(1, dtype=np.int64)  # 1: sent and not yet received
        self.event = threading.Event()
        self.sleeping = False  # True while the receiver is (about to be) asleep on the Event

    def send(self) -> None:
        self.flag[0] = 1  # the flag first, then the look at `sleeping`: see wait()
        if self.sleeping:
            self.event.set()

    def wait(self) -> None:
        """Return once the flag is 1, and set it back to 0: poll, then sleep.

        The polling is one call that holds no GIL from start to end. (Polling in
        short calls with a look at the clock between them took the GIL back every
        few microseconds, and the other thread, waiting for the GIL to start its
        lane, lost the race for it again and again: lanes started up to 2.7 ms
        late.) No signal is lost: the receiver says it sleeps before it looks at
        the flag a last time, the sender sets the flag before it looks at
        `sleeping`, and each does both in that order while holding the GIL. So
        either the receiver sees the flag, or the sender sees `sleeping` and sets
        the Event. A stale Event only wakes the receiver once for nothing.
        """
        poll = _poller()
        if poll is None or not poll(self.flag, int(SPIN_SECONDS * _polls_per_second())):
            self.sleeping = True
            while self.flag[0] == 0:
                self.event.wait()
                self.event.clear()
            self.sleeping = False
        self.flag[0] = 0


_poll: Any = None
_poll_rate: float | None = None


def _poller() -> Any:
    """cpu.wait_for_flag, or None when the Numba kernels cannot be loaded."""
    global _poll
    if _poll is None:
        from tinygen.kernels import _cpu_module

        cpu = _cpu_module()
        _poll = cpu.wait_for_flag if cpu is not None else False
    return _poll or None


def _polls_per_second() -> float:
    """How many looks at a flag wait_for_flag takes per second here (measured once)."""
    global _poll_rate
    if _poll_rate is None:
        poll, unset, polls = _poller(), np.zeros(1, dtype=np.int64), 1_000_000
        poll(unset, 1)  # compiled or loaded from the cache before the clock starts
        start = time.perf_counter()
        poll(unset, polls)
        _poll_rate = polls / max(time.perf_counter() - start, 1e-6)
    return _poll_rate


def _forget_workers_after_fork() -> None:
    """A forked child has none of the parent's threads: it starts its own when it needs them."""
    global _run_lock
    _workers.clear()
    _run_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_workers_after_fork)

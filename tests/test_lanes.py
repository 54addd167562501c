"""Tests of tinygen/kernels/lanes.py and of the convolutions run in lanes.

What they prove: runs are contiguous, cover the work and are never empty;
over_range cuts a range into one piece per lane and keeps small ranges whole;
`threads()` holds BLAS at one thread and gives its thread count back, also
after an error; a lane's exception reaches the caller only after every lane
has ended; and the array convolutions in 2 and 3 lanes equal the one-lane
results in float64 (to round-off: the weight gradient adds its chunks in
another order), repeat bit for bit, and pass gradcheck and gradgradcheck.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

import tinygen as tg
from tinygen.gradcheck import gradcheck, gradgradcheck
from tinygen.kernels import conv_arrays, lanes
from tinygen.nn import functional as F


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def many_chunks(monkeypatch):
    """Every image its own chunk, and lanes even for tiny columns."""
    monkeypatch.setattr(conv_arrays, "COLUMN_BUDGET_BYTES", 1)
    monkeypatch.setattr(conv_arrays, "LANE_MIN_BYTES", 0)


# ---------------------------------------------------------------------------
# split, threads, run
# ---------------------------------------------------------------------------


@given(st.integers(1, 40), st.integers(1, 8))
@settings(derandomize=True, max_examples=80)
def test_split_gives_contiguous_nonempty_runs_of_nearly_equal_length(length, n):
    items = list(range(length))
    runs = lanes.split(items, n)
    assert len(runs) == min(n, length)
    assert [item for run in runs for item in run] == items  # in order, each item once
    sizes = [len(run) for run in runs]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_threads_holds_blas_at_one_thread_and_gives_the_count_back():
    before = _blas_threads()
    assert lanes.count() == 1  # outside threads(): no lanes
    with lanes.threads(3) as n:
        assert n == 3 and lanes.count() == 3
        assert set(_blas_threads()) == {1}
        with lanes.threads():  # nested without a number: keeps the outer one
            assert lanes.count() == 3
        assert lanes.count() == 3
    assert lanes.count() == 1
    assert _blas_threads() == before


def test_threads_also_holds_a_blas_library_loaded_after_its_first_use():
    with lanes.threads(2):
        pass
    pytest.importorskip("scipy.linalg")  # SciPy's own OpenBLAS, loaded now if not before
    with lanes.threads(2):
        assert set(_blas_threads()) == {1}


def test_threads_gives_blas_its_threads_back_after_an_error():
    before = _blas_threads()
    with pytest.raises(KeyError), lanes.threads(2):
        raise KeyError("inside")
    assert _blas_threads() == before and lanes.count() == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_threads_rejects_a_bad_count_by_name(bad):
    with pytest.raises(ValueError, match=r"n must be a positive int or None, got"):
        lanes.threads(bad).__enter__()


def test_run_returns_the_results_in_lane_order_and_a_lane_sees_one_lane():
    seen = []

    def work(run):
        seen.append(lanes.count())
        time.sleep(0.01 * (5 - run[0]))  # the first lane ends last
        return sum(run)

    with lanes.threads(3):
        assert lanes.run(work, [0, 1, 2, 3, 4, 5], 3) == [0 + 1, 2 + 3, 4 + 5]
    assert seen == [1, 1, 1]  # nothing inside a lane starts lanes of its own


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_over_range_covers_the_range_once_in_one_piece_per_lane(monkeypatch, size):
    monkeypatch.setattr(lanes, "RANGE_MIN_ELEMENTS", 2)
    pieces, lock = [], threading.Lock()

    def work(start, stop):
        with lock:
            pieces.append((start, stop, threading.get_ident()))

    with lanes.threads(2):
        lanes.over_range(work, size)
    pieces.sort()
    assert [start for start, _, _ in pieces] == [0] + [stop for _, stop, _ in pieces[:-1]]
    assert pieces[-1][1] == size
    if size >= 2:  # split in two halves, the second on the worker thread
        assert len(pieces) == 2 and pieces[0][2] != pieces[1][2]
        assert abs((pieces[0][1] - pieces[0][0]) - (pieces[1][1] - pieces[1][0])) <= 1
    else:
        assert pieces == [(0, 1, threading.get_ident())]


def test_over_range_runs_small_ranges_and_one_lane_on_the_caller():
    calls = []
    with lanes.threads(2):
        lanes.over_range(lambda i, j: calls.append((i, j, threading.get_ident())), 100)
    lanes.over_range(lambda i, j: calls.append((i, j, threading.get_ident())), 10**6)
    me = threading.get_ident()
    assert calls == [(0, 100, me), (0, 10**6, me)]


def test_run_raises_a_lane_error_only_after_every_lane_has_ended():
    ended = threading.Event()

    def work(run):
        if run[0] == 0:
            raise RuntimeError("first lane failed")
        time.sleep(0.05)
        ended.set()
        return run

    with pytest.raises(RuntimeError, match="first lane failed"):
        lanes.run(work, [0, 1], 2)
    assert ended.is_set()


# ---------------------------------------------------------------------------
# The convolutions in lanes
# ---------------------------------------------------------------------------

CASES = [
    # x_shape, weight_shape, stride, padding, dilation, groups
    ((5, 3, 9, 8), (4, 3, 3, 2), (2, 1), (1, 2), (2, 1), 1),
    ((7, 4, 6, 6), (6, 2, 4, 4), (2, 2), (1, 1), (1, 1), 2),
    ((3, 2, 7, 5), (2, 2, 3, 3), (1, 1), (0, 1), (1, 1), 1),
]


def _arrays(case, seed):
    x_shape, weight_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal(weight_shape)
    y = conv_arrays.conv2d_forward(x, weight, stride, padding, dilation, groups)
    gy = rng.standard_normal(y.shape)
    return x, weight, gy


def _all_products(case, x, weight, gy, keep_columns):
    x_shape, weight_shape, stride, padding, dilation, groups = case
    options = (stride, padding, dilation, groups)
    columns = None
    if keep_columns:
        columns = conv_arrays.columns(x, weight_shape[2:], stride, padding, dilation)
    y = conv_arrays.conv2d_forward(x, weight, *options, columns=columns)
    gx = conv_arrays.conv2d_backward_input(gy, weight, x_shape[2:], *options)
    gW = conv_arrays.conv2d_backward_weight(x, gy, weight_shape[2:], *options, columns=columns)
    return y, gx, gW


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("keep_columns", [False, True])
@pytest.mark.parametrize("n_lanes", [2, 3])
def test_convolutions_in_lanes_equal_one_lane_and_repeat_exactly(
    many_chunks, case, keep_columns, n_lanes
):
    x, weight, gy = _arrays(case, seed=3)
    one_lane = _all_products(case, x, weight, gy, keep_columns)
    with lanes.threads(n_lanes):
        assert conv_arrays.plan(case[0], case[1], *case[2:], itemsize=8)["lanes"] == n_lanes
        first = _all_products(case, x, weight, gy, keep_columns)
        second = _all_products(case, x, weight, gy, keep_columns)
    for a, b, c in zip(one_lane, first, second):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(b, c)  # the lane order fixes the sum: no race


def test_forward_and_input_gradient_in_lanes_are_bit_for_bit_the_one_lane_ones(many_chunks):
    # each image's output is made by one GEMM either way: nothing is added across lanes
    case = CASES[0]
    x, weight, gy = _arrays(case, seed=4)
    y, gx, _ = _all_products(case, x, weight, gy, keep_columns=False)
    with lanes.threads(2):
        y2, gx2, _ = _all_products(case, x, weight, gy, keep_columns=False)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(gx2, gx)


def test_small_columns_stay_in_one_lane():
    # 2 images of 1x4x4 under a 3x3 kernel: far below LANE_MIN_BYTES
    with lanes.threads(2):
        info = conv_arrays.plan((2, 1, 4, 4), (1, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1)
    assert info["images_per_chunk"] == 2


@pytest.mark.parametrize("transposed", [False, True])
def test_gradcheck_and_gradgradcheck_of_convolutions_in_lanes(many_chunks, transposed):
    rng = np.random.default_rng(5)
    if transposed:
        x = tg.tensor(rng.standard_normal((4, 2, 3, 3)), requires_grad=True)
        w = tg.tensor(rng.standard_normal((2, 3, 3, 3)), requires_grad=True)

        def fn(x, w):
            return F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)

    else:
        x = tg.tensor(rng.standard_normal((4, 2, 5, 5)), requires_grad=True)
        w = tg.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)

        def fn(x, w):
            return F.conv2d(x, w, stride=2, padding=1)

    with lanes.threads(2):
        gradcheck(fn, [x, w])
        gradgradcheck(fn, [x, w])


# ---------------------------------------------------------------------------
# The worker threads: polling, sleeping, and the flag kernel
# ---------------------------------------------------------------------------


def _within(seconds, fn):
    """fn() on a helper thread; fails (rather than hangs) when it takes longer than `seconds`."""
    box = {}
    helper = threading.Thread(target=lambda: box.setdefault("value", fn()), daemon=True)
    helper.start()
    helper.join(seconds)
    assert not helper.is_alive(), f"still running after {seconds} s: a lost wake-up?"
    return box["value"]


def test_the_flag_kernel_sees_a_write_from_another_thread():
    cpu = pytest.importorskip("tinygen.kernels.cpu")
    flag = np.zeros(1, dtype=np.int64)
    assert not cpu.wait_for_flag(flag, 1000)  # unset: gives up after its polls
    setter = threading.Timer(0.05, lambda: flag.__setitem__(0, 1))
    setter.start()
    # a flag read once and kept in a register would make this poll until the count runs out
    assert _within(10, lambda: cpu.wait_for_flag(flag, 1 << 62))


@pytest.mark.parametrize("spin_seconds", [0.0, 0.002])
def test_many_runs_in_a_row_each_get_their_own_results(monkeypatch, spin_seconds):
    """Sleeping workers (0 s of polling) and polling ones both wake for every run."""
    monkeypatch.setattr(lanes, "SPIN_SECONDS", spin_seconds)

    def many_runs():
        results = []
        for i in range(300):
            if i % 50 == 0:
                time.sleep(0.005)  # let the workers fall asleep now and then
            results.append(
                lanes.run(lambda run, i=i: [i * 10 + item for item in run], [0, 1, 2], 3)
            )
        return results

    results = _within(60, many_runs)
    assert results == [[[i * 10], [i * 10 + 1], [i * 10 + 2]] for i in range(300)]


def test_the_workers_go_on_after_a_lane_has_failed():
    def work(run):
        if run == [1]:
            raise ValueError("second lane failed")
        return run

    with pytest.raises(ValueError, match="second lane failed"):
        lanes.run(work, [0, 1], 2)
    assert _within(10, lambda: lanes.run(lambda run: run, [0, 1], 2)) == [[0], [1]]


def test_a_second_thread_runs_its_lanes_one_after_the_other_meanwhile():
    """While one thread owns the workers, another one's run() still returns every result."""
    inside, release = threading.Event(), threading.Event()

    def slow(run):
        inside.set()
        release.wait(10)
        return run

    first = threading.Thread(target=lambda: lanes.run(slow, [0, 1], 2))
    first.start()
    assert inside.wait(10)
    try:
        names = _within(
            10, lambda: lanes.run(lambda run: threading.current_thread().name, [0, 1], 2)
        )
        assert len(names) == 2 and len(set(names)) == 1  # both on the one calling thread
    finally:
        release.set()
        first.join(10)

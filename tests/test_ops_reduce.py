"""Tests of tinygen/ops/reduce.py: sum, mean, var, max, min, logsumexp.

What they prove:
- each reduction's backward and double backward agree with central
  differences in float64, over drawn shapes (scalars up to 3-D), drawn axes
  (None, an int, a negative int, a tuple, the empty tuple) and keepdims;
- sum over an empty dimension is legal and gives zeros; mean, max and min of
  nothing raise;
- values equal NumPy's; in float32 they stay float32 and agree with float64;
- max and min split the gradient evenly among tied elements;
- logsumexp is stable at +-1000 and gives -inf for an all -inf row.

max and min are checked on distinct values at least 0.3 apart, so that no
finite-difference step crosses a tie.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, event, example, given
from hypothesis import strategies as st

import tinygen as tg
from tinygen import gradcheck, gradgradcheck

seeds = st.integers(0, 2**32 - 1)

LONGEST_SIDE = {0: 1, 1: 5, 2: 4, 3: 3}


@st.composite
def shapes_and_axes(draw, allow_empty: bool = False):
    """(shape, axis, keepdims) with axis None, an int (maybe negative) or a tuple (maybe empty)."""
    ndim = draw(st.integers(0, 3))
    low = 0 if allow_empty else 1
    shape = tuple(
        draw(st.lists(st.integers(low, LONGEST_SIDE[ndim]), min_size=ndim, max_size=ndim))
    )
    kind = draw(st.sampled_from(["all", "int", "tuple"]))
    if kind == "all":
        axis = None
    elif kind == "int" and ndim > 0:
        axis = draw(st.integers(-ndim, ndim - 1))
    else:  # a subset of the axes, each maybe negative; empty for a 0-d input
        axes = [a for a in range(ndim) if draw(st.booleans())]
        axis = tuple(a - ndim if draw(st.booleans()) else a for a in axes)
    return shape, axis, draw(st.booleans())


def reduced_count(shape, axis) -> int:
    if axis is None:
        axis = tuple(range(len(shape)))
    axes = (axis,) if isinstance(axis, int) else axis
    return int(np.prod([shape[a] for a in axes]))


def uniform(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, shape)


def distinct(seed: int, shape) -> np.ndarray:
    """Values 0.5 apart plus noise below 0.1, shuffled: no two within 0.3, so no ties."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    spaced = rng.permutation(size) * 0.5 - size * 0.25 + rng.uniform(-0.1, 0.1, size)
    return spaced.reshape(shape)


def numpy_var(x, axis, keepdims, correction):
    return np.var(x, axis=axis, keepdims=keepdims, ddof=correction)


# name: (tinygen function, numpy function, values)
REDUCTIONS = {
    "sum": (tg.sum, np.sum, uniform),
    "mean": (tg.mean, np.mean, uniform),
    "max": (tg.max, np.max, distinct),
    "min": (tg.min, np.min, distinct),
    "logsumexp": (
        tg.logsumexp,
        lambda x, axis, keepdims: np.log(np.exp(x).sum(axis=axis, keepdims=keepdims)),
        uniform,
    ),
}


@pytest.mark.parametrize("name", REDUCTIONS)
@given(case=shapes_and_axes(), seed=seeds)
@example(case=((4, 3), 0, False), seed=0)
@example(case=((4, 3), (), True), seed=1)
@example(case=((), None, False), seed=2)
def test_reduction_gradients_match_finite_differences(name, case, seed):
    shape, axis, keepdims = case
    event(f"{len(shape)}-d input, axis {type(axis).__name__}" + (" ()" if axis == () else ""))
    fn, numpy_fn, values = REDUCTIONS[name]
    x = values(seed, shape)

    np.testing.assert_allclose(
        fn(tg.tensor(x), axis, keepdims).numpy(), numpy_fn(x, axis=axis, keepdims=keepdims)
    )
    assert gradcheck(lambda x: fn(x, axis, keepdims), [x])
    assert gradgradcheck(lambda x: fn(x, axis, keepdims), [x])


@pytest.mark.parametrize("name", [*REDUCTIONS, "var"])
@pytest.mark.parametrize("axis", [None, 1])
def test_reduction_in_float32_stays_float32_and_matches_float64(name, axis):
    fn = tg.var if name == "var" else REDUCTIONS[name][0]
    values = distinct(0, (3, 4))
    results = {}
    for dtype in (np.float32, np.float64):
        x = tg.tensor(values.astype(dtype), requires_grad=True)
        y = fn(x, axis)
        assert y.dtype == dtype
        (y * tg.tensor(np.arange(1.0, y.size + 1).reshape(y.shape).astype(dtype))).sum().backward()
        results[dtype] = (y.numpy(), x.grad.numpy())
    for low, high in zip(results[np.float32], results[np.float64]):
        assert low.dtype == np.float32
        np.testing.assert_allclose(low, high, rtol=1e-5, atol=1e-6)


@given(case=shapes_and_axes(), seed=seeds, correction=st.sampled_from([0, 1]))
@example(case=((4, 3), 1, True), seed=0, correction=1)
def test_var_gradients_match_finite_differences(case, seed, correction):
    shape, axis, keepdims = case
    assume(reduced_count(shape, axis) > correction)
    x = uniform(seed, shape)

    def fn(x):
        return tg.var(x, axis, keepdims, correction=correction)

    np.testing.assert_allclose(fn(tg.tensor(x)).numpy(), numpy_var(x, axis, keepdims, correction))
    assert gradcheck(fn, [x])
    assert gradgradcheck(fn, [x])


@given(case=shapes_and_axes(allow_empty=True), seed=seeds)
@example(case=((0, 3), 0, False), seed=0)
def test_sum_over_shapes_with_empty_dims(case, seed):
    shape, axis, keepdims = case
    x = uniform(seed, shape)
    y = tg.sum(tg.tensor(x), axis, keepdims)
    np.testing.assert_allclose(y.numpy(), np.sum(x, axis=axis, keepdims=keepdims))
    assert gradcheck(lambda x: tg.sum(x, axis, keepdims), [x])


def test_sum_over_an_empty_axis_gives_zeros_and_an_empty_gradient():
    x = tg.tensor(np.zeros((0, 3)), requires_grad=True)
    y = x.sum(axis=0)
    np.testing.assert_array_equal(y.numpy(), np.zeros(3))
    (y * tg.tensor(np.arange(3.0))).sum().backward()
    assert x.grad.shape == (0, 3)


@pytest.mark.parametrize("fn", [tg.mean, tg.max, tg.min, tg.logsumexp])
def test_reductions_of_nothing_raise(fn):
    with pytest.raises(ValueError, match=r"empty.*\(0, 3\)"):
        fn(tg.tensor(np.zeros((0, 3))), 0)


def test_var_without_degrees_of_freedom_raises():
    with pytest.raises(ValueError, match="var: 1 elements with correction=1"):
        tg.var(tg.tensor([1.0]))


@pytest.mark.parametrize("axis", [2, -3, (0, 5)])
def test_axis_out_of_range_names_the_reduction(axis):
    with pytest.raises(ValueError, match=r"sum: axis -?\d+ is out of range for a tensor with 2"):
        tg.sum(tg.tensor(np.zeros((2, 3))), axis)


# ---------------------------------------------------------------------------
# Ties: max and min split the gradient evenly
# ---------------------------------------------------------------------------


def test_max_splits_the_gradient_evenly_among_ties():
    x = tg.tensor(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 1 / 3, 1 / 3, 0, 1 / 3])


def test_max_along_an_axis_splits_ties_per_row():
    x = tg.tensor(np.array([[1.0, 5.0, 5.0], [4.0, 2.0, 3.0]]), requires_grad=True)
    y = x.max(axis=1)
    np.testing.assert_array_equal(y.numpy(), [5.0, 4.0])
    (y * tg.tensor(np.array([2.0, 10.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 1], [10, 0, 0]])


def test_min_splits_the_gradient_evenly_among_ties():
    x = tg.tensor(np.array([[0.0, 0.0], [0.0, 1.0]]), requires_grad=True)
    x.min(axis=None, keepdims=True).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1 / 3, 1 / 3], [1 / 3, 0]])


# ---------------------------------------------------------------------------
# logsumexp: stable
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [1000.0, -1000.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_is_stable_at_plus_minus_1000(offset, dtype):
    values = np.array([[0.0, 0.0, -1.0], [3.0, 1.0, 2.0]]) + offset
    x = tg.tensor(values.astype(dtype), requires_grad=True)
    with np.errstate(over="raise", under="ignore", invalid="raise", divide="raise"):
        y = tg.logsumexp(x, axis=1)
        y.sum().backward()
    row0 = offset + np.log(2.0 + np.exp(-1.0))
    row1 = offset + 3.0 + np.log(1.0 + np.exp(-2.0) + np.exp(-1.0))
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y.numpy(), [row0, row1], rtol=rtol)
    shifted = values - values.max(axis=1, keepdims=True)
    softmax = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(x.grad.numpy(), softmax, rtol=rtol)


def test_logsumexp_of_an_all_minus_infinity_row_is_minus_infinity():
    x = tg.tensor(np.array([[-np.inf, -np.inf], [0.0, 0.0]]))
    with np.errstate(divide="ignore"):
        y = tg.logsumexp(x, axis=1)
    np.testing.assert_array_equal(y.numpy(), [-np.inf, np.log(2.0)])


def test_mean_and_var_as_methods_match_numpy():
    x = np.random.default_rng(0).standard_normal((3, 4))
    t = tg.tensor(x)
    np.testing.assert_allclose(t.mean(axis=0).numpy(), x.mean(axis=0))
    np.testing.assert_allclose(t.var().numpy(), x.var(ddof=1))
    np.testing.assert_array_equal(t.argmax(axis=1).numpy(), x.argmax(axis=1))

"""Tests of tinygen/ops/shape.py: operations that move values without changing them.

What they prove:
- reshape, flatten, squeeze, unsqueeze, permute, transpose, T, broadcast_to,
  expand, sum_to, getitem (basic, integer-array, mixed, boolean), concatenate,
  stack and pad give NumPy's values, and their backward and double backward
  agree with central differences in float64 over drawn shapes and options;
- getitem with a repeated integer index adds the gradients of the repeats;
- bad shapes and axes raise errors that name the operation and the shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygen as tg
from tinygen import gradcheck, gradgradcheck

seeds = st.integers(0, 2**32 - 1)

LONGEST_SIDE = {0: 1, 1: 5, 2: 4, 3: 3}


@st.composite
def shapes(draw, min_dims: int = 0, min_side: int = 1) -> tuple[int, ...]:
    ndim = draw(st.integers(min_dims, 3))
    sides = st.integers(min_side, LONGEST_SIDE[ndim])
    return tuple(draw(st.lists(sides, min_size=ndim, max_size=ndim)))


def uniform(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, shape)


def check(fn, x: np.ndarray, expected: np.ndarray) -> None:
    """Values equal NumPy's; gradient and second derivative agree with finite differences."""
    np.testing.assert_array_equal(fn(tg.tensor(x)).numpy(), expected)
    assert gradcheck(fn, [x])
    assert gradgradcheck(fn, [x])


# ---------------------------------------------------------------------------
# reshape and its relatives
# ---------------------------------------------------------------------------


@st.composite
def reshape_targets(draw):
    """A shape and a new shape with the same number of elements, maybe with one -1."""
    shape = draw(shapes())
    size = int(np.prod(shape))
    options = [(size,), (size, 1), (1, size), shape[::-1], (*shape, 1), (1, *shape)]
    target = list(draw(st.sampled_from(options)))
    if target and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return shape, tuple(target)


@given(case=reshape_targets(), seed=seeds)
@example(case=((4, 3), (2, -1)), seed=0)
def test_reshape(case, seed):
    shape, target = case
    x = uniform(seed, shape)
    check(lambda x: tg.reshape(x, target), x, x.reshape(target))


@given(shape=shapes(), data=st.data(), seed=seeds)
def test_flatten(shape, data, seed):
    x = uniform(seed, shape)
    if x.ndim == 0:
        check(tg.flatten, x, x.reshape(1))
        return
    start = data.draw(st.integers(0, x.ndim - 1))
    end = data.draw(st.integers(start, x.ndim - 1))
    expected = x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])
    check(lambda x: tg.flatten(x, start, end), x, expected)


@given(shape=shapes(), data=st.data(), seed=seeds)
def test_unsqueeze_then_squeeze(shape, data, seed):
    x = uniform(seed, shape)
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim))
    check(lambda x: tg.unsqueeze(x, axis), x, np.expand_dims(x, axis))
    check(lambda x: tg.squeeze(tg.unsqueeze(x, axis), axis), x, x)


@given(shape=shapes(), seed=seeds)
@example(shape=(1, 3, 1), seed=0)
def test_squeeze_all_unit_dims(shape, seed):
    x = uniform(seed, shape)
    check(tg.squeeze, x, np.squeeze(x))


def test_squeeze_leaves_a_dim_that_is_not_one():
    assert tg.squeeze(tg.zeros(2, 3), 0).shape == (2, 3)


@st.composite
def permutations_of_shapes(draw):
    shape = draw(shapes())
    return shape, tuple(draw(st.permutations(range(len(shape)))))


@given(case=permutations_of_shapes(), seed=seeds)
@example(case=((1, 2, 3), (1, 2, 0)), seed=0)  # a 3-cycle: its inverse is not itself
@example(case=((1, 2, 3), (2, 0, 1)), seed=1)
def test_permute(case, seed):
    shape, axes = case
    x = uniform(seed, shape)
    check(lambda x: tg.permute(x, *axes), x, x.transpose(axes))


@given(shape=shapes(min_dims=1), data=st.data(), seed=seeds)
def test_transpose_and_T(shape, data, seed):
    x = uniform(seed, shape)
    dim0 = data.draw(st.integers(-x.ndim, x.ndim - 1))
    dim1 = data.draw(st.integers(-x.ndim, x.ndim - 1))
    check(lambda x: tg.transpose(x, dim0, dim1), x, np.swapaxes(x, dim0, dim1))
    check(lambda x: x.T, x, x.T)


@st.composite
def broadcastable(draw):
    """(shape, larger shape it broadcasts to): (3,) -> (4, 3), (4, 1) -> (4, 4), () -> (2, 3)."""
    full = draw(shapes())
    kept = full[draw(st.integers(0, len(full))) :]
    return tuple(1 if draw(st.booleans()) else s for s in kept), full


@given(case=broadcastable(), seed=seeds)
@example(case=((3,), (4, 3)), seed=0)
@example(case=((4, 1), (4, 4)), seed=1)
@example(case=((), (2, 3)), seed=2)
def test_broadcast_to_expand_and_sum_to(case, seed):
    small, large = case
    x = uniform(seed, small)
    check(lambda x: tg.broadcast_to(x, large), x, np.broadcast_to(x, large))
    lead = len(large) - len(small)
    sizes = large[:lead] + tuple(-1 if s == n else n for s, n in zip(small, large[lead:]))
    check(lambda x: x.expand(*sizes), x, np.broadcast_to(x, large))  # -1 keeps a size
    y = uniform(seed + 1, large)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(small) if s == 1 and large[lead + i] != 1
    )
    expected = y.sum(axis=axes, keepdims=True).reshape(small)
    np.testing.assert_allclose(tg.sum_to(tg.tensor(y), small).numpy(), expected)
    assert gradcheck(lambda y: tg.sum_to(y, small), [y])
    assert gradgradcheck(lambda y: tg.sum_to(y, small), [y])


def test_broadcast_to_a_shape_that_does_not_fit_names_both_shapes():
    with pytest.raises(ValueError, match=r"broadcast_to: cannot broadcast shape \(3,\) to \(4,\)"):
        tg.broadcast_to(tg.zeros(3), (4,))


@pytest.mark.parametrize("sizes", [(-1, -1, 3), (3,)])
def test_expand_with_minus_one_in_a_new_dim_or_fewer_dims_is_rejected(sizes):
    with pytest.raises(ValueError, match=r"expand: cannot expand shape \(2, 3\)"):
        tg.zeros(2, 3).expand(*sizes)


def test_sum_to_a_shape_that_does_not_broadcast_names_both_shapes():
    with pytest.raises(ValueError, match=r"sum_to: shape \(2,\) does not broadcast to \(4, 3\)"):
        tg.sum_to(tg.zeros(4, 3), (2,))


# ---------------------------------------------------------------------------
# Indexing
# ---------------------------------------------------------------------------


@given(data=st.data(), shape=shapes(), seed=seeds)
def test_getitem_with_basic_indices(data, shape, seed):
    x = uniform(seed, shape)
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    check(lambda x: x[index], x, x[index])


@given(data=st.data(), shape=shapes(min_dims=1), seed=seeds)
def test_getitem_with_integer_arrays_repeats_included(data, shape, seed):
    x = uniform(seed, shape)
    result_shape = hnp.array_shapes(min_dims=1, max_dims=2, max_side=4)
    index = data.draw(hnp.integer_array_indices(shape, result_shape=result_shape))
    check(lambda x: x[index], x, x[index])


@given(data=st.data(), shape=shapes(min_dims=2), seed=seeds)
def test_getitem_mixing_an_integer_array_with_slices(data, shape, seed):
    x = uniform(seed, shape)
    rows = data.draw(hnp.arrays(np.int64, (3,), elements=st.integers(-shape[0], shape[0] - 1)))
    columns = data.draw(st.slices(shape[1]))
    check(lambda x: x[rows, columns], x, x[rows, columns])


@given(shape=shapes(min_dims=1), seed=seeds)
def test_getitem_with_a_boolean_mask(shape, seed):
    x = uniform(seed, shape)
    mask = np.random.default_rng(seed + 1).random(shape) < 0.5
    check(lambda x: x[tg.tensor(mask)], x, x[mask])


def test_getitem_with_repeated_indices_accumulates_the_gradient():
    x = tg.tensor(np.array([10.0, 20.0, 30.0]), requires_grad=True)
    y = x[[0, 0, 2, 0]]
    np.testing.assert_array_equal(y.numpy(), [10.0, 10.0, 30.0, 10.0])
    (y * tg.tensor(np.array([1.0, 2.0, 3.0, 4.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [7.0, 0.0, 3.0])


def test_getitem_with_repeated_rows_of_a_matrix_accumulates():
    x = tg.tensor(np.ones((3, 2)), requires_grad=True)
    x[np.array([[1, 1], [1, 2]])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0], [3, 3], [1, 1]])


def test_getitem_out_of_range_names_the_shape():
    with pytest.raises(IndexError, match=r"getitem: .*tensor shape \(2, 3\)"):
        tg.zeros(2, 3)[5]


# ---------------------------------------------------------------------------
# Joining and padding
# ---------------------------------------------------------------------------


@given(shape=shapes(min_dims=1), data=st.data(), seed=seeds)
def test_concatenate(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    parts = []
    for k, size in enumerate(sizes):
        part_shape = list(shape)
        part_shape[axis] = size
        parts.append(uniform(seed + k, part_shape))

    def fn(*xs):
        return tg.concatenate(xs, axis=axis)

    np.testing.assert_array_equal(fn(*parts).numpy(), np.concatenate(parts, axis=axis))
    assert gradcheck(fn, parts)
    assert gradgradcheck(fn, parts)


@given(shape=shapes(), data=st.data(), seed=seeds)
def test_stack(shape, data, seed):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    count = data.draw(st.integers(1, 3))
    parts = [uniform(seed + k, shape) for k in range(count)]

    def fn(*xs):
        return tg.stack(xs, axis=axis)

    np.testing.assert_array_equal(fn(*parts).numpy(), np.stack(parts, axis=axis))
    assert gradcheck(fn, parts)
    assert gradgradcheck(fn, parts)


@given(shape=shapes(), data=st.data(), seed=seeds)
def test_pad_with_a_constant(shape, data, seed):
    x = uniform(seed, shape)
    widths = [(data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in shape]
    value = data.draw(st.sampled_from([0.0, -1.5]))
    expected = np.pad(x, widths, constant_values=value) if widths else x
    check(lambda x: tg.pad(x, widths, value), x, expected)


def test_concatenate_with_mismatched_shapes_names_them():
    with pytest.raises(ValueError, match=r"concatenate: tensor 1 has shape \(2, 4\).*\(2, 3\)"):
        tg.concatenate([tg.zeros(2, 3), tg.zeros(2, 4)], axis=0)


def test_stack_with_different_shapes_names_them():
    with pytest.raises(ValueError, match=r"stack: .*\(2,\).*\(3,\)"):
        tg.stack([tg.zeros(2), tg.zeros(3)])


def test_pad_with_wrong_number_of_pairs_names_the_shape():
    with pytest.raises(ValueError, match=r"pad: .*2 pairs for shape \(2, 3\), got 1"):
        tg.pad(tg.zeros(2, 3), [(1, 1)])


# ---------------------------------------------------------------------------
# Bad shapes and axes
# ---------------------------------------------------------------------------


def test_reshape_to_the_wrong_size_names_both_shapes():
    with pytest.raises(
        ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) "
    ) as error:
        tg.zeros(2, 3).reshape(4, 2)
    assert "(4, 2)" in str(error.value)


@pytest.mark.parametrize("axes", [(0, 0), (2, 1), (-3, 0), (0,), (0, 1, 2)])
def test_permute_rejects_axes_that_are_not_a_permutation(axes):
    with pytest.raises(ValueError, match=r"permute: axes .* are not a permutation .*\(2, 3\)"):
        tg.permute(tg.zeros(2, 3), *axes)


@pytest.mark.parametrize("fn", [tg.squeeze, tg.unsqueeze, tg.transpose])
def test_axis_out_of_range_names_the_operation(fn):
    with pytest.raises(ValueError, match=rf"{fn.__name__}: axis 5 is out of range"):
        fn(tg.zeros(2, 3), 5)

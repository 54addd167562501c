"""Tests of tinygen/ops/elementwise.py: arithmetic, exp/log/sqrt/abs, selections, activations.

What they prove:
- every operation's backward, and the backward of its backward, agrees with
  central differences in float64 (gradcheck and gradgradcheck), over shapes
  drawn by Hypothesis: scalars, vectors, matrices, 3-D, broadcasting pairs
  such as (3,) with (4, 3) and (4, 1) with (1, 4), and empty dimensions;
- every operator (`+ - * / ** @`, the reflected ones, unary and comparison
  operators) works with Python and NumPy scalars and arrays on either side,
  gives a Tensor, keeps the tensor's dtype, and differentiates correctly;
- in float32 each operation keeps float32 and agrees with float64 to float32
  accuracy (rtol 1e-5), values and gradients;
- a non-number beside a tensor (None, a string) raises instead of becoming NaN;
- ties of maximum/minimum split the gradient evenly;
- sigmoid, softplus and log_sigmoid stay finite at +-1000.

Inputs keep away from kinks: relu, abs and clip see values at least 0.1 from
their corners, log and sqrt see values >= 0.2, pow's base is positive when its
exponent is checked, and the two operands of maximum never come within 0.1.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

import tinygen as tg
from tinygen import gradcheck, gradgradcheck

# ---------------------------------------------------------------------------
# Drawn shapes and values
# ---------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)

# The longest side per number of dims keeps every operand at most about 4 x 5.
LONGEST_SIDE = {0: 1, 1: 5, 2: 4, 3: 3}


@st.composite
def broadcast_pairs(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast together.

    Both come from one full shape: each operand drops some leading dims and
    turns some of the others into 1, so (4, 3) yields pairs like ((3,), (4, 3)),
    ((4, 1), (1, 3)) and ((), (4, 3)). One draw in eight empties one dim.
    """
    ndim = draw(st.integers(0, 3))
    full = draw(st.lists(st.integers(1, LONGEST_SIDE[ndim]), min_size=ndim, max_size=ndim))
    if ndim and draw(st.integers(0, 7)) == 0:
        full[draw(st.integers(0, ndim - 1))] = 0

    def operand() -> tuple[int, ...]:
        kept = full[draw(st.integers(0, ndim)) :]
        return tuple(1 if draw(st.booleans()) else s for s in kept)

    return operand(), operand()


@st.composite
def shapes(draw) -> tuple[int, ...]:
    ndim = draw(st.integers(0, 3))
    return tuple(draw(st.lists(st.integers(1, LONGEST_SIDE[ndim]), min_size=ndim, max_size=ndim)))


def uniform(seed: int, shape, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape)


def off_grid(seed: int, shape, low: float = 0.1, high: float = 0.4) -> np.ndarray:
    """Values k/2 + u with integer k in [-4, 4] and u in [low, high].

    With the default [0.1, 0.4] every value is at least 0.1 from every multiple
    of 0.5: from 0 (relu, abs), from +-1 (clip's bounds). Two arrays drawn with
    [0.1, 0.2] and [0.3, 0.4] never come within 0.1 of each other (maximum).
    """
    rng = np.random.default_rng(seed)
    return rng.integers(-4, 5, shape) * 0.5 + rng.uniform(low, high, shape)


def check_both(fn, inputs) -> None:
    """gradcheck, then gradgradcheck: the backward and its backward are both right."""
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


# ---------------------------------------------------------------------------
# Binary operations over broadcasting pairs
# ---------------------------------------------------------------------------

# name: (function, values of the first operand, values of the second)
BINARY = {
    "add": (tg.ops.add, uniform, uniform),
    "sub": (tg.ops.sub, uniform, uniform),
    "mul": (tg.ops.mul, uniform, uniform),
    "div": (tg.ops.div, uniform, lambda seed, shape: off_grid(seed, shape) + 0.25),
    # base in [0.5, 2] so that d(x^p)/dp = x^p log x is defined
    "pow": (tg.pow, lambda seed, shape: uniform(seed, shape, 0.5, 2.0), uniform),
    "maximum": (
        tg.maximum,
        lambda seed, shape: off_grid(seed, shape, 0.1, 0.2),
        lambda seed, shape: off_grid(seed + 1, shape, 0.3, 0.4),
    ),
    "minimum": (
        tg.minimum,
        lambda seed, shape: off_grid(seed, shape, 0.1, 0.2),
        lambda seed, shape: off_grid(seed + 1, shape, 0.3, 0.4),
    ),
}


@pytest.mark.parametrize("name", BINARY)
@given(pair=broadcast_pairs(), seed=seeds)
@example(pair=((3,), (4, 3)), seed=0)
@example(pair=((4, 1), (1, 4)), seed=1)
@example(pair=((), (2, 3)), seed=2)
@example(pair=((2, 3), ()), seed=3)
@example(pair=((0, 3), (3,)), seed=4)
def test_binary_op_gradients_match_finite_differences(name, pair, seed):
    event("broadcast" if pair[0] != pair[1] else "same shape")
    event("a 0-d operand" if () in pair else "no 0-d operand")
    event("an empty dim" if 0 in pair[0] + pair[1] else "no empty dim")
    fn, first, second = BINARY[name]
    x0 = first(seed, pair[0])
    x1 = second(seed + 7, pair[1])
    check_both(fn, [x0, x1])


@given(shape=shapes(), seed=seeds, exponent=st.sampled_from([2, 3, -1, -2]))
def test_pow_with_integer_exponent_differentiates_negative_bases(shape, seed, exponent):
    x = off_grid(seed, shape)  # negative and positive, never near 0
    check_both(lambda x: x**exponent, [x])


def test_pow_exponent_gradient_at_zero_base_is_zero():
    x = tg.tensor(np.array([0.0, 2.0]))
    p = tg.tensor(np.array([2.0, 3.0]), requires_grad=True)
    (x**p).sum().backward()
    np.testing.assert_allclose(p.grad.numpy(), [0.0, 8.0 * np.log(2.0)])


# ---------------------------------------------------------------------------
# Unary operations
# ---------------------------------------------------------------------------

# name: (function, values)
UNARY = {
    "neg": (tg.ops.neg, uniform),
    "exp": (tg.exp, uniform),
    "log": (tg.log, lambda seed, shape: uniform(seed, shape, 0.2, 3.0)),
    "sqrt": (tg.sqrt, lambda seed, shape: uniform(seed, shape, 0.2, 3.0)),
    "abs": (tg.abs, off_grid),
    "relu": (tg.relu, off_grid),
    "leaky_relu": (lambda x: tg.leaky_relu(x, 0.2), off_grid),
    "sigmoid": (tg.sigmoid, lambda seed, shape: uniform(seed, shape, -4.0, 4.0)),
    "tanh": (tg.tanh, lambda seed, shape: uniform(seed, shape, -3.0, 3.0)),
    "softplus": (tg.softplus, lambda seed, shape: uniform(seed, shape, -4.0, 4.0)),
    "log_sigmoid": (tg.log_sigmoid, lambda seed, shape: uniform(seed, shape, -4.0, 4.0)),
    "clip": (lambda x: tg.clip(x, -1.0, 1.0), off_grid),
    "clip_below": (lambda x: tg.clip(x, min=-1.0), off_grid),
    "clip_above": (lambda x: tg.clip(x, max=1.0), off_grid),
}


@pytest.mark.parametrize("name", UNARY)
@given(shape=shapes(), seed=seeds)
@example(shape=(0, 3), seed=0)
def test_unary_op_gradients_match_finite_differences(name, shape, seed):
    fn, values = UNARY[name]
    check_both(fn, [values(seed, shape)])


def _float32_against_float64(fn, arrays) -> None:
    """fn in float32 keeps float32 and agrees with fn in float64 to float32 accuracy."""
    results = {}
    for dtype in (np.float32, np.float64):
        xs = [tg.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
        y = fn(*xs)
        assert y.dtype == dtype, f"{dtype.__name__} inputs gave a {y.dtype} output"
        y.backward(tg.tensor(np.linspace(-1.0, 1.0, y.size).reshape(y.shape).astype(dtype)))
        results[dtype] = [y.numpy()] + [x.grad.numpy() for x in xs]
    for low, high in zip(results[np.float32], results[np.float64]):
        assert low.dtype == np.float32
        np.testing.assert_allclose(low, high, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", UNARY)
def test_unary_op_in_float32_stays_float32_and_matches_float64(name):
    fn, values = UNARY[name]
    _float32_against_float64(fn, [values(0, (3, 4))])


@pytest.mark.parametrize("name", BINARY)
def test_binary_op_in_float32_stays_float32_and_matches_float64(name):
    fn, first, second = BINARY[name]
    _float32_against_float64(fn, [first(0, (4, 3)), second(1, (3,))])


@given(pair=broadcast_pairs(), seed=seeds)
@example(pair=((3,), (4, 3)), seed=0)
def test_where_gradients_flow_to_the_chosen_side(pair, seed):
    x, y = uniform(seed, pair[0]), uniform(seed + 1, pair[1])
    out_shape = np.broadcast_shapes(pair[0], pair[1])
    condition = np.random.default_rng(seed + 2).random(out_shape) < 0.5
    check_both(lambda x, y: tg.where(condition, x, y), [x, y])


def test_where_sends_no_gradient_to_the_side_not_chosen():
    x = tg.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = tg.tensor(np.array([4.0, 5.0, 6.0]), requires_grad=True)
    tg.where(np.array([True, False, True]), x, y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 1.0, 0.0])


def test_cast_sends_the_gradient_back_in_the_source_dtype():
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.to(np.float32)
    assert y.dtype == np.float32
    (y * 3).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_clip_rejects_low_above_high():
    with pytest.raises(ValueError, match=r"clip: low \(2.0\) must not exceed high \(1.0\)"):
        tg.clip(tg.tensor([0.0]), 2.0, 1.0)


def test_binary_op_with_shapes_that_do_not_broadcast_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(3,\) and \(4,\) do not broadcast"):
        tg.tensor(np.zeros(3)) + tg.tensor(np.zeros(4))


# ---------------------------------------------------------------------------
# Ties and the kinks: the documented conventions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [tg.maximum, tg.minimum])
def test_maximum_and_minimum_split_a_tie_evenly(fn):
    x = tg.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = tg.tensor(np.array([1.0, 0.0, 5.0]), requires_grad=True)
    fn(x, y).sum().backward()
    larger_wins = fn is tg.maximum
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 1.0, 0.0] if larger_wins else [0.5, 0, 1])
    np.testing.assert_array_equal(y.grad.numpy(), [0.5, 0.0, 1.0] if larger_wins else [0.5, 1, 0])


def test_maximum_tie_with_a_broadcast_scalar_sums_the_halves():
    x = tg.tensor(np.array([0.0, 0.0, 1.0]), requires_grad=True)
    zero = tg.tensor(np.float64(0.0), requires_grad=True)
    tg.maximum(x, zero).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.5, 1.0])
    assert zero.grad.item() == 1.0  # two halves from the two ties


def test_relu_and_abs_take_zero_as_derivative_at_zero():
    x = tg.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    (tg.relu(x) + tg.abs(x)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [-1.0, 0.0, 2.0])


def test_clip_passes_the_gradient_at_its_bounds():
    x = tg.tensor(np.array([-2.0, -1.0, 0.0, 1.0, 2.0]), requires_grad=True)
    tg.clip(x, -1.0, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 1.0, 1.0, 0.0])


# ---------------------------------------------------------------------------
# Stability at large inputs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_softplus_log_sigmoid_are_finite_at_1000(dtype):
    x = tg.tensor(np.array([-1000.0, 0.0, 1000.0], dtype=dtype), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s, sp, ls = tg.sigmoid(x), tg.softplus(x), tg.log_sigmoid(x)
        (s + sp + ls).sum().backward()
    np.testing.assert_allclose(s.numpy(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(sp.numpy(), [0.0, np.log(2.0), 1000.0])
    np.testing.assert_allclose(ls.numpy(), [-1000.0, -np.log(2.0), 0.0])
    # d/dx of sigmoid + softplus + log_sigmoid = s(1 - s) + s + (1 - s)
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.25, 1.0])
    assert x.grad.dtype == dtype


# ---------------------------------------------------------------------------
# Operators with Python and NumPy scalars and arrays on either side
# ---------------------------------------------------------------------------

OTHERS = {
    "int": 2,
    "float": 2.5,
    "np.float64": np.float64(2.5),
    "np.float32": np.float32(2.5),
    "np.int64": np.int64(2),
    "np.ndarray": np.array([1.5, 2.0, 2.5]),
    "0-d np.ndarray": np.array(2.5),
}

# name: (operator, d(t op s)/dt, d(s op t)/dt), for t a tensor and s a constant
ARITHMETIC = {
    "+": (operator.add, lambda t, s: 1 + 0 * t, lambda t, s: 1 + 0 * t),
    "-": (operator.sub, lambda t, s: 1 + 0 * t, lambda t, s: -1 + 0 * t),
    "*": (operator.mul, lambda t, s: s + 0 * t, lambda t, s: s + 0 * t),
    "/": (operator.truediv, lambda t, s: 1 / s + 0 * t, lambda t, s: -s / t**2),
    "**": (operator.pow, lambda t, s: s * t ** (s - 1), lambda t, s: s**t * np.log(s)),
}


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("symbol", ARITHMETIC)
@pytest.mark.parametrize("tensor_side", ["left", "right"])
def test_arithmetic_operator_mixes_with_scalars_on_either_side(symbol, other, tensor_side):
    op, d_left, d_right = ARITHMETIC[symbol]
    s = OTHERS[other]
    values = np.array([0.5, 1.25, 2.0])
    t = tg.tensor(values, requires_grad=True)  # float64

    y = op(t, s) if tensor_side == "left" else op(s, t)

    assert isinstance(y, tg.Tensor)
    expected = op(values, np.float64(s)) if tensor_side == "left" else op(np.float64(s), values)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    y.sum().backward()
    derivative = d_left if tensor_side == "left" else d_right
    expected_grad = derivative(values, np.asarray(s, dtype=np.float64))
    np.testing.assert_allclose(t.grad.numpy(), np.broadcast_to(expected_grad, (3,)), rtol=1e-12)


@pytest.mark.parametrize("other", [o for o in OTHERS if "ndarray" not in o])
@pytest.mark.parametrize("symbol", ARITHMETIC)
@pytest.mark.parametrize("tensor_side", ["left", "right"])
def test_scalar_beside_a_float32_tensor_keeps_float32(symbol, other, tensor_side):
    op = ARITHMETIC[symbol][0]
    t = tg.tensor([0.5, 1.25, 2.0])
    y = op(t, OTHERS[other]) if tensor_side == "left" else op(OTHERS[other], t)
    assert isinstance(y, tg.Tensor)
    assert y.dtype == np.float32


def test_numpy_float64_times_tensor_gives_a_tensor():
    t = tg.tensor([1.0, 2.0], requires_grad=True)
    y = np.float64(2) * t
    assert isinstance(y, tg.Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [2.0, 2.0])


COMPARISONS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("symbol", COMPARISONS)
@pytest.mark.parametrize("tensor_side", ["left", "right"])
def test_comparison_operator_gives_a_boolean_tensor(symbol, other, tensor_side):
    op, s = COMPARISONS[symbol], OTHERS[other]
    values = np.array([1.5, 2.0, 2.5])
    t = tg.tensor(values, requires_grad=True)
    y = op(t, s) if tensor_side == "left" else op(s, t)
    assert isinstance(y, tg.Tensor)
    assert y.dtype == np.bool_
    assert not y.requires_grad
    expected = op(values, s) if tensor_side == "left" else op(np.asarray(s), values)
    np.testing.assert_array_equal(y.numpy(), expected)


@pytest.mark.parametrize("other", [None, "2", object()])
def test_operand_that_is_not_a_number_is_rejected_not_turned_into_nan(other):
    t = tg.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=f"got {type(other).__name__}"):
        t + other
    with pytest.raises(TypeError, match=f"got {type(other).__name__}"):
        other * t


def test_unary_operators_neg_pos_abs():
    values = np.array([-1.5, 0.5, 2.0])
    t = tg.tensor(values, requires_grad=True)
    (-t).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [-1.0, -1.0, -1.0])
    assert +t is t
    np.testing.assert_array_equal(abs(t).numpy(), np.abs(values))


@pytest.mark.parametrize("tensor_side", ["left", "right"])
def test_matmul_operator_with_a_numpy_array_on_either_side(tensor_side):
    a = np.arange(6.0).reshape(2, 3)
    w = np.arange(12.0).reshape(3, 4)
    if tensor_side == "left":
        t = tg.tensor(a, requires_grad=True)
        y = t @ w
        expected_grad = np.ones((2, 4)) @ w.T
    else:
        t = tg.tensor(w, requires_grad=True)
        y = a @ t
        expected_grad = a.T @ np.ones((2, 4))
    assert isinstance(y, tg.Tensor)
    np.testing.assert_allclose(y.numpy(), a @ w)
    y.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), expected_grad)


def test_tensor_operands_on_both_sides_of_every_arithmetic_operator():
    a = tg.tensor(np.array([0.5, 1.5]), requires_grad=True)
    b = tg.tensor(np.array([2.0, 3.0]), requires_grad=True)
    for symbol, (op, _, _) in ARITHMETIC.items():
        assert gradcheck(op, [a, b]), symbol

"""Tests of tinygen/ops/linalg.py: matmul with batch dimensions that broadcast.

What they prove: matmul equals NumPy's for matrices, batches that broadcast
((2, n, k) @ (k, m), (2, 1, n, k) @ (3, k, m)), and vectors on either side;
its backward and double backward agree with central differences in float64;
in float32 it stays float32 and agrees with float64;
shapes that do not multiply raise an error that names matmul and both shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tinygen as tg
from tinygen import gradcheck, gradgradcheck

seeds = st.integers(0, 2**32 - 1)


@st.composite
def matmul_shapes(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(x shape, w shape) that multiply: (..., n, k) @ (..., k, m), or a vector on a side.

    The batch dims come from one shape of up to 2 dims, each operand dropping
    leading dims and turning some into 1, as broadcasting allows.
    """
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))

    def batch_of_operand() -> tuple[int, ...]:
        kept = batch[draw(st.integers(0, len(batch))) :]
        return tuple(1 if draw(st.booleans()) else s for s in kept)

    x_is_vector, w_is_vector = draw(st.booleans()), draw(st.booleans())
    x = (k,) if x_is_vector else (*batch_of_operand(), n, k)
    w = (k,) if w_is_vector else (*batch_of_operand(), k, m)
    return x, w


@given(case=matmul_shapes(), seed=seeds)
@example(case=((3, 4), (4, 2)), seed=0)
@example(case=((2, 3, 4), (4, 2)), seed=1)
@example(case=((2, 1, 3, 4), (3, 4, 2)), seed=2)
@example(case=((4,), (4,)), seed=3)
@example(case=((4,), (2, 4, 3)), seed=4)
@example(case=((2, 3, 4), (4,)), seed=5)
def test_matmul_gradients_match_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(case[0]), rng.standard_normal(case[1])

    np.testing.assert_allclose(tg.matmul(tg.tensor(x), tg.tensor(w)).numpy(), x @ w, rtol=1e-12)
    assert gradcheck(tg.matmul, [x, w])
    assert gradgradcheck(tg.matmul, [x, w])


def test_matmul_gradients_are_the_textbook_formulas():
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = tg.tensor(rng.standard_normal((4, 2)), requires_grad=True)
    gy = rng.standard_normal((3, 2))
    (x @ w).backward(tg.tensor(gy))
    np.testing.assert_allclose(x.grad.numpy(), gy @ w.numpy().T)  # dL/dX = dL/dY W^T
    np.testing.assert_allclose(w.grad.numpy(), x.numpy().T @ gy)  # dL/dW = X^T dL/dY


def test_matmul_in_float32_stays_float32_and_matches_float64():
    rng = np.random.default_rng(0)
    x, w, gy = (
        rng.standard_normal((2, 3, 4)),
        rng.standard_normal((4, 5)),
        rng.standard_normal((2, 3, 5)),
    )
    results = {}
    for dtype in (np.float32, np.float64):
        xt = tg.tensor(x.astype(dtype), requires_grad=True)
        wt = tg.tensor(w.astype(dtype), requires_grad=True)
        y = xt @ wt
        assert y.dtype == dtype
        y.backward(tg.tensor(gy.astype(dtype)))
        results[dtype] = (y.numpy(), xt.grad.numpy(), wt.grad.numpy())
    for low, high in zip(results[np.float32], results[np.float64]):
        assert low.dtype == np.float32
        np.testing.assert_allclose(low, high, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x_shape, w_shape",
    [((3, 4), (5, 6)), ((3, 4), (5,)), ((5,), (4, 6)), ((3,), (4,)), ((2, 3, 4), (3, 4, 5))],
)
def test_matmul_of_shapes_that_do_not_multiply_names_both_shapes(x_shape, w_shape):
    x, w = tg.zeros(x_shape), tg.zeros(w_shape)
    with pytest.raises(ValueError, match=r"^matmul: ") as error:
        x @ w
    assert f"{x_shape} and {w_shape}" in str(error.value)


def test_matmul_of_3x4_and_5x6_says_which_dims_disagree():
    with pytest.raises(
        ValueError,
        match=r"matmul: shapes \(3, 4\) and \(5, 6\) do not multiply; "
        r"x.shape\[-1\] \(4\) must equal w.shape\[-2\] \(5\)",
    ):
        tg.zeros(3, 4) @ tg.zeros(5, 6)


def test_matmul_of_a_matrix_and_a_vector_of_wrong_length_names_the_vector():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5,\) do not multiply"):
        tg.zeros(3, 4) @ tg.zeros(5)


def test_matmul_with_batch_dims_that_do_not_broadcast_names_them():
    with pytest.raises(ValueError, match=r"matmul: batch dims of \(2, 3, 4\) and \(3, 4, 5\)"):
        tg.zeros(2, 3, 4) @ tg.zeros(3, 4, 5)


def test_matmul_of_a_scalar_is_rejected():
    with pytest.raises(ValueError, match=r"matmul: operands must be at least 1-D"):
        tg.matmul(tg.tensor(2.0), tg.zeros(2, 2))

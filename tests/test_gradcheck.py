"""Tests of tinygen/gradcheck.py: does the checker catch wrong backward passes?

A gradient checker that passes everything proves nothing. Each test here
plants one bug that people really write in a backward pass and requires
gradcheck (or gradgradcheck) to raise GradcheckError and say where:

- a sign flip;
- a missing broadcast reduction (the gradient left at the output's shape),
  and a wrong one (one row taken instead of the sum of all rows);
- a factor of 2 in a single element, in full-Jacobian and in
  random-direction mode;
- a backward that is not repeatable, or gives a gradient for a zero upstream;
- an output that lost float64;
- a first derivative that is right but was computed outside the graph, so
  that its own derivative is wrong (caught by gradgradcheck only).

The same functions with the bug removed must pass.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygen as tg
from tinygen import GradcheckError, gradcheck, gradgradcheck
from tinygen.autograd import Function, Tensor
from tinygen.ops.shape import sum_to

rng = np.random.default_rng(0)
X = rng.uniform(0.5, 2.0, (3, 4))
ROW = rng.uniform(0.5, 2.0, (4,))


class Square(Function):
    """x^2 with a selectable bug in its backward."""

    def __init__(self, bug: str | None = None) -> None:
        self.bug = bug

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        gx = gy * 2.0 * x  # d(x^2)/dx = 2x
        if self.bug == "sign":
            return -gx
        if self.bug == "factor 2 in one element":
            scale = np.ones(x.shape)
            scale[1, 2] = 2.0
            return gx * Tensor(scale)
        if self.bug == "not repeatable":
            return gx + Tensor(np.random.default_rng().standard_normal(x.shape) * 1e-3)
        if self.bug == "nonzero for a zero upstream":
            return gx + 1e-3
        if self.bug == "outside the graph":
            return gy * Tensor(2.0 * x.data)  # right value, but 2x is now a constant
        return gx


class AddRow(Function):
    """x (3, 4) + row (4,), broadcast, with a selectable bug in the row's gradient."""

    def __init__(self, bug: str | None = None) -> None:
        self.bug = bug

    def forward(self, x, row):
        return x + row

    def backward(self, gy):
        x, row = self.inputs
        if self.bug == "missing reduction":
            return gy, gy  # the row's gradient keeps the output's shape (3, 4)
        if self.bug == "first row only":
            return gy, gy[0]  # right shape (4,), but only one of the three copies
        return gy, sum_to(gy, row.shape)


def test_correct_backward_passes():
    assert gradcheck(lambda x: Square()(x), [X])
    assert gradgradcheck(lambda x: Square()(x), [X])
    assert gradcheck(lambda x, r: AddRow()(x, r), [X, ROW])


def test_sign_flip_is_caught_and_reported_with_both_values():
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(3, 4\)\), element \(0, 0\): "):
        gradcheck(lambda x: Square("sign")(x), [X])


def test_sign_flip_message_gives_numerical_analytical_and_tolerance():
    with pytest.raises(GradcheckError) as error:
        gradcheck(lambda x: Square("sign")(x), [X])
    message = str(error.value)
    for word in ("numerical", "analytical", "difference", "tolerance", "atol", "rtol"):
        assert word in message


def test_missing_broadcast_reduction_is_caught():
    with pytest.raises(GradcheckError, match=r"backward pass failed: .* shape \(3, 4\) .* \(4,\)"):
        gradcheck(lambda x, r: AddRow("missing reduction")(x, r), [X, ROW])


def test_wrong_broadcast_reduction_is_caught_on_the_broadcast_input():
    with pytest.raises(GradcheckError, match=r"input 1 \(shape \(4,\)\)"):
        gradcheck(lambda x, r: AddRow("first row only")(x, r), [X, ROW])


def test_factor_2_in_one_element_is_caught_at_that_element():
    with pytest.raises(GradcheckError, match=r"element \(1, 2\)"):
        gradcheck(lambda x: Square("factor 2 in one element")(x), [X])


def test_factor_2_in_one_element_is_caught_along_random_directions():
    fn = lambda x: Square("factor 2 in one element")(x)  # noqa: E731
    with pytest.raises(GradcheckError, match=r"direction \d"):
        gradcheck(fn, [X], full_limit=4)
    assert gradcheck(lambda x: Square()(x), [X], full_limit=4)


def test_backward_that_is_not_repeatable_is_caught():
    with pytest.raises(GradcheckError, match="two backward passes gave different gradients"):
        gradcheck(lambda x: Square("not repeatable")(x), [X])


def test_nonzero_gradient_for_a_zero_upstream_is_caught():
    with pytest.raises(GradcheckError, match="zero upstream gradient gave a nonzero gradient"):
        gradcheck(lambda x: Square("nonzero for a zero upstream")(x), [X])


def test_output_that_lost_float64_is_caught():
    with pytest.raises(GradcheckError, match="returned dtype float32 from float64 inputs"):
        gradcheck(lambda x: x.to(np.float32) * 2.0, [X])


def test_first_derivative_outside_the_graph_passes_gradcheck_but_not_gradgradcheck():
    fn = lambda x: Square("outside the graph")(x)  # noqa: E731
    assert gradcheck(fn, [X])
    with pytest.raises(GradcheckError):
        gradgradcheck(fn, [X])


def test_a_kink_fails_the_check_which_is_why_tests_avoid_kinks():
    x = np.array([-1.0, 0.0, 1.0])  # relu's derivative jumps at 0
    with pytest.raises(GradcheckError, match=r"element \(1,\)"):
        gradcheck(tg.relu, [x])


# ---------------------------------------------------------------------------
# What gradcheck accepts
# ---------------------------------------------------------------------------


def test_float32_input_is_checked_in_a_float64_copy_with_a_warning():
    with pytest.warns(UserWarning, match="input 0 is float32; checking a float64 copy"):
        assert gradcheck(tg.exp, [X.astype(np.float32)])


def test_tensor_inputs_are_checked_only_when_they_require_grad():
    w = tg.tensor(ROW)  # a constant
    x = tg.tensor(X, requires_grad=True)
    assert gradcheck(lambda x, w: x * w, [x, w])
    with pytest.raises(ValueError, match="gradcheck: no input to check"):
        gradcheck(lambda w: w * 2.0, [w])


def test_numpy_scalars_and_other_arguments_pass_through():
    assert gradcheck(lambda x, axis: tg.sum(x * x, axis), [X, 1])
    assert gradcheck(tg.exp, [np.float64(0.5)])


def test_function_that_returns_no_tensor_is_rejected():
    with pytest.raises(TypeError, match="fn must return a Tensor, got float"):
        gradcheck(lambda x: 1.0, [X])


def test_gradgradcheck_of_a_function_with_a_zero_second_derivative():
    assert gradgradcheck(lambda x, w: x @ w, [X, X.T.copy()])


def test_upstream_gradient_differs_from_a_test_input_drawn_with_the_same_seed(monkeypatch):
    """A centering backward that is 5% too large must fail even for x = default_rng(0) data.

    Were the checker's upstream gradient v drawn as default_rng(0), it would equal x, and along
    v = x the gradient of a normalization is nearly zero, hiding the wrong factor.
    """
    from tinygen.nn import functional as F

    x = np.random.default_rng(0).standard_normal((4, 3))
    layer = lambda x: F.batch_norm(x, None, None, training=True)  # noqa: E731
    assert gradcheck(layer, [x])
    original = F.BatchNormTrain.backward

    def too_large(self, gy):
        grads = original(self, gy)
        grads = grads if isinstance(grads, tuple) else (grads,)
        return tuple(None if g is None else g * 1.05 for g in grads)

    monkeypatch.setattr(F.BatchNormTrain, "backward", too_large)
    with pytest.raises(GradcheckError):
        gradcheck(layer, [x])

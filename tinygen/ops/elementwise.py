"""Elementwise operations: arithmetic, exp and log, and the activation functions.

Every binary operation broadcasts its operands as NumPy does. Broadcasting
copies a value to many places, so in backward the gradient of those places
is summed back to the operand's shape; `sum_to` does that, in one place.

Each operation is a Function class with `forward` on arrays and `backward` on
Tensors, and a lowercase function that applies it. Backward passes recompute
what they need from their inputs with differentiable operations, so they can
be differentiated again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygen import backend
from tinygen.autograd import Function, Tensor, as_tensor, is_grad_enabled
from tinygen.backend import get_array_module
from tinygen.kernels import fused
from tinygen.ops.shape import sum_to


def _pair(x: Any, y: Any) -> tuple[Tensor, Tensor]:
    """Make both operands Tensors; a number takes the dtype of the tensor beside it."""
    if isinstance(x, Tensor):
        return x, as_tensor(y, like=x)
    y = as_tensor(y)
    return as_tensor(x, like=y), y


def _broadcast_error(name: str, x: Any, y: Any) -> ValueError:
    return ValueError(
        f"{name}: shapes {tuple(x.shape)} and {tuple(y.shape)} do not broadcast "
        "(trailing dimensions must be equal or 1)"
    )


def _check_broadcast(name: str, x: Any, y: Any) -> None:
    try:
        np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise _broadcast_error(name, x, y) from None


# ---------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------


class Add(Function):
    def forward(self, x0, x1):
        _check_broadcast("add", x0, x1)
        return x0 + x1

    def backward(self, gy):
        x0, x1 = self.inputs
        return sum_to(gy, x0.shape), sum_to(gy, x1.shape)


class Sub(Function):
    def forward(self, x0, x1):
        _check_broadcast("sub", x0, x1)
        return x0 - x1

    def backward(self, gy):
        x0, x1 = self.inputs
        return sum_to(gy, x0.shape), sum_to(-gy, x1.shape)


class Mul(Function):
    def forward(self, x0, x1):
        _check_broadcast("mul", x0, x1)
        return x0 * x1

    def backward(self, gy):
        x0, x1 = self.inputs
        gx0 = sum_to(gy * x1, x0.shape) if self.needs_input_grad[0] else None
        gx1 = sum_to(gy * x0, x1.shape) if self.needs_input_grad[1] else None
        return gx0, gx1


class Div(Function):
    def forward(self, x0, x1):
        _check_broadcast("div", x0, x1)
        return x0 / x1

    def backward(self, gy):
        # d(x0 / x1)/dx0 = 1 / x1,   d(x0 / x1)/dx1 = -x0 / x1^2
        x0, x1 = self.inputs
        gx0 = sum_to(gy / x1, x0.shape) if self.needs_input_grad[0] else None
        gx1 = sum_to(-gy * x0 / (x1 * x1), x1.shape) if self.needs_input_grad[1] else None
        return gx0, gx1


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """x ** p, differentiable in both the base and the exponent.

    d(x^p)/dx = p * x^(p-1)      d(x^p)/dp = x^p * log(x)

    The second is real only for x > 0; where x <= 0 it is taken as 0, the
    value PyTorch also gives at x = 0.
    """

    def forward(self, x, p):
        _check_broadcast("pow", x, p)
        return x**p

    def backward(self, gy):
        x, p = self.inputs
        gx = gp = None
        if self.needs_input_grad[0]:
            gx = sum_to(gy * p * x ** (p - 1), x.shape)
        if self.needs_input_grad[1]:
            positive = Tensor(x.data > 0)
            log_x = log(where(positive, x, 1.0))
            gp = sum_to(where(positive, gy * x**p * log_x, 0.0), p.shape)
        return gx, gp


def add(x, y) -> Tensor:
    return Add()(*_pair(x, y))


def sub(x, y) -> Tensor:
    return Sub()(*_pair(x, y))


def mul(x, y) -> Tensor:
    return Mul()(*_pair(x, y))


def div(x, y) -> Tensor:
    return Div()(*_pair(x, y))


def neg(x) -> Tensor:
    return Neg()(x)


def pow(x, p) -> Tensor:  # noqa: A001  (the name PyTorch users expect)
    return Pow()(*_pair(x, p))


# ---------------------------------------------------------------------------
# Exponentials, logarithms, roots
# ---------------------------------------------------------------------------


class Exp(Function):
    def forward(self, x):
        return get_array_module(x).exp(x)

    def backward(self, gy):
        (x,) = self.inputs
        return gy * exp(x)  # d(e^x)/dx = e^x


class Log(Function):
    def forward(self, x):
        return get_array_module(x).log(x)

    def backward(self, gy):
        (x,) = self.inputs
        return gy / x  # d(log x)/dx = 1/x


class Sqrt(Function):
    def forward(self, x):
        return get_array_module(x).sqrt(x)

    def backward(self, gy):
        (x,) = self.inputs
        return gy / (2 * sqrt(x))  # d(sqrt x)/dx = 1 / (2 sqrt x)


class Abs(Function):
    """|x|, whose derivative sign(x) is taken as 0 at x = 0 (a subgradient)."""

    def forward(self, x):
        return get_array_module(x).abs(x)

    def backward(self, gy):
        (x,) = self.inputs
        return gy * Tensor(get_array_module(x.data).sign(x.data))


def exp(x) -> Tensor:
    return Exp()(x)


def log(x) -> Tensor:
    return Log()(x)


def sqrt(x) -> Tensor:
    return Sqrt()(x)


def abs(x) -> Tensor:  # noqa: A001
    return Abs()(x)


# ---------------------------------------------------------------------------
# Selections: maximum, minimum, clip, where
# ---------------------------------------------------------------------------


class Maximum(Function):
    """The larger of two tensors, elementwise. At a tie each side gets half the gradient."""

    def forward(self, x0, x1):
        _check_broadcast("maximum", x0, x1)
        return get_array_module(x0).maximum(x0, x1)

    def backward(self, gy):
        x0, x1 = self.inputs
        share0 = Tensor((x0.data > x1.data) + 0.5 * (x0.data == x1.data), dtype=gy.dtype)
        return sum_to(gy * share0, x0.shape), sum_to(gy * (1 - share0), x1.shape)


class Minimum(Function):
    """The smaller of two tensors, elementwise. At a tie each side gets half the gradient."""

    def forward(self, x0, x1):
        _check_broadcast("minimum", x0, x1)
        return get_array_module(x0).minimum(x0, x1)

    def backward(self, gy):
        x0, x1 = self.inputs
        share0 = Tensor((x0.data < x1.data) + 0.5 * (x0.data == x1.data), dtype=gy.dtype)
        return sum_to(gy * share0, x0.shape), sum_to(gy * (1 - share0), x1.shape)


class Clip(Function):
    """x limited to [low, high]; the gradient passes where low <= x <= high, as in PyTorch."""

    def __init__(self, low: float | None, high: float | None) -> None:
        if low is not None and high is not None and low > high:
            raise ValueError(f"clip: low ({low}) must not exceed high ({high})")
        self.low, self.high = low, high

    def forward(self, x):
        return get_array_module(x).clip(x, self.low, self.high)

    def backward(self, gy):
        (x,) = self.inputs
        inside = get_array_module(x.data).ones(x.shape, dtype=bool)  # on x's device
        if self.low is not None:
            inside &= x.data >= self.low
        if self.high is not None:
            inside &= x.data <= self.high
        return gy * Tensor(inside, dtype=gy.dtype)


class Where(Function):
    """Elementwise choice: x0 where `condition` holds, else x1 (the condition gets no gradient)."""

    def __init__(self, condition: Any) -> None:
        self.condition = condition.data if isinstance(condition, Tensor) else condition

    def forward(self, x0, x1):
        return get_array_module(x0).where(self.condition, x0, x1)

    def backward(self, gy):
        x0, x1 = self.inputs
        gx0 = sum_to(where(self.condition, gy, 0.0), x0.shape)
        gx1 = sum_to(where(self.condition, 0.0, gy), x1.shape)
        return gx0, gx1


def maximum(x, y) -> Tensor:
    return Maximum()(*_pair(x, y))


def minimum(x, y) -> Tensor:
    return Minimum()(*_pair(x, y))


def clip(x, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    return Clip(min, max)(x)


clamp = clip


def where(condition, x, y) -> Tensor:
    """`x` where `condition` is true, else `y` (numbers or tensors, broadcast together)."""
    x, y = _pair(x, y)
    condition = condition.data if isinstance(condition, Tensor) else condition
    return Where(condition)(x, y)


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


class ReLU(Function):
    """max(x, 0). Its derivative at exactly 0 is taken as 0."""

    def forward(self, x):
        return fused.relu(x)

    def backward(self, gy):
        (x,) = self.inputs
        if is_grad_enabled():  # create_graph: keep the product on the graph
            return gy * Tensor(x.data > 0, dtype=gy.dtype)
        return Tensor(fused.leaky_relu_backward(x.data, gy.data, 0.0))  # gy where x > 0


class LeakyReLU(Function):
    """x for x > 0, slope * x otherwise; its derivative is 1 for x > 0, slope otherwise.

    Both run as one fused pass (tinygen/kernels/fused.py). When the backward is
    itself recorded (create_graph=True), it is written as gy times the derivative, a
    constant, so that the gradient of the gradient reaches gy.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.slope = negative_slope

    def forward(self, x):
        return fused.leaky_relu(x, self.slope)

    def backward(self, gy):
        (x,) = self.inputs
        if is_grad_enabled():
            ones = get_array_module(x.data).ones_like(gy.data)
            return gy * Tensor(fused.leaky_relu_backward(x.data, ones, self.slope))
        return Tensor(fused.leaky_relu_backward(x.data, gy.data, self.slope))


class Sigmoid(Function):
    """1 / (1 + e^-x), computed as (1 + tanh(x/2)) / 2, which never overflows."""

    def forward(self, x):
        xp = get_array_module(x)
        half = x.dtype.type(0.5)
        return half * (1 + xp.tanh(half * x))

    def backward(self, gy):
        (x,) = self.inputs
        s = sigmoid(x)
        return gy * s * (1 - s)  # sigmoid' = sigmoid * (1 - sigmoid)


class Tanh(Function):
    def forward(self, x):
        return get_array_module(x).tanh(x)

    def backward(self, gy):
        (x,) = self.inputs
        y = tanh(x)
        return gy * (1 - y * y)  # tanh' = 1 - tanh^2


class Softplus(Function):
    """log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so that it never overflows."""

    def forward(self, x):
        xp = get_array_module(x)
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, gy):
        (x,) = self.inputs
        return gy * sigmoid(x)  # softplus' = sigmoid


class LogSigmoid(Function):
    """log(sigmoid(x)) = -softplus(-x), stable for large |x|."""

    def forward(self, x):
        xp = get_array_module(x)
        return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, gy):
        (x,) = self.inputs
        return gy * sigmoid(-x)  # d log(sigmoid x)/dx = 1 - sigmoid(x) = sigmoid(-x)


def relu(x) -> Tensor:
    return ReLU()(x)


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    return LeakyReLU(negative_slope)(x)


def sigmoid(x) -> Tensor:
    return Sigmoid()(x)


def tanh(x) -> Tensor:
    return Tanh()(x)


def softplus(x) -> Tensor:
    return Softplus()(x)


def log_sigmoid(x) -> Tensor:
    return LogSigmoid()(x)


# ---------------------------------------------------------------------------
# dtype casts and comparisons
# ---------------------------------------------------------------------------


class Cast(Function):
    """The same values in another dtype; the gradient is cast back."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        self.source_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return cast(gy, self.source_dtype)


def cast(x, dtype: Any) -> Tensor:
    x = as_tensor(x)
    if x.dtype == np.dtype(dtype):
        return x
    return Cast(dtype)(x)


class ToDevice(Function):
    """The same values on another device ('cpu' or 'cuda'); the gradient is moved back."""

    def __init__(self, device: str) -> None:
        self.device = backend.normalize_device(device)

    def forward(self, x):
        self.source_device = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy):
        return to_device(gy, self.source_device)


def to_device(x, device: str) -> Tensor:
    x = as_tensor(x)
    if x.device == backend.normalize_device(device):
        return x
    return ToDevice(device)(x)


def _compare(name: str):
    def compare(x, y) -> Tensor:
        """Elementwise comparison; a boolean tensor, outside the graph."""
        x, y = _pair(x, y)
        _check_broadcast(name, x, y)
        return Tensor(getattr(get_array_module(x.data), name)(x.data, y.data))

    compare.__name__ = name
    return compare


eq = _compare("equal")
ne = _compare("not_equal")
lt = _compare("less")
le = _compare("less_equal")
gt = _compare("greater")
ge = _compare("greater_equal")

"""Reductions: sum, mean, var, max, min, logsumexp.

Each takes `axis` (None for all, an int, or a tuple) and `keepdims`, as
NumPy does. The backward pass of a reduction spreads the output's gradient
back over the reduced axes: first restore the reduced axes as size 1 (as
keepdims would have left them), then broadcast to the input's shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygen.autograd import Function, Tensor, as_tensor
from tinygen.backend import get_array_module
from tinygen.ops.elementwise import exp
from tinygen.ops.shape import broadcast_to, reshape


def _axes(axis: Any, ndim: int, name: str) -> tuple[int, ...]:
    """Normalize `axis` to a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{name}: axis {a} is out of range for a tensor with {ndim} dims")
    return tuple(sorted({int(a) % ndim for a in axes}))


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the reduction has with keepdims=True."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _spread(gy: Tensor, shape: tuple[int, ...], axes: tuple[int, ...]) -> Tensor:
    """Broadcast a reduction's gradient back to the input's shape."""
    return broadcast_to(reshape(gy, _kept_shape(shape, axes)), shape)


class Sum(Function):
    def __init__(self, axes: tuple[int, ...], keepdims: bool) -> None:
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        (x,) = self.inputs
        return _spread(gy, x.shape, self.axes)


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    x = as_tensor(x)
    return Sum(_axes(axis, x.ndim, "sum"), keepdims)(x)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """sum / count, so its gradient is the sum's divided by the count."""
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "mean")
    count = int(np.prod([x.shape[a] for a in axes]))
    if count == 0:
        raise ValueError(f"mean: reducing over an empty axis of shape {x.shape}")
    return sum(x, axes, keepdims) * (1.0 / count)


def var(x, axis=None, keepdims: bool = False, correction: int = 1) -> Tensor:
    """Variance, sum((x - mean)^2) / (count - correction).

    `correction=1` (the default, as in torch.var) gives the unbiased estimate;
    `correction=0` the population variance (numpy's default).
    """
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "var")
    count = int(np.prod([x.shape[a] for a in axes]))
    if count - correction <= 0:
        raise ValueError(
            f"var: {count} elements with correction={correction} leave no degrees of freedom"
        )
    centered = x - mean(x, axes, keepdims=True)
    return sum(centered * centered, axes, keepdims) * (1.0 / (count - correction))


class Max(Function):
    """The largest element along `axes`.

    Where several elements tie for the maximum, the gradient is split evenly
    among them (each gets 1/k of it), which keeps max symmetric in its
    arguments; PyTorch's full reduction does the same.
    """

    def __init__(self, axes: tuple[int, ...], keepdims: bool, smallest: bool = False) -> None:
        self.axes, self.keepdims, self.smallest = axes, keepdims, smallest

    def forward(self, x):
        if x.size == 0:
            raise ValueError(f"max/min: cannot reduce an empty tensor of shape {tuple(x.shape)}")
        pick = x.min if self.smallest else x.max
        return pick(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        (x,) = self.inputs
        pick = x.data.min if self.smallest else x.data.max
        winners = x.data == pick(axis=self.axes, keepdims=True)
        share = winners / winners.sum(axis=self.axes, keepdims=True)
        return _spread(gy, x.shape, self.axes) * Tensor(share.astype(gy.dtype))


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """The maximum along `axis` (values only; use argmax for positions)."""
    x = as_tensor(x)
    return Max(_axes(axis, x.ndim, "max"), keepdims)(x)


def min(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    x = as_tensor(x)
    return Max(_axes(axis, x.ndim, "min"), keepdims, smallest=True)(x)


def argmax(x, axis=None) -> Tensor:
    """Positions of the maxima (an integer tensor, outside the graph)."""
    x = as_tensor(x)
    return Tensor(x.data.argmax(axis=axis))


class LogSumExp(Function):
    """log(sum(exp(x))) along `axes`, computed without overflow.

    With m = max(x):  log sum e^x = m + log sum e^(x - m), and every
    e^(x - m) <= 1. The gradient is softmax(x) = e^(x - logsumexp(x)).
    """

    def __init__(self, axes: tuple[int, ...], keepdims: bool) -> None:
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        if any(x.shape[a] == 0 for a in self.axes):
            raise ValueError(
                f"logsumexp: cannot reduce over an empty axis of shape {tuple(x.shape)}"
            )
        xp = get_array_module(x)
        m = x.max(axis=self.axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf along an axis: keep the -inf result
        y = m + xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True))
        return y if self.keepdims else y.squeeze(axis=self.axes)

    def backward(self, gy):
        # softmax(x) = e^(x - m) / sum e^(x - m) for any constant m. With m = max(x) the
        # differences x - m are exact, where x - logsumexp(x) would carry the rounding
        # of logsumexp (1e-5 relative in float32 at |x| ~ 1000).
        (x,) = self.inputs
        xp = get_array_module(x.data)
        m = x.data.max(axis=self.axes, keepdims=True)
        m = Tensor(xp.where(xp.isfinite(m), m, 0))
        e = exp(x - m)
        softmax = e / sum(e, self.axes, keepdims=True)
        return _spread(gy, x.shape, self.axes) * softmax


def logsumexp(x, axis=None, keepdims: bool = False) -> Tensor:
    x = as_tensor(x)
    return LogSumExp(_axes(axis, x.ndim, "logsumexp"), keepdims)(x)

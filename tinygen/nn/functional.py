"""The operations behind the layers, as plain functions: `import tinygen.nn.functional as F`.

A layer (tinygen.nn.Linear, BatchNorm2d, ...) holds weights and options and
calls one of these. Here live the ones that are more than a single
operation: `linear`, `batch_norm` (a fused Function, the one with the most
arithmetic in its backward), `dropout`, `softmax`/`log_softmax`. The
activations and the convolutions (conv2d, conv_transpose2d) are tinygen.ops'
own, re-exported, and the losses come from tinygen.nn.losses.

Notation for batch normalization: an input (N, C, *) with M = N * (product
of the trailing dims) values per channel c; statistics are taken per channel
over the other axes.
"""

from __future__ import annotations

from tinygen import backend
from tinygen.autograd import Function, Tensor, as_tensor, is_grad_enabled, no_grad
from tinygen.kernels import fused
from tinygen.nn.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    gaussian_kl,
    l1_loss,
    mse_loss,
    nll_loss,
)
from tinygen.ops.conv import conv2d, conv_transpose2d
from tinygen.ops.elementwise import exp, leaky_relu, log_sigmoid, relu, sigmoid, softplus, tanh
from tinygen.ops.reduce import logsumexp, mean, sum
from tinygen.ops.shape import reshape

__all__ = [
    "batch_norm",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "conv2d",
    "conv_transpose2d",
    "cross_entropy",
    "dropout",
    "gaussian_kl",
    "l1_loss",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "softmax",
    "softplus",
    "tanh",
]


# ---------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x @ W^T + b: (*, in) with W (out, in) and b (out,) -> (*, out)."""
    x, weight = as_tensor(x), as_tensor(weight)
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out, in), got shape {weight.shape}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input has {x.shape[-1] if x.ndim else 0} features (shape {x.shape}) "
            f"but weight expects {weight.shape[1]} (weight shape {weight.shape})"
        )
    y = x @ weight.T  # (*, in) @ (in, out) -> (*, out)
    if bias is not None:
        y = y + bias
    return y


# ---------------------------------------------------------------------------
# Batch normalization
# ---------------------------------------------------------------------------


def _channel_axes(ndim: int) -> tuple[int, ...]:
    """The axes statistics are taken over: all but the channel axis 1."""
    return (0, *range(2, ndim))


class BatchNormTrain(Function):
    """Batch normalization with the batch's own statistics (training mode).

        mean = (1/M) sum x            var = (1/M) sum (x - mean)^2      (biased)
        xhat = (x - mean) / sqrt(var + eps)
        y    = gamma * xhat + beta

    Backward, per channel (sums over the M values of the channel):

        gbeta  = sum gy               ggamma = sum gy * xhat
        gx     = gamma / sqrt(var + eps) * (gy - gbeta / M - xhat * ggamma / M)

    Both directions run as fused kernels (tinygen/kernels/fused.py, where the
    same formulas are written with arrays); the forward keeps xhat and
    1 / sqrt(var + eps) for the backward. When the backward is itself recorded
    (create_graph=True), it recomputes them from x with differentiable
    operations instead, so that the graph of the gradient reaches x and second
    derivatives are right.
    """

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def forward(self, x, gamma, beta):
        y, xhat, mean, invstd, var = fused.batch_norm(x, gamma, beta, self.eps)
        self.save_for_backward(xhat, invstd)
        self.batch_mean, self.batch_var = mean, var  # (C,), for the running statistics
        return y

    def backward(self, gy):
        x, gamma, _ = self.inputs
        if not is_grad_enabled():
            xhat, invstd = self.saved
            gx, ggamma, gbeta = fused.batch_norm_backward(
                gy.data, xhat, gamma.data, invstd, need_gx=self.needs_input_grad[0]
            )
            return (None if gx is None else Tensor(gx)), Tensor(ggamma), Tensor(gbeta)

        axes = _channel_axes(x.ndim)
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        M = x.size // x.shape[1]
        xhat, invstd = _normalized(x, axes, self.eps)
        gbeta = sum(gy, axes, keepdims=True)  # (1, C, 1, ...)
        ggamma = sum(gy * xhat, axes, keepdims=True)  # (1, C, 1, ...)
        gx = None
        if self.needs_input_grad[0]:
            g = reshape(gamma, shape)
            gx = g * invstd * (gy - gbeta * (1.0 / M) - xhat * ggamma * (1.0 / M))
        return gx, reshape(ggamma, gamma.shape), reshape(gbeta, gamma.shape)


def _normalized(x: Tensor, axes: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor]:
    """(xhat, 1 / sqrt(var + eps)) computed with differentiable operations."""
    centered = x - mean(x, axes, keepdims=True)
    var = mean(centered * centered, axes, keepdims=True)
    invstd = 1.0 / (var + eps) ** 0.5
    return centered * invstd, invstd


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize each channel of x (N, C, *) and scale and shift it by weight, bias (C,).

    training=True: normalize with the batch's mean and biased variance, and,
    when running statistics are given, update them in place with

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

    (the unbiased variance, as PyTorch keeps). training=False: normalize with
    the running statistics, an affine map of x.
    """
    x = as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C, *), got shape {x.shape}")
    C = x.shape[1]
    for name, value in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if value is not None and tuple(value.shape) != (C,):
            raise ValueError(
                f"batch_norm: {name} must have shape ({C},) for an input with {C} channels "
                f"(input shape {x.shape}), got {tuple(value.shape)}"
            )
    xp = backend.get_array_module(x.data)
    gamma = weight if weight is not None else Tensor(xp.ones(C, dtype=x.dtype))
    beta = bias if bias is not None else Tensor(xp.zeros(C, dtype=x.dtype))

    if training:
        M = x.size // C
        if M <= 1:
            raise ValueError(
                f"batch_norm: training needs more than 1 value per channel, got input shape "
                f"{x.shape}; use a larger batch or eval mode"
            )
        fn = BatchNormTrain(eps)
        y = fn(x, gamma, beta)
        if running_mean is not None and running_var is not None:
            with no_grad():
                unbiased = fn.batch_var * (M / (M - 1))
                m = momentum
                running_mean.data[...] = (1 - m) * running_mean.data + m * fn.batch_mean
                running_var.data[...] = (1 - m) * running_var.data + m * unbiased
        return y

    if running_mean is None or running_var is None:
        raise ValueError(
            "batch_norm: eval mode (training=False) needs running_mean and running_var"
        )
    # y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta = x * scale + shift
    shape = (1, C) + (1,) * (x.ndim - 2)
    invstd = Tensor((1.0 / xp.sqrt(running_var.data + eps)).astype(x.dtype))  # (C,)
    scale = gamma * invstd
    shift = beta - Tensor(running_mean.data.astype(x.dtype)) * scale
    return x * reshape(scale, shape) + reshape(shift, shape)


# ---------------------------------------------------------------------------
# Dropout and softmax
# ---------------------------------------------------------------------------


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p).

    E[y] = x, so nothing changes at evaluation time (training=False returns x).
    The mask comes from tinygen's seeded generator.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    x = as_tensor(x)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = backend.generator().random(x.shape) >= p  # True with probability 1 - p
    scale = (keep / (1.0 - p)).astype(x.dtype)
    return x * Tensor(backend.to_device(scale, x.device))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """log softmax(x) = x - logsumexp(x) along `dim`, without overflow."""
    x = as_tensor(x)
    return x - logsumexp(x, dim, keepdims=True)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """softmax(x)_i = e^(x_i) / sum_j e^(x_j) along `dim`."""
    return exp(log_softmax(x, dim))

"""Fused kernels for the layers between convolutions: batch normalization and the rectifiers.

Written with NumPy operators, batch normalization's backward pass is a dozen
passes over the activations, each making a fresh array; LeakyReLU's is four.
On the DCGAN training step (batch 64, 2 threads), batch normalization and the
rectifiers took about a third of the step that way, far more than their
arithmetic: they are bound by memory, and the kernel has to zero every page
of every fresh array before it can be written. The Numba kernels in cpu.py
do each of them in one to three passes and allocate only their outputs;
inside `lanes.threads()` they also share large arrays out between the lane
threads (lanes.over_range): the rectifiers by flat pieces, batch normalization
by channels.

Every function here has two implementations, chosen as for im2col (see
tinygen/kernels/__init__.py):

- numpy arrays go to the Numba kernels in cpu.py;
- cupy arrays, and every array under TINYGEN_KERNELS=reference (or when
  Numba cannot be imported), go to the array formulas written below, which
  are the definitions. The tests hold the kernels to them.

Nothing here records a graph: these are the forward and backward arithmetic
of Functions in tinygen/ops/elementwise.py and tinygen/nn/functional.py.

Notation for batch normalization: x is (N, C, *), its statistics are per
channel c over the M = N * (product of the trailing dims) values of c;
gamma, beta are (C,).
"""

from __future__ import annotations

from typing import Any

from tinygen.backend import get_array_module
from tinygen.kernels import _cpu_module, kernel_choice


def _numba(array: Any) -> Any:
    """cpu.py when the Numba kernels serve this array, else None."""
    return _cpu_module() if kernel_choice(array) == "numba" else None


def relu(x: Any) -> Any:
    """max(x, 0)."""
    cpu = _numba(x)
    if cpu is not None:
        return cpu.relu(x)
    return get_array_module(x).maximum(x, 0)


def leaky_relu(x: Any, slope: float) -> Any:
    """x where x > 0, else slope * x."""
    cpu = _numba(x)
    if cpu is not None:
        return cpu.leaky_relu(x, slope)
    # max(x, slope * x), or min for a slope above 1: the same numbers as a `where`, which
    # NumPy runs several times slower than these plain ufuncs on large arrays
    xp = get_array_module(x)
    pick = xp.maximum if slope <= 1 else xp.minimum
    return pick(x, x * x.dtype.type(slope))


def leaky_relu_backward(x: Any, gy: Any, slope: float) -> Any:
    """The gradient of leaky_relu at x: gy where x > 0, else slope * gy (0 at x = 0).

    slope = 0 is ReLU's gradient.
    """
    cpu = _numba(x)
    if cpu is not None:
        return cpu.leaky_relu_backward(x, gy, slope)
    slope = gy.dtype.type(slope)
    derivative = (x > 0).astype(gy.dtype)  # 1 where x > 0, else 0
    derivative *= 1 - slope
    derivative += slope  # 1 where x > 0, else slope
    return gy * derivative


def _channel_view(a: Any, ndim: int) -> Any:
    """A (C,) array as (1, C, 1, ...), to broadcast against (N, C, *)."""
    return a.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm(x: Any, gamma: Any, beta: Any, eps: float) -> tuple[Any, Any, Any, Any, Any]:
    """Training-mode batch normalization of x (N, C, *) with the batch's own statistics.

        mean = (1/M) sum x             var = (1/M) sum (x - mean)^2      (biased)
        invstd = 1 / sqrt(var + eps)   xhat = (x - mean) * invstd
        y = gamma * xhat + beta

    Returns (y, xhat, mean, invstd, var); the last three are (C,). All in x's dtype.
    """
    cpu = _numba(x)
    if cpu is not None:
        return cpu.batch_norm(x, gamma, beta, eps)
    xp = get_array_module(x)
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)  # (1, C, 1, ...)
    xhat = x - mean
    var = (xhat * xhat).mean(axis=axes, keepdims=True)
    invstd = (1.0 / xp.sqrt(var + eps)).astype(x.dtype)
    xhat *= invstd
    y = xhat * _channel_view(gamma.astype(x.dtype), x.ndim)
    y += _channel_view(beta.astype(x.dtype), x.ndim)
    return y, xhat, mean.reshape(-1), invstd.reshape(-1), var.reshape(-1)


def batch_norm_backward(
    gy: Any, xhat: Any, gamma: Any, invstd: Any, need_gx: bool = True
) -> tuple[Any, Any, Any]:
    """The gradients of batch_norm from its saved xhat and invstd (C,):

        gbeta  = sum gy                ggamma = sum gy * xhat            (per channel)
        gx     = gamma * invstd * (gy - gbeta / M - xhat * ggamma / M)

    Returns (gx or None when not need_gx, ggamma, gbeta), the last two (C,).
    """
    cpu = _numba(xhat)
    if cpu is not None:
        return cpu.batch_norm_backward(gy, xhat, gamma, invstd, need_gx)
    axes = (0, *range(2, xhat.ndim))
    M = xhat.size // xhat.shape[1]
    gbeta = gy.sum(axis=axes)  # (C,)
    ggamma = (gy * xhat).sum(axis=axes)
    gx = None
    if need_gx:
        scale = _channel_view((gamma * invstd).astype(xhat.dtype), xhat.ndim)
        gx = gy - _channel_view(gbeta / M, xhat.ndim)
        gx -= xhat * _channel_view(ggamma / M, xhat.ndim)
        gx *= scale
    return gx, ggamma.astype(xhat.dtype), gbeta.astype(xhat.dtype)

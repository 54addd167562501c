"""Loss functions: how far a prediction is from its target, as one differentiable number.

Every loss takes `reduction`:

    'none'   the loss of each element (or of each sample, for cross_entropy and gaussian_kl)
    'mean'   their mean (PyTorch's default)
    'sum'    their sum

A VAE wants the reconstruction summed over pixels and averaged over the
batch: `binary_cross_entropy_with_logits(logits, x, reduction='sum') / N`,
or `(..., reduction='none').sum(axis=(1, 2, 3)).mean()`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinygen import backend
from tinygen.autograd import Function, Tensor, as_tensor
from tinygen.ops.elementwise import abs, cast, clip, exp, log, maximum, softplus
from tinygen.ops.reduce import logsumexp, mean, sum
from tinygen.ops.shape import getitem, permute, reshape

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _same_shape(name: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{name}: target shape {target.shape} differs from input shape {input.shape}; "
            "they must be equal"
        )


def _like(value: Any, x: Tensor) -> Tensor:
    """A target or weight as a tensor in x's dtype (a float64 NumPy target must not turn a
    float32 loss into float64; 0/1 integer labels become floats)."""
    value = as_tensor(value, like=x)
    return value if value.dtype == x.dtype else cast(value, x.dtype)


def _check_reduction(reduction: str, name: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# ---------------------------------------------------------------------------
# Binary cross-entropy
# ---------------------------------------------------------------------------


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Any,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> Tensor:
    """BCE of sigmoid(x) against targets z in [0, 1], computed from the logits x.

        loss = -[z log sigmoid(x) + (1 - z) log(1 - sigmoid(x))]
             = max(x, 0) - x z + log(1 + e^-|x|)       (= softplus(x) - x z)

    The second form never takes the log of 0 or overflows an exponential,
    so it is finite for logits of +-100, +-1e4 and beyond. Its gradient is
    sigmoid(x) - z.
    """
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    if pos_weight is not None:
        raise NotImplementedError(
            "binary_cross_entropy_with_logits: pos_weight is not supported; weight the "
            "loss with reduction='none' instead"
        )
    x = as_tensor(input)
    z = _like(target, x)
    _same_shape("binary_cross_entropy_with_logits", x, z)
    loss = softplus(x) - x * z  # softplus(x) = max(x, 0) + log1p(e^-|x|)
    if weight is not None:
        loss = loss * _like(weight, x)
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


# The floor of p (1 - p) in BCE's gradient: 1e-12 rounded to float32, as PyTorch stores it, so
# that the gradients at p = 0 or 1 agree with PyTorch's to the last bit.
_BCE_FLOOR = float(np.float32(1e-12))


class BinaryCrossEntropy(Function):
    """-[z log p + (1 - z) log(1 - p)], each log clamped at -100 as PyTorch does.

    The clamp keeps p = 0 or p = 1 finite (a loss of at most 100). Gradients:

        d/dp = (p - z) / max(p (1 - p), 1e-12)        d/dz = log(1 - p) - log p
    """

    def forward(self, p, z):
        xp = backend.get_array_module(p)
        with np.errstate(divide="ignore"):  # log(0) = -inf, clamped just below
            log_p = xp.maximum(xp.log(p), -100.0)
            log_q = xp.maximum(xp.log(1 - p), -100.0)
        return -(z * log_p + (1 - z) * log_q)

    def backward(self, gy):
        p, z = self.inputs
        gp = gz = None
        if self.needs_input_grad[0]:
            gp = gy * (p - z) / maximum(p * (1 - p), _BCE_FLOOR)
        if self.needs_input_grad[1]:
            # log of p clamped at -100 = log(max(p, e^-100)): the same clamp, differentiable
            floor = math.exp(-100.0)
            gz = gy * (log(clip(1 - p, floor)) - log(clip(p, floor)))
        return gp, gz


def binary_cross_entropy(
    input: Tensor, target: Any, weight: Any = None, reduction: str = "mean"
) -> Tensor:
    """BCE of probabilities p in [0, 1] against targets z: -[z log p + (1 - z) log(1 - p)].

    Prefer binary_cross_entropy_with_logits: it is exact where p rounds to 0
    or 1. Here each log is clamped at -100, so the loss stays finite.
    """
    _check_reduction(reduction, "binary_cross_entropy")
    p = as_tensor(input)
    z = _like(target, p)
    _same_shape("binary_cross_entropy", p, z)
    xp = backend.get_array_module(p.data)
    if p.size and not bool(((p.data >= 0) & (p.data <= 1)).all()):
        low, high = float(xp.min(p.data)), float(xp.max(p.data))
        raise ValueError(
            f"binary_cross_entropy: input must be probabilities in [0, 1], got values in "
            f"[{low:.4g}, {high:.4g}]; for logits use binary_cross_entropy_with_logits"
        )
    loss = BinaryCrossEntropy()(p, z)
    if weight is not None:
        loss = loss * _like(weight, p)
    return _reduce(loss, reduction, "binary_cross_entropy")


# ---------------------------------------------------------------------------
# Regression losses
# ---------------------------------------------------------------------------


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Squared error (x - z)^2."""
    _check_reduction(reduction, "mse_loss")
    x = as_tensor(input)
    z = _like(target, x)
    _same_shape("mse_loss", x, z)
    diff = x - z
    return _reduce(diff * diff, reduction, "mse_loss")


def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Absolute error |x - z| (its gradient at x = z is taken as 0)."""
    _check_reduction(reduction, "l1_loss")
    x = as_tensor(input)
    z = _like(target, x)
    _same_shape("l1_loss", x, z)
    return _reduce(abs(x - z), reduction, "l1_loss")


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


def _classes_last(x: Tensor) -> Tensor:
    """(N, C, d1, ...) -> (N * d1 * ..., C); (N, C) stays as it is."""
    if x.ndim == 2:
        return x
    moved = permute(x, 0, *range(2, x.ndim), 1)  # (N, d1, ..., C)
    return reshape(moved, -1, x.shape[1])  # (N*d1*..., C)


def nll_loss(input: Tensor, target: Any, weight: Any = None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices, from log-probabilities.

    input (N, C) or (N, C, d1, ...) of log-probabilities, target (N,) or
    (N, d1, ...) of class indices. loss_i = -w[t_i] * input[i, t_i]; 'mean'
    divides the sum by sum_i w[t_i] (by the count without weights).
    """
    _check_reduction(reduction, "nll_loss")
    logp = as_tensor(input)
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if logp.ndim == 1:  # one unbatched sample: (C,) and a scalar target
        logp, t = reshape(logp, 1, -1), t.reshape(1)
    if logp.ndim < 2:
        raise ValueError(f"nll_loss: input must be (N, C, *), got shape {logp.shape}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: target must hold integer class indices, got dtype {t.dtype}")
    expected = (logp.shape[0], *logp.shape[2:])
    if tuple(t.shape) != expected:
        raise ValueError(
            f"nll_loss: target shape {tuple(t.shape)} does not match input shape {logp.shape}; "
            f"expected {expected}"
        )
    C = logp.shape[1]
    host_t = backend.to_device(t, "cpu").reshape(-1)
    if host_t.size and (host_t.min() < 0 or host_t.max() >= C):
        raise ValueError(
            f"nll_loss: target holds class indices in [{host_t.min()}, {host_t.max()}] but "
            f"the input has {C} classes (valid: 0 to {C - 1})"
        )
    flat = _classes_last(logp)  # (K, C), K = N * d1 * ...
    xp = backend.get_array_module(logp.data)
    rows = xp.arange(flat.shape[0])
    cols = backend.to_device(host_t, logp.device)
    loss = -getitem(flat, (rows, cols))  # (K,)
    if weight is not None:
        w = _like(weight, logp)
        if w.shape != (C,):
            raise ValueError(f"nll_loss: weight must have shape ({C},), got {w.shape}")
        w_t = Tensor(w.data[cols])  # (K,) the weight of each target's class
        loss = loss * w_t
        if reduction == "mean":
            return sum(loss) / sum(w_t)
    if reduction == "none":
        return reshape(loss, t.shape)
    return _reduce(loss, reduction, "nll_loss")


def cross_entropy(
    input: Tensor, target: Any, weight: Any = None, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy from logits, for classifiers: nll_loss(log_softmax(input, dim=1), target).

    target holds class indices (N,) or (N, d1, ...); or, with the input's
    shape and a float dtype, class probabilities, for which
    loss_i = -sum_c target[i, c] * log_softmax(input)[i, c].
    log_softmax(x) = x - logsumexp(x) along the class axis, without overflow.
    """
    _check_reduction(reduction, "cross_entropy")
    x = as_tensor(input)
    class_axis = 0 if x.ndim == 1 else 1
    logp = x - logsumexp(x, class_axis, keepdims=True)
    t = target if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind == "f":
        if weight is not None:
            raise NotImplementedError(
                "cross_entropy: class weights with probability targets are not supported"
            )
        t = _like(t, x)
        _same_shape("cross_entropy", x, t)
        loss = -sum(t * logp, class_axis)
        return _reduce(loss, reduction, "cross_entropy")
    return nll_loss(logp, t, weight, reduction)


# ---------------------------------------------------------------------------
# The KL term of a VAE
# ---------------------------------------------------------------------------


def gaussian_kl(mu: Tensor, logvar: Tensor, reduction: str = "mean") -> Tensor:
    """KL(N(mu, diag(e^logvar)) || N(0, I)) per sample, summed over the latent dimensions.

        KL = -1/2 * sum_j (1 + logvar_j - mu_j^2 - e^logvar_j)

    mu and logvar are (N, D) (or (N, D1, D2, ...)): the result is (N,) with
    reduction='none', its mean over the batch with 'mean', its sum with 'sum'.
    """
    _check_reduction(reduction, "gaussian_kl")
    mu = as_tensor(mu)
    logvar = _like(logvar, mu)
    _same_shape("gaussian_kl", mu, logvar)
    if mu.ndim < 2:
        raise ValueError(
            f"gaussian_kl: mu and logvar must be (N, D), one row per sample, got shape {mu.shape}"
        )
    terms = 1.0 + logvar - mu * mu - exp(logvar)  # (N, D, ...)
    kl = sum(terms, tuple(range(1, mu.ndim))) * -0.5  # (N,)
    return _reduce(kl, reduction, "gaussian_kl")

"""Weight initializations: fill a tensor in place with values drawn from a chosen distribution.

Every function writes into `tensor.data` and returns the tensor, and draws
from tinygen's one seeded generator (on the CPU, then copied to the tensor's
device, so a seed gives the same weights on both devices).

Fan-in and fan-out of a weight of shape (d0, d1, k1, k2, ...), as PyTorch
counts them (the receptive field is k1 * k2 * ...):

    fan_in  = d1 * receptive field        fan_out = d0 * receptive field

For Linear (out, in) and Conv2d (C_out, C_in/groups, KH, KW) fan_in is the
number of inputs that feed one output. For ConvTranspose2d, whose weight is
(C_in, C_out/groups, KH, KW), the same rule counts output channels instead;
PyTorch's defaults use it that way and so does tinygen, so both initialize
alike.
"""

from __future__ import annotations

import math

import numpy as np

from tinygen import backend
from tinygen.autograd import Tensor

_LINEAR_LIKE = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The factor that keeps activations' variance steady through `nonlinearity`.

    linear, conv, sigmoid: 1    tanh: 5/3    relu: sqrt(2)
    leaky_relu with slope a: sqrt(2 / (1 + a^2))    selu: 3/4
    """
    if nonlinearity in _LINEAR_LIKE or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity == "selu":
        return 0.75
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight with at least 2 dimensions (see the module docstring)."""
    if tensor.ndim < 2:
        raise ValueError(
            f"fan_in_and_fan_out: a weight needs at least 2 dimensions, got shape {tensor.shape}"
        )
    receptive_field = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _fill(tensor: Tensor, values: np.ndarray) -> Tensor:
    """Write host values into the tensor's array, in its dtype and on its device."""
    tensor.data[...] = backend.to_device(values.astype(tensor.dtype), tensor.device)
    return tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with samples of U(a, b): mean (a + b) / 2, variance (b - a)^2 / 12."""
    if a > b:
        raise ValueError(f"uniform_: a ({a}) must not exceed b ({b})")
    return _fill(tensor, backend.generator().uniform(a, b, tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with samples of N(mean, std^2)."""
    if std < 0:
        raise ValueError(f"normal_: std must be non-negative, got {std}")
    return _fill(tensor, backend.generator().normal(mean, std, tensor.shape))


def constant_(tensor: Tensor, val: float) -> Tensor:
    tensor.data[...] = val
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def _fan(tensor: Tensor, mode: str, caller: str) -> int:
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"{caller}: mode must be 'fan_in' or 'fan_out', got {mode!r}")


def kaiming_uniform_(
    tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Tensor:
    """He initialization, uniform: U(-bound, bound) with

        std = gain / sqrt(fan),   bound = sqrt(3) * std     (U(-b, b) has variance b^2 / 3)

    `a` is the negative slope of the leaky ReLU that follows. Layers' default
    initialization uses a = sqrt(5), which gives bound = 1 / sqrt(fan_in).
    """
    fan = _fan(tensor, mode, "kaiming_uniform_")
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(
    tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Tensor:
    """He initialization, normal: N(0, std^2) with std = gain / sqrt(fan)."""
    fan = _fan(tensor, mode, "kaiming_normal_")
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot initialization, uniform: U(-bound, bound) with

    std = gain * sqrt(2 / (fan_in + fan_out)),   bound = sqrt(3) * std
    """
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot initialization, normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal_(tensor, 0.0, std)

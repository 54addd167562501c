"""The layers: Modules that hold weights and options and call tinygen.nn.functional.

Names, arguments, defaults, weight shapes, initializations and printouts
are PyTorch's, so a model written for one reads the same in the other:

    Linear(in, out)                 weight (out, in), bias (out,)
    Conv2d(C, C_out, k)             weight (C_out, C/groups, KH, KW), bias (C_out,)
    ConvTranspose2d(C, C_out, k)    weight (C, C_out/groups, KH, KW), bias (C_out,)
    BatchNorm1d/2d(C)               weight (C,), bias (C,); buffers running_mean,
                                    running_var (C,), num_batches_tracked ()

Default initialization (`reset_parameters`): weights from
kaiming_uniform_(a=sqrt(5)), that is U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the weight's fan_in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinygen import backend
from tinygen.autograd import Tensor
from tinygen.nn import functional as F  # noqa: N812  (the name PyTorch users know)
from tinygen.nn import init
from tinygen.nn.module import Module, Parameter
from tinygen.ops.shape import flatten, reshape


def _empty(*shape: int) -> Parameter:
    """A parameter of this shape in the default dtype, to be filled by an initializer."""
    return Parameter(np.zeros(shape, dtype=backend.DEFAULT_DTYPE))


def _pair(value: Any, name: str, owner: str) -> tuple[int, int]:
    """An int or a pair of ints, as a pair."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise TypeError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _default_init(weight: Parameter, bias: Parameter | None) -> None:
    """PyTorch's default: kaiming_uniform_(a=sqrt(5)) and a bias bound of 1/sqrt(fan_in)."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.fan_in_and_fan_out(weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)


# ---------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------


class Linear(Module):
    """y = x @ W^T + b: (*, in_features) -> (*, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features)
        self.register_parameter("bias", _empty(out_features) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _default_init(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


# ---------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------


class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: options, weight, bias, initialization, printout."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        groups: int,
        bias: bool,
        padding_mode: str,
        transposed: bool,
        output_padding: Any,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must "
                f"both be divisible by groups ({groups})"
            )
        if padding_mode != "zeros":
            raise NotImplementedError(
                f"{name}: only padding_mode='zeros' is supported, got {padding_mode!r}"
            )
        if isinstance(padding, str):
            raise NotImplementedError(
                f"{name}: padding must be an int or a pair; the string forms "
                f"({padding!r}) are not supported"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size", name)
        self.stride = _pair(stride, "stride", name)
        self.padding = _pair(padding, "padding", name)
        self.dilation = _pair(dilation, "dilation", name)
        self.output_padding = _pair(output_padding, "output_padding", name)
        self.groups, self.padding_mode, self.transposed = groups, padding_mode, transposed
        KH, KW = self.kernel_size
        if transposed:
            self.weight = _empty(in_channels, out_channels // groups, KH, KW)
        else:
            self.weight = _empty(out_channels, in_channels // groups, KH, KW)
        self.register_parameter("bias", _empty(out_channels) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _default_init(self.weight, self.bias)

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D convolution: (N, C, H, W) -> (N, C_out, OH, OW) with

    OH = floor((H + 2 PH - DH (KH - 1) - 1) / SH) + 1, and OW alike.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            transposed=False,
            output_padding=0,
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution (the adjoint of Conv2d): (N, C, H, W) -> (N, C_out, OH, OW) with

    OH = (H - 1) SH - 2 PH + DH (KH - 1) + output_padding + 1, and OW alike.

    `forward(x, output_size=(OH, OW))` picks the output_padding that gives
    that size (several output sizes map onto one input size under a stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            transposed=True,
            output_padding=output_padding,
        )

    def forward(self, x: Tensor, output_size: Any = None) -> Tensor:
        return F.conv_transpose2d(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
            output_size=output_size,
        )


# ---------------------------------------------------------------------------
# Batch normalization
# ---------------------------------------------------------------------------


class _BatchNorm(Module):
    """Normalize each channel by batch statistics (training) or running statistics (eval).

    momentum=None keeps a cumulative average instead: factor 1 / num_batches_tracked.
    affine=True learns a scale (weight) and a shift (bias); bias=False keeps the scale only.
    """

    _expected_dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=backend.DEFAULT_DTYPE))
        if affine and bias:
            self.bias = Parameter(np.zeros(num_features, dtype=backend.DEFAULT_DTYPE))
        if track_running_stats:
            self.register_buffer(
                "running_mean", Tensor(np.zeros(num_features, dtype=backend.DEFAULT_DTYPE))
            )
            self.register_buffer(
                "running_var", Tensor(np.ones(num_features, dtype=backend.DEFAULT_DTYPE))
            )
            self.register_buffer("num_batches_tracked", Tensor(np.zeros((), dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.data[...] = 0

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self._expected_dims:
            dims = " or ".join(f"{d}-D" for d in self._expected_dims)
            raise ValueError(
                f"{type(self).__name__}: expected a {dims} input, got shape {x.shape}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}: input has {x.shape[1]} channels (shape {x.shape}) "
                f"but the layer was built for {self.num_features}"
            )
        use_batch_stats = self.training or not self.track_running_stats
        updates = self.training and self.track_running_stats
        factor = 0.0 if self.momentum is None else self.momentum
        if updates and self.momentum is None:  # cumulative moving average over the batches
            factor = 1.0 / (float(self.num_batches_tracked.data) + 1)
        y = F.batch_norm(
            x,
            self.running_mean,  # None without track_running_stats
            self.running_var,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=factor,
            eps=self.eps,
        )
        if updates:  # counted after the call, so a rejected input leaves no trace
            self.num_batches_tracked.data[...] += 1
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs, statistics per channel C."""

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs, statistics per channel C over N, H, W."""

    _expected_dims = (4,)


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


class ReLU(Module):
    """max(x, 0). `inplace` is accepted for PyTorch code and ignored: tinygen never
    overwrites an input."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise (`inplace` accepted and ignored)."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


# ---------------------------------------------------------------------------
# Reshaping and dropout
# ---------------------------------------------------------------------------


class Flatten(Module):
    """Merge dims start_dim..end_dim: (N, C, H, W) -> (N, C*H*W) with the defaults."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split one dim into several: Unflatten(1, (64, 7, 7)) takes (N, 3136) to (N, 64, 7, 7)."""

    def __init__(self, dim: int, unflattened_size: Any) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(int(s) for s in unflattened_size)

    def forward(self, x: Tensor) -> Tensor:
        dim = self.dim % x.ndim if -x.ndim <= self.dim < x.ndim else None
        if dim is None:
            raise ValueError(f"Unflatten: dim {self.dim} is out of range for shape {x.shape}")
        size = int(np.prod(self.unflattened_size))
        if -1 not in self.unflattened_size and size != x.shape[dim]:
            raise ValueError(
                f"Unflatten: dim {self.dim} has size {x.shape[dim]} (shape {x.shape}) but "
                f"unflattened_size {self.unflattened_size} holds {size}"
            )
        return reshape(x, x.shape[:dim] + self.unflattened_size + x.shape[dim + 1 :])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Dropout(Module):
    """Inverted dropout with probability p in training mode; the identity in eval mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

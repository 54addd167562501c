"""2-D convolution and transposed convolution, as differentiable Functions.

    conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)
    conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, output_size=None)

Same arguments, weight layouts and output shapes as PyTorch's functions of
the same names. The arithmetic is in tinygen/kernels/conv_arrays.py (im2col
and one GEMM); this file adds the autograd and the argument checks.

Notation (as in tinygen/kernels/reference.py): x (N, C, H, W), G groups,
conv2d weight (C_out, C/G, KH, KW), output (N, C_out, OH, OW) with

    OH = (H + 2*PH - DH*(KH - 1) - 1) // SH + 1          (OW likewise)

The two operations are each other's adjoint, <conv2d(x, W), y> =
<x, conv_transpose2d(y, W)>, and their backward passes are written with each
other, so gradients of gradients need nothing new:

    conv2d            y  = Conv2d(x, W)
        gx = ConvTranspose2d(gy, W)      gW = Conv2dGradWeight(x, gy)
    conv_transpose2d  y  = ConvTranspose2d(x, W)
        gx = Conv2d(gy, W)               gW = Conv2dGradWeight(gy, x)
    Conv2dGradWeight  gW = Conv2dGradWeight(x, gy)
        gx = ConvTranspose2d(gy, ggW)    ggy = Conv2d(x, ggW)

(ggW is the gradient arriving at gW.) Every Function here has the conv2d
geometry: `hw` is always the (H, W) of conv2d's input, the large side. The
bias gradient is gy summed over N, OH and OW.

Small layers keep the im2col columns of x from the forward pass for the weight
gradient, and a transposed convolution's backward makes the columns of gy once
for both its gradients (see KEEP_COLUMNS_BYTES in conv_arrays.py); larger
layers recompute them in chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygen.autograd import Function, Tensor, as_tensor
from tinygen.backend import get_array_module
from tinygen.kernels import conv_arrays
from tinygen.kernels.reference import conv_output_size
from tinygen.ops.reduce import sum as _sum
from tinygen.ops.shape import pad

Pair = tuple[int, int]


class _ConvGeometry:
    """The options shared by the Functions below, in the conv2d view."""

    def __init__(self, stride: Pair, padding: Pair, dilation: Pair, groups: int) -> None:
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    @property
    def options(self) -> tuple[Pair, Pair, Pair, int]:
        return self.stride, self.padding, self.dilation, self.groups


def _bias_grad(gy: Tensor) -> Tensor:
    """gy (N, C_out, OH, OW) summed to (C_out,): over the batch first, then over the pixels.

    The same sum as one reduction over axes (0, 2, 3), in another order; NumPy runs
    a reduction over mixed axes slowly, and the batch sum adds whole contiguous
    images. Measured, float32: (64, 32, 14, 14) 0.12 ms in one reduction, 0.05 ms
    in two.
    """
    return _sum(_sum(gy, axis=0), axis=(1, 2))


class Conv2d(_ConvGeometry, Function):
    """y = conv2d(x, W) + b: (N, C, H, W), (C_out, C/G, KH, KW), (C_out,) -> (N, C_out, OH, OW).

    `columns`: im2col of x when the caller already has it (see ConvTranspose2d.backward).
    """

    def __init__(
        self, stride: Pair, padding: Pair, dilation: Pair, groups: int, columns: Any = None
    ) -> None:
        super().__init__(stride, padding, dilation, groups)
        self.columns = columns

    def forward(self, x, weight, bias=None):
        columns = self.columns
        weight_grad_needed = self.needs_input_grad[1]
        if (
            columns is None
            and weight_grad_needed
            and conv_arrays.columns_worth_keeping(x.shape, weight.shape, *self.options, x.itemsize)
        ):
            columns = conv_arrays.columns(x, weight.shape[2:], *self.options[:3])
        y = conv_arrays.conv2d_forward(x, weight, *self.options, columns=columns, bias=bias)
        self.save_for_backward(columns)  # None: the weight gradient recomputes them in chunks
        return y

    def backward(self, gy):
        x, weight = self.inputs[:2]
        (columns,) = self.saved
        need = self.needs_input_grad
        H, W = x.shape[2:]
        gx = ConvTranspose2d(*self.options, hw=(H, W))(gy, weight) if need[0] else None
        gW = None
        if need[1]:
            gW = Conv2dGradWeight(*self.options, weight.shape[2:], columns=columns)(x, gy)
        if len(self.inputs) == 2:
            return gx, gW
        gb = _bias_grad(gy) if need[2] else None
        return gx, gW, gb


class ConvTranspose2d(_ConvGeometry, Function):
    """y = conv_transpose2d(x, W) + b, the adjoint of Conv2d; y has spatial size hw.

    x (N, C_in, OH, OW), W (C_in, C_out/G, KH, KW), b (C_out,) -> y (N, C_out, H, W),
    where (H, W) = hw must map back to (OH, OW) under the conv2d size formula.
    """

    def __init__(self, stride: Pair, padding: Pair, dilation: Pair, groups: int, hw: Pair) -> None:
        super().__init__(stride, padding, dilation, groups)
        self.hw = hw

    def forward(self, x, weight, bias=None):
        return conv_arrays.conv2d_backward_input(x, weight, self.hw, *self.options, bias=bias)

    def backward(self, gy):
        x, weight = self.inputs[:2]
        need = self.needs_input_grad
        # Both gradients read the columns of gy: make them once when they are worth keeping.
        columns = None
        if (
            need[0]
            and need[1]
            and conv_arrays.columns_worth_keeping(
                gy.shape, weight.shape, *self.options, gy.data.itemsize
            )
        ):
            columns = conv_arrays.columns(gy.data, weight.shape[2:], *self.options[:3])
        gx = Conv2d(*self.options, columns=columns)(gy, weight) if need[0] else None
        gW = None
        if need[1]:
            gW = Conv2dGradWeight(*self.options, weight.shape[2:], columns=columns)(gy, x)
        if len(self.inputs) == 2:
            return gx, gW
        gb = _bias_grad(gy) if need[2] else None
        return gx, gW, gb


class Conv2dGradWeight(_ConvGeometry, Function):
    """conv2d's weight gradient as a Function of (x, gy), so that it can be differentiated.

    x (N, C, H, W), gy (N, C_out, OH, OW) -> gW (C_out, C/G, KH, KW). It is
    linear in each argument; its backward is a ConvTranspose2d and a Conv2d.
    `columns`: im2col of x when the forward pass kept it.
    """

    def __init__(
        self,
        stride: Pair,
        padding: Pair,
        dilation: Pair,
        groups: int,
        kernel_size: Pair,
        columns: Any = None,
    ) -> None:
        super().__init__(stride, padding, dilation, groups)
        self.kernel_size = tuple(kernel_size)
        self.columns = columns

    def forward(self, x, gy):
        return conv_arrays.conv2d_backward_weight(
            x, gy, self.kernel_size, *self.options, columns=self.columns
        )

    def backward(self, ggW):
        x, gy = self.inputs
        need = self.needs_input_grad
        H, W = x.shape[2:]
        gx = ConvTranspose2d(*self.options, hw=(H, W))(gy, ggW) if need[0] else None
        ggy = Conv2d(*self.options, columns=self.columns)(x, ggW) if need[1] else None
        return gx, ggy


# ---------------------------------------------------------------------------
# The public functions: argument checks, then one Function
# ---------------------------------------------------------------------------


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution (cross-correlation, as in every deep-learning library).

    x (N, C, H, W), weight (C_out, C/groups, KH, KW), bias (C_out,) or None
    -> (N, C_out, OH, OW), OH = (H + 2*PH - DH*(KH - 1) - 1) // SH + 1.
    stride, padding and dilation are an int or an (height, width) pair.
    """
    name = "conv2d"
    x, weight = as_tensor(x), as_tensor(weight)
    stride = _pair(stride, "stride", name, low=1)
    padding = _pair(padding, "padding", name, low=0)
    dilation = _pair(dilation, "dilation", name, low=1)
    groups = _groups(groups, name)
    _check_tensors(name, x, weight, bias)
    N, C, H, W = x.shape
    C_out, Cg, KH, KW = weight.shape
    if C % groups != 0 or C_out % groups != 0:
        raise ValueError(
            f"conv2d: input channels ({C}) and output channels (weight.shape[0] = {C_out}) "
            f"must both divide by groups ({groups})"
        )
    if Cg * groups != C:
        raise ValueError(
            f"conv2d: input has {C} channels but weight expects {Cg * groups} "
            f"(weight shape {weight.shape}, groups {groups}: C must equal "
            "weight.shape[1] * groups)"
        )
    _check_bias(name, bias, C_out, x)
    _check_kernel_fits(name, (H, W), (KH, KW), padding, dilation)
    inputs = (x, weight) if bias is None else (x, weight, as_tensor(bias))
    return Conv2d(stride, padding, dilation, groups)(*inputs)


def conv_transpose2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    output_padding: int | Pair = 0,
    groups: int = 1,
    dilation: int | Pair = 1,
    output_size: Any = None,
) -> Tensor:
    """2-D transposed convolution: the adjoint (the gradient) of conv2d, used to upsample.

    x (N, C_in, H_in, W_in), weight (C_in, C_out/groups, KH, KW), bias (C_out,) or None
    -> (N, C_out, H_out, W_out) with

        H_out = (H_in - 1)*SH - 2*PH + DH*(KH - 1) + output_padding_h + 1     (W likewise)

    Several output sizes give back the same H_in under conv2d when the stride
    is above 1; output_padding (0 <= it < max(stride, dilation)) picks one,
    or output_size = (H_out, W_out) (or the full 4-D shape) names it directly,
    as PyTorch's ConvTranspose2d module accepts. Note the argument order:
    groups comes before dilation, as in PyTorch.
    """
    name = "conv_transpose2d"
    x, weight = as_tensor(x), as_tensor(weight)
    stride = _pair(stride, "stride", name, low=1)
    padding = _pair(padding, "padding", name, low=0)
    dilation = _pair(dilation, "dilation", name, low=1)
    output_padding = _pair(output_padding, "output_padding", name, low=0)
    groups = _groups(groups, name)
    _check_tensors(name, x, weight, bias)
    N, C_in, H_in, W_in = x.shape
    weight_C_in, C_out_g, KH, KW = weight.shape
    C_out = C_out_g * groups
    if weight_C_in != C_in:
        raise ValueError(
            f"conv_transpose2d: input has {C_in} channels but weight expects {weight_C_in} "
            f"(weight shape {weight.shape}: weight.shape[0] must equal the input channels)"
        )
    if C_in % groups != 0:
        raise ValueError(
            f"conv_transpose2d: input channels ({C_in}) must divide by groups ({groups})"
        )
    _check_bias(name, bias, C_out, x)

    # H_out = (H_in - 1)*SH - 2*PH + DH*(KH - 1) + 1 + output_padding
    smallest = tuple(
        (i - 1) * s - 2 * p + d * (k - 1) + 1
        for i, s, p, d, k in zip((H_in, W_in), stride, padding, dilation, (KH, KW))
    )
    if output_size is not None:
        output_padding = _padding_from_output_size(output_size, output_padding, smallest, stride)
    for axis, op, s, d in zip(("height", "width"), output_padding, stride, dilation):
        if op >= max(s, d):
            raise ValueError(
                f"conv_transpose2d: output_padding must be smaller than the stride or the "
                f"dilation (0 <= output_padding < max(stride, dilation) = {max(s, d)}) in "
                f"{axis}, got {op} (stride {s}, dilation {d}); it adds rows that no "
                "window would otherwise reach, not zero padding"
            )
    hw = (smallest[0] + output_padding[0], smallest[1] + output_padding[1])
    if hw[0] < 1 or hw[1] < 1:
        raise ValueError(
            f"conv_transpose2d: the output would be {hw[0]}x{hw[1]}, which is empty: "
            f"H_out = (H_in - 1)*SH - 2*PH + DH*(KH - 1) + output_padding + 1 must be >= 1; "
            f"reduce the padding {padding}"
        )

    # conv2d of an (H_out, W_out) input gives H_in rows, or a few more when
    # output_padding >= stride (possible only with dilation > stride): those extra
    # rows of conv2d's output are simply not part of this transposed convolution's
    # input, which is the same as feeding them zeros.
    extra = [
        conv_output_size(size, k, s, p, d) - i
        for size, k, s, p, d, i in zip(hw, (KH, KW), stride, padding, dilation, (H_in, W_in))
    ]
    if extra[0] or extra[1]:
        x = pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))  # (N, C_in, OH, OW)
    inputs = (x, weight) if bias is None else (x, weight, as_tensor(bias))
    return ConvTranspose2d(stride, padding, dilation, groups, hw)(*inputs)


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _pair(value: Any, label: str, name: str, low: int) -> Pair:
    """An int or a pair of ints, each >= low, as a pair."""
    values = (value, value) if isinstance(value, (int, np.integer)) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    ok = len(values) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    )
    if not ok or isinstance(value, bool):
        raise TypeError(f"{name}: {label} must be an int or a pair of ints, got {value!r}")
    if any(v < low for v in values):
        raise ValueError(f"{name}: {label} must be >= {low} in each dim, got {value!r}")
    return int(values[0]), int(values[1])


def _groups(groups: Any, name: str) -> int:
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool):
        raise TypeError(f"{name}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{name}: groups must be >= 1, got {groups}")
    return int(groups)


def _check_tensors(name: str, x: Tensor, weight: Tensor, bias: Any) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{name}: input must be 4-D (N, C, H, W), got shape {x.shape}; "
            "add a batch axis with x.unsqueeze(0) for a single image"
        )
    if weight.ndim != 4:
        raise ValueError(f"{name}: weight must be 4-D, got shape {weight.shape}")
    if x.dtype.kind != "f" or weight.dtype != x.dtype:
        raise TypeError(
            f"{name}: input and weight must share one floating dtype, got {x.dtype} and "
            f"{weight.dtype}; convert one with .to(dtype)"
        )
    if x.size == 0 or weight.size == 0:
        raise ValueError(f"{name}: empty input {x.shape} or weight {weight.shape}")
    get_array_module(x.data, weight.data)  # raises when they live on different devices


def _check_bias(name: str, bias: Any, C_out: int, x: Tensor) -> None:
    if bias is None:
        return
    bias = as_tensor(bias)
    if bias.shape != (C_out,):
        raise ValueError(
            f"{name}: bias must have shape ({C_out},), one value per output channel, "
            f"got {bias.shape}"
        )
    if bias.dtype != x.dtype:
        raise TypeError(f"{name}: bias dtype {bias.dtype} differs from the input's {x.dtype}")


def _check_kernel_fits(name: str, hw: Pair, kernel: Pair, padding: Pair, dilation: Pair) -> None:
    for axis, size, k, p, d in zip(("height", "width"), hw, kernel, padding, dilation):
        if d * (k - 1) + 1 > size + 2 * p:
            raise ValueError(
                f"{name}: the kernel must fit in the padded input: dilated kernel {axis} "
                f"DH*(KH-1)+1 = {d * (k - 1) + 1} > padded input {axis} H+2PH = "
                f"{size + 2 * p} (input {size}, padding {p}, kernel {k}, dilation {d})"
            )


def _padding_from_output_size(
    output_size: Any, output_padding: Pair, smallest: tuple, stride: Pair
) -> Pair:
    """output_padding = output_size - smallest output size, checked to lie in range."""
    try:
        size = tuple(int(v) for v in output_size)
    except TypeError:
        size = ()
    if len(size) == 4:
        size = size[2:]
    if len(size) != 2:
        raise ValueError(
            f"conv_transpose2d: output_size must be (H_out, W_out) or (N, C, H_out, W_out), "
            f"got {output_size!r}"
        )
    if output_padding != (0, 0):
        raise ValueError(
            f"conv_transpose2d: give output_size or output_padding, not both "
            f"(got output_size {size} and output_padding {output_padding})"
        )
    for axis, want, low, s in zip(("height", "width"), size, smallest, stride):
        if not low <= want <= low + s - 1:
            raise ValueError(
                f"conv_transpose2d: output_size {axis} {want} is not reachable: valid sizes "
                f"range from {low} to {low + s - 1} (the smallest output plus at most "
                f"stride - 1 = {s - 1})"
            )
    return size[0] - smallest[0], size[1] - smallest[1]

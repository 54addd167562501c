"""im2col and col2im in plain NumPy: the definition, written to be read first.

(It runs on CuPy arrays too, through `get_array_module`, so that
TINYGEN_KERNELS=reference can force this path on every device.)

The Numba kernels (cpu.py) and the CuPy kernels (gpu.py) compute exactly what
this file computes, to the last bit in float64; the tests hold them to it.

Notation, used by every file in this package:

    N          batch size
    C          input channels
    H, W       input height and width
    KH, KW     kernel height and width
    SH, SW     stride
    PH, PW     zero padding, added on both sides
    DH, DW     dilation: the gap between two kernel taps is DH - 1 (DW - 1) pixels
    OH, OW     output height and width:

        OH = (H + 2*PH - DH*(KH - 1) - 1) // SH + 1
        OW = (W + 2*PW - DW*(KW - 1) - 1) // SW + 1

The column matrix and its index convention (the one convention of tinygen):

    col has shape (C*KH*KW, N*OH*OW), C-contiguous; read as 6-D it is
    col[c, kh, kw, n, oh, ow], and

        col[c, kh, kw, n, oh, ow] = x[n, c, ih, iw]   where
        ih = oh*SH - PH + kh*DH
        iw = ow*SW - PW + kw*DW

    and 0 where (ih, iw) falls in the padding. A row of col is one kernel tap
    (c, kh, kw) seen at every output position of every image, so a convolution
    with weight (C_out, C, KH, KW) is one matrix product:

        y (C_out, N*OH*OW) = weight.reshape(C_out, C*KH*KW) @ col

    col2im is the adjoint (the transpose) of im2col: it adds every column entry
    back into the pixel it was copied from,

        x[n, c, ih, iw] = sum over (kh, kw) of col[c, kh, kw, n, oh, ow]

    over the (kh, kw, oh, ow) that reach (ih, iw). Overlapping windows
    (kernel larger than the stride) give several terms; they are added in
    increasing (kh, kw) order, starting from zero, in every implementation.

Argument order, the same in all three files:

    im2col(x, kernel_size, stride, padding, dilation, out=None) -> col
    col2im(col, x_shape, kernel_size, stride, padding, dilation, out=None) -> x

each of kernel_size, stride, padding, dilation a pair (height, width) of ints.
`out`, when given, is a C-contiguous array of the result's shape and dtype that
is overwritten (its old values do not matter) and returned.
"""

from __future__ import annotations

from typing import Any

from tinygen.backend import get_array_module

Pair = tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """O = (I + 2P - D(K - 1) - 1) // S + 1, for one spatial axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def im2col(
    x: Any,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    out: Any = None,
) -> Any:
    """Copy every kernel window of x into a column: (N, C, H, W) -> (C*KH*KW, N*OH*OW)."""
    N, C, H, W = x.shape
    KH, KW = kernel_size
    SH, SW = stride
    PH, PW = padding
    DH, DW = dilation
    OH = conv_output_size(H, KH, SH, PH, DH)
    OW = conv_output_size(W, KW, SW, PW, DW)

    # Pad once, so that every (ih, iw) of the convention is inside xpad at (ih + PH, iw + PW).
    xp = get_array_module(x)
    xpad = xp.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))  # (N, C, H + 2PH, W + 2PW)

    col = xp.empty((C, KH, KW, N, OH, OW), dtype=x.dtype)
    for kh in range(KH):
        h0 = kh * DH  # = ih + PH at oh = 0
        for kw in range(KW):
            w0 = kw * DW  # = iw + PW at ow = 0
            window = xpad[:, :, h0 : h0 + SH * OH : SH, w0 : w0 + SW * OW : SW]  # (N, C, OH, OW)
            col[:, kh, kw] = window.transpose(1, 0, 2, 3)  # (C, N, OH, OW)

    col = col.reshape(C * KH * KW, N * OH * OW)
    if out is not None:
        out[...] = col
        return out
    return col


def col2im(
    col: Any,
    x_shape: tuple[int, int, int, int],
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    out: Any = None,
) -> Any:
    """Add every column back into the pixel it came from: (C*KH*KW, N*OH*OW) -> (N, C, H, W)."""
    N, C, H, W = x_shape
    KH, KW = kernel_size
    SH, SW = stride
    PH, PW = padding
    DH, DW = dilation
    OH = conv_output_size(H, KH, SH, PH, DH)
    OW = conv_output_size(W, KW, SW, PW, DW)

    xp = get_array_module(col)
    col6 = col.reshape(C, KH, KW, N, OH, OW)
    # The farthest tap, kh*DH + SH*(OH - 1), is <= H + 2PH - 1 (from the formula for OH),
    # so every slice below stays inside the padded image.
    xpad = xp.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=col.dtype)
    for kh in range(KH):
        h0 = kh * DH
        for kw in range(KW):
            w0 = kw * DW
            window = col6[:, kh, kw].transpose(1, 0, 2, 3)  # (N, C, OH, OW)
            # += , never =: windows overlap when the kernel is larger than the stride.
            xpad[:, :, h0 : h0 + SH * OH : SH, w0 : w0 + SW * OW : SW] += window

    x = xpad[:, :, PH : PH + H, PW : PW + W]  # (N, C, H, W)
    if out is None:
        out = xp.empty(x_shape, dtype=col.dtype)
    out[...] = x
    return out

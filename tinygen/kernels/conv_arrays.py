"""The three products of a 2-D convolution, on raw arrays: im2col + one GEMM each.

tinygen/ops/conv.py wraps these in differentiable Functions; here there is no
autograd, only numpy or cupy arrays (the module comes from
`get_array_module`), so the same code runs on both devices.

Notation as in reference.py, plus G groups, C_out output channels,
Cg = C / G input channels per group, L = OH*OW output pixels per image.
A convolution with weight (C_out, Cg, KH, KW) is

    forward          y  = W  @ col(x)         (C_out, N*L)  = (C_out, C*KH*KW) @ (C*KH*KW, N*L)
    input gradient   gx = col2im(W.T @ gy)    (C*KH*KW, N*L) -> (N, C, H, W)
    weight gradient  gW = gy @ col(x).T       (C_out, C*KH*KW)

(each one GEMM per group), where gy is read as (C_out, N*L). The input
gradient of a convolution is exactly the forward pass of the transposed
convolution with the same weight, so `conv2d_backward_input` serves as both.

Why this column layout, (C*KH*KW, N*OH*OW), chosen by measurement (float32,
one thread, OpenBLAS):

- rather than one matrix per image: the whole batch chunk is one GEMM, large
  enough for BLAS on 7x7 feature maps. DCGAN's second discriminator layer
  (128 x 1024 weight, 64 images of 49 pixels) ran at 162 GFLOP/s as one GEMM
  and 112 GFLOP/s as 64 GEMMs of 49 columns;
- rather than its transpose (N*OH*OW, C*KH*KW): that made the forward GEMM
  10-20% faster but the weight-gradient GEMM 10-20% slower, no net gain, and
  im2col would lose its long contiguous rows.

The price is one transposed copy of y (or gy) between (N, C_out, L) and
(C_out, N*L), cheap next to the GEMM, except when the columns have few rows:
with C*KH*KW <= PER_IMAGE_MAX_ROWS (a one- or three-channel input) and at
least PER_IMAGE_MIN_PIXELS pixels per image, the forward and weight-gradient
products run one GEMM per image instead, on each image's slice of the
columns, and write y in (N, C_out, L) directly (`_per_image`).

Batch chunks and lanes: im2col works on the batch a chunk of images at a
time, chunks small enough for their columns to stay in cache
(COLUMN_BUDGET_BYTES). Inside `lanes.threads()` the chunks are shared out
between lanes (lanes.py): each thread runs im2col, GEMM and col2im for its
own chunks with a single-threaded BLAS.

Memory: when the whole batch's columns fit KEEP_COLUMNS_BYTES, the forward
pass keeps them, chunk by chunk, for the weight gradient (ops/conv.py passes
them back as `columns=`), so im2col runs once per step. Larger ones are never
held: the backward pass recomputes them chunk by chunk. Two shapes skip
im2col entirely because their columns are the input itself:

- a 1x1 kernel with stride 1 and no padding: y[n] = W @ x[n], per image, the
  batch shared out between the lanes;
- a kernel covering the whole (unpadded) input, OH = OW = 1:
  y = x.reshape(N, C*H*W) @ W.T, one plain GEMM.

And two compute differently, on the CPU, with Winograd's tiles (winograd.py),
for all three products, when there are at least 32 channels in and out and one
group: a 3x3 kernel with stride 1 (the generic layers of the benchmarks), in
2.25x fewer multiplications, and a 4x4 kernel with stride 2 (the reference
models' middle layers), as a 2x2 kernel on each of the input's four phases, in
1.78x fewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygen.backend import get_array_module
from tinygen.kernels import col2im, im2col, lanes, winograd
from tinygen.kernels.reference import Pair, conv_output_size

# The largest column buffer one batch chunk may use (at least one image is always taken).
COLUMN_BUDGET_BYTES = 4 << 20

# Whole-batch columns up to this size are worth keeping from the forward pass for the
# weight gradient (and sharing between the two products of a transposed convolution's
# backward): im2col then runs once instead of twice. Larger ones are recomputed in chunks.
# Measured at batch 64, one thread, forward + backward: 7-14% faster on the VAE layers and
# DCGAN-G2, even on DCGAN-D2 (12.25 MiB of columns).
KEEP_COLUMNS_BYTES = 16 << 20

# Columns with at most this many rows, and at least this many pixels per image, are
# multiplied one image at a time (see the module's docstring). Measured, one thread,
# float32, forward (GEMM, copy, bias) and weight gradient of a chunk, one GEMM against
# one per image: DCGAN-D1 (16 rows, 196 pixels, 64 images) 0.99 -> 0.60 ms and 0.72 ->
# 0.42 ms; 64 rows, 196 pixels 0.97 -> 0.61 and 0.75 -> 0.64; 128 rows 0.77 -> 0.70 and
# 0.62 -> 0.63; 256 rows of 49 pixels 0.55 -> 0.67 and 0.49 -> 0.70 (one GEMM wins).
PER_IMAGE_MAX_ROWS = 64
PER_IMAGE_MIN_PIXELS = 128

# Columns smaller than this (whole batch) stay in one lane: handing work to another thread
# costs tens of microseconds, about what im2col takes on 256 KiB.
LANE_MIN_BYTES = 256 << 10


def column_bytes(
    x_shape: tuple,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    itemsize: int,
    lanes: int = 1,
) -> tuple[int, int]:
    """(bytes of one image's columns, images per chunk) for a convolution of this geometry.

    Chunks hold as many images as COLUMN_BUDGET_BYTES allows (at least one), all of
    (nearly) equal size, and there are at least `lanes` of them when the batch and its
    columns (LANE_MIN_BYTES) are large enough to give every lane work.
    """
    N, C, H, W = x_shape
    OH = conv_output_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    per_image = C * kernel_size[0] * kernel_size[1] * OH * OW * itemsize
    largest = max(1, min(N, COLUMN_BUDGET_BYTES // max(per_image, 1)))
    pieces = -(-N // largest)  # ceil: as few chunks as the budget allows, ...
    if lanes > 1 and per_image * N >= LANE_MIN_BYTES:
        pieces = max(pieces, min(lanes, N))  # ... but one for each lane, ...
    chunk = -(-N // max(pieces, 1))  # ... of equal size (64 images: 16+16+16+16, not 20+20+20+4)
    return per_image, max(chunk, 1)


def batch_chunks(x_shape: tuple, chunk: int) -> list[tuple[int, int]]:
    """[(n0, n1), ...]: the batch cut into chunks of `chunk` images (the last may be short)."""
    N = x_shape[0]
    return [(n0, min(N, n0 + chunk)) for n0 in range(0, N, chunk)]


def _lane_count(xp: Any) -> int:
    """Lanes for a convolution on arrays of module xp (always 1 for cupy: the GPU runs it)."""
    return lanes.count() if xp.__name__ == "numpy" else 1


def plan(
    x_shape: tuple,
    weight_shape: tuple,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
    itemsize: int = 4,
) -> dict:
    """How conv2d_forward will compute this convolution: its path and its column buffer.

    Returns {"path": "im2col" | "pointwise" | "whole-input" | "winograd" |
    "winograd-phases", "lanes", "images_per_chunk", "column_bytes_per_chunk",
    "column_bytes_whole_batch"} (0 bytes on the paths that need no columns), for numpy
    arrays of float32 (itemsize 4) or float64 with the lanes in force now.
    """
    N, _, H, W = x_shape
    kernel_size = tuple(weight_shape[2:])
    probe = np.empty(0, dtype=np.float32 if itemsize == 4 else np.float64)  # for winograd
    if _is_whole_input((H, W), kernel_size, padding, dilation, groups):
        path = "whole-input"
    elif _is_pointwise(kernel_size, stride, padding, groups):
        path = "pointwise"
    else:
        path = winograd.path(probe, weight_shape, stride, padding, dilation, groups) or "im2col"
    n_lanes = 1
    if path in ("im2col", "winograd", "winograd-phases"):
        n_lanes = lanes.count()
    elif path == "pointwise" and int(np.prod(x_shape)) * itemsize >= LANE_MIN_BYTES:
        n_lanes = lanes.count()  # as _lane_pieces shares out the batch
    per_image, chunk = column_bytes(
        x_shape, kernel_size, stride, padding, dilation, itemsize, n_lanes
    )
    uses_columns = path == "im2col"
    return {
        "path": path,
        "lanes": n_lanes,
        "images_per_chunk": chunk if uses_columns else N,
        "column_bytes_per_chunk": per_image * chunk if uses_columns else 0,
        "column_bytes_whole_batch": per_image * N if uses_columns else 0,
    }


def columns_worth_keeping(
    x_shape: tuple,
    weight_shape: tuple,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
    itemsize: int,
) -> bool:
    """True when the convolution uses im2col and its whole-batch columns fit KEEP_COLUMNS_BYTES."""
    info = plan(x_shape, weight_shape, stride, padding, dilation, groups, itemsize)
    return info["path"] == "im2col" and info["column_bytes_whole_batch"] <= KEEP_COLUMNS_BYTES


def columns(x: Any, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair) -> list:
    """im2col of the whole batch, kept chunk by chunk: [(n0, n1, col), ...], where col is
    im2col(x[n0:n1]) of shape (C*KH*KW, (n1-n0)*OH*OW). To pass back as `columns=`."""
    n_lanes, chunks = _plan_chunks(x, kernel_size, stride, padding, dilation, None)

    def lane(run: list) -> list:
        return [
            (n0, n1, im2col(x[n0:n1], kernel_size, stride, padding, dilation)) for n0, n1 in run
        ]

    return [kept for lane_columns in lanes.run(lane, chunks, n_lanes) for kept in lane_columns]


def _lane_pieces(x: Any, xp: Any) -> tuple[int, list[tuple[int, int]]]:
    """(lanes, chunks) for the paths without columns: the batch in one chunk per lane,
    or whole in one lane when x is smaller than LANE_MIN_BYTES (or on cupy)."""
    N = x.shape[0]
    n_lanes = _lane_count(xp) if x.nbytes >= LANE_MIN_BYTES else 1
    return n_lanes, batch_chunks(x.shape, -(-N // n_lanes))


def _times_each_image(M: Any, a: Any, bias: Any, xp: Any) -> Any:
    """M @ a[n] (+ bias) for every image n of a (N, K, L): one GEMM per image, the batch
    shared out between the lanes (the 1x1 path). Returns (N, M.shape[0], L)."""
    out = xp.empty((a.shape[0], M.shape[0], a.shape[2]), dtype=a.dtype)

    def images(run: list) -> None:
        for n0, n1 in run:
            _plus_bias(xp.matmul(M, a[n0:n1], out=out[n0:n1]), bias)

    n_lanes, chunks = _lane_pieces(a, xp)
    lanes.run(images, chunks, n_lanes)
    return out


def _is_pointwise(kernel_size: Pair, stride: Pair, padding: Pair, groups: int) -> bool:
    """1x1 kernel, stride 1, no padding: the columns of image n are x[n] itself."""
    return (
        tuple(kernel_size) == (1, 1)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (0, 0)
        and groups == 1
    )


def _is_whole_input(
    x_hw: Pair, kernel_size: Pair, padding: Pair, dilation: Pair, groups: int
) -> bool:
    """The kernel covers the whole unpadded input: one output pixel, columns = x.reshape(N, -1)."""
    return (
        tuple(kernel_size) == tuple(x_hw)
        and tuple(padding) == (0, 0)
        and tuple(dilation) == (1, 1)
        and groups == 1
    )


def _plan_chunks(x: Any, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair, columns):
    """(lanes, chunks): the kept columns' chunks when there are some, else a fresh plan."""
    n_lanes = _lane_count(get_array_module(x))
    if columns is not None:
        return n_lanes, [(n0, n1) for n0, n1, _ in columns]
    _, chunk = column_bytes(x.shape, kernel_size, stride, padding, dilation, x.itemsize, n_lanes)
    return n_lanes, batch_chunks(x.shape, chunk)


def _column_chunks(
    x: Any, run: list, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair, columns
):
    """Yield (n0, n1, col) for one lane's run of chunks, col = im2col(x[n0:n1]) of shape
    (C*KH*KW, (n1-n0)*OH*OW): the kept columns when there are some, else computed here.

    Computed columns are all written into one buffer, allocated once per lane: a chunk's
    columns are only valid until the next.
    """
    if columns is not None:
        kept = {(n0, n1): col for n0, n1, col in columns}
        for n0, n1 in run:
            yield n0, n1, kept[(n0, n1)]
        return
    xp = get_array_module(x)
    rows = x.shape[1] * kernel_size[0] * kernel_size[1]
    OH = conv_output_size(x.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
    OW = conv_output_size(x.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
    largest = max(n1 - n0 for n0, n1 in run)
    buffer = xp.empty(rows * largest * OH * OW, dtype=x.dtype)
    for n0, n1 in run:
        out = buffer[: rows * (n1 - n0) * OH * OW].reshape(rows, (n1 - n0) * OH * OW)
        yield n0, n1, im2col(x[n0:n1], kernel_size, stride, padding, dilation, out=out)


def conv2d_forward(
    x: Any,
    weight: Any,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
    columns: Any = None,
    bias: Any = None,
) -> Any:
    """y = conv2d(x, weight) + bias: (N, C, H, W), (C_out, Cg, KH, KW), (C_out,) or None
    -> (N, C_out, OH, OW).

    `columns`, when given, is im2col of the whole x (from `columns()`), used instead of
    computing it again. The bias is added by each lane to its own images, as they
    leave the GEMM.
    """
    xp = get_array_module(x, weight)
    N, C, H, W = x.shape
    C_out, Cg, KH, KW = weight.shape
    G = groups
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    L = OH * OW
    x = xp.ascontiguousarray(x)
    W2 = xp.ascontiguousarray(weight).reshape(C_out, Cg * KH * KW)  # (C_out, Cg*KH*KW)

    if _is_whole_input((H, W), (KH, KW), padding, dilation, G):
        y = x.reshape(N, C * H * W) @ W2.T  # (N, C_out)
        return _plus_bias(y.reshape(N, C_out, 1, 1), bias)
    if _is_pointwise((KH, KW), stride, padding, G):
        y = _times_each_image(W2, x.reshape(N, C, H * W), bias, xp)  # (N, C_out, H*W)
        return y.reshape(N, C_out, OH, OW)

    tiles = winograd.path(x, weight.shape, stride, padding, dilation, G)
    if tiles == "winograd":
        return winograd.conv2d_forward(x, weight, padding, dilation, bias)
    if tiles == "winograd-phases":
        return winograd.strided_forward(x, weight, padding, bias)

    W3 = W2.reshape(G, C_out // G, Cg * KH * KW)  # (G, C_out/G, Cg*KH*KW)
    y = xp.empty((N, C_out, L), dtype=x.dtype)
    n_lanes, chunks = _plan_chunks(x, (KH, KW), stride, padding, dilation, columns)
    kept = columns is not None
    bias3 = None if bias is None else bias.reshape(G, C_out // G, 1)  # against (Nc, G, Co, L)

    def lane(run: list) -> None:
        for n0, n1, col in _column_chunks(x, run, (KH, KW), stride, padding, dilation, columns):
            Nc = n1 - n0
            col3 = col.reshape(G, Cg * KH * KW, Nc * L)  # (G, Cg*KH*KW, Nc*L)
            _forward_gemm(W3, col3, y[n0:n1].reshape(Nc, G, C_out // G, L), xp, kept, bias3)

    lanes.run(lane, chunks, n_lanes)
    return y.reshape(N, C_out, OH, OW)


def _forward_gemm(
    W3: Any, col3: Any, y_chunk: Any, xp: Any, kept: bool, bias3: Any = None
) -> None:
    """y_chunk = W3 @ col3 per group (+ bias3): (G, Co, K), (G, K, P) -> (Nc, G, Co, L),
    P = Nc*L; bias3 is (G, Co, 1) or None.

    When the columns were kept from earlier (`kept`: written by im2col long before,
    no longer in cache) and K > Co, it is computed as (col3^T @ W3^T)^T, the same
    sums with the longer side as the rows of the product. Measured, one thread,
    float32, batch 64, the two orders interleaved in one process: forward +
    backward of DCGAN-D2 (kept columns, K = 1024, Co = 128) 0.89 of the time, of
    DCGAN-G2 0.87; with columns fresh from im2col the plain order was as fast or
    faster (the 128-channel generic 3x3 layer, K = 1152: forward 1.07 times slower
    transposed), and with K = 16 (DCGAN-D1, G3) the plain order won too. Columns of
    few rows (`_per_image`) skip both: one GEMM per image, straight into y_chunk.
    """
    Nc, G, Co, L = y_chunk.shape
    if _per_image(col3.shape[1] * G, L, xp):
        K = col3.shape[1]
        per_image = col3.reshape(G, K, Nc, L).transpose(2, 0, 1, 3)  # (Nc, G, K, L), a view
        xp.matmul(W3, per_image, out=y_chunk)  # one (Co, K) @ (K, L) GEMM per image and group
        if bias3 is not None:
            y_chunk += bias3
        return
    if kept and col3.shape[1] > Co:
        yT = xp.matmul(col3.transpose(0, 2, 1), W3.transpose(0, 2, 1))  # (G, Nc*L, Co)
        product = yT.reshape(G, Nc, L, Co).transpose(1, 0, 3, 2)
    else:
        yc = xp.matmul(W3, col3)  # (G, Co, Nc*L)
        product = yc.reshape(G, Co, Nc, L).transpose(2, 0, 1, 3)
    if bias3 is None:
        y_chunk[...] = product
    else:
        xp.add(product, bias3, out=y_chunk)  # the copy and the bias in one pass


def _per_image(rows: int, L: int, xp: Any) -> bool:
    """Whether columns of this many rows (C*KH*KW) and L pixels per image are multiplied
    one image at a time (see PER_IMAGE_MAX_ROWS). On the CPU only: it was measured there,
    and on a GPU the copy it saves is cheap."""
    return xp is np and rows <= PER_IMAGE_MAX_ROWS and L >= PER_IMAGE_MIN_PIXELS


def _plus_bias(y: Any, bias: Any) -> Any:
    """y (N, C, ...) + bias (C,) in place, or y itself when bias is None."""
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * (y.ndim - 2))
    return y


def _gy_as_matrix(gy_chunk: Any, xp: Any) -> Any:
    """(Nc, C_out, OH, OW) -> (C_out, Nc*L), copied so that the GEMM reads it contiguously."""
    Nc, C_out, OH, OW = gy_chunk.shape
    gyT = xp.empty((C_out, Nc, OH * OW), dtype=gy_chunk.dtype)
    gyT[...] = gy_chunk.reshape(Nc, C_out, OH * OW).transpose(1, 0, 2)  # (C_out, Nc, L)
    return gyT.reshape(C_out, Nc * OH * OW)


def conv2d_backward_input(
    gy: Any,
    weight: Any,
    x_hw: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
    bias: Any = None,
) -> Any:
    """gx of conv2d, which is also conv_transpose2d's forward pass (+ its bias (C,)).

    gy (N, C_out, OH, OW), weight (C_out, Cg, KH, KW), x_hw = (H, W) -> gx (N, C, H, W)
    with C = Cg * groups. (H, W) must give back OH, OW by the output-size formula;
    several do when the stride is above 1, which is what output_padding chooses between.
    The bias, when given, is added by each lane to its own images after col2im.
    """
    xp = get_array_module(gy, weight)
    N, C_out, OH, OW = gy.shape
    _, Cg, KH, KW = weight.shape
    G = groups
    C = Cg * G
    H, W = x_hw
    L = OH * OW
    gy = xp.ascontiguousarray(gy)
    W2 = xp.ascontiguousarray(weight).reshape(C_out, Cg * KH * KW)  # (C_out, Cg*KH*KW)

    if _is_whole_input((H, W), (KH, KW), padding, dilation, G):
        gx = gy.reshape(N, C_out) @ W2  # (N, C*H*W)
        return _plus_bias(gx.reshape(N, C, H, W), bias)
    if _is_pointwise((KH, KW), stride, padding, G) and (OH, OW) == (H, W):
        gx = _times_each_image(W2.T, gy.reshape(N, C_out, L), bias, xp)  # (N, C, H*W)
        return gx.reshape(N, C, H, W)

    tiles = winograd.path(gy, weight.shape, stride, padding, dilation, G)
    if tiles == "winograd":
        return winograd.conv2d_backward_input(gy, weight, padding, dilation, bias)
    if tiles == "winograd-phases":
        return winograd.strided_backward_input(gy, weight, (H, W), padding, bias)

    W3t = W2.reshape(G, C_out // G, Cg * KH * KW).transpose(0, 2, 1)  # (G, Cg*KH*KW, C_out/G)
    gx = xp.empty((N, C, H, W), dtype=gy.dtype)
    n_lanes = _lane_count(xp)
    _, chunk = column_bytes(
        (N, C, H, W), (KH, KW), stride, padding, dilation, gy.itemsize, n_lanes
    )

    def lane(run: list) -> None:
        largest = max(n1 - n0 for n0, n1 in run)
        buffer = xp.empty(C * KH * KW * largest * L, dtype=gy.dtype)  # each chunk's gcol in turn
        for n0, n1 in run:
            Nc = n1 - n0
            gyT = _gy_as_matrix(gy[n0:n1], xp)  # (C_out, Nc*L)
            gcol = buffer[: C * KH * KW * Nc * L].reshape(G, Cg * KH * KW, Nc * L)
            xp.matmul(W3t, gyT.reshape(G, C_out // G, Nc * L), out=gcol)  # (G, Cg*KH*KW, Nc*L)
            col2im(
                gcol.reshape(C * KH * KW, Nc * L),
                (Nc, C, H, W),
                (KH, KW),
                stride,
                padding,
                dilation,
                out=gx[n0:n1],
            )  # (Nc, C, H, W)
            _plus_bias(gx[n0:n1], bias)

    lanes.run(lane, batch_chunks((N, C, H, W), chunk), n_lanes)
    return gx


def conv2d_backward_weight(
    x: Any,
    gy: Any,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
    columns: Any = None,
) -> Any:
    """gW of conv2d: x (N, C, H, W), gy (N, C_out, OH, OW) -> gW (C_out, Cg, KH, KW).

    `columns`, when given, is im2col of the whole x, kept from the forward pass (`columns()`).
    """
    xp = get_array_module(x, gy)
    N, C, H, W = x.shape
    _, C_out, OH, OW = gy.shape
    KH, KW = kernel_size
    G = groups
    Cg = C // G
    L = OH * OW
    x = xp.ascontiguousarray(x)
    gy = xp.ascontiguousarray(gy)

    if _is_whole_input((H, W), (KH, KW), padding, dilation, G):
        gW = gy.reshape(N, C_out).T @ x.reshape(N, C * H * W)  # (C_out, C*H*W)
        return gW.reshape(C_out, C, KH, KW)
    if _is_pointwise((KH, KW), stride, padding, G):

        def share(run: list) -> Any:  # the sum over this lane's images, as one GEMM each chunk
            gW = xp.zeros((C_out, C), dtype=x.dtype)
            for n0, n1 in run:
                xT = xp.ascontiguousarray(x[n0:n1].reshape(n1 - n0, C, L).transpose(1, 0, 2))
                gW += _gy_as_matrix(gy[n0:n1], xp) @ xT.reshape(C, (n1 - n0) * L).T
            return gW

        n_lanes, chunks = _lane_pieces(x, xp)
        return lanes.run_summed(share, chunks, n_lanes).reshape(C_out, C, 1, 1)

    tiles = winograd.path(x, (C_out, C, KH, KW), stride, padding, dilation, G)
    if tiles == "winograd":
        return winograd.conv2d_backward_weight(x, gy, padding, dilation)
    if tiles == "winograd-phases":
        return winograd.strided_backward_weight(x, gy, padding)

    n_lanes, chunks = _plan_chunks(x, (KH, KW), stride, padding, dilation, columns)
    per_image = _per_image(C * KH * KW, L, xp)

    def lane(run: list) -> Any:
        """This lane's share of gW: the sum over its chunks, in order."""
        gW = xp.zeros((G, C_out // G, Cg * KH * KW), dtype=x.dtype)
        for n0, n1, col in _column_chunks(x, run, (KH, KW), stride, padding, dilation, columns):
            Nc = n1 - n0
            if per_image:  # one GEMM per image, summed in image order
                col4 = col.reshape(G, Cg * KH * KW, Nc, L).transpose(2, 0, 3, 1)  # (Nc, G, L, K)
                gy4 = gy[n0:n1].reshape(Nc, G, C_out // G, L)
                gW += xp.matmul(gy4, col4).sum(axis=0)  # (Nc, G, Co, K) -> (G, Co, K)
            else:
                gyT = _gy_as_matrix(gy[n0:n1], xp)  # (C_out, Nc*L)
                col3 = col.reshape(G, Cg * KH * KW, Nc * L)  # (G, Cg*KH*KW, Nc*L)
                gW += _weight_gemm(gyT.reshape(G, C_out // G, Nc * L), col3, xp)
        return gW

    return lanes.run_summed(lane, chunks, n_lanes).reshape(C_out, Cg, KH, KW)


def _weight_gemm(gyT: Any, col3: Any, xp: Any) -> Any:
    """gyT @ col3^T per group: (G, Co, P) and (G, K, P) -> (G, Co, K), P = pixels summed over.

    When K > Co it is computed as (col3 @ gyT^T)^T, the same sums: OpenBLAS runs the
    product faster with the longer side as its rows. Measured, one thread, float32:
    K = 576, Co = 64, P = 2048 (generic 64-channel 3x3 layer) 1.06 -> 0.81 ms;
    DCGAN-D2 (K = 1024, Co = 128, P = 3136) 4.7 -> 4.3 ms; with K = 16, Co = 64
    (DCGAN-D1) the plain order is faster, 0.22 against 0.31 ms.
    """
    if col3.shape[1] > gyT.shape[1]:
        return xp.matmul(col3, gyT.transpose(0, 2, 1)).transpose(0, 2, 1)
    return xp.matmul(gyT, col3.transpose(0, 2, 1))

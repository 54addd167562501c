"""Winograd's minimal filtering: convolutions in fewer multiplications than their direct sums.

Two cases, each for all three products (forward, input and weight gradients): 3x3
kernels with stride 1, in 2.25x fewer multiplications (this docstring), and 4x4
kernels with stride 2, in 1.78x fewer (the second part of the file, below).

Two neighbouring outputs of a 3-tap correlation share two of their inputs:

    y0 = d0*g0 + d1*g1 + d2*g2
    y1 = d1*g0 + d2*g1 + d3*g2          (6 multiplications)

Winograd's F(2, 3) gets both from four products of sums:

    m0 = (d0 - d2) * g0                 y0 = m0 + m1 + m2
    m1 = (d1 + d2) * (g0 + g1 + g2)/2   y1 = m1 - m2 - m3
    m2 = (d2 - d1) * (g0 - g1 + g2)/2
    m3 = (d1 - d3) * g2                 (4 multiplications; expand them to check)

or, with the matrices below, y = A_T @ ((G @ g) * (B_T @ d)). Nested over rows
and columns it gives a 2x2 block of outputs (a tile) from a 4x4 block of
inputs d and the 3x3 kernel g:

    Y = A_T @ [(G @ g @ G.T) * (B_T @ d @ B_T.T)] @ A_T.T   (16 multiplications, not 36)

(`tile` computes exactly this, for one tile.) A convolution sums such
products over the input channels, and since A_T is the same for every
channel, the sum moves inside: with U[o, c] = G g[o, c] G^T (the weight,
transformed once) and V[c, t] = B^T d[c, t] B (input tile t of channel c),
each of the 16 positions k of a 4x4 tile is one matrix product

    M[k] = U[k] @ V[k]          (C_out, C) @ (C, tiles) -> (C_out, tiles)

and each output tile is A^T M[:, o, t] A. The GEMMs do 2*16*C*C_out
floating-point operations per 4 output pixels where im2col's does 2*36: 2.25x
less. What it costs in exchange are the two transforms, passes over memory
(cpu.py's `_winograd_*` kernels), and V, 4x the size of the input.

Dilation D spaces the three taps D apart; a tile's two rows (and columns) are
then D apart too, r and r + D, for every r with r mod 2D < D (`tile_bases`).

The backward pass uses the same three steps:

- input gradient: for stride 1, the input gradient of a convolution is itself
  a convolution of gy, with the kernel flipped in space, its input and output
  channels swapped and padding 2D - P. So it is `conv2d_forward` again (which
  is also a stride-1 transposed convolution's forward pass);
- weight gradient: a tile's Y is linear in g, and moving the transforms to the
  other side of the inner product, <gY, A^T[(G g G^T) * V]A> =
  <G^T[(A gY A^T) * V]G, g>, so gW = G^T (sum over tiles of (A gY A^T) * V) G,
  16 GEMMs (C_out, tiles) @ (tiles, C) summed over the whole batch.

The matrices hold 0, +-1 and +-1/2, so the results agree with im2col's to
round-off: in float64 to the last few bits, in float32 to about 1e-6 of the
largest output (tests/test_winograd.py checks both).

When: on numpy arrays with the Numba kernels (conv_arrays.py asks `path`),
for 3x3 kernels, stride 1, one group, padding at most 2D (so that the input
gradient's padding 2D - P is not negative), and at least MIN_CHANNELS input
and output channels, below which the GEMMs are too thin for the transforms to
pay. Measured, float32, one thread (CPU time, AMD EPYC, OpenBLAS SkylakeX kernel),
im2col -> Winograd, milliseconds for y, gx and gW:

    (32, 64, 32, 32) x (64, 64, 3, 3) p1       34.3 -> 24.8, 31.5 -> 24.1, 32.4 -> 27.2
    (16, 128, 28, 28) x (128, 128, 3, 3) p1    44.6 -> 29.9, 42.0 -> 29.6, 42.5 -> 34.4

The GEMMs themselves are small, (64, 64) @ (64, 256) for one 32x32 image, and run
at about 80 GFLOP/s where a large one reaches 100: the 2.25x becomes 1.2-1.5x.
cupy arrays keep im2col.

The second part: the 4x4, stride-2 layers of DCGAN-28 and ConvVAE-28 (at least
STRIDED_MIN_CHANNELS channels: the middle layers, not the first and last), one
thread, batch 64, im2col -> phases, ms for y, gx and gW:

    DCGAN-D2 (64, 64, 14, 14) x (128, 64, 4, 4)    10.4 -> 9.2, 10.2 -> 9.0, 10.4 -> 9.4
    VAE-E2 (64, 32, 14, 14) x (64, 32, 4, 4)       3.35 -> 2.83, 3.16 -> 2.78, 3.17 -> 3.0
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from tinygen.kernels import kernel_choice, lanes
from tinygen.kernels.reference import Pair

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

# Both the input and the output channels must number at least this many. Measured, one
# thread, float32, y, gx and gW, im2col -> Winograd (ms): 32 channels on 32x32 (batch 32)
# 11.2 -> 8.2, 9.5 -> 8.3, 10.2 -> 9.0; 16 channels 4.4 -> 3.7, 3.7 -> 3.7, 3.7 -> 3.7;
# 16 -> 32 channels on 14x14 (batch 64) 2.5 -> 2.4, 2.1 -> 2.8, 2.4 -> 2.4: no gain.
MIN_CHANNELS = 32

# The tiles of one batch chunk, V and M (or Mg) together, take at most this many bytes
# (at least one image is always taken).
TILE_BUDGET_BYTES = 2 << 20


def tile(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The 2x2 correlation of a 4x4 input block d with a 3x3 kernel g, in 16 multiplications."""
    return A_T @ ((G @ g @ G.T) * (B_T @ d @ B_T.T)) @ A_T.T


def path(
    x: Any, weight_shape: tuple, stride: Pair, padding: Pair, dilation: Pair, groups: int
) -> str | None:
    """Which of this module's paths a convolution of x (an array) with a weight of this
    shape takes: "winograd" (3x3, stride 1: the first part), "winograd-phases" (4x4,
    stride 2: the second part), or None (conv_arrays' im2col)."""
    if not (
        isinstance(x, np.ndarray)
        and x.dtype in (np.float32, np.float64)
        and groups == 1
        and kernel_choice(x) == "numba"
    ):
        return None
    kernel, channels = tuple(weight_shape[2:]), min(weight_shape[0], weight_shape[1])
    if (
        kernel == (3, 3)
        and tuple(stride) == (1, 1)
        and all(0 <= p <= 2 * d for p, d in zip(padding, dilation))  # gx's 2D - P >= 0
        and channels >= MIN_CHANNELS
    ):
        return "winograd"
    if (
        kernel == (4, 4)
        and tuple(stride) == (2, 2)
        and tuple(dilation) == (1, 1)
        and all(0 <= p <= 3 for p in padding)
        and channels >= STRIDED_MIN_CHANNELS
    ):
        return "winograd-phases"
    return None


@functools.lru_cache(maxsize=64)
def tile_bases(size: int, dilation: int) -> np.ndarray:
    """The first row (or column) of every tile: r with r mod 2D < D, r < size; the tile
    covers r and r + D. Read-only, shared by every call with these numbers."""
    bases = np.array([r for r in range(size) if r % (2 * dilation) < dilation], dtype=np.int64)
    bases.flags.writeable = False
    return bases


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """U (16, C_out, C): U[4i+j, o, c] = (G @ weight[o, c] @ G.T)[i, j]."""
    G_ = G.astype(weight.dtype)
    U = np.einsum("ia,ocab,jb->ijoc", G_, weight, G_)  # (4, 4, C_out, C)
    return np.ascontiguousarray(U).reshape(16, *weight.shape[:2])


def _cpu() -> Any:
    from tinygen.kernels import cpu  # imported by now: `path` checked that Numba runs

    return cpu


def _lane_chunks(N: int, per_image: int, budget: int) -> tuple[int, list[tuple[int, int]]]:
    """(lanes, chunks): the batch in chunks of at most `budget` bytes of tiles (one image at
    least), and at least one chunk per lane."""
    n_lanes = lanes.count()
    largest = max(1, min(N, budget // max(per_image, 1)))
    pieces = max(-(-N // largest), min(n_lanes, N))
    chunk = -(-N // pieces)
    return n_lanes, [(n0, min(N, n0 + chunk)) for n0 in range(0, N, chunk)]


def conv2d_forward(
    x: np.ndarray, weight: np.ndarray, padding: Pair, dilation: Pair, bias: Any = None
) -> np.ndarray:
    """conv2d(x, weight) + bias with a 3x3 weight (C_out, C, 3, 3) and stride 1."""
    cpu = _cpu()
    N, C, H, W = x.shape
    C_out = weight.shape[0]
    OH = H + 2 * padding[0] - 2 * dilation[0]
    OW = W + 2 * padding[1] - 2 * dilation[1]
    rows, cols = tile_bases(OH, dilation[0]), tile_bases(OW, dilation[1])
    T = rows.size * cols.size  # tiles per image
    x = np.ascontiguousarray(x)
    U = transform_weight(weight)
    b = np.zeros(C_out, dtype=x.dtype) if bias is None else bias.astype(x.dtype).reshape(C_out)
    y = np.empty((N, C_out, OH, OW), dtype=x.dtype)
    n_lanes, chunks = _lane_chunks(N, 16 * (C + C_out) * T * x.itemsize, TILE_BUDGET_BYTES)

    def lane(run: list) -> None:
        largest = max(n1 - n0 for n0, n1 in run) * T
        V_buffer = np.empty(16 * C * largest, dtype=x.dtype)
        M_buffer = np.empty(16 * C_out * largest, dtype=x.dtype)
        for n0, n1 in run:
            P = (n1 - n0) * T
            V = V_buffer[: 16 * C * P].reshape(16, C, P)
            M = M_buffer[: 16 * C_out * P].reshape(16, C_out, P)
            cpu.winograd_tiles(x[n0:n1], V, rows, cols, padding, dilation)
            np.matmul(U, V, out=M)  # 16 GEMMs (C_out, C) @ (C, P)
            cpu.winograd_untile(M, y[n0:n1], rows, cols, dilation, b)

    lanes.run(lane, chunks, n_lanes)
    return y


def conv2d_backward_input(
    gy: np.ndarray, weight: np.ndarray, padding: Pair, dilation: Pair, bias: Any = None
) -> np.ndarray:
    """gx of a 3x3, stride-1 conv2d (also conv_transpose2d's forward, + its bias):
    the convolution of gy with the flipped, channel-swapped kernel and padding 2D - P."""
    flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, C_out, 3, 3)
    full = (2 * dilation[0] - padding[0], 2 * dilation[1] - padding[1])
    return conv2d_forward(gy, flipped, full, dilation, bias)


def conv2d_backward_weight(
    x: np.ndarray, gy: np.ndarray, padding: Pair, dilation: Pair
) -> np.ndarray:
    """gW (C_out, C, 3, 3) of a 3x3, stride-1 conv2d of x (N, C, H, W), gy (N, C_out, OH, OW)."""
    cpu = _cpu()
    N, C, _, _ = x.shape
    _, C_out, OH, OW = gy.shape
    rows, cols = tile_bases(OH, dilation[0]), tile_bases(OW, dilation[1])
    T = rows.size * cols.size
    x = np.ascontiguousarray(x)
    gy = np.ascontiguousarray(gy)
    n_lanes, chunks = _lane_chunks(N, 16 * (C + C_out) * T * x.itemsize, TILE_BUDGET_BYTES)

    def lane(run: list) -> np.ndarray:
        """This lane's sum over its chunks, in order, of the 16 products Mg @ V^T."""
        largest = max(n1 - n0 for n0, n1 in run) * T
        V_buffer = np.empty(16 * C * largest, dtype=x.dtype)
        Mg_buffer = np.empty(16 * C_out * largest, dtype=x.dtype)
        gU = np.zeros((16, C_out, C), dtype=x.dtype)
        product = np.empty_like(gU)
        for n0, n1 in run:
            P = (n1 - n0) * T
            V = V_buffer[: 16 * C * P].reshape(16, C, P)
            Mg = Mg_buffer[: 16 * C_out * P].reshape(16, C_out, P)
            cpu.winograd_tiles(x[n0:n1], V, rows, cols, padding, dilation)
            cpu.winograd_grad_tiles(gy[n0:n1], Mg, rows, cols, dilation)
            gU += np.matmul(Mg, V.transpose(0, 2, 1), out=product)  # (C_out, P) @ (P, C)
        return gU

    gU = lanes.run_summed(lane, chunks, n_lanes)
    G_ = G.astype(x.dtype)
    gW = np.einsum("ia,ijoc,jb->ocab", G_, gU.reshape(4, 4, C_out, C), G_)  # G^T gU G
    return np.ascontiguousarray(gW)


# ---------------------------------------------------------------------------
# 4x4 kernels with stride 2: F(2x2, 2x2) on the input's four phases
# ---------------------------------------------------------------------------
#
# A stride-2 window starts on every other row, so output row oh reads padded rows
# 2*oh + kh with kh = 2i + a (i, a in 0..1): row 2*(oh + i) + a, which is row oh + i
# of phase a, the padded input's rows of parity a. On phase (a, b) the 4x4 stride-2
# kernel acts as the 2x2 stride-1 kernel w[.., 2i + a, 2j + b], and the convolution
# is the sum of four 2x2 convolutions, one per phase: one 2x2 convolution of an
# input with 4C channels. F(2x2, 2x2) computes that from 3x3 input tiles, in 9
# multiplications where the direct sums take 16:
#
#     y0 = d0*g0 + d1*g1           m0 = (d0 - d1) * g0      y0 = m0 + m1
#     y1 = d1*g0 + d2*g1           m1 = d1 * (g0 + g1)      y1 = m1 + m2
#                                  m2 = (d2 - d1) * g1
#
# so 9 GEMMs (tiles, 4C) @ (4C, C_out): 1.78x fewer multiplications than im2col's,
# 1.36x on the 7x7 outputs of the two models, whose last tiles are half empty.
# The input gradient is again a 2x2 stride-1 convolution per phase, of gy (one zero
# row and column in front) with the flipped kernels w[.., 2(1 - i) + a, 2(1 - j) + b]:
# 9 GEMMs (tiles, C_out) @ (C_out, 4C), whose 4C columns are the four phases of gx.
# The weight gradient is the 3x3 path's, with 3x3 tiles.
#
# Layout: with 4 tiles to a row, loops over a row's tiles are too short to run fast,
# so this path works channels last: each chunk of images is copied into a padded
# (n, rows, columns, channels) buffer and the tile kernels loop over the channels
# innermost. V is (9, tiles, channels) and a phase's C channels are consecutive:
# channel (2a + b)*C + c of the 4C is channel c of phase (a, b).

B2_T = np.array([[1, -1, 0], [0, 1, 0], [0, -1, 1]], dtype=np.float64)
G2 = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float64)
A2_T = np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float64)

# Both the input and the output channels must number at least this many.
STRIDED_MIN_CHANNELS = 32

# The tiles of one batch chunk, V and M together, take at most this many bytes.
STRIDED_TILE_BUDGET_BYTES = 4 << 20


def tile2(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The 2x2 correlation of a 3x3 input block d with a 2x2 kernel g, in 9 multiplications."""
    return A2_T @ ((G2 @ g @ G2.T) * (B2_T @ d @ B2_T.T)) @ A2_T.T


def _times_G2_T(a: np.ndarray, axis: int) -> np.ndarray:
    """G2^T applied along `axis` (length 3 -> 2): (m0 + m1, m1 + m2)."""
    m0, m1, m2 = (np.take(a, k, axis) for k in range(3))
    return np.stack([m0 + m1, m1 + m2], axis=axis)


def strided_forward(
    x: np.ndarray, weight: np.ndarray, padding: Pair, bias: Any = None
) -> np.ndarray:
    """conv2d(x, weight, stride=2) + bias with a 4x4 weight (C_out, C, 4, 4)."""
    cpu = _cpu()
    N, C, H, W = x.shape
    C_out = weight.shape[0]
    (PH, PW), dtype = padding, x.dtype
    OH, OW = (H + 2 * PH - 4) // 2 + 1, (W + 2 * PW - 4) // 2 + 1
    TH, TW = -(-OH // 2), -(-OW // 2)
    T = TH * TW
    U = np.empty((9, 4 * C, C_out), dtype=dtype)
    cpu.phase_weights(np.ascontiguousarray(weight, dtype=dtype), U, False)
    b = np.zeros(C_out, dtype=dtype) if bias is None else bias.astype(dtype).reshape(C_out)
    y = np.empty((N, C_out, OH, OW), dtype=dtype)
    n_lanes, chunks = _lane_chunks(
        N, 9 * (4 * C + C_out) * T * x.itemsize, STRIDED_TILE_BUDGET_BYTES
    )

    def lane(run: list) -> None:
        largest = max(n1 - n0 for n0, n1 in run)
        xh = np.zeros((largest, max(4 * TH + 2, PH + H), max(4 * TW + 2, PW + W), C), dtype)
        yh = np.empty((largest, 2 * TH, 2 * TW, C_out), dtype=dtype)
        V_buffer = np.empty(9 * largest * T * 4 * C, dtype=dtype)
        M_buffer = np.empty(9 * largest * T * C_out, dtype=dtype)
        for n0, n1 in run:
            Nc = n1 - n0
            V = V_buffer[: 9 * Nc * T * 4 * C].reshape(9, Nc * T, 4 * C)
            M = M_buffer[: 9 * Nc * T * C_out].reshape(9, Nc * T, C_out)
            xh[:Nc, PH : PH + H, PW : PW + W] = x[n0:n1].transpose(0, 2, 3, 1)  # margins stay 0
            cpu.phase_tiles(xh[:Nc], V, (TH, TW))
            np.matmul(V, U, out=M)  # 9 GEMMs (tiles, 4C) @ (4C, C_out)
            cpu.pair_untile(M, yh[:Nc], b)
            y[n0:n1] = yh[:Nc, :OH, :OW].transpose(0, 3, 1, 2)

    lanes.run(lane, chunks, n_lanes)
    return y


def strided_backward_input(
    gy: np.ndarray, weight: np.ndarray, x_hw: Pair, padding: Pair, bias: Any = None
) -> np.ndarray:
    """gx (N, C, H, W) of a 4x4, stride-2 conv2d (also conv_transpose2d's forward, + its
    bias (C,)): per phase, a 2x2 convolution of gy with the flipped 2x2 kernels."""
    cpu = _cpu()
    N, C_out, OH, OW = gy.shape
    C = weight.shape[1]
    (H, W), (PH, PW), dtype = x_hw, padding, gy.dtype
    TH, TW = -(-(PH + H) // 4), -(-(PW + W) // 4)  # a tile fills 4 padded rows and columns
    T = TH * TW
    U = np.empty((9, C_out, 4 * C), dtype=dtype)  # filled through its transpose
    cpu.phase_weights(np.ascontiguousarray(weight, dtype=dtype), U.transpose(0, 2, 1), True)
    b = np.zeros(C, dtype=dtype) if bias is None else bias.astype(dtype).reshape(C)
    gx = np.empty((N, C, H, W), dtype=dtype)
    n_lanes, chunks = _lane_chunks(
        N, 9 * (4 * C + C_out) * T * gy.itemsize, STRIDED_TILE_BUDGET_BYTES
    )

    def lane(run: list) -> None:
        largest = max(n1 - n0 for n0, n1 in run)
        gh = np.zeros((largest, max(2 * TH + 2, OH + 1), max(2 * TW + 2, OW + 1), C_out), dtype)
        gxh = np.empty((largest, 4 * TH, 4 * TW, C), dtype=dtype)
        V_buffer = np.empty(9 * largest * T * C_out, dtype=dtype)
        M_buffer = np.empty(9 * largest * T * 4 * C, dtype=dtype)
        for n0, n1 in run:
            Nc = n1 - n0
            V = V_buffer[: 9 * Nc * T * C_out].reshape(9, Nc * T, C_out)
            M = M_buffer[: 9 * Nc * T * 4 * C].reshape(9, Nc * T, 4 * C)
            gh[:Nc, 1 : 1 + OH, 1 : 1 + OW] = gy[n0:n1].transpose(0, 2, 3, 1)
            cpu.pair_tiles(gh[:Nc], V, (TH, TW))
            np.matmul(V, U, out=M)  # 9 GEMMs (tiles, C_out) @ (C_out, 4C)
            cpu.phase_untile(M, gxh[:Nc], b)
            gx[n0:n1] = gxh[:Nc, PH : PH + H, PW : PW + W].transpose(0, 3, 1, 2)

    lanes.run(lane, chunks, n_lanes)
    return gx


def strided_backward_weight(x: np.ndarray, gy: np.ndarray, padding: Pair) -> np.ndarray:
    """gW (C_out, C, 4, 4) of a 4x4, stride-2 conv2d of x (N, C, H, W), gy (N, C_out, OH, OW)."""
    cpu = _cpu()
    N, C, H, W = x.shape
    _, C_out, OH, OW = gy.shape
    (PH, PW), dtype = padding, x.dtype
    TH, TW = -(-OH // 2), -(-OW // 2)
    T = TH * TW
    n_lanes, chunks = _lane_chunks(
        N, 9 * (4 * C + C_out) * T * x.itemsize, STRIDED_TILE_BUDGET_BYTES
    )

    def lane(run: list) -> np.ndarray:
        """This lane's sum over its chunks, in order, of the 9 products Mg^T @ V."""
        largest = max(n1 - n0 for n0, n1 in run)
        xh = np.zeros((largest, max(4 * TH + 2, PH + H), max(4 * TW + 2, PW + W), C), dtype)
        gh = np.zeros((largest, 2 * TH + 1, 2 * TW + 1, C_out), dtype=dtype)
        V_buffer = np.empty(9 * largest * T * 4 * C, dtype=dtype)
        Mg_buffer = np.empty(9 * largest * T * C_out, dtype=dtype)
        gU = np.zeros((9, C_out, 4 * C), dtype=dtype)
        product = np.empty_like(gU)
        for n0, n1 in run:
            Nc = n1 - n0
            V = V_buffer[: 9 * Nc * T * 4 * C].reshape(9, Nc * T, 4 * C)
            Mg = Mg_buffer[: 9 * Nc * T * C_out].reshape(9, Nc * T, C_out)
            xh[:Nc, PH : PH + H, PW : PW + W] = x[n0:n1].transpose(0, 2, 3, 1)
            gh[:Nc, 1 : 1 + OH, 1 : 1 + OW] = gy[n0:n1].transpose(0, 2, 3, 1)
            cpu.phase_tiles(xh[:Nc], V, (TH, TW))
            cpu.pair_grad_tiles(gh[:Nc], Mg, (TH, TW))
            gU += np.matmul(Mg.transpose(0, 2, 1), V, out=product)  # (C_out, tiles) @ (tiles, 4C)
        return gU

    gU = lanes.run_summed(lane, chunks, n_lanes)
    gU = gU.reshape(3, 3, C_out, 2, 2, C)  # (k, l, o, a, b, c)
    gW = _times_G2_T(_times_G2_T(gU, 0), 1)  # G2^T gU G2 per phase: (i, j, o, a, b, c)
    return np.ascontiguousarray(gW.transpose(2, 5, 0, 3, 1, 4)).reshape(C_out, C, 4, 4)

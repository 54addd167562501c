"""im2col and col2im compiled by Numba: the fast CPU path (then winograd.py's tile kernels,
fused.py's kernels and the GIL-free polling loop of lanes.py).

Same arguments, same column layout and same results (to the last bit in
float64) as reference.py, whose docstring holds the notation and the index
convention. Each kernel is compiled twice from one Python body: a parallel
version (`parallel=True`, `prange` over independent rows or planes) and a
serial one; `im2col`/`col2im` below take `parallel=True/False`, and without
it follow PARALLEL_MIN_ELEMENTS (serial by default, for the reason given there).

No two threads ever write the same element:

- im2col gives each thread whole rows of col (one row = one tap (c, kh, kw));
- col2im gives each thread whole planes x[n, c] and lets it add, into that
  plane alone, every column entry that belongs to it.

The inner loops run over a precomputed valid range of `ow`, so they have no
branch and LLVM can vectorize them; the padding is written as explicit zeros.

Their indices are unsigned (uint64): Numba checks every signed index for a
negative value (Python's x[-1]), and that check alone kept LLVM from
vectorizing the copy (im2col of a 3x3 kernel over 64x32x32 ran 2.8x slower).
Unsigned and signed ints never meet in one expression, since Numba would
turn their sum into a float.

The vectorized copy needs stride 1, where a row of a window is a contiguous
run. With a horizontal stride above 1 the run is OW elements SW apart (7 in
the strided DCGAN and VAE layers): LLVM does not vectorize it, and the
bookkeeping of each short run costs as much as its copy. Those layers use a
second pair of kernels, driven by a table (`_tap_table`): a tap (kh, kw)
reads the same offsets ih*W + iw in every plane, so they are computed once
per geometry, and each (row, image) or (plane, tap) becomes one flat loop
over the OH*OW output positions. Measured, one thread, float32, a 16-image
DCGAN-D2 chunk (64 channels, 14x14, 4x4 kernel, stride 2): im2col 0.74 ->
0.42 ms, col2im 0.65 -> 0.55 ms; with stride 1 the row kernels stay the
faster (im2col of 64x32x32, 3x3: 0.18 against 0.32 ms).

Numba caches the machine code on disk (`cache=True`). When the cache folder
cannot be written (a read-only install), the kernels are compiled with
`cache=False` instead, every run; `CACHE_ERROR` says why. NUMBA_CACHE_DIR
chooses another folder.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import types
from typing import Any

import numba
import numpy as np
from numba import prange, uint64
from numba.core.extending import intrinsic

from tinygen.kernels import lanes
from tinygen.kernels.reference import Pair, conv_output_size

# im2col/col2im called without `parallel=` use the threaded kernel only for at least
# this many column entries. The default, never, is a measured choice: the copy is bound
# by memory, so a second core gains little, and inside a convolution that core belongs to
# BLAS. An OpenMP team must also wait for its slowest thread: on the shared 2-core
# machine with other processes running, at 2 threads the parallel im2col of a DCGAN-D2
# batch chunk took 14 ms against 0.7 ms serial (benchmarks/conv.py prints both for every
# layer). On a quiet machine with idle cores, try e.g. 1 << 16.
PARALLEL_MIN_ELEMENTS = sys.maxsize

CACHE_ERROR: str | None = None  # why on-disk caching is off, or None when it is on


def _compile(fn: Any, parallel: bool) -> Any:
    """njit(fn) with caching when the cache folder is writable, without it otherwise.

    The serial and the parallel version are compiled from copies of `fn` with
    different names (`_im2col_body_serial`, `_im2col_body_parallel`). Numba's
    cache keys an entry by the function's name, bytecode and signature, not by
    `parallel=`, so two versions of one function would share one cache entry
    and the serial dispatcher would load the parallel machine code (seen here:
    the "serial" kernel then started OpenMP threads on every call).
    """
    global CACHE_ERROR
    suffix = "_parallel" if parallel else "_serial"
    fn = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix)
    fn.__qualname__ = fn.__name__
    if CACHE_ERROR is None:
        try:
            return numba.njit(parallel=parallel, cache=True, nogil=True)(fn)
        except (RuntimeError, OSError) as error:
            # numba raises "cannot cache function ...: no locator available" here
            CACHE_ERROR = f"{type(error).__name__}: {error}"
    return numba.njit(parallel=parallel, cache=False, nogil=True)(fn)


# ---------------------------------------------------------------------------
# The loop bodies
# ---------------------------------------------------------------------------


def _im2col_body(x, col, N, C, H, W, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW):
    """col[c, kh, kw, n, oh, ow] = x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW], or 0.

    x and col arrive flattened (1-D, C order), so every access is base + offset.
    The loop it computes (one thread per row r = (c, kh, kw) of col):

        for r in prange(C*KH*KW):
            for n, oh, ow:
                ih, iw = oh*SH - PH + kh*DH, ow*SW - PW + kw*DW
                col[r, n, oh, ow] = x[n, c, ih, iw] if inside else 0
    """
    sw = uint64(SW)
    for r in prange(C * KH * KW):
        c = r // (KH * KW)
        kh = (r // KW) % KH
        kw = r % KW
        shift = kw * DW - PW  # iw = ow*SW + shift
        ow_lo = min(max(-(shift // SW), 0), OW)  # first ow with iw >= 0
        ow_hi = min(max(-((shift - W) // SW), ow_lo), OW)  # first ow with iw >= W
        inside = uint64(ow_hi - ow_lo)
        for n in range(N):
            for oh in range(OH):
                ih = oh * SH - PH + kh * DH
                dst = uint64(((r * N + n) * OH + oh) * OW)  # col[r, n, oh, 0]
                if ih < 0 or ih >= H:
                    for j in range(uint64(OW)):
                        col[dst + j] = 0
                    continue
                for j in range(uint64(ow_lo)):
                    col[dst + j] = 0
                d0 = dst + uint64(ow_lo)  # col[r, n, oh, ow_lo]
                s0 = uint64(((n * C + c) * H + ih) * W + ow_lo * SW + shift)  # x[n, c, ih, iw]
                if SW == 1:  # a plain copy, which LLVM vectorizes
                    for j in range(inside):
                        col[d0 + j] = x[s0 + j]
                else:
                    for j in range(inside):
                        col[d0 + j] = x[s0 + j * sw]
                for j in range(uint64(ow_hi), uint64(OW)):
                    col[dst + j] = 0


def _col2im_body(col, x, N, C, H, W, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW):
    """x[n, c, ih, iw] = sum of col[c, kh, kw, n, oh, ow] over the windows that reach it.

    col and x arrive flattened (1-D, C order). The loop it computes (one thread
    per plane p = (n, c), so no two threads ever add into the same pixel):

        for p in prange(N*C):
            x[n, c] = 0
            for kh, kw (in increasing order), oh, ow:
                ih, iw = oh*SH - PH + kh*DH, ow*SW - PW + kw*DW
                if inside: x[n, c, ih, iw] += col[c, kh, kw, n, oh, ow]
    """
    sw = uint64(SW)
    for p in prange(N * C):
        n = p // C
        c = p % C
        plane = uint64(p * H * W)  # x[n, c, 0, 0]
        for j in range(uint64(H * W)):
            x[plane + j] = 0
        for kh in range(KH):
            oh_lo = min(max(-((kh * DH - PH) // SH), 0), OH)  # first oh with ih >= 0
            oh_hi = min(max(-((kh * DH - PH - H) // SH), oh_lo), OH)  # first oh with ih >= H
            for kw in range(KW):
                r = (c * KH + kh) * KW + kw
                shift = kw * DW - PW
                ow_lo = min(max(-(shift // SW), 0), OW)
                ow_hi = min(max(-((shift - W) // SW), ow_lo), OW)
                inside = uint64(ow_hi - ow_lo)
                for oh in range(oh_lo, oh_hi):
                    ih = oh * SH - PH + kh * DH
                    d0 = plane + uint64(ih * W + ow_lo * SW + shift)  # x[n, c, ih, iw]
                    s0 = uint64(((r * N + n) * OH + oh) * OW + ow_lo)  # col[r, n, oh, ow_lo]
                    if SW == 1:
                        for j in range(inside):
                            x[d0 + j] += col[s0 + j]
                    else:
                        for j in range(inside):
                            x[d0 + j * sw] += col[s0 + j]


def _im2col_strided_body(x, col, offset, inside, whole, N, C, HW, T, L):
    """im2col from a tap table (see `_tap_table`); T = KH*KW taps, L = OH*OW positions.

    The loop it computes (one thread per row r = (c, tap) of col):

        for r in prange(C*T):
            for n, l:
                col[r, n, l] = x[n, c].flat[offset[tap, l]] if inside[tap, l] else 0

    A tap whose every position is inside the image (`whole[tap]`) skips the test.
    """
    for r in prange(C * T):
        c = r // T
        tap = r % T
        t0 = uint64(tap * L)  # offset[tap, 0]
        for n in range(N):
            s0 = uint64((n * C + c) * HW)  # x[n, c, 0, 0]
            d0 = uint64((r * N + n) * L)  # col[r, n, 0]
            if whole[tap]:
                for j in range(uint64(L)):
                    col[d0 + j] = x[s0 + offset[t0 + j]]
            else:
                for j in range(uint64(L)):
                    v = x[s0 + offset[t0 + j]]  # offset 0 where outside: a safe read
                    col[d0 + j] = v if inside[t0 + j] else 0


def _col2im_strided_body(col, x, offset, inside, whole, N, C, HW, T, L):
    """col2im from a tap table: the adjoint of the loop above.

    One thread per plane p = (n, c); taps in increasing order, as everywhere:

        for p in prange(N*C):
            x[n, c] = 0
            for tap, l:
                if inside[tap, l]: x[n, c].flat[offset[tap, l]] += col[(c, tap), n, l]
    """
    for p in prange(N * C):
        n = p // C
        c = p % C
        plane = uint64(p * HW)  # x[n, c, 0, 0]
        for j in range(uint64(HW)):
            x[plane + j] = 0
        for tap in range(T):
            t0 = uint64(tap * L)
            s0 = uint64(((c * T + tap) * N + n) * L)  # col[(c, tap), n, 0]
            if whole[tap]:
                for j in range(uint64(L)):
                    x[plane + offset[t0 + j]] += col[s0 + j]
            else:
                for j in range(uint64(L)):
                    if inside[t0 + j]:
                        x[plane + offset[t0 + j]] += col[s0 + j]


@functools.lru_cache(maxsize=64)
def _tap_table(
    H: int, W: int, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each tap reads, for every output position: (offset, inside, whole).

    offset (KH*KW*OH*OW,) uint64: ih*W + iw for tap (kh, kw) at position (oh, ow),
    or 0 where (ih, iw) falls in the padding; inside, of the same shape (uint8):
    whether it does not; whole (KH*KW,) uint8: whether all of a tap's positions
    are inside. Computed once per geometry (a few KiB) and kept.
    """
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = kernel_size, stride, padding, dilation
    OH = conv_output_size(H, KH, SH, PH, DH)
    OW = conv_output_size(W, KW, SW, PW, DW)
    kh, kw, oh, ow = np.meshgrid(
        np.arange(KH), np.arange(KW), np.arange(OH), np.arange(OW), indexing="ij"
    )  # each (KH, KW, OH, OW)
    ih = oh * SH - PH + kh * DH
    iw = ow * SW - PW + kw * DW
    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    offset = np.where(inside, ih * W + iw, 0).astype(np.uint64).reshape(-1)
    whole = inside.reshape(KH * KW, OH * OW).all(axis=1)
    table = offset, inside.reshape(-1).astype(np.uint8), whole.astype(np.uint8)
    for array in table:  # shared by every later call with this geometry: read-only
        array.flags.writeable = False
    return table


_im2col_parallel = _compile(_im2col_body, parallel=True)
_im2col_serial = _compile(_im2col_body, parallel=False)
_col2im_parallel = _compile(_col2im_body, parallel=True)
_col2im_serial = _compile(_col2im_body, parallel=False)
_im2col_strided_parallel = _compile(_im2col_strided_body, parallel=True)
_im2col_strided_serial = _compile(_im2col_strided_body, parallel=False)
_col2im_strided_parallel = _compile(_col2im_strided_body, parallel=True)
_col2im_strided_serial = _compile(_col2im_strided_body, parallel=False)


# ---------------------------------------------------------------------------
# Winograd's tiles (what tinygen/kernels/winograd.py runs; its docstring has the math)
# ---------------------------------------------------------------------------
#
# A tile is the 2x2 block of output pixels at rows (r, r + DH), columns (s, s + DW),
# where r and s run over winograd.tile_bases(OH, DH) and (OW, DW): row_base and col_base
# here. Tile t = (n*TH + th)*TW + tw of a chunk is column t of the (16, channels, tiles)
# matrices; entry 4a+b holds element (a, b) of a 4x4 transformed tile. Each kernel
# copies a tile row's input rows into a buffer with zero margins first, so that the
# loops over a row's tiles read no padding and test no bounds. Serial: lanes run them.


def _winograd_tiles_body(x, V, row_base, col_base, PH, PW, DH, DW):
    """V[4a+b, c, t] = (B^T d B)[a, b], d the 4x4 input tile of tile t in plane x[n, c].

    Tile (r, s) reads x[n, c, r - PH + DH*a, s - PW + DW*b] for a, b in 0..3 (0 outside).
    B^T is applied first down the columns of the four rows (a whole row at once), then
    along each tile's four columns.
    """
    N, C, H, W = x.shape
    TH, TW = row_base.size, col_base.size
    rows = np.zeros((4, W + 2 * PW + DW), dtype=x.dtype)  # rows[a, PW + j] = x[.., ih_a, j]
    e = np.zeros_like(rows)  # B^T rows: e[a] = sum over a' of B^T[a, a'] rows[a']
    for n in range(N):
        for c in range(C):
            for th in range(TH):
                for a in range(4):
                    ih = row_base[th] - PH + DH * a
                    if 0 <= ih < H:
                        rows[a, PW : PW + W] = x[n, c, ih]
                    else:
                        rows[a, PW : PW + W] = 0
                for j in range(rows.shape[1]):
                    e[0, j] = rows[0, j] - rows[2, j]
                    e[1, j] = rows[1, j] + rows[2, j]
                    e[2, j] = rows[2, j] - rows[1, j]
                    e[3, j] = rows[1, j] - rows[3, j]
                t0 = (n * TH + th) * TW
                for a in range(4):
                    for tw in range(TW):
                        j = col_base[tw]  # the tile's columns in `rows`: j + DW*b
                        d0, d1, d2, d3 = e[a, j], e[a, j + DW], e[a, j + 2 * DW], e[a, j + 3 * DW]
                        V[4 * a, c, t0 + tw] = d0 - d2
                        V[4 * a + 1, c, t0 + tw] = d1 + d2
                        V[4 * a + 2, c, t0 + tw] = d2 - d1
                        V[4 * a + 3, c, t0 + tw] = d1 - d3


def _winograd_untile_body(M, y, row_base, col_base, DH, DW, bias):
    """y[n, o, r + DH*i, s + DW*j] = (A^T m A)[i, j] + bias[o], m = M[:, o, t] as 4x4.

    A^T is applied down the columns of the tiles of a tile row first (r2[i, b, tw]),
    then along rows; the pixels of a tile beyond OH or OW (odd sizes) are dropped.
    """
    N, C_out, OH, OW = y.shape
    TH, TW = row_base.size, col_base.size
    r2 = np.zeros((2, 4, TW), dtype=y.dtype)
    out = np.zeros((2, OW + DW + 1), dtype=y.dtype)  # a tile row's two output rows, with room
    for n in range(N):
        for o in range(C_out):
            for th in range(TH):
                t0 = (n * TH + th) * TW
                for b in range(4):
                    for tw in range(TW):
                        m1, m2 = M[4 + b, o, t0 + tw], M[8 + b, o, t0 + tw]
                        r2[0, b, tw] = M[b, o, t0 + tw] + m1 + m2
                        r2[1, b, tw] = m1 - m2 - M[12 + b, o, t0 + tw]
                for i in range(2):
                    for tw in range(TW):
                        j = col_base[tw]
                        out[i, j] = r2[i, 0, tw] + r2[i, 1, tw] + r2[i, 2, tw] + bias[o]
                        out[i, j + DW] = r2[i, 1, tw] - r2[i, 2, tw] - r2[i, 3, tw] + bias[o]
                for i in range(2):
                    oh = row_base[th] + DH * i
                    if oh < OH:
                        y[n, o, oh] = out[i, :OW]


def _winograd_grad_tiles_body(gy, Mg, row_base, col_base, DH, DW):
    """Mg[4a+b, o, t] = (A g A^T)[a, b], g the 2x2 tile t of gy[n, o] (0 beyond OH, OW).

    The adjoint of the untiling above (without its bias): what the weight gradient
    multiplies with the input's tiles.
    """
    N, C_out, OH, OW = gy.shape
    TH, TW = row_base.size, col_base.size
    rows = np.zeros((2, OW + DW + 1), dtype=gy.dtype)  # the tile row's two gy rows, zero beyond OW
    e = np.zeros((4, rows.shape[1]), dtype=gy.dtype)  # A down the columns: (A g)[a] per column
    for n in range(N):
        for o in range(C_out):
            for th in range(TH):
                for i in range(2):
                    oh = row_base[th] + DH * i
                    if oh < OH:
                        rows[i, :OW] = gy[n, o, oh]
                    else:
                        rows[i, :OW] = 0
                for j in range(rows.shape[1]):
                    e[0, j] = rows[0, j]
                    e[1, j] = rows[0, j] + rows[1, j]
                    e[2, j] = rows[0, j] - rows[1, j]
                    e[3, j] = -rows[1, j]
                t0 = (n * TH + th) * TW
                for a in range(4):
                    for tw in range(TW):
                        j = col_base[tw]  # then A along the tile's two columns j, j + DW
                        u0, u1 = e[a, j], e[a, j + DW]
                        Mg[4 * a, o, t0 + tw] = u0
                        Mg[4 * a + 1, o, t0 + tw] = u0 + u1
                        Mg[4 * a + 2, o, t0 + tw] = u0 - u1
                        Mg[4 * a + 3, o, t0 + tw] = -u1


# 4x4 kernels with stride 2 (winograd.py's second part): F(2x2, 2x2) on the input's four
# phases. Channels last here: these kernels read and write zero-padded (N, H, W, C) copies
# made in winograd.py, and the innermost loop of each runs over the channels, contiguous
# in memory, where a loop over one row's tiles would be 4 long (7x7 outputs). Tile
# t = (n*TH + th)*TW + tw is row t of the (9, tiles, channels) matrices; entry 3i+j holds
# element (i, j) of a 3x3 transformed tile. The three small matrices act as
# B^T d = (d0 - d1, d1, d2 - d1), A^T m = (m0 + m1, m1 + m2) and A g = (g0, g0 + g1, g1);
# G2 is A, so the weight transform and the gradient tiles expand a 2x2 block the same way.
# Each kernel writes that out itself: a kernel that called another jitted function would
# keep Numba's cached copy of it after an edit of the callee.


def _phase_weights_body(weight, U, flip):
    """U[3k+l, (2a+b)*C + c, o] = (G2 g G2^T)[k, l], g[i, j] = weight[o, c, 2i + a, 2j + b],
    or with i and j reversed (flip): each phase's 2x2 kernel, transformed. U may be a
    transposed view."""
    C_out, C = weight.shape[:2]
    for o in range(C_out):
        for c in range(C):
            for a in range(2):
                for b in range(2):
                    if flip:
                        g00, g01 = weight[o, c, 2 + a, 2 + b], weight[o, c, 2 + a, b]
                        g10, g11 = weight[o, c, a, 2 + b], weight[o, c, a, b]
                    else:
                        g00, g01 = weight[o, c, a, b], weight[o, c, a, 2 + b]
                        g10, g11 = weight[o, c, 2 + a, b], weight[o, c, 2 + a, 2 + b]
                    k = (2 * a + b) * C + c
                    s0, s1 = g00 + g10, g01 + g11  # G2 down: rows g0, g0 + g1, g1
                    U[0, k, o] = g00  # then along
                    U[1, k, o] = g00 + g01
                    U[2, k, o] = g01
                    U[3, k, o] = s0
                    U[4, k, o] = s0 + s1
                    U[5, k, o] = s1
                    U[6, k, o] = g10
                    U[7, k, o] = g10 + g11
                    U[8, k, o] = g11


def _phase_tiles_body(xh, V, TH, TW):
    """V[3i+j, t, (2a+b)*C + c] = (B^T d B)[i, j], d[u, v] = xh[n, 4th + 2u + a, 4tw + 2v + b, c]:
    the 3x3 tiles of phase (a, b) of the padded, channels-last input xh (N, Hp, Wp, C)."""
    N, _, _, C = xh.shape
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                for a in range(2):
                    for b in range(2):
                        r, q, base = 4 * th + a, 4 * tw + b, (2 * a + b) * C
                        for c in range(C):
                            d00, d01, d02 = xh[n, r, q, c], xh[n, r, q + 2, c], xh[n, r, q + 4, c]
                            d10, d11 = xh[n, r + 2, q, c], xh[n, r + 2, q + 2, c]
                            d12 = xh[n, r + 2, q + 4, c]
                            d20, d21 = xh[n, r + 4, q, c], xh[n, r + 4, q + 2, c]
                            d22 = xh[n, r + 4, q + 4, c]
                            e00, e01, e02 = d00 - d10, d01 - d11, d02 - d12  # B^T down
                            e20, e21, e22 = d20 - d10, d21 - d11, d22 - d12
                            V[0, t, base + c] = e00 - e01  # then along
                            V[1, t, base + c] = e01
                            V[2, t, base + c] = e02 - e01
                            V[3, t, base + c] = d10 - d11
                            V[4, t, base + c] = d11
                            V[5, t, base + c] = d12 - d11
                            V[6, t, base + c] = e20 - e21
                            V[7, t, base + c] = e21
                            V[8, t, base + c] = e22 - e21


def _pair_tiles_body(gh, V, TH, TW):
    """V[3i+j, t, o] = (B^T d B)[i, j], d[u, v] = gh[n, 2th + u, 2tw + v, o]: the 3x3 tiles
    of a stride-1 2x2 convolution of gh, gy channels last with one zero row and column
    in front."""
    N, _, _, C_out = gh.shape
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                r, q = 2 * th, 2 * tw
                for o in range(C_out):
                    d00, d01, d02 = gh[n, r, q, o], gh[n, r, q + 1, o], gh[n, r, q + 2, o]
                    d10, d11 = gh[n, r + 1, q, o], gh[n, r + 1, q + 1, o]
                    d12 = gh[n, r + 1, q + 2, o]
                    d20, d21 = gh[n, r + 2, q, o], gh[n, r + 2, q + 1, o]
                    d22 = gh[n, r + 2, q + 2, o]
                    e00, e01, e02 = d00 - d10, d01 - d11, d02 - d12
                    e20, e21, e22 = d20 - d10, d21 - d11, d22 - d12
                    V[0, t, o] = e00 - e01
                    V[1, t, o] = e01
                    V[2, t, o] = e02 - e01
                    V[3, t, o] = d10 - d11
                    V[4, t, o] = d11
                    V[5, t, o] = d12 - d11
                    V[6, t, o] = e20 - e21
                    V[7, t, o] = e21
                    V[8, t, o] = e22 - e21


def _pair_untile_body(M, yh, bias):
    """yh[n, 2th + i, 2tw + j, o] = (A^T m A)[i, j] + bias[o], m = M[:, t, o] as 3x3, into a
    channels-last (N, 2*TH, 2*TW, C_out) buffer whose top-left (OH, OW) is the output."""
    N, H2, W2, C_out = yh.shape
    TH, TW = H2 // 2, W2 // 2
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                r, q = 2 * th, 2 * tw
                for o in range(C_out):
                    m3, m4, m5 = M[3, t, o], M[4, t, o], M[5, t, o]
                    r00, r01, r02 = M[0, t, o] + m3, M[1, t, o] + m4, M[2, t, o] + m5  # A^T down
                    r10, r11, r12 = m3 + M[6, t, o], m4 + M[7, t, o], m5 + M[8, t, o]
                    yh[n, r, q, o] = r00 + r01 + bias[o]  # then along
                    yh[n, r, q + 1, o] = r01 + r02 + bias[o]
                    yh[n, r + 1, q, o] = r10 + r11 + bias[o]
                    yh[n, r + 1, q + 1, o] = r11 + r12 + bias[o]


def _phase_untile_body(M, gh, bias):
    """gh[n, 4th + 2i + a, 4tw + 2j + b, c] = (A^T m A)[i, j] + bias[c], m = M[:, t,
    (2a+b)*C + c] as 3x3: the four phases' tiles put back in place, in a channels-last
    (N, 4*TH, 4*TW, C) buffer that holds the padded input gradient."""
    N, H4, W4, C = gh.shape
    TH, TW = H4 // 4, W4 // 4
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                for a in range(2):
                    for b in range(2):
                        r, q, base = 4 * th + a, 4 * tw + b, (2 * a + b) * C
                        for c in range(C):
                            k = base + c
                            m3, m4, m5 = M[3, t, k], M[4, t, k], M[5, t, k]
                            r00, r01, r02 = M[0, t, k] + m3, M[1, t, k] + m4, M[2, t, k] + m5
                            r10, r11, r12 = m3 + M[6, t, k], m4 + M[7, t, k], m5 + M[8, t, k]
                            gh[n, r, q, c] = r00 + r01 + bias[c]
                            gh[n, r, q + 2, c] = r01 + r02 + bias[c]
                            gh[n, r + 2, q, c] = r10 + r11 + bias[c]
                            gh[n, r + 2, q + 2, c] = r11 + r12 + bias[c]


def _pair_grad_tiles_body(gh, Mg, TH, TW):
    """Mg[3a+b, t, o] = (A g A^T)[a, b], g[i, j] = gh[n, 1 + 2th + i, 1 + 2tw + j, o]: the
    2x2 tiles of gy (in the padded copy `_pair_tiles` reads, zero beyond OH and OW), the
    adjoint of `_pair_untile` without its bias, for the weight gradient."""
    N, _, _, C_out = gh.shape
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                r, q = 1 + 2 * th, 1 + 2 * tw
                for o in range(C_out):
                    g00, g01 = gh[n, r, q, o], gh[n, r, q + 1, o]
                    g10, g11 = gh[n, r + 1, q, o], gh[n, r + 1, q + 1, o]
                    s0, s1 = g00 + g10, g01 + g11  # A down: rows g0, g0 + g1, g1
                    Mg[0, t, o] = g00  # then along
                    Mg[1, t, o] = g00 + g01
                    Mg[2, t, o] = g01
                    Mg[3, t, o] = s0
                    Mg[4, t, o] = s0 + s1
                    Mg[5, t, o] = s1
                    Mg[6, t, o] = g10
                    Mg[7, t, o] = g10 + g11
                    Mg[8, t, o] = g11


_winograd_tiles = _compile(_winograd_tiles_body, parallel=False)
_winograd_untile = _compile(_winograd_untile_body, parallel=False)
_winograd_grad_tiles = _compile(_winograd_grad_tiles_body, parallel=False)
_phase_weights = _compile(_phase_weights_body, parallel=False)
_phase_tiles = _compile(_phase_tiles_body, parallel=False)
_pair_tiles = _compile(_pair_tiles_body, parallel=False)
_pair_untile = _compile(_pair_untile_body, parallel=False)
_phase_untile = _compile(_phase_untile_body, parallel=False)
_pair_grad_tiles = _compile(_pair_grad_tiles_body, parallel=False)


# ---------------------------------------------------------------------------
# The fused layer kernels (what tinygen/kernels/fused.py runs on numpy arrays)
# ---------------------------------------------------------------------------
#
# Each one makes a single pass over memory, or two or three for batch normalization,
# where NumPy makes one pass and one fresh array per operator. Serial: they sit between
# convolutions, whose BLAS threads hold the other core. The arrays arrive C-contiguous,
# batch normalization's as (N, C, L) with L the product of the trailing dims. Sums are
# taken in float64; the LLVM flag "reassoc" lets those sums run in vector registers
# (it changes the order of the additions, not their precision).


def _leaky_relu_body(x, y, slope):
    """y = x where x > 0, else slope * x (x, y flat; slope of x's dtype)."""
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > 0 else v * slope


def _leaky_relu_grad_body(x, gy, gx, slope):
    """gx = gy where x > 0, else slope * gy (slope 0 gives ReLU's gradient)."""
    for i in range(x.size):
        g = gy[i]
        gx[i] = g if x[i] > 0 else g * slope


def _batch_norm_body(x, gamma, beta, eps, y, xhat, mean, invstd, var, c0, c1):
    """Per channel c of x (N, C, L), for c in [c0, c1): mean, biased var, xhat = (x - mean)
    * invstd, y = gamma * xhat + beta, with invstd = 1 / sqrt(var + eps). Two passes for the
    statistics (the variance from the centered values, which loses nothing to cancellation),
    one to write. A channel's sums are taken in the same order whatever the range."""
    N, C, L = x.shape
    M = N * L
    total = np.zeros(C)  # float64
    for n in range(N):
        for c in range(c0, c1):
            s = 0.0
            for i in range(L):
                s += x[n, c, i]
            total[c] += s
    mean64 = total / M
    squares = np.zeros(C)
    for n in range(N):
        for c in range(c0, c1):
            m = mean64[c]
            s = 0.0
            for i in range(L):
                d = x[n, c, i] - m
                s += d * d
            squares[c] += s
    for c in range(c0, c1):
        mean[c] = mean64[c]
        var[c] = squares[c] / M
        invstd[c] = 1.0 / np.sqrt(squares[c] / M + eps)
    for n in range(N):
        for c in range(c0, c1):
            m, k, g, b = mean[c], invstd[c], gamma[c], beta[c]  # in x's dtype
            for i in range(L):
                h = (x[n, c, i] - m) * k
                xhat[n, c, i] = h
                y[n, c, i] = h * g + b


def _batch_norm_grad_body(gy, xhat, gamma, invstd, gx, ggamma, gbeta, need_gx, c0, c1):
    """gbeta = sum gy, ggamma = sum gy * xhat (per channel c in [c0, c1)), and, when
    need_gx, gx = gamma * invstd * (gy - gbeta / M - xhat * ggamma / M)."""
    N, C, L = gy.shape
    M = N * L
    sum_gy = np.zeros(C)
    sum_gy_xhat = np.zeros(C)
    for n in range(N):
        for c in range(c0, c1):
            a = 0.0
            b = 0.0
            for i in range(L):
                g = gy[n, c, i]
                a += g
                b += g * xhat[n, c, i]
            sum_gy[c] += a
            sum_gy_xhat[c] += b
    for c in range(c0, c1):
        gbeta[c] = sum_gy[c]
        ggamma[c] = sum_gy_xhat[c]
    if not need_gx:
        return
    for n in range(N):
        for c in range(c0, c1):
            k = gamma[c] * invstd[c]
            a = gbeta[c] / M
            b = ggamma[c] / M
            for i in range(L):
                gx[n, c, i] = k * (gy[n, c, i] - a - xhat[n, c, i] * b)


def _compile_fused(fn: Any) -> Any:
    """A serial kernel with reassociation allowed (see above), cached like the others."""
    global CACHE_ERROR
    options = {"cache": CACHE_ERROR is None, "nogil": True, "fastmath": {"reassoc", "contract"}}
    try:
        return numba.njit(**options)(fn)
    except (RuntimeError, OSError) as error:
        CACHE_ERROR = f"{type(error).__name__}: {error}"
        return numba.njit(**{**options, "cache": False})(fn)


_leaky_relu_kernel = _compile_fused(_leaky_relu_body)
_leaky_relu_grad_kernel = _compile_fused(_leaky_relu_grad_body)
_batch_norm_kernel = _compile_fused(_batch_norm_body)
_batch_norm_grad_kernel = _compile_fused(_batch_norm_grad_body)


# ---------------------------------------------------------------------------
# The public functions (same signature as reference.py, plus `parallel`)
# ---------------------------------------------------------------------------


def _use_threads(elements: int) -> bool:
    """The parallel kernel pays off only with several threads and enough work."""
    return elements >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1


def im2col(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    out: np.ndarray | None = None,
    parallel: bool | None = None,
) -> np.ndarray:
    """(N, C, H, W) -> (C*KH*KW, N*OH*OW); parallel=None chooses by size."""
    N, C, H, W = x.shape
    KH, KW = kernel_size
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty((C * KH * KW, N * OH * OW), dtype=x.dtype)
    if parallel is None:
        parallel = _use_threads(out.size)
    if stride[1] > 1:
        table = _tap_table(H, W, kernel_size, stride, padding, dilation)
        kernel = _im2col_strided_parallel if parallel else _im2col_strided_serial
        kernel(x.reshape(-1), out.reshape(-1), *table, N, C, H * W, KH * KW, OH * OW)
        return out
    kernel = _im2col_parallel if parallel else _im2col_serial
    kernel(
        x.reshape(-1), out.reshape(-1), N, C, H, W, OH, OW, KH, KW, *stride, *padding, *dilation
    )
    return out


def col2im(
    col: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    out: np.ndarray | None = None,
    parallel: bool | None = None,
) -> np.ndarray:
    """(C*KH*KW, N*OH*OW) -> (N, C, H, W); parallel=None chooses by size."""
    N, C, H, W = x_shape
    KH, KW = kernel_size
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    col = np.ascontiguousarray(col)
    if out is None:
        out = np.empty(x_shape, dtype=col.dtype)
    if parallel is None:
        parallel = _use_threads(col.size)
    if stride[1] > 1:
        table = _tap_table(H, W, kernel_size, stride, padding, dilation)
        kernel = _col2im_strided_parallel if parallel else _col2im_strided_serial
        kernel(col.reshape(-1), out.reshape(-1), *table, N, C, H * W, KH * KW, OH * OW)
        return out
    kernel = _col2im_parallel if parallel else _col2im_serial
    kernel(
        col.reshape(-1), out.reshape(-1), N, C, H, W, OH, OW, KH, KW, *stride, *padding, *dilation
    )
    return out


def winograd_tiles(
    x: np.ndarray, V: np.ndarray, row_base: Any, col_base: Any, padding: Pair, dilation: Pair
) -> None:
    """Fill V (16, C, N*TH*TW) with the transformed input tiles of x (N, C, H, W)."""
    _winograd_tiles(x, V, row_base, col_base, *padding, *dilation)


def winograd_untile(
    M: np.ndarray, y: np.ndarray, row_base: Any, col_base: Any, dilation: Pair, bias: Any
) -> None:
    """Fill y (N, C_out, OH, OW) from the products M (16, C_out, N*TH*TW), plus bias (C_out,)."""
    _winograd_untile(M, y, row_base, col_base, *dilation, bias)


def winograd_grad_tiles(
    gy: np.ndarray, Mg: np.ndarray, row_base: Any, col_base: Any, dilation: Pair
) -> None:
    """Fill Mg (16, C_out, N*TH*TW) with the transformed output-gradient tiles of gy."""
    _winograd_grad_tiles(gy, Mg, row_base, col_base, *dilation)


def phase_weights(weight: np.ndarray, U: np.ndarray, flip: bool) -> None:
    """Fill U (9, 4C, C_out), or a transposed view of a (9, C_out, 4C) array, with the
    transformed 2x2 kernels of the four phases of weight (C_out, C, 4, 4)."""
    _phase_weights(weight, U, flip)


def phase_tiles(xh: np.ndarray, V: np.ndarray, tiles: Pair) -> None:
    """Fill V (9, N*TH*TW, 4C) with the tiles of the four phases of xh (padded, channels last)."""
    _phase_tiles(xh, V, *tiles)


def pair_tiles(gh: np.ndarray, V: np.ndarray, tiles: Pair) -> None:
    """Fill V (9, N*TH*TW, C_out) with the tiles of gh (gy, padded by one in front)."""
    _pair_tiles(gh, V, *tiles)


def pair_untile(M: np.ndarray, yh: np.ndarray, bias: Any) -> None:
    """Fill yh (N, 2*TH, 2*TW, C_out) from the products M (9, N*TH*TW, C_out), plus bias."""
    _pair_untile(M, yh, bias)


def phase_untile(M: np.ndarray, gh: np.ndarray, bias: Any) -> None:
    """Fill gh (N, 4*TH, 4*TW, C) from the products M (9, N*TH*TW, 4C) of the four phases."""
    _phase_untile(M, gh, bias)


def pair_grad_tiles(gh: np.ndarray, Mg: np.ndarray, tiles: Pair) -> None:
    """Fill Mg (9, N*TH*TW, C_out) with the transformed 2x2 tiles of gy (padded as gh)."""
    _pair_grad_tiles(gh, Mg, *tiles)


# ---------------------------------------------------------------------------
# Polling a flag without the GIL (lanes.py's threads wait for work this way)
# ---------------------------------------------------------------------------


@intrinsic
def _load_flag(typingctx, flag):
    """flag[0] read from memory on every call, as an atomic load with acquire order.

    A plain `flag[0]` in a loop that never writes it may be read once and kept in
    a register (the compiler may assume nothing else changes it), and the loop
    would then never see the other thread's write.
    """
    signature = numba.types.int64(flag)

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load_atomic(array.data, "acquire", 8)

    return signature, codegen


def _no_yield() -> int:
    return 0


# The C library's sched_yield, called from compiled code by its name (which keeps the
# kernel cacheable); where there is none, a stand-in that does nothing.
_yield_core = (
    numba.types.ExternalFunction("sched_yield", numba.types.int32())
    if os.name == "posix"
    else numba.njit(nogil=True)(_no_yield)
)


def _wait_for_flag_body(flag, polls):
    """True as soon as flag[0] (int64) is not 0, False after `polls` looks at it.

    Every 4096 looks (a few microseconds) it offers its core to another thread
    (sched_yield). A loop that only looks can hold the very core that the thread
    it waits for was woken on: seen on the 2-core machine after 20 ms idle, a
    VAE-E1 forward pass in 2 lanes then took 3.9 ms instead of 0.6 (the worker
    started 2 ms late, when the caller's polling ran out), in 51 to 62 calls of
    80; with the yields, in none of 80. Training steps, where the threads never
    idle that long, took 0.99-1.00 of the time.
    """
    for i in range(polls):
        if _load_flag(flag) != 0:
            return True
        if i & 4095 == 4095:
            _yield_core()
    return False


wait_for_flag = _compile_fused(_wait_for_flag_body)


# ---------------------------------------------------------------------------
# Compilation, cache and report
# ---------------------------------------------------------------------------


def _flat(a: np.ndarray, dtype: Any) -> np.ndarray:
    """a as a contiguous 1-D array of this dtype (a view when it already is one)."""
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


# The rectifiers run on flat arrays, cut into one piece per lane (lanes.over_range):
# inside `lanes.threads()` with 2 lanes, each thread rectifies half of the array.


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) by NumPy's own ufunc (NaN stays NaN, -0.0 becomes 0), piece by piece."""
    y = np.empty(x.shape, dtype=x.dtype)
    xf, yf = _flat(x, x.dtype), y.reshape(-1)
    lanes.over_range(lambda i, j: np.maximum(xf[i:j], 0, out=yf[i:j]), x.size)
    return y


def leaky_relu(x: np.ndarray, slope: float) -> np.ndarray:
    y = np.empty(x.shape, dtype=x.dtype)
    xf, yf, a = _flat(x, x.dtype), y.reshape(-1), x.dtype.type(slope)
    lanes.over_range(lambda i, j: _leaky_relu_kernel(xf[i:j], yf[i:j], a), x.size)
    return y


def leaky_relu_backward(x: np.ndarray, gy: np.ndarray, slope: float) -> np.ndarray:
    gx = np.empty(x.shape, dtype=gy.dtype)
    xf, gyf, gxf = _flat(x, gy.dtype), _flat(gy, gy.dtype), gx.reshape(-1)
    a = gy.dtype.type(slope)
    lanes.over_range(lambda i, j: _leaky_relu_grad_kernel(xf[i:j], gyf[i:j], gxf[i:j], a), x.size)
    return gx


def _as_ncl(x: np.ndarray) -> np.ndarray:
    """(N, C, *) -> (N, C, L), C-contiguous."""
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)


def batch_norm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float
) -> tuple[np.ndarray, ...]:
    x3 = _as_ncl(x)
    C = x.shape[1]
    y, xhat = np.empty_like(x3), np.empty_like(x3)
    mean, invstd, var = (np.empty(C, dtype=x.dtype) for _ in range(3))
    gamma, beta = (_flat(a, x.dtype) for a in (gamma, beta))
    lanes.over_range(  # channels shared out between the lanes
        lambda c0, c1: _batch_norm_kernel(
            x3, gamma, beta, float(eps), y, xhat, mean, invstd, var, c0, c1
        ),
        C,
        x3.size,
    )
    return y.reshape(x.shape), xhat.reshape(x.shape), mean, invstd, var


def batch_norm_backward(
    gy: np.ndarray, xhat: np.ndarray, gamma: np.ndarray, invstd: np.ndarray, need_gx: bool
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    gy3 = _as_ncl(np.asarray(gy, dtype=xhat.dtype))
    xhat3 = _as_ncl(xhat)
    C = xhat.shape[1]
    gx = np.empty_like(gy3) if need_gx else np.empty((0, 0, 0), dtype=xhat.dtype)
    ggamma, gbeta = np.empty(C, dtype=xhat.dtype), np.empty(C, dtype=xhat.dtype)
    gamma, invstd = (
        np.ascontiguousarray(a, dtype=xhat.dtype).reshape(-1) for a in (gamma, invstd)
    )
    lanes.over_range(
        lambda c0, c1: _batch_norm_grad_kernel(
            gy3, xhat3, gamma, invstd, gx, ggamma, gbeta, need_gx, c0, c1
        ),
        C,
        xhat3.size,
    )
    return (gx.reshape(xhat.shape) if need_gx else None), ggamma, gbeta


def warmup(dtypes: tuple = (np.float32, np.float64), threaded: bool = True) -> float:
    """Compile (or load from the cache) every kernel for these dtypes; returns seconds taken.

    threaded=False leaves out the parallel im2col/col2im, which only run when asked for.
    """
    start = time.perf_counter()
    one = (1, 1)
    for dtype in dtypes:
        x = np.zeros((1, 1, 2, 2), dtype=dtype)
        for parallel in (True, False) if threaded else (False,):
            for stride in (one, (2, 2)):  # the row kernels, then the table-driven ones
                col = im2col(x, (2, 2), stride, one, one, parallel=parallel)
                col2im(col, x.shape, (2, 2), stride, one, one, parallel=parallel)
        bases = np.zeros(1, dtype=np.int64)
        bases.flags.writeable = False  # as winograd.tile_bases hands them out
        V = np.empty((16, 1, 1), dtype=dtype)
        winograd_tiles(x, V, bases, bases, one, one)
        winograd_untile(
            V, np.empty((1, 1, 2, 2), dtype=dtype), bases, bases, one, np.zeros(1, dtype)
        )
        winograd_grad_tiles(x, V, bases, bases, one)
        U = np.empty((9, 4, 1), dtype=dtype)  # the stride-2 path, channels last
        phase_weights(np.zeros((1, 1, 4, 4), dtype=dtype), U, False)
        transposed = np.empty((9, 2, 4), dtype=dtype).transpose(0, 2, 1)  # as gx passes it
        phase_weights(np.zeros((2, 1, 4, 4), dtype=dtype), transposed, True)
        phase_tiles(np.zeros((1, 6, 6, 1), dtype=dtype), U.reshape(9, 1, 4), (1, 1))
        pair_tiles(np.zeros((1, 4, 4, 1), dtype=dtype), V[:9], (1, 1))
        pair_untile(V[:9], np.empty((1, 2, 2, 1), dtype=dtype), np.zeros(1, dtype=dtype))
        phase_untile(U.reshape(9, 1, 4), np.empty((1, 4, 4, 1), dtype=dtype), np.zeros(1, dtype))
        pair_grad_tiles(np.zeros((1, 3, 3, 1), dtype=dtype), V[:9], (1, 1))
        leaky_relu_backward(x, leaky_relu(x, 0.2), 0.2)
        ones = np.ones(1, dtype=dtype)
        _, xhat, _, invstd, _ = batch_norm(x, ones, ones, 1e-5)
        batch_norm_backward(x, xhat, ones, invstd, need_gx=True)
    return time.perf_counter() - start


def cache_dir() -> str:
    """The folder Numba caches these kernels in."""
    if numba.config.CACHE_DIR:
        return str(numba.config.CACHE_DIR)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")


def clear_cache() -> int:
    """Delete this module's cached machine code; returns how many files were removed."""
    folder = cache_dir()
    removed = 0
    if not os.path.isdir(folder):
        return 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith("cpu.") and name.endswith((".nbi", ".nbc")):
                os.remove(os.path.join(root, name))
                removed += 1
    return removed


def threading_layer() -> str:
    """The threading layer Numba runs prange on ('not started yet' before the first run)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "not started yet"

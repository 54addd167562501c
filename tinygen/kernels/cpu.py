"""im2col and col2im compiled by Numba: the fast CPU path.

Same arguments, same column layout and same results (to the last bit in
float64) as reference.py, whose docstring holds the notation and the index
convention. Each kernel is compiled twice from one Python body: a parallel
version (`parallel=True`, `prange` over independent rows or planes) and a
serial one, and `im2col`/`col2im` below pick between them by size.

No two threads ever write the same element:

- im2col gives each thread whole rows of col (one row = one tap (c, kh, kw));
- col2im gives each thread whole planes x[n, c] and lets it add, into that
  plane alone, every column entry that belongs to it.

The inner loops run over a precomputed valid range of `ow`, so they have no
branch and LLVM can vectorize them; the padding is written as explicit zeros.

Numba caches the machine code on disk (`cache=True`). When the cache folder
cannot be written (a read-only install), the kernels are compiled with
`cache=False` instead, every run; `CACHE_ERROR` says why. NUMBA_CACHE_DIR
chooses another folder.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numba
import numpy as np
from numba import prange

from tinygen.kernels.reference import Pair, conv_output_size

# Below this many column elements the serial kernel is used: starting the
# thread pool costs more than it saves (measured by benchmarks/conv.py
# --kernels; see the report there).
PARALLEL_MIN_ELEMENTS = 1 << 16

CACHE_ERROR: str | None = None  # why on-disk caching is off, or None when it is on


def _compile(fn: Any, parallel: bool) -> Any:
    """njit(fn) with caching when the cache folder is writable, without it otherwise."""
    global CACHE_ERROR
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


def _im2col_body(x, col, KH, KW, SH, SW, PH, PW, DH, DW):
    """col[c, kh, kw, n, oh, ow] = x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW], or 0.

    The loop it computes (one thread per row r = (c, kh, kw)):

        for r in prange(C*KH*KW):
            for n, oh, ow:
                ih, iw = oh*SH - PH + kh*DH, ow*SW - PW + kw*DW
                col[r, n, oh, ow] = x[n, c, ih, iw] if inside else 0
    """
    N, C, H, W = x.shape
    R, _, OH, OW = col.shape  # col viewed as (C*KH*KW, N, OH, OW)
    for r in prange(R):
        c = r // (KH * KW)
        kh = (r // KW) % KH
        kw = r % KW
        shift = kw * DW - PW
        ow_lo = min(max(-(shift // SW), 0), OW)
        ow_hi = min(max(-((shift - W) // SW), ow_lo), OW)
        for n in range(N):
            for oh in range(OH):
                ih = oh * SH - PH + kh * DH
                row = col[r, n, oh]
                if ih < 0 or ih >= H:
                    row[:] = 0
                else:
                    src = x[n, c, ih]
                    for ow in range(ow_lo):
                        row[ow] = 0
                    for ow in range(ow_lo, ow_hi):
                        row[ow] = src[ow * SW + shift]
                    for ow in range(ow_hi, OW):
                        row[ow] = 0


def _col2im_body(col, x, KH, KW, SH, SW, PH, PW, DH, DW):
    """x[n, c, ih, iw] = sum of col[c, kh, kw, n, oh, ow] over the windows that reach it.

    The loop it computes (one thread per plane p = (n, c), so no two threads
    ever add into the same pixel):

        for p in prange(N*C):
            x[n, c] = 0
            for kh, kw (in increasing order), oh, ow:
                ih, iw = oh*SH - PH + kh*DH, ow*SW - PW + kw*DW
                if inside: x[n, c, ih, iw] += col[c, kh, kw, n, oh, ow]
    """
    N, C, H, W = x.shape
    _, _, OH, OW = col.shape  # col viewed as (C*KH*KW, N, OH, OW)
    for p in prange(N * C):
        n = p // C
        c = p % C
        plane = x[n, c]
        plane[:, :] = 0
        for kh in range(KH):
            oh_lo = min(max(-((kh * DH - PH) // SH), 0), OH)
            oh_hi = min(max(-((kh * DH - PH - H) // SH), oh_lo), OH)
            for kw in range(KW):
                r = (c * KH + kh) * KW + kw
                shift = kw * DW - PW
                ow_lo = min(max(-(shift // SW), 0), OW)
                ow_hi = min(max(-((shift - W) // SW), ow_lo), OW)
                for oh in range(oh_lo, oh_hi):
                    dst = plane[oh * SH - PH + kh * DH]
                    src = col[r, n, oh]
                    for ow in range(ow_lo, ow_hi):
                        dst[ow * SW + shift] += src[ow]


_im2col_parallel = _compile(_im2col_body, parallel=True)
_im2col_serial = _compile(_im2col_body, parallel=False)
_col2im_parallel = _compile(_col2im_body, parallel=True)
_col2im_serial = _compile(_col2im_body, parallel=False)


# ---------------------------------------------------------------------------
# The public functions (same signature as reference.py, plus `parallel`)
# ---------------------------------------------------------------------------


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
        parallel = out.size >= PARALLEL_MIN_ELEMENTS
    kernel = _im2col_parallel if parallel else _im2col_serial
    kernel(x, out.reshape(C * KH * KW, N, OH, OW), KH, KW, *stride, *padding, *dilation)
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
        parallel = col.size >= PARALLEL_MIN_ELEMENTS
    kernel = _col2im_parallel if parallel else _col2im_serial
    kernel(col.reshape(C * KH * KW, N, OH, OW), out, KH, KW, *stride, *padding, *dilation)
    return out


# ---------------------------------------------------------------------------
# Compilation, cache and report
# ---------------------------------------------------------------------------


def warmup(dtypes: tuple = (np.float32, np.float64)) -> float:
    """Compile (or load from the cache) every kernel for these dtypes; returns seconds taken."""
    start = time.perf_counter()
    one = (1, 1)
    for dtype in dtypes:
        x = np.zeros((1, 1, 2, 2), dtype=dtype)
        for parallel in (True, False):
            col = im2col(x, (2, 2), one, one, one, parallel=parallel)
            col2im(col, x.shape, (2, 2), one, one, one, parallel=parallel)
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

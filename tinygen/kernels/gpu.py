"""im2col and col2im as CUDA kernels, through CuPy: the GPU path.

Same arguments, same column layout and same results (to the last bit in
float64) as reference.py, whose docstring holds the notation and the index
convention.

- im2col: one GPU thread per column entry col[c, kh, kw, n, oh, ow]; it
  reads its pixel, or writes 0 in the padding.
- col2im is a GATHER, not a scatter: one thread per pixel x[n, c, ih, iw]
  finds every (kh, kw, oh, ow) whose window reaches it and sums those column
  entries, in increasing (kh, kw) order, starting from zero. Each thread
  writes only its own pixel, so there are no atomics, no races, and the
  result does not depend on the order the threads run in (atomic scatter-add
  would make it vary from run to run).

The CUDA source is compiled once, on first use, and kept in `_module`
(CuPy also caches the binary on disk). This file imports cupy only inside
its functions, so it can be imported, read and linted without a GPU.
"""

from __future__ import annotations

from typing import Any

from tinygen.kernels.reference import Pair, conv_output_size

_CUDA_SOURCE = r"""
template <typename T>
__device__ void im2col_kernel(
    const T* x, T* col, long long total,
    int N, int C, int H, int W, int KH, int KW, int OH, int OW,
    int SH, int SW, int PH, int PW, int DH, int DW)
{
    // total = C*KH*KW*N*OH*OW; entry i is col[c, kh, kw, n, oh, ow] in C order.
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        long long rest = i;
        int ow = rest % OW; rest /= OW;
        int oh = rest % OH; rest /= OH;
        int n = rest % N; rest /= N;
        int kw = rest % KW; rest /= KW;
        int kh = rest % KH; rest /= KH;
        int c = (int)rest;
        int ih = oh * SH - PH + kh * DH;
        int iw = ow * SW - PW + kw * DW;
        T value = (T)0;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
            value = x[(((long long)n * C + c) * H + ih) * W + iw];
        }
        col[i] = value;
    }
}

template <typename T>
__device__ void col2im_kernel(
    const T* col, T* x, long long total,
    int N, int C, int H, int W, int KH, int KW, int OH, int OW,
    int SH, int SW, int PH, int PW, int DH, int DW)
{
    // total = N*C*H*W; entry i is x[n, c, ih, iw] in C order.
    long long NL = (long long)N * OH * OW;  // length of one row of col
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        long long rest = i;
        int iw = rest % W; rest /= W;
        int ih = rest % H; rest /= H;
        int c = rest % C; rest /= C;
        int n = (int)rest;
        T sum = (T)0;
        for (int kh = 0; kh < KH; ++kh) {
            int oh_s = ih + PH - kh * DH;  // = oh*SH when tap kh of window oh lands on ih
            if (oh_s < 0 || oh_s % SH != 0) continue;
            int oh = oh_s / SH;
            if (oh >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                int ow_s = iw + PW - kw * DW;
                if (ow_s < 0 || ow_s % SW != 0) continue;
                int ow = ow_s / SW;
                if (ow >= OW) continue;
                long long row = ((long long)c * KH + kh) * KW + kw;
                sum += col[row * NL + ((long long)n * OH + oh) * OW + ow];
            }
        }
        x[i] = sum;
    }
}

#define INSTANTIATE(T, SUFFIX)                                                       \
extern "C" __global__ void im2col_##SUFFIX(                                          \
    const T* x, T* col, long long total, int N, int C, int H, int W, int KH, int KW, \
    int OH, int OW, int SH, int SW, int PH, int PW, int DH, int DW) {                \
    im2col_kernel<T>(x, col, total, N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW); \
}                                                                                    \
extern "C" __global__ void col2im_##SUFFIX(                                          \
    const T* col, T* x, long long total, int N, int C, int H, int W, int KH, int KW, \
    int OH, int OW, int SH, int SW, int PH, int PW, int DH, int DW) {                \
    col2im_kernel<T>(col, x, total, N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW); \
}

INSTANTIATE(float, float32)
INSTANTIATE(double, float64)
"""

_THREADS = 256
_module: Any = None


def _kernel(name: str, dtype: Any) -> Any:
    """The compiled kernel `name_<dtype>`; the module is compiled on the first call only."""
    global _module
    import cupy

    if _module is None:
        _module = cupy.RawModule(code=_CUDA_SOURCE, options=("-std=c++14",))
    dtype_name = cupy.dtype(dtype).name
    if dtype_name not in ("float32", "float64"):
        raise TypeError(f"gpu kernels: dtype must be float32 or float64, got {dtype_name}")
    return _module.get_function(f"{name}_{dtype_name}")


def _launch(kernel: Any, total: int, args: tuple) -> None:
    import numpy as np

    blocks = max(1, min((total + _THREADS - 1) // _THREADS, 65535 * 8))
    kernel((blocks,), (_THREADS,), (*args[:2], np.int64(total), *(np.int32(a) for a in args[2:])))


def im2col(
    x: Any,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    out: Any = None,
) -> Any:
    """(N, C, H, W) cupy array -> (C*KH*KW, N*OH*OW) cupy array."""
    import cupy

    N, C, H, W = x.shape
    KH, KW = kernel_size
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    x = cupy.ascontiguousarray(x)
    if out is None:
        out = cupy.empty((C * KH * KW, N * OH * OW), dtype=x.dtype)
    if out.size:
        geometry = (N, C, H, W, KH, KW, OH, OW, *stride, *padding, *dilation)
        _launch(_kernel("im2col", x.dtype), out.size, (x, out, *geometry))
    return out


def col2im(
    col: Any,
    x_shape: tuple[int, int, int, int],
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    out: Any = None,
) -> Any:
    """(C*KH*KW, N*OH*OW) cupy array -> (N, C, H, W) cupy array, by gathering."""
    import cupy

    N, C, H, W = x_shape
    KH, KW = kernel_size
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    col = cupy.ascontiguousarray(col)
    if out is None:
        out = cupy.empty(x_shape, dtype=col.dtype)
    if out.size:
        geometry = (N, C, H, W, KH, KW, OH, OW, *stride, *padding, *dilation)
        _launch(_kernel("col2im", col.dtype), out.size, (col, out, *geometry))
    return out


def warmup() -> None:
    """Compile the CUDA module now instead of on the first convolution."""
    import cupy

    for dtype in (cupy.float32, cupy.float64):
        _kernel("im2col", dtype)
        _kernel("col2im", dtype)

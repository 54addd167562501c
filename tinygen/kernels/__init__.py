"""im2col and col2im, three interchangeable ways, chosen by the array's type.

    reference.py   plain NumPy: the definition, with the notation and the index convention
    cpu.py         Numba, parallel and cached: what runs on numpy arrays
    gpu.py         CUDA kernels through CuPy: what runs on cupy arrays

`im2col` and `col2im` here check their arguments (so that no kernel ever sees
an index out of range) and hand the work to one of the three:

- a cupy array goes to gpu.py;
- a numpy array goes to cpu.py, or to reference.py when Numba cannot be
  imported (one warning says why, the first time);
- TINYGEN_KERNELS=reference forces reference.py for every array.

`info()` reports which is active and why; `warmup()` compiles the kernels
ahead of the first convolution; `clear_cache()` deletes Numba's cached code.
The convolutions built on these kernels are in conv_arrays.py, which on
the CPU can share a batch out between threads (lanes.py). fused.py
dispatches the same way for the layers between convolutions (batch
normalization and the rectifiers), with its Numba kernels also in cpu.py.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

import numpy as np

from tinygen.backend import cupy_unavailable_reason, is_cupy_array
from tinygen.kernels import reference
from tinygen.kernels.reference import Pair, conv_output_size

__all__ = [
    "im2col",
    "col2im",
    "conv_output_size",
    "info",
    "warmup",
    "clear_cache",
    "kernel_choice",
]

_cpu: Any = None
_cpu_error: str | None = None


def _cpu_module() -> Any:
    """cpu.py, imported on first use; None (with one warning) when Numba fails to import."""
    global _cpu, _cpu_error
    if _cpu is None and _cpu_error is None:
        try:
            _cpu = importlib.import_module("tinygen.kernels.cpu")
        except Exception as error:  # ImportError, or numba/llvmlite/numpy version mismatch
            _cpu_error = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"tinygen.kernels: Numba could not be imported ({_cpu_error}); "
                "convolutions use the slower NumPy reference kernels instead",
                RuntimeWarning,
                stacklevel=3,
            )
    return _cpu


def _setting() -> str:
    value = os.environ.get("TINYGEN_KERNELS", "auto").strip().lower() or "auto"
    if value not in ("auto", "reference"):
        raise ValueError(
            f"TINYGEN_KERNELS must be 'auto' or 'reference', got {os.environ['TINYGEN_KERNELS']!r}"
        )
    return value


def kernel_choice(array: Any) -> str:
    """Which implementation serves this array: 'reference', 'numba' or 'cuda'."""
    if _setting() == "reference":
        return "reference"
    if is_cupy_array(array):
        return "cuda"
    return "numba" if _cpu_module() is not None else "reference"


def _implementation(array: Any) -> Any:
    choice = kernel_choice(array)
    if choice == "cuda":
        return importlib.import_module("tinygen.kernels.gpu")
    if choice == "numba":
        return _cpu
    return reference


# ---------------------------------------------------------------------------
# Argument checks: the kernels trust these
# ---------------------------------------------------------------------------


def _check_geometry(
    name: str, x_shape: tuple, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair
) -> tuple[int, int]:
    """Check the integers a kernel gets; return (OH, OW)."""
    if len(x_shape) != 4:
        raise ValueError(f"{name}: expected a 4-D (N, C, H, W) input, got shape {tuple(x_shape)}")
    for label, pair, low in (
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if len(pair) != 2 or any(int(v) != v or v < low for v in pair):
            raise ValueError(f"{name}: {label} must be two ints >= {low}, got {tuple(pair)}")
    if any(v < 0 for v in x_shape):
        raise ValueError(f"{name}: negative size in shape {tuple(x_shape)}")
    _, _, H, W = x_shape
    OH = conv_output_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    if OH < 1 or OW < 1:
        raise ValueError(
            f"{name}: the dilated kernel (size DH*(KH-1)+1 = "
            f"{dilation[0] * (kernel_size[0] - 1) + 1}, DW*(KW-1)+1 = "
            f"{dilation[1] * (kernel_size[1] - 1) + 1}) must fit in the padded input "
            f"(H+2PH = {H + 2 * padding[0]}, W+2PW = {W + 2 * padding[1]})"
        )
    return OH, OW


def _pairs(*values: Any) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in value) for value in values]


def im2col(
    x: Any,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    out: Any = None,
) -> Any:
    """(N, C, H, W) -> (C*KH*KW, N*OH*OW): every kernel window of x as a column.

    The index convention is in reference.py. `out` (optional) is overwritten.
    """
    kernel_size, stride, padding, dilation = _pairs(kernel_size, stride, padding, dilation)
    OH, OW = _check_geometry("im2col", x.shape, kernel_size, stride, padding, dilation)
    N, C, _, _ = x.shape
    expected = (C * kernel_size[0] * kernel_size[1], N * OH * OW)
    if out is not None and (tuple(out.shape) != expected or out.dtype != x.dtype):
        raise ValueError(
            f"im2col: out must have shape {expected} and dtype {x.dtype}, "
            f"got {tuple(out.shape)} {out.dtype}"
        )
    return _implementation(x).im2col(x, kernel_size, stride, padding, dilation, out=out)


def col2im(
    col: Any,
    x_shape: tuple[int, int, int, int],
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    out: Any = None,
) -> Any:
    """(C*KH*KW, N*OH*OW) -> (N, C, H, W): each column entry added back into its pixel.

    The adjoint of im2col. `out` (optional) is overwritten.
    """
    x_shape = tuple(int(v) for v in x_shape)
    kernel_size, stride, padding, dilation = _pairs(kernel_size, stride, padding, dilation)
    OH, OW = _check_geometry("col2im", x_shape, kernel_size, stride, padding, dilation)
    N, C, _, _ = x_shape
    expected = (C * kernel_size[0] * kernel_size[1], N * OH * OW)
    if tuple(col.shape) != expected:
        raise ValueError(
            f"col2im: col must have shape (C*KH*KW, N*OH*OW) = {expected} for x_shape "
            f"{x_shape}, got {tuple(col.shape)}"
        )
    if out is not None and (tuple(out.shape) != x_shape or out.dtype != col.dtype):
        raise ValueError(
            f"col2im: out must have shape {x_shape} and dtype {col.dtype}, "
            f"got {tuple(out.shape)} {out.dtype}"
        )
    return _implementation(col).col2im(
        col, x_shape, kernel_size, stride, padding, dilation, out=out
    )


# ---------------------------------------------------------------------------
# Report, warm-up, cache
# ---------------------------------------------------------------------------


def info() -> dict:
    """Which kernels are active and why, Numba's version, threading layer and cache folder."""
    report: dict[str, Any] = {}
    forced = _setting() == "reference"
    cpu = _cpu_module()
    if forced:
        report["cpu_kernels"] = "reference (forced by TINYGEN_KERNELS=reference)"
    elif cpu is None:
        report["cpu_kernels"] = f"reference (Numba unavailable: {_cpu_error})"
    else:
        report["cpu_kernels"] = "numba"
    if cpu is not None:
        import numba

        report["numba"] = numba.__version__
        report["numba_threading_layer"] = cpu.threading_layer()
        report["numba_threading_layer_setting"] = numba.config.THREADING_LAYER
        report["numba_threads"] = numba.get_num_threads()
        report["numba_parallel_min_elements"] = cpu.PARALLEL_MIN_ELEMENTS
        report["numba_cache_dir"] = cpu.cache_dir()
        report["numba_cache"] = "on" if cpu.CACHE_ERROR is None else f"off ({cpu.CACHE_ERROR})"
    else:
        report["numba"] = None
    if forced:
        report["gpu_kernels"] = "reference (forced by TINYGEN_KERNELS=reference)"
    elif cupy_unavailable_reason() is None:
        report["gpu_kernels"] = "cuda (on cupy arrays)"
    else:
        report["gpu_kernels"] = f"none (cupy unavailable: {cupy_unavailable_reason()})"
    return report


def warmup(dtypes: tuple = ("float32", "float64"), threaded: bool = True) -> float:
    """Compile the Numba kernels for these dtypes (or load them from the cache) now; returns
    seconds taken. threaded=False skips the parallel im2col/col2im (unused by default).

    Without it, the first convolution pays the compile time (several seconds
    the first time, well under one when the cache is warm).
    """
    cpu = _cpu_module()
    if cpu is None:
        return 0.0
    return cpu.warmup(tuple(np.dtype(d) for d in dtypes), threaded=threaded)


def clear_cache() -> int:
    """Delete Numba's cached machine code for these kernels; returns the number of files."""
    cpu = _cpu_module()
    return cpu.clear_cache() if cpu is not None else 0

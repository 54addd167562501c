"""Making tensors: from data, filled with a constant, random, or a range.

All randomness draws from the one generator that `tinygen.manual_seed` seeds
(see backend.py), so a seed fixes every random tensor of a run. Shapes may be
given as separate ints or as one tuple: `zeros(2, 3)` or `zeros((2, 3))`.
Random values are drawn on the CPU and copied when `device='cuda'`, so a seed
gives the same numbers on both devices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygen import backend
from tinygen.autograd import Tensor


def _shape(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"shape must be non-negative ints, got {shape}")
    return tuple(int(s) for s in shape)


def _make(array: np.ndarray, requires_grad: bool, device: str) -> Tensor:
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


def tensor(
    data: Any, dtype: Any = None, requires_grad: bool = False, device: str = "cpu"
) -> Tensor:
    """A new leaf tensor holding a copy of `data`.

    Python floats become float32 (tinygen's default); NumPy arrays keep their
    dtype unless `dtype` says otherwise.
    """
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "shape"):
        array = backend.to_device(data, "cpu").astype(dtype or data.dtype, copy=True)
    else:
        array = Tensor(data, dtype=dtype).data
    return _make(array, requires_grad, device)


def zeros(*shape, dtype: Any = None, requires_grad: bool = False, device: str = "cpu") -> Tensor:
    return _make(np.zeros(_shape(shape), dtype or backend.DEFAULT_DTYPE), requires_grad, device)


def ones(*shape, dtype: Any = None, requires_grad: bool = False, device: str = "cpu") -> Tensor:
    return _make(np.ones(_shape(shape), dtype or backend.DEFAULT_DTYPE), requires_grad, device)


def full(
    shape, fill_value: float, dtype: Any = None, requires_grad: bool = False, device: str = "cpu"
) -> Tensor:
    array = np.full(_shape((shape,)), fill_value, dtype or backend.DEFAULT_DTYPE)
    return _make(array, requires_grad, device)


def randn(*shape, dtype: Any = None, requires_grad: bool = False, device: str = "cpu") -> Tensor:
    """Samples of the standard normal distribution N(0, 1)."""
    array = backend.generator().standard_normal(_shape(shape))
    return _make(array.astype(dtype or backend.DEFAULT_DTYPE), requires_grad, device)


def rand(*shape, dtype: Any = None, requires_grad: bool = False, device: str = "cpu") -> Tensor:
    """Samples of the uniform distribution on [0, 1)."""
    array = backend.generator().random(_shape(shape))
    return _make(array.astype(dtype or backend.DEFAULT_DTYPE), requires_grad, device)


def arange(
    start: float, end: float | None = None, step: float = 1, dtype: Any = None, device: str = "cpu"
) -> Tensor:
    """Evenly spaced values in [start, end), as torch.arange (integers stay int64)."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must not be zero")
    array = np.arange(start, end, step)
    if dtype is not None:
        array = array.astype(dtype)
    elif array.dtype.kind == "f":
        array = array.astype(backend.DEFAULT_DTYPE)
    return _make(array, False, device)


def _like(x: Tensor, dtype: Any, device: str | None) -> dict:
    return {"dtype": dtype or x.dtype, "device": device or x.device}


def zeros_like(
    x: Tensor, dtype: Any = None, requires_grad: bool = False, device: str | None = None
) -> Tensor:
    return zeros(x.shape, requires_grad=requires_grad, **_like(x, dtype, device))


def ones_like(
    x: Tensor, dtype: Any = None, requires_grad: bool = False, device: str | None = None
) -> Tensor:
    return ones(x.shape, requires_grad=requires_grad, **_like(x, dtype, device))


def randn_like(
    x: Tensor, dtype: Any = None, requires_grad: bool = False, device: str | None = None
) -> Tensor:
    return randn(x.shape, requires_grad=requires_grad, **_like(x, dtype, device))


def rand_like(
    x: Tensor, dtype: Any = None, requires_grad: bool = False, device: str | None = None
) -> Tensor:
    return rand(x.shape, requires_grad=requires_grad, **_like(x, dtype, device))

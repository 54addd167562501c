"""The array module under every Tensor: NumPy on the CPU, CuPy on the GPU.

tinygen never branches on the device inside an operation. Each operation asks
`get_array_module(array)` for the module that owns its inputs and calls the
same functions on it (`xp.exp`, `xp.matmul`, ...), so one line of code serves
both devices. CuPy is imported lazily, the first time it is needed, so a
machine without a GPU never tries to load it.

This file also holds the one random generator that all of tinygen's
randomness draws from (`manual_seed`, `generator`) and the default dtype.
"""

from __future__ import annotations

import importlib
import os
import platform
from typing import Any

import numpy as np

DEFAULT_DTYPE = np.float32


# ---------------------------------------------------------------------------
# CuPy, imported on first use
# ---------------------------------------------------------------------------

_cupy: Any = None
_cupy_error: str | None = None


def cupy_module() -> Any:
    """Return the cupy module, or None when cupy or a GPU is missing.

    The reason for a None is kept and reported by `cupy_unavailable_reason()`.
    """
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            cp = importlib.import_module("cupy")
            cp.cuda.runtime.getDeviceCount()  # raises when no GPU is visible
            _cupy = cp
        except Exception as error:  # ImportError, CUDARuntimeError, ...
            _cupy_error = f"{type(error).__name__}: {error}"
    return _cupy


def cupy_unavailable_reason() -> str | None:
    """Why cupy cannot be used here, or None when it can."""
    cupy_module()
    return _cupy_error


def gpu_available() -> bool:
    return cupy_module() is not None


def is_cupy_array(array: Any) -> bool:
    # Checking the type's module avoids importing cupy just to say "no".
    return type(array).__module__.startswith("cupy")


def get_array_module(*arrays: Any) -> Any:
    """The module (numpy or cupy) that owns these arrays.

    Mixing devices is an error: an operation must not copy silently between
    host and GPU.
    """
    if all(type(a) is np.ndarray for a in arrays):  # the common case, decided at once
        return np
    on_gpu = [is_cupy_array(a) for a in arrays if hasattr(a, "shape")]
    if any(on_gpu):
        if not all(on_gpu):
            devices = ", ".join("cuda" if g else "cpu" for g in on_gpu)
            raise ValueError(
                f"arrays live on different devices ({devices}); "
                "move them to one device with .to('cpu') or .to('cuda') first"
            )
        return cupy_module()
    return np


def device_of(array: Any) -> str:
    return "cuda" if is_cupy_array(array) else "cpu"


def to_device(array: Any, device: str) -> Any:
    """Copy `array` to 'cpu' (numpy) or 'cuda' (cupy); no copy when it is there."""
    device = normalize_device(device)
    if device == device_of(array):
        return array
    if device == "cpu":
        return array.get()
    cp = cupy_module()
    if cp is None:
        raise RuntimeError(f"device 'cuda' is not available here: {cupy_unavailable_reason()}")
    return cp.asarray(array)


def normalize_device(device: Any) -> str:
    name = str(device)
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        return "cuda"
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


# ---------------------------------------------------------------------------
# Randomness: one generator for everything
# ---------------------------------------------------------------------------

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator behind all of tinygen's randomness (and cupy's, when present).

    Initial weights, `randn`, dropout masks and data shuffling all draw from it,
    so one seed makes a whole run reproducible.
    """
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    if _cupy is not None:
        _cupy.random.seed(int(seed))


def generator() -> np.random.Generator:
    """The NumPy Generator that all of tinygen's randomness draws from."""
    return _generator


def get_rng_state() -> dict:
    """The generator's state, for checkpoints (a plain dict of ints and strings)."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    _generator.bit_generator.state = state


# ---------------------------------------------------------------------------
# A report of what is active
# ---------------------------------------------------------------------------


def info() -> dict:
    """Versions, active backends, and Numba's threading layer and cache folder.

    Returned as a dict; nothing is printed (the `tinygen` command prints it).
    """
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "default_dtype": np.dtype(DEFAULT_DTYPE).name,
    }
    from tinygen import kernels  # imported here: kernels sit beside backend

    report.update(kernels.info())
    cp = cupy_module()
    report["cupy"] = cp.__version__ if cp is not None else None
    report["gpu"] = "available" if cp is not None else f"unavailable ({_cupy_error})"
    report["TINYGEN_KERNELS"] = os.environ.get("TINYGEN_KERNELS", "auto")
    from tinygen import allocator

    report["malloc"] = allocator.STATUS
    return report

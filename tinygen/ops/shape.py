"""Operations that move values around without changing them.

reshape, permute, broadcast_to and sum_to, indexing, concatenation and
padding. Their backward passes move the gradient back the way the values
came: reshape back, permute back, and so on. Two pairs are each other's
backward:

    broadcast_to  <->  sum_to        (copy a value out  <->  add copies back up)
    getitem       <->  scatter-add   (pick elements     <->  put gradients back)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tinygen.autograd import Function, Tensor, as_tensor
from tinygen.backend import get_array_module


def _shape_arg(shape: tuple) -> tuple[int, ...]:
    """Accept both `reshape(x, 2, 3)` and `reshape(x, (2, 3))`."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _normalize_axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for a tensor with {ndim} dims")
    return axis % ndim


# ---------------------------------------------------------------------------
# reshape and its relatives
# ---------------------------------------------------------------------------


class Reshape(Function):
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, x):
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape a tensor of shape {tuple(x.shape)} ({x.size} elements) "
                f"into shape {self.shape}"
            ) from None

    def backward(self, gy):
        (x,) = self.inputs
        return reshape(gy, x.shape)


def reshape(x, *shape) -> Tensor:
    """The same values in a new shape; one dimension may be -1 (inferred)."""
    x = as_tensor(x)
    shape = _shape_arg(shape)
    if shape == x.shape:
        return x
    return Reshape(shape)(x)


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dimensions start_dim..end_dim into one, as torch.flatten."""
    x = as_tensor(x)
    if x.ndim == 0:
        return reshape(x, 1)
    start = _normalize_axis(start_dim, x.ndim, "flatten")
    end = _normalize_axis(end_dim, x.ndim, "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim ({start_dim}) comes after end_dim ({end_dim})")
    merged = int(np.prod(x.shape[start : end + 1]))
    return reshape(x, x.shape[:start] + (merged,) + x.shape[end + 1 :])


def squeeze(x, axis: int | None = None) -> Tensor:
    """Drop dimensions of size 1 (all of them, or the one at `axis` if it has size 1)."""
    x = as_tensor(x)
    if axis is None:
        return reshape(x, tuple(s for s in x.shape if s != 1))
    axis = _normalize_axis(axis, x.ndim, "squeeze")
    if x.shape[axis] != 1:
        return x
    return reshape(x, x.shape[:axis] + x.shape[axis + 1 :])


def unsqueeze(x, axis: int) -> Tensor:
    """Insert a dimension of size 1 at `axis`."""
    x = as_tensor(x)
    axis = _normalize_axis(axis, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


class Permute(Function):
    def __init__(self, axes: tuple[int, ...]) -> None:
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = tuple(np.argsort(self.axes))
        return permute(gy, *inverse)


def permute(x, *axes) -> Tensor:
    """Reorder the dimensions: output dimension i is input dimension axes[i]."""
    x = as_tensor(x)
    axes = _shape_arg(axes)
    in_range = all(-x.ndim <= a < x.ndim for a in axes)
    if not in_range or sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise ValueError(
            f"permute: axes {axes} are not a permutation of the {x.ndim} dims of shape {x.shape}"
        )
    axes = tuple(a % x.ndim for a in axes)
    if axes == tuple(range(x.ndim)):
        return x
    return Permute(axes)(x)


def transpose(x, dim0: int = -2, dim1: int = -1) -> Tensor:
    """Swap two dimensions (the last two by default), as torch.transpose."""
    x = as_tensor(x)
    axes = list(range(x.ndim))
    i = _normalize_axis(dim0, x.ndim, "transpose")
    j = _normalize_axis(dim1, x.ndim, "transpose")
    axes[i], axes[j] = axes[j], axes[i]
    return permute(x, *axes)


# ---------------------------------------------------------------------------
# broadcast_to and sum_to: the two halves of broadcasting
# ---------------------------------------------------------------------------


class BroadcastTo(Function):
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, x):
        xp = get_array_module(x)
        try:
            # A broadcast view repeats elements in memory; copy so that later
            # in-place updates of the result cannot write one value twice.
            return xp.ascontiguousarray(xp.broadcast_to(x, self.shape))
        except ValueError:
            raise ValueError(
                f"broadcast_to: cannot broadcast shape {tuple(x.shape)} to {self.shape}"
            ) from None

    def backward(self, gy):
        (x,) = self.inputs
        return sum_to(gy, x.shape)


class SumTo(Function):
    """Sum the elements that broadcasting to the input's shape would have copied.

    Example: sum_to of shape (4, 3) to (3,) sums over axis 0; to (4, 1) sums
    over axis 1 keeping it.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, x):
        lead = x.ndim - len(self.shape)  # leading axes that broadcasting added
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(self.shape) if s == 1 and x.shape[lead + i] != 1
        )
        y = x.sum(axis=axes, keepdims=True)
        return y.reshape(self.shape)

    def backward(self, gy):
        (x,) = self.inputs
        return broadcast_to(gy, x.shape)


def broadcast_to(x, *shape) -> Tensor:
    x = as_tensor(x)
    shape = _shape_arg(shape)
    if shape == x.shape:
        return x
    return BroadcastTo(shape)(x)


def expand(x, *shape) -> Tensor:
    """broadcast_to, where -1 keeps a dimension's size (as torch's expand)."""
    x = as_tensor(x)
    shape = _shape_arg(shape)
    lead = len(shape) - x.ndim  # new leading dims, which have no size to keep
    if lead < 0 or -1 in shape[:lead]:
        raise ValueError(
            f"expand: cannot expand shape {x.shape} to {shape}: -1 keeps an existing dim's "
            "size, and the new leading dims need explicit sizes"
        )
    shape = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
    return broadcast_to(x, shape)


def sum_to(x, shape: Sequence[int]) -> Tensor:
    """Reduce `x` by summation to `shape`, the inverse of broadcasting to x.shape."""
    x = as_tensor(x)
    shape = tuple(shape)
    if shape == x.shape:
        return x
    try:
        if np.broadcast_shapes(shape, x.shape) != x.shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"sum_to: shape {shape} does not broadcast to {x.shape}, so it cannot be summed to"
        ) from None
    return SumTo(shape)(x)


# ---------------------------------------------------------------------------
# Indexing
# ---------------------------------------------------------------------------


def _plain_index(index: Any) -> Any:
    """Replace Tensors inside an index by their arrays."""
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _is_basic(index: Any) -> bool:
    """True when the index has only ints, slices, None and Ellipsis (no arrays)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice, type(None), type(Ellipsis))) for i in parts)


class GetItem(Function):
    """x[index] for basic (slices, ints) and integer-array indexing."""

    def __init__(self, index: Any) -> None:
        self.index = index

    def forward(self, x):
        try:
            return x[self.index]
        except IndexError as error:
            raise IndexError(f"getitem: {error} (tensor shape {tuple(x.shape)})") from None

    def backward(self, gy):
        (x,) = self.inputs
        return ScatterAdd(self.index, x.shape)(gy)


class ScatterAdd(Function):
    """The backward of GetItem: a zero tensor with `gy` added at `index`.

    An index that repeats (x[[0, 0]]) picks one element twice, so its
    gradient gets both contributions: `np.add.at` adds each one, where plain
    assignment would keep only the last.
    """

    def __init__(self, index: Any, shape: tuple[int, ...]) -> None:
        self.index, self.shape = index, shape

    def forward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        if _is_basic(self.index):
            gx[self.index] = gy  # a basic index never picks an element twice
        else:
            xp.add.at(gx, self.index, gy)
        return gx

    def backward(self, ggx):
        return getitem(ggx, self.index)


def getitem(x, index) -> Tensor:
    return GetItem(_plain_index(index))(x)


# ---------------------------------------------------------------------------
# Joining and padding
# ---------------------------------------------------------------------------


class Concatenate(Function):
    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        first = xs[0].shape
        for k, x in enumerate(xs):
            rest_ok = x.ndim == len(first) and all(
                a == b for i, (a, b) in enumerate(zip(x.shape, first)) if i != self.axis
            )
            if not rest_ok:
                raise ValueError(
                    f"concatenate: tensor {k} has shape {tuple(x.shape)} but tensor 0 has "
                    f"shape {tuple(first)}; all dims except axis {self.axis} must match"
                )
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        grads, start = [], 0
        for x in self.inputs:
            size = x.shape[self.axis]
            index = (slice(None),) * self.axis + (slice(start, start + size),)
            grads.append(getitem(gy, index))
            start += size
        return tuple(grads)


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (torch.cat)."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor, got none")
    axis = _normalize_axis(axis, tensors[0].ndim, "concatenate")
    return Concatenate(axis)(*tensors)


cat = concatenate


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: needs at least one tensor, got none")
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: all tensors must have one shape, got {sorted(shapes)}")
    axis = _normalize_axis(axis, tensors[0].ndim + 1, "stack")
    return concatenate([unsqueeze(t, axis) for t in tensors], axis=axis)


class Pad(Function):
    """Constant padding; `widths` is one (before, after) pair per dimension."""

    def __init__(self, widths: tuple[tuple[int, int], ...], value: float) -> None:
        self.widths, self.value = widths, value

    def forward(self, x):
        return get_array_module(x).pad(x, self.widths, constant_values=self.value)

    def backward(self, gy):
        index = tuple(
            slice(before, gy.shape[i] - after) for i, (before, after) in enumerate(self.widths)
        )
        return getitem(gy, index)


def pad(x, pad_width: Sequence[Any], value: float = 0.0) -> Tensor:
    """Pad with a constant, NumPy-style: one (before, after) pair per dimension.

    (PyTorch's F.pad lists pairs from the last dimension backwards; here they
    follow the dimensions in order, as numpy.pad does.)
    """
    x = as_tensor(x)
    widths = tuple((int(a), int(b)) for a, b in pad_width)
    if len(widths) != x.ndim:
        raise ValueError(
            f"pad: pad_width needs one (before, after) pair per dim: {x.ndim} pairs for "
            f"shape {x.shape}, got {len(widths)}"
        )
    if any(a < 0 or b < 0 for a, b in widths):
        raise ValueError(f"pad: widths must be non-negative, got {widths}")
    if all(w == (0, 0) for w in widths):
        return x  # nothing to pad (and numpy.pad rejects the empty widths of a 0-d tensor)
    return Pad(widths, value)(x)

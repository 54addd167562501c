"""Matrix multiplication, with batch dimensions that broadcast.

For Y = X @ W with X (..., n, k) and W (..., k, m):

    dL/dX = dL/dY @ W^T        (..., n, m) @ (..., m, k) -> (..., n, k)
    dL/dW = X^T @ dL/dY        (..., k, n) @ (..., n, m) -> (..., k, m)

then each summed back over the batch dimensions it was broadcast along.
"""

from __future__ import annotations

from tinygen.autograd import Function, Tensor, as_tensor
from tinygen.backend import get_array_module
from tinygen.ops.shape import reshape, sum_to, transpose


class MatMul(Function):
    def forward(self, x, w):
        if x.ndim < 2 or w.ndim < 2 or x.shape[-1] != w.shape[-2]:
            raise ValueError(
                f"matmul: shapes {tuple(x.shape)} and {tuple(w.shape)} do not multiply; "
                f"x.shape[-1] ({x.shape[-1]}) must equal w.shape[-2] ({w.shape[-2]})"
            )
        try:
            return get_array_module(x).matmul(x, w)
        except ValueError:
            raise ValueError(
                f"matmul: batch dims of {tuple(x.shape)} and {tuple(w.shape)} do not broadcast"
            ) from None

    def backward(self, gy):
        x, w = self.inputs
        gx = sum_to(gy @ transpose(w), x.shape) if self.needs_input_grad[0] else None
        gw = sum_to(transpose(x) @ gy, w.shape) if self.needs_input_grad[1] else None
        return gx, gw


def matmul(x, w) -> Tensor:
    """x @ w. A 1-D operand is a row (on the left) or a column (on the right), as in NumPy."""
    x, w = as_tensor(x), as_tensor(w)
    if x.ndim == 0 or w.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got {x.shape} and {w.shape}")
    if x.ndim == 1 and w.ndim == 1 and x.shape != w.shape:
        raise ValueError(f"matmul: vectors of shapes {x.shape} and {w.shape} differ in length")
    row_axis = 0 if w.ndim == 1 else -2  # a vector w is a column
    if x.shape[-1] != w.shape[row_axis]:
        raise ValueError(
            f"matmul: shapes {x.shape} and {w.shape} do not multiply; "
            f"x.shape[-1] ({x.shape[-1]}) must equal w.shape[{row_axis}] ({w.shape[row_axis]})"
        )
    x2 = reshape(x, 1, x.shape[0]) if x.ndim == 1 else x  # (k,) -> (1, k)
    w2 = reshape(w, w.shape[0], 1) if w.ndim == 1 else w  # (k,) -> (k, 1)
    y = MatMul()(x2, w2)
    if x.ndim == 1:
        y = reshape(y, y.shape[:-2] + y.shape[-1:])  # drop the row axis
    if w.ndim == 1:
        y = reshape(y, y.shape[:-1])  # drop the column axis
    return y

"""The differentiable operations, one file per family, and the Tensor methods built on them.

Importing this package attaches the arithmetic operators (`x + y`, `x @ w`,
`x[i]`) and the methods (`x.exp()`, `x.sum(axis=0)`) to Tensor. The
autograd core stays free of any operation, and nothing imports upward.
"""

from tinygen.autograd import Tensor
from tinygen.ops.conv import conv2d, conv_transpose2d
from tinygen.ops.elementwise import (
    abs,
    add,
    cast,
    clamp,
    clip,
    div,
    eq,
    exp,
    ge,
    gt,
    le,
    leaky_relu,
    log,
    log_sigmoid,
    lt,
    maximum,
    minimum,
    mul,
    ne,
    neg,
    pow,
    relu,
    sigmoid,
    softplus,
    sqrt,
    sub,
    tanh,
    where,
)
from tinygen.ops.linalg import matmul
from tinygen.ops.reduce import argmax, logsumexp, max, mean, min, sum, var
from tinygen.ops.shape import (
    broadcast_to,
    cat,
    concatenate,
    expand,
    flatten,
    getitem,
    pad,
    permute,
    reshape,
    squeeze,
    stack,
    sum_to,
    transpose,
    unsqueeze,
)


def _reflected(op):
    """`2 - x` calls x.__rsub__(2), which must compute sub(2, x)."""
    return lambda self, other: op(other, self)


_OPERATORS = {
    "__add__": add,
    "__radd__": _reflected(add),
    "__sub__": sub,
    "__rsub__": _reflected(sub),
    "__mul__": mul,
    "__rmul__": _reflected(mul),
    "__truediv__": div,
    "__rtruediv__": _reflected(div),
    "__pow__": pow,
    "__rpow__": _reflected(pow),
    "__matmul__": matmul,
    "__rmatmul__": _reflected(matmul),
    "__neg__": neg,
    "__pos__": lambda self: self,
    "__abs__": abs,
    "__getitem__": getitem,
    "__eq__": eq,
    "__ne__": ne,
    "__lt__": lt,
    "__le__": le,
    "__gt__": gt,
    "__ge__": ge,
}

_METHODS = {
    "exp": exp,
    "log": log,
    "sqrt": sqrt,
    "abs": abs,
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "clip": clip,
    "clamp": clip,
    "maximum": maximum,
    "minimum": minimum,
    "pow": pow,
    "sum": sum,
    "mean": mean,
    "var": var,
    "max": max,
    "min": min,
    "argmax": argmax,
    "logsumexp": logsumexp,
    "matmul": matmul,
    "reshape": reshape,
    "view": reshape,
    "flatten": flatten,
    "squeeze": squeeze,
    "unsqueeze": unsqueeze,
    "permute": permute,
    "transpose": transpose,
    "broadcast_to": broadcast_to,
    "expand": expand,
    "sum_to": sum_to,
}

for _name, _function in {**_OPERATORS, **_METHODS}.items():
    setattr(Tensor, _name, _function)

Tensor.T = property(lambda self: permute(self, *reversed(range(self.ndim))))
Tensor.__hash__ = lambda self: id(self)  # defining __eq__ above must not drop hashing
Tensor.any = lambda self: bool(self.data.any())
Tensor.all = lambda self: bool(self.data.all())

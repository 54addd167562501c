"""tinygen: a deep-learning engine written from scratch on NumPy and CuPy.

    import tinygen as tg

    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    x.grad                      # tensor([2., 4., 6.])

The public face: Tensor and the functions that make tensors, the
differentiable operations, `no_grad`, `manual_seed`, `gradcheck`.
Neural-network layers live in `tinygen.nn`, optimizers in `tinygen.optim`.
"""

import numpy as _np

from tinygen import allocator as _allocator
from tinygen import ops
from tinygen.autograd import (
    Function,
    Tensor,
    enable_grad,
    grad,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from tinygen.backend import get_rng_state, info, manual_seed, set_rng_state
from tinygen.creation import (
    arange,
    full,
    ones,
    ones_like,
    rand,
    rand_like,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)
from tinygen.gradcheck import GradcheckError, gradcheck, gradgradcheck
from tinygen.ops import (
    abs,
    argmax,
    broadcast_to,
    cast,
    cat,
    clamp,
    clip,
    concatenate,
    conv2d,
    conv_transpose2d,
    exp,
    expand,
    flatten,
    getitem,
    leaky_relu,
    log,
    log_sigmoid,
    logsumexp,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    pad,
    permute,
    pow,
    relu,
    reshape,
    sigmoid,
    softplus,
    sqrt,
    squeeze,
    stack,
    sum,
    sum_to,
    tanh,
    transpose,
    unsqueeze,
    var,
    where,
)

float32 = _np.float32
float64 = _np.float64

# glibc: reuse freed memory rather than fault it in again every step (see allocator.py)
_allocator.keep_freed_memory()

__version__ = "0.1.0"

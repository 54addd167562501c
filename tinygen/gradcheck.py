"""Numerical gradient checking: is a backward pass right?

The test suite uses these two functions on every operation and layer, and so
can you on a layer of your own:

    def my_layer(x, w):
        return (x @ w).tanh()

    tinygen.gradcheck(my_layer, [x, w])        # raises GradcheckError if wrong
    tinygen.gradgradcheck(my_layer, [x, w])    # the same for the second derivative

How it works. Pick a random upstream gradient v and look at the scalar

    L(x) = sum(f(x) * v).

Backpropagation gives dL/dx (the "analytical" gradient). Central
differences give it too, from forward passes alone:

    dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)      error O(eps^2)

For a small input every element i is checked (the whole Jacobian-vector
product); for a large one, the derivative along a few random directions d,
(L(x + eps d) - L(x - eps d)) / (2 eps), is compared with sum(dL/dx * d).
Everything runs in float64: in float32, rounding error of the difference
quotient (about 1e-7 / eps) would drown the comparison.

Three more properties are checked: the gradient has the input's shape and
dtype, two backward passes give the same gradient, and a zero upstream
gradient gives a zero gradient.

Inputs must keep away from kinks (ReLU at 0, ties in max): there the
function has no derivative and the difference quotient straddles two slopes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinygen.autograd import Tensor, enable_grad, grad, no_grad
from tinygen.backend import get_array_module
from tinygen.ops.shape import concatenate

_STREAM = 0x67C  # separates gradcheck's random numbers from a test's own seeds


class GradcheckError(AssertionError):
    """A backward pass disagrees with the numerical derivative (or misbehaves)."""


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    full_limit: int = 256,
    directions: int = 4,
    seed: int = 0,
) -> bool:
    """Check fn's backward against central differences; raise GradcheckError if they differ.

    Args:
        fn: maps the inputs to one Tensor. The finite differences call it under
            no_grad; a fn that differentiates inside (a gradient penalty) wraps
            that part in `enable_grad()`, as the test of one in test_autograd.py does.
        inputs: Tensors and arrays. Floating-point arrays and Tensors that
            require grad are checked (in float64 copies); anything else is
            passed to fn as it is.
        eps: the step of the central difference.
        atol, rtol: an element passes when |analytical - numerical| <=
            atol + rtol * |numerical|.
        full_limit: inputs with at most this many elements are checked
            element by element; larger ones along `directions` random directions.
        seed: seeds the upstream gradient and the directions.

    Returns:
        True when every check passes.
    """
    # A stream of its own: were the upstream gradient drawn as default_rng(seed), a test
    # drawing its input from the same seed would get v equal to x, a direction along which
    # a wrong normalization-layer backward can look right.
    rng = np.random.default_rng([seed, _STREAM])
    xs, checked = _prepare(inputs, "gradcheck")

    def objective(args: list[Any], v: np.ndarray) -> float:
        with no_grad():
            return float((_host(fn(*args).data) * v).sum())

    output = _call(fn, xs)
    v = rng.standard_normal(output.shape)
    analytical = _analytical(fn, xs, checked, v)

    # The gradient must not change from one backward pass to the next.
    again = _analytical(fn, xs, checked, v)
    for i, (a, b) in enumerate(zip(analytical, again)):
        if not np.allclose(a, b, rtol=1e-10, atol=1e-12):
            raise GradcheckError(
                f"gradcheck: input {checked[i]}: two backward passes gave different gradients "
                f"(largest difference {np.abs(a - b).max():.3g})"
            )

    # A zero upstream gradient must give a zero gradient.
    for i, g in enumerate(_analytical(fn, xs, checked, np.zeros_like(v))):
        if np.any(g != 0):
            raise GradcheckError(
                f"gradcheck: input {checked[i]}: a zero upstream gradient gave a nonzero "
                f"gradient (largest {np.abs(g).max():.3g})"
            )

    for i, k in enumerate(checked):
        x = xs[k]
        g = analytical[i]
        host_x = _host(x.data)

        def at(shifted: np.ndarray, k: int = k, x: Tensor = x) -> list[Any]:
            args = list(xs)
            xp = get_array_module(x.data)
            args[k] = Tensor(xp.asarray(shifted))
            return args

        if x.size <= full_limit:
            for index in np.ndindex(*x.shape):
                plus, minus = host_x.copy(), host_x.copy()
                plus[index] += eps
                minus[index] -= eps
                numerical = (objective(at(plus), v) - objective(at(minus), v)) / (2 * eps)
                _compare(numerical, g[index], atol, rtol, k, x.shape, f"element {index}")
        else:
            for n in range(directions):
                d = rng.standard_normal(x.shape)
                numerical = (
                    objective(at(host_x + eps * d), v) - objective(at(host_x - eps * d), v)
                ) / (2 * eps)
                _compare(numerical, float((g * d).sum()), atol, rtol, k, x.shape, f"direction {n}")
    return True


def gradgradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    full_limit: int = 256,
    directions: int = 4,
    seed: int = 0,
) -> bool:
    """Check the second derivative: gradcheck of the map (inputs, v) -> d sum(fn * v)/d inputs.

    The first derivatives are computed with `create_graph=True`, so this
    checks that every backward pass is itself correctly differentiable.
    """
    rng = np.random.default_rng([seed, _STREAM, 2])
    xs, checked = _prepare(inputs, "gradgradcheck")
    output = _call(fn, xs)
    xp = get_array_module(output.data)
    v = Tensor(xp.asarray(rng.standard_normal(output.shape)), requires_grad=True)

    def first_derivatives(*args: Any) -> Tensor:
        *args, upstream = args
        # The numerical side calls this under no_grad with plain tensors; the
        # first derivative still needs a graph, so make leaves and record one.
        args = [
            Tensor(a.data, requires_grad=True) if k in checked and not a.requires_grad else a
            for k, a in enumerate(args)
        ]
        with enable_grad():
            out = fn(*args)
            grads = grad(
                out, [args[k] for k in checked], upstream, create_graph=True, allow_unused=True
            )
            flat = [g.reshape(-1) for g in grads if g is not None]
            if not flat:
                raise GradcheckError("gradgradcheck: fn does not depend on any checked input")
            return concatenate(flat)

    return gradcheck(
        first_derivatives,
        [*xs, v],
        eps=eps,
        atol=atol,
        rtol=rtol,
        full_limit=full_limit,
        directions=directions,
        seed=seed,
    )


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _prepare(inputs: Sequence[Any], name: str) -> tuple[list[Any], list[int]]:
    """float64 leaf copies of the inputs to check; the positions of those inputs."""
    xs: list[Any] = []
    checked: list[int] = []
    for k, value in enumerate(inputs):
        is_float_array = isinstance(value, (np.ndarray, np.floating)) and value.dtype.kind == "f"
        wants_grad = isinstance(value, Tensor) and value.requires_grad
        if is_float_array or wants_grad:
            data = value.data if isinstance(value, Tensor) else value
            if data.dtype != np.float64:
                warnings.warn(
                    f"{name}: input {k} is {data.dtype}; checking a float64 copy instead "
                    "(lower precision makes finite differences meaningless)",
                    stacklevel=3,
                )
            xs.append(Tensor(data.astype(np.float64), requires_grad=True))
            checked.append(k)
        elif isinstance(value, Tensor) and value.dtype.kind == "f":
            xs.append(Tensor(value.data.astype(np.float64)))  # a float64 constant
        else:
            xs.append(value)
    if not checked:
        raise ValueError(
            f"{name}: no input to check; pass float arrays or Tensors with requires_grad=True"
        )
    return xs, checked


def _call(fn: Callable[..., Tensor], xs: list[Any]) -> Tensor:
    output = fn(*xs)
    if not isinstance(output, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(output).__name__}")
    if output.dtype != np.float64:
        raise GradcheckError(
            f"gradcheck: fn returned dtype {output.dtype} from float64 inputs; "
            "an operation lost precision on the way"
        )
    return output


def _analytical(
    fn: Callable[..., Tensor], xs: list[Any], checked: list[int], v: np.ndarray
) -> list[np.ndarray]:
    """dL/dx for each checked input, by backpropagation, with shape and dtype checked."""
    output = _call(fn, xs)
    xp = get_array_module(output.data)
    if not output.requires_grad:
        return [np.zeros(xs[k].shape) for k in checked]
    try:
        grads = grad(output, [xs[k] for k in checked], Tensor(xp.asarray(v)), allow_unused=True)
    except RuntimeError as error:  # e.g. a backward that returned a wrongly shaped gradient
        raise GradcheckError(f"gradcheck: the backward pass failed: {error}") from error
    result = []
    for k, g in zip(checked, grads):
        x = xs[k]
        if g is None:
            result.append(np.zeros(x.shape))
            continue
        if g.shape != x.shape or g.dtype != x.dtype:
            raise GradcheckError(
                f"gradcheck: input {k}: gradient has shape {g.shape} and dtype {g.dtype}, "
                f"expected shape {x.shape} and dtype {x.dtype}"
            )
        result.append(_host(g.data))
    return result


def _compare(
    numerical: float,
    analytical: float,
    atol: float,
    rtol: float,
    k: int,
    shape: tuple[int, ...],
    where: str,
) -> None:
    tolerance = atol + rtol * abs(numerical)
    if not abs(analytical - numerical) <= tolerance:  # `not <=` also catches NaN
        raise GradcheckError(
            f"gradcheck: input {k} (shape {shape}), {where}: numerical {numerical:.10g}, "
            f"analytical {float(analytical):.10g}, difference "
            f"{abs(analytical - numerical):.3g} > tolerance {tolerance:.3g} "
            f"(atol {atol:g} + rtol {rtol:g} * |numerical|)"
        )

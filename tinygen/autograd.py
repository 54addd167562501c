"""Tensor, Function and the backward pass: reverse-mode automatic differentiation.

Read this file first. Everything else in tinygen is either an operation (a
Function subclass, in `tinygen/ops/`) or built from operations.

The idea in four lines:

    y = f(x)            a Function computes y from x on raw arrays (`forward`)
                        and y remembers f as its `creator`; f remembers x
    L.backward()        walks from L back to the leaves, in topological order,
                        asking each Function for the gradient of its inputs
                        given the gradient of its output (`backward`)

A Function's `backward` is written with tinygen's own differentiable
operations. Normally the backward pass runs under `no_grad`, so it only
computes numbers. With `create_graph=True` it records a graph of its own, and
the gradients can be differentiated again (gradients of gradients).

Who holds whom:

    Tensor --creator--> Function --inputs--> Tensor --creator--> ...

The arrows point from outputs to inputs only. A Function never holds its
output, so there are no reference cycles: the graph is freed by plain
reference counting as soon as its last output Tensor is dropped.

This file knows no operation. The arithmetic operators and methods of Tensor
(`x + y`, `x.exp()`, `x.sum()`) are attached by `tinygen.ops` when it is
imported, so that nothing here imports upward.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinygen import backend

# ---------------------------------------------------------------------------
# Gradient mode: whether operations record a graph
# ---------------------------------------------------------------------------

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Turn graph recording on or off inside a `with` block or a decorated function."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        # A stack, not one saved value: a decorator is one instance entered again by
        # every call, so a decorated function that calls itself nests its entries.
        self.previous: list[bool] = []

    def __enter__(self) -> None:
        global _grad_enabled
        self.previous.append(_grad_enabled)
        _grad_enabled = self.mode

    def __exit__(self, *exc_info: Any) -> None:
        global _grad_enabled
        _grad_enabled = self.previous.pop()


class no_grad(set_grad_enabled):
    """Record no graph: for evaluation, sampling, and optimizer updates.

    with no_grad():            @no_grad()
        y = model(x)           def sample(model): ...
    """

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Record a graph again, even inside `no_grad`."""

    def __init__(self) -> None:
        super().__init__(True)


# ---------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------


class Tensor:
    """An array that remembers how it was computed, so that it can be differentiated.

    Attributes:
        data: the numpy or cupy array holding the values.
        grad: a Tensor with the gradient accumulated by `backward`, or None.
        requires_grad: whether gradients flow to (and are stored on) this tensor.
        creator: the Function that computed this tensor, None for a leaf.
    """

    # Make numpy hand binary operators over to Tensor (`np.float64(2) * t`
    # calls `t.__rmul__`) instead of building an array of Tensor objects.
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_array(data, dtype)
        self.grad: Tensor | None = None
        self.creator: Function | None = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- what it is -------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.creator is None

    def numel(self) -> int:
        return self.size

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        extras = []
        if self.dtype != backend.DEFAULT_DTYPE:
            extras.append(f"dtype={self.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.creator is not None:
            extras.append(f"grad_fn=<{type(self.creator).__name__}Backward>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body, *extras]) + ")"

    def __hash__(self) -> int:
        # `==` is elementwise (attached by tinygen.ops), so hash by identity.
        return id(self)

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(
                f"the truth value of a tensor with {self.size} elements is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self.data)

    # -- leaving the graph ------------------------------------------------

    def item(self) -> Any:
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(
                f"item: only a one-element tensor converts to a Python number, "
                f"got shape {self.shape}"
            )
        return self.data.item()

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU when the tensor lives there)."""
        return backend.to_device(self.data, "cpu")

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """np.asarray(t) gives the values (without this, NumPy would build an object
        array of one-element Tensors through __len__ and __getitem__)."""
        array = self.numpy()
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return array.copy() if copy else array

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the graph: no gradient flows through the result."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Ask for (or stop asking for) gradients of this leaf tensor. Returns self."""
        if requires_grad and self.dtype.kind not in "fc":
            raise TypeError(
                f"requires_grad: only floating-point tensors can require gradients, "
                f"got dtype {self.dtype}; convert first, e.g. x.float()"
            )
        if not requires_grad and self.creator is not None:
            raise RuntimeError(
                "requires_grad_(False) on a non-leaf tensor; use .detach() to cut it "
                "from the graph"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def zero_(self) -> Tensor:
        """Set every value to zero in place (for buffers and gradients)."""
        self.data[...] = 0
        return self

    # -- devices and dtypes -----------------------------------------------

    def to(self, target: Any) -> Tensor:
        """A copy on another device ('cpu', 'cuda') or with another dtype.

        Returns self when nothing changes. A dtype change is differentiable, and
        so is a computed tensor's move (its gradient moves back). A leaf moved to
        another device is a new leaf there, keeping requires_grad.
        """
        from tinygen.ops.elementwise import cast, to_device

        if isinstance(target, str) and target.split(":")[0] in ("cpu", "cuda"):
            if self.creator is not None:
                return to_device(self, target)
            data = backend.to_device(self.data, target)
            if data is self.data:
                return self
            return Tensor(data, requires_grad=self.requires_grad)
        return cast(self, target)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    # -- the backward pass ------------------------------------------------

    def backward(
        self,
        grad: Tensor | Any | None = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
    ) -> None:
        """Accumulate d(self)/d(leaf) into `leaf.grad` for every leaf that requires grad.

        Gradients accumulate: a second backward adds to `.grad` (as in PyTorch).
        Clear them between steps with `optimizer.zero_grad()` or
        `module.zero_grad()`, which set `.grad` of the parameters to None.

        Args:
            grad: the gradient of some scalar with respect to self; may be
                omitted when self holds a single element (then it is 1).
            retain_graph: keep the graph so that backward can run through it
                again. Defaults to `create_graph`.
            create_graph: record the backward pass as a graph, so that the
                gradients can themselves be differentiated. Then `leaf.grad`
                holds a graph that refers back to the leaf, a reference cycle
                until `.grad` is cleared; `tinygen.grad(...)` returns such
                gradients instead and leaves no cycle.
        """
        grad = _initial_gradient(self, grad, "backward")
        run_backward(self, grad, retain_graph, create_graph, capture=None)


def _as_array(data: Any, dtype: Any = None) -> Any:
    """Turn numbers, lists and arrays into a numpy or cupy array.

    Python floats become float32 (tinygen's default, as in PyTorch); arrays
    keep their dtype unless one is asked for.
    """
    if hasattr(data, "__cuda_array_interface__") or isinstance(data, np.ndarray):
        return data if dtype is None else data.astype(dtype, copy=False)
    array = np.asarray(data, dtype=dtype)
    if dtype is None and array.dtype == np.float64 and not isinstance(data, np.generic):
        array = array.astype(backend.DEFAULT_DTYPE)
    if array.dtype == object:
        raise TypeError(f"cannot make a tensor from {type(data).__name__}: {data!r}")
    return array


def as_tensor(value: Any, like: Tensor | None = None) -> Tensor:
    """Wrap a number or array as a Tensor; Tensors pass through unchanged.

    A Python or NumPy scalar next to a tensor (`like`) takes the tensor's dtype
    and device where the value fits, so `x * 2.5` stays float32 for a float32 x.
    """
    if isinstance(value, Tensor):
        return value
    is_scalar = isinstance(value, np.generic) or (
        not hasattr(value, "shape") and np.ndim(value) == 0
    )
    if like is not None and is_scalar:
        if not isinstance(value, (numbers.Number, np.generic)):  # None would become NaN
            raise TypeError(
                f"expected a number, an array or a Tensor beside a tensor, "
                f"got {type(value).__name__}: {value!r}"
            )
        value = value.item() if isinstance(value, np.generic) else value
        dtype = np.result_type(like.dtype, value)
        xp = backend.get_array_module(like.data)
        return Tensor(xp.asarray(value, dtype=dtype))
    return Tensor(value)


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------


class Function:
    """One differentiable operation: its forward on arrays, its backward on Tensors.

    A subclass writes:

        class Exp(Function):
            def forward(self, x):             # numpy or cupy arrays in ...
                return xp.exp(x)              # ... one array out

            def backward(self, gy):           # the output's gradient, a Tensor
                (x,) = self.inputs            # the input Tensors
                return gy * exp(x)            # one gradient per input (or None)

    and applies it by calling an instance: `Exp()(x)`. Options (a slope, a
    stride) go to `__init__`. Arrays that backward needs and cannot cheaply
    recompute go through `save_for_backward`, so that they are freed with
    the graph.
    """

    inputs: tuple[Tensor, ...] | None
    needs_input_grad: tuple[bool, ...]
    saved: tuple[Any, ...]

    def __call__(self, *inputs: Any) -> Tensor:
        inputs = tuple(as_tensor(x) for x in inputs)
        arrays = [x.data for x in inputs]
        try:
            backend.get_array_module(*arrays)
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from None

        # Known before forward runs, so that forward can skip what no gradient will need.
        recording = is_grad_enabled() and any(x.requires_grad for x in inputs)
        self.needs_input_grad = tuple(recording and x.requires_grad for x in inputs)

        y = self.forward(*arrays)

        output = Tensor(y)
        if recording:
            self.inputs = inputs
            if output.dtype.kind in "fc":
                output.requires_grad = True
                output.creator = self
        return output

    def forward(self, *arrays: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no forward")

    def backward(self, gy: Tensor) -> Tensor | None | tuple[Tensor | None, ...]:
        raise NotImplementedError(f"{type(self).__name__} defines no backward")

    def save_for_backward(self, *arrays: Any) -> None:
        self.saved = arrays

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


# ---------------------------------------------------------------------------
# The backward pass
# ---------------------------------------------------------------------------


def grad(
    output: Tensor,
    inputs: Tensor | Sequence[Tensor],
    grad_output: Tensor | Any | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """The gradients of `output` with respect to `inputs`, returned instead of accumulated.

    Nothing is written into `.grad`. With `create_graph=True` the returned
    gradients carry a graph and can be differentiated again (a gradient
    penalty, a Hessian-vector product).
    """
    single = isinstance(inputs, Tensor)
    inputs = (inputs,) if single else tuple(inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor) or not x.requires_grad:
            raise ValueError(f"grad: inputs[{i}] is not a Tensor that requires grad")
    grad_output = _initial_gradient(output, grad_output, "grad")
    captured = run_backward(output, grad_output, retain_graph, create_graph, capture=inputs)
    results = tuple(captured.get(id(x)) for x in inputs)
    if not allow_unused:
        for i, g in enumerate(results):
            if g is None:
                raise ValueError(
                    f"grad: inputs[{i}] was not used to compute the output; "
                    "pass allow_unused=True to get None for it"
                )
    return results


def _initial_gradient(output: Tensor, grad: Any, caller: str) -> Tensor:
    if not output.requires_grad:
        raise RuntimeError(
            f"{caller}: the tensor does not require grad and has no graph; "
            "did you compute it under no_grad, or from tensors without requires_grad=True?"
        )
    if grad is None:
        if output.size != 1:
            raise RuntimeError(
                f"{caller}: a gradient can be implied only for a one-element output, but "
                f"the output has shape {output.shape}; pass grad= with that shape "
                "(or reduce the output, e.g. with .sum())"
            )
        xp = backend.get_array_module(output.data)
        return Tensor(xp.ones_like(output.data))
    grad = as_tensor(grad, like=output)
    if grad.shape != output.shape:
        raise ValueError(
            f"{caller}: grad has shape {grad.shape} but the output has shape {output.shape}"
        )
    return grad


def topological_order(root: Tensor) -> list[Function]:
    """The Functions that computed `root`, each listed before the Functions of its inputs.

    A depth-first search with an explicit stack (no recursion, so a chain
    10,000 operations long is fine) that visits inputs in their order, so the
    order, and with it the order in which gradients are summed, is the same
    on every run.
    """
    order: list[Function] = []
    visited: set[int] = set()
    if root.creator is None:
        return order
    stack: list[tuple[Function, bool]] = [(root.creator, False)]
    while stack:
        fn, inputs_done = stack.pop()
        if inputs_done:
            order.append(fn)  # post-order: after everything it depends on
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        if fn.inputs is None:
            continue  # freed graph: reported when we reach it in run_backward
        for x in reversed(fn.inputs):
            if x.creator is not None and id(x.creator) not in visited:
                stack.append((x.creator, False))
    order.reverse()  # outputs first, inputs last
    return order


_backward_observers: list = []


@contextlib.contextmanager
def observe_backward(callback):
    """Call `callback(fn, gy, gxs)` after each Function's backward inside this block.

    A hook for learning aids (the backward trace in `tinygen.viz`); it does
    not change what backward computes.
    """
    _backward_observers.append(callback)
    try:
        yield
    finally:
        _backward_observers.remove(callback)


def run_backward(
    root: Tensor,
    grad: Tensor,
    retain_graph: bool | None,
    create_graph: bool,
    capture: tuple[Tensor, ...] | None,
) -> dict[int, Tensor]:
    """Propagate `grad` from `root` to the leaves.

    Gradients of intermediate tensors live only in the local map
    `grad_of_output` (keyed by the Function that computed the tensor); a
    leaf's gradient is added into `leaf.grad`, or, when `capture` names
    tensors (for `grad()`), returned instead.
    """
    if retain_graph is None:
        retain_graph = create_graph
    wanted = {id(x): x for x in capture} if capture is not None else None
    captured: dict[int, Tensor] = {}

    def deliver(x: Tensor, gx: Tensor) -> None:
        if wanted is not None:
            if id(x) in wanted:
                captured[id(x)] = gx if id(x) not in captured else captured[id(x)] + gx
        elif x.grad is None:
            # Copy: gx may be the caller's `grad` or the very tensor handed to another
            # leaf (y = a + b gives both the same one), and .grad may be changed in place.
            x.grad = gx if create_graph else Tensor(gx.data.copy())
        else:
            x.grad = x.grad + gx

    order = topological_order(root)
    grad_of_output: dict[int, Tensor] = {}
    with set_grad_enabled(create_graph):
        if root.creator is None:
            deliver(root, grad)
        else:
            grad_of_output[id(root.creator)] = grad
            if wanted is not None and id(root) in wanted:
                deliver(root, grad)  # grad(y, [y]): the root's gradient is grad itself
        for fn in order:
            gy = grad_of_output.pop(id(fn), None)
            if fn.inputs is None:
                raise RuntimeError(
                    f"backward: the graph through {type(fn).__name__} was already freed by an "
                    "earlier backward; pass retain_graph=True to that first backward to run "
                    "through the graph twice"
                )
            if gy is None:
                continue  # this branch does not lead to the root
            gxs = fn.backward(gy)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            for observer in _backward_observers:
                observer(fn, gy, gxs)
            if len(gxs) != len(fn.inputs):
                raise RuntimeError(
                    f"{type(fn).__name__}.backward returned {len(gxs)} gradients "
                    f"for {len(fn.inputs)} inputs"
                )
            for x, gx in zip(fn.inputs, gxs):
                if gx is None or not x.requires_grad:
                    continue
                if gx.shape != x.shape:
                    raise RuntimeError(
                        f"{type(fn).__name__}.backward returned a gradient of shape "
                        f"{gx.shape} for an input of shape {x.shape}"
                    )
                if gx.dtype != x.dtype:
                    # A float64 operand promotes a float32 input's result, and with it the
                    # gradient; a gradient always has its input's dtype (as in PyTorch).
                    gx = gx.to(x.dtype)
                if x.creator is None:
                    deliver(x, gx)
                else:
                    if wanted is not None and id(x) in wanted:
                        deliver(x, gx)
                    key = id(x.creator)
                    previous = grad_of_output.get(key)
                    grad_of_output[key] = gx if previous is None else previous + gx
            if not retain_graph:
                fn.inputs = None
                fn.saved = ()
    return captured

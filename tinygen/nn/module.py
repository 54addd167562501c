"""Module, Parameter and Sequential: how a network holds its weights.

A Module is a container that finds its own weights. Assigning a Parameter
to an attribute registers it, assigning a Module registers a child, and
`register_buffer` registers a tensor that belongs to the state but is not
trained (BatchNorm's running statistics):

    class TwoLayer(Module):
        def __init__(self):
            super().__init__()
            self.hidden = Linear(4, 8)        # a child: its parameters are ours too
            self.scale = Parameter(ones(8))   # a parameter of this module

        def forward(self, x):
            return self.hidden(x).relu() * self.scale

From these registrations come `parameters()` for the optimizer,
`state_dict()` for checkpoints (keys named as PyTorch names them:
"hidden.weight", "0.running_mean", ...), `to(device)`, `train()`/`eval()`
and a printout of the tree.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from tinygen import backend
from tinygen.autograd import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as a trainable weight (requires_grad=True)."""

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = np.zeros((0,), dtype=backend.DEFAULT_DTYPE)
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(strict=False)` could not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """The base class of every layer and every network.

    Subclasses call `super().__init__()` first, then assign parameters,
    buffers and child modules as attributes, and define `forward`.
    Calling the module calls `forward`.
    """

    training: bool

    def __init__(self) -> None:
        # Written through object.__setattr__: our own __setattr__ reads these dicts.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- registration -------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, (Parameter, Module)) and params is None:
            raise AttributeError(
                f"{type(self).__name__}: cannot assign {name!r} before Module.__init__() "
                "has run; call super().__init__() first"
            )
        if isinstance(value, Parameter):
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            self._modules[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} to parameter "
                    f"{name!r}; expected a Parameter or None"
                )
            params[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} to buffer "
                    f"{name!r}; expected a Tensor or None"
                )
            self._buffers[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} to child "
                    f"module {name!r}; expected a Module or None"
                )
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: the registered names live in the dicts.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        if not self._forget(name):
            object.__delattr__(self, name)

    def _forget(self, name: str) -> bool:
        """Remove `name` from every registry and from the instance dict; True if it was there."""
        found = False
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__[registry]
            if name in entries:
                del entries[name]
                found = True
        self._non_persistent.discard(name)
        if name in self.__dict__:
            object.__delattr__(self, name)
            found = True
        return found

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register `param` (or a None placeholder, e.g. a layer built with bias=False)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: {name!r} must be a Parameter or None, "
                f"got {type(param).__name__}"
            )
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Register a state tensor that is not trained (in state_dict unless persistent=False)."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"register_buffer: {name!r} must be a Tensor or None, got {type(tensor).__name__}"
            )
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module, got {type(module).__name__}")
        self._forget(name)
        self._modules[name] = module

    # -- walking the tree ---------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every module below it, depth first, each once."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in module._modules.items()
                if child is not None
            ]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str, recurse: bool) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        walk = self.named_modules() if recurse else iter([("", self)])
        for module_name, module in walk:
            for name, value in module.__dict__[registry].items():
                if value is None or id(value) in seen:
                    continue  # a weight shared by two layers is listed once
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def named_parameters(self, recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        yield from self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse):
            yield param

    def named_buffers(self, recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buffer in self.named_buffers(recurse):
            yield buffer

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call fn on every child (recursively), then on self; e.g. a custom initialization."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Training mode (BatchNorm uses batch statistics, dropout is on); eval if mode=False."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode: BatchNorm uses its running statistics, dropout is off."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (gradients accumulate across backward calls)."""
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    # -- devices and dtypes -------------------------------------------------

    def to(self, target: Any) -> Module:
        """Move ('cpu', 'cuda') or cast (np.float64, ...) every parameter and buffer, in place.

        The Parameter objects stay the same, only their arrays change, so an
        optimizer built before the move keeps working. A cast touches only
        floating-point tensors (the integer `num_batches_tracked` stays int64).
        """
        if isinstance(target, str):
            device = backend.normalize_device(target)

            def convert(array: Any) -> Any:
                return backend.to_device(array, device)

        else:
            dtype = np.dtype(target)
            if dtype.kind != "f":
                raise TypeError(f"Module.to: expected a device or a float dtype, got {target!r}")

            def convert(array: Any) -> Any:
                return array.astype(dtype) if array.dtype.kind == "f" else array

        for tensor in [*self.parameters(), *self.buffers()]:
            tensor.data = convert(tensor.data)
            if tensor.grad is not None:
                tensor.grad = Tensor(convert(tensor.grad.data))
        return self

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self) -> Module:
        return self.to("cuda")

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    # -- state --------------------------------------------------------------

    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict[str, Tensor]:
        """Every parameter and persistent buffer by its dotted name, PyTorch's keys and order.

        For each module: its own parameters, then its own buffers, then its
        children's entries. The tensors share memory with the module's
        (detached unless keep_vars=True); copy them to keep a snapshot.
        """
        state: OrderedDict[str, Tensor] = OrderedDict()
        for name, param in self._parameters.items():
            if param is not None:
                state[prefix + name] = param if keep_vars else param.detach()
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent:
                state[prefix + name] = buffer if keep_vars else buffer.detach()
        for name, child in self._modules.items():
            if child is not None:
                state.update(child.state_dict(prefix=f"{prefix}{name}.", keep_vars=keep_vars))
        return state

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy values into the parameters and buffers, in place, after checking every key.

        Values may be Tensors or arrays. A mis-shaped value is always an
        error; with strict=True, so is a missing or an unexpected key. All
        problems are named in one ValueError and nothing is changed then.
        """
        own = self.state_dict(keep_vars=True)
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        problems = []
        for key, target in own.items():
            if key in state_dict:
                shape = tuple(np.shape(_array_of(state_dict[key])))
                if shape != target.shape:
                    problems.append(
                        f"{key!r} has shape {shape} in the state dict but {target.shape} in "
                        "the module"
                    )
        if strict and missing:
            problems.append("missing keys: " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: " + "; ".join(problems))
        for key, target in own.items():
            if key in state_dict:
                value = _array_of(state_dict[key])
                if not hasattr(value, "shape"):
                    value = np.asarray(value)  # a plain number, e.g. num_batches_tracked
                target.data[...] = backend.to_device(value, target.device).astype(target.dtype)
        return IncompatibleKeys(missing, unexpected)

    # -- printing -------------------------------------------------------------

    def extra_repr(self) -> str:
        """The options shown between the parentheses of this module's printout."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [
            f"({name}): " + repr(child).replace("\n", "\n  ")
            for name, child in self._modules.items()
        ]
        if len(extra_lines) == 1 and not child_lines:
            return f"{type(self).__name__}({extra_lines[0]})"
        lines = extra_lines + child_lines
        if not lines:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _array_of(value: Any) -> Any:
    """The raw array inside a Tensor, or the value itself."""
    return value.data if isinstance(value, Tensor) else value


class Sequential(Module):
    """Modules applied one after the other; children are named "0", "1", ...

    Sequential(Linear(2, 3), ReLU()) or Sequential(OrderedDict(fc=Linear(2, 3))).
    """

    def __init__(self, *modules: Module | Mapping[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                if not isinstance(module, Module):
                    raise TypeError(
                        f"Sequential: argument {index} must be a Module, "
                        f"got {type(module).__name__}"
                    )
                self.add_module(str(index), module)

    def forward(self, x: Any) -> Any:
        for module in self._modules.values():
            x = module(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        if not -len(items) <= index < len(items):
            raise IndexError(f"Sequential: index {index} out of range for {len(items)} modules")
        return items[index][1]

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self


@contextlib.contextmanager
def _swapped(module: Module, values: Mapping[str, Tensor]) -> Iterator[None]:
    owners = dict(module.named_modules())
    saved = []
    for key, value in values.items():
        owner_name, _, name = key.rpartition(".")
        owner = owners.get(owner_name)
        registry = None
        if owner is not None:
            registry = next(
                (r for r in ("_parameters", "_buffers") if name in owner.__dict__[r]), None
            )
        if registry is None:
            raise KeyError(f"functional_call: the module has no parameter or buffer {key!r}")
        entries = owner.__dict__[registry]
        saved.append((entries, name, entries[name]))
        entries[name] = value
    try:
        yield
    finally:
        for entries, name, old in reversed(saved):
            entries[name] = old


def functional_call(
    module: Module, values: Mapping[str, Tensor], *args: Any, **kwargs: Any
) -> Any:
    """Run `module(*args)` with some parameters or buffers replaced by `values` (by name).

    Useful for checking a layer's gradients with respect to its weights:

        gradcheck(lambda x, w: functional_call(layer, {"weight": w}, x), [x, w])
    """
    with _swapped(module, values):
        return module(*args, **kwargs)

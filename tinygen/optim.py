"""Optimizers: SGD and Adam, with PyTorch's update rules written out.

An optimizer holds the parameters (Tensors, usually `model.parameters()`)
in one or more groups, each with its own hyperparameters, and a state per
parameter (momentum buffer, Adam's moments). A training step is

    optimizer.zero_grad()      # gradients accumulate, so clear them first
    loss.backward()            # fills p.grad for every parameter p
    optimizer.step()           # p <- p - (an update computed from p.grad)

`step` writes into each parameter's array in place, outside any graph, so
the Parameter objects a model holds stay the same. Notation: p a parameter,
g its gradient, lr the learning rate, t the step count (from 1).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from tinygen import backend
from tinygen.autograd import Tensor, no_grad


class Optimizer:
    """The bookkeeping SGD and Adam share: groups, state, zero_grad, state_dict."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: dict[int, dict[str, Any]] = {}  # keyed by id(param)
        self.param_groups: list[dict[str, Any]] = []
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty list of parameters")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add parameters with their own hyperparameters (missing ones take the defaults)."""
        name = type(self).__name__
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: parameters must be Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{name}: can only optimize leaf tensors (not computed ones)")
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or known & {id(p) for p in params}:
            raise ValueError(f"{name}: a parameter appears twice in the parameter groups")
        full = {**self.defaults, **group, "params": params}
        self.param_groups.append(full)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient (set it to None, or fill it with zeros)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state.setdefault(id(p), {})
                    for key, value in state.items():
                        # model.to(device) after some steps: the state follows its parameter
                        if hasattr(value, "shape") and backend.device_of(value) != p.device:
                            state[key] = backend.to_device(value, p.device)
                    self._update(p, p.grad.data, group, state)

    def _update(self, p: Tensor, g: Any, group: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- saving and restoring -------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}.

        Parameters are numbered in the order of the groups, as in PyTorch, so
        that the state can be loaded into an optimizer over another copy of
        the model. Arrays are copied to the host (numpy).
        """
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            indices = []
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
                indices.append(index_of[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in self.state and self.state[id(p)]:
                    state[index_of[id(p)]] = {
                        key: _host_copy(value) for key, value in self.state[id(p)].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by `state_dict`, after checking the layout."""
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state has {len(groups)} parameter groups, "
                f"this optimizer {len(self.param_groups)}"
            )
        params_by_index: dict[int, Tensor] = {}
        for k, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: group {k} holds {len(saved['params'])} parameters "
                    f"in the state but {len(own['params'])} here"
                )
            for index, p in zip(saved["params"], own["params"]):
                params_by_index[int(index)] = p
        new_state: dict[int, dict[str, Any]] = {}
        for index, entries in state_dict["state"].items():
            p = params_by_index.get(int(index))
            if p is None:
                raise ValueError(f"{name}.load_state_dict: state for unknown parameter {index}")
            restored = {}
            for key, value in entries.items():
                if hasattr(value, "shape") and np.ndim(value) > 0:
                    if tuple(value.shape) != p.shape:
                        raise ValueError(
                            f"{name}.load_state_dict: state {key!r} of parameter {index} has "
                            f"shape {tuple(value.shape)} but the parameter has shape {p.shape}"
                        )
                    value = backend.to_device(np.asarray(value), p.device).astype(p.dtype)
                elif hasattr(value, "shape"):
                    value = value.item()
                restored[key] = copy.deepcopy(value)
            new_state[id(p)] = restored
        for saved, own in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key == "params":
                    continue
                if isinstance(self.defaults.get(key), tuple):
                    value = tuple(value)  # betas come back from JSON as a list
                own[key] = copy.deepcopy(value)
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for k, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"


def _host_copy(value: Any) -> Any:
    if hasattr(value, "shape"):
        return backend.to_device(value, "cpu").copy()
    return value


def _check(name: str, condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"{name}: {message}")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

        g = g + weight_decay * p
        b = g                                    at the first step (the momentum buffer)
        b = momentum * b + (1 - dampening) * g   after it
        g = g + momentum * b   (nesterov)    or   g = b
        p = p - lr * g

    (maximize=True ascends: g = -g first.)
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        _check("SGD", lr >= 0, f"lr must be >= 0, got {lr}")
        _check("SGD", momentum >= 0, f"momentum must be >= 0, got {momentum}")
        _check("SGD", weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
        _check(
            "SGD",
            not nesterov or (momentum > 0 and dampening == 0),
            f"nesterov needs momentum > 0 and dampening = 0, got momentum={momentum}, "
            f"dampening={dampening}",
        )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _update(self, p: Tensor, g: Any, group: dict[str, Any], state: dict[str, Any]) -> None:
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p.data  # g = g + weight_decay * p
        momentum = group["momentum"]
        if momentum != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()  # b = g
            else:
                b = state["momentum_buffer"]
                b *= momentum  # b = momentum * b + (1 - dampening) * g
                b += (1 - group["dampening"]) * g
            b = state["momentum_buffer"]
            g = g + momentum * b if group["nesterov"] else b
        p.data -= group["lr"] * g  # p = p - lr * g


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), optionally with AMSGrad.

        g  = g + weight_decay * p                  (L2 penalty, as torch.optim.Adam)
        m  = beta1 * m + (1 - beta1) * g           first moment
        v  = beta2 * v + (1 - beta2) * g^2         second moment
        v_max = max(v_max, v)                      AMSGrad only; then v_max replaces v below
        m_hat = m / (1 - beta1^t)                  bias corrections: m, v start at 0
        v_hat = v / (1 - beta2^t)
        p  = p - lr * m_hat / (sqrt(v_hat) + eps)

    The last line is computed as PyTorch computes it,
    p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
    so that the two agree to round-off.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        maximize: bool = False,
    ) -> None:
        _check("Adam", lr >= 0, f"lr must be >= 0, got {lr}")
        _check("Adam", eps >= 0, f"eps must be >= 0, got {eps}")
        _check("Adam", 0 <= betas[0] < 1, f"betas[0] must be in [0, 1), got {betas[0]}")
        _check("Adam", 0 <= betas[1] < 1, f"betas[1] must be in [0, 1), got {betas[1]}")
        _check("Adam", weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _update(self, p: Tensor, g: Any, group: dict[str, Any], state: dict[str, Any]) -> None:
        xp = backend.get_array_module(p.data)
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)  # m
            state["exp_avg_sq"] = xp.zeros_like(p.data)  # v
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)  # v_max
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p.data  # g = g + weight_decay * p
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]

        m += (1 - beta1) * (g - m)  # m = beta1 * m + (1 - beta1) * g, written as a lerp
        v *= beta2  # v = beta2 * v + (1 - beta2) * g^2
        v += (1 - beta2) * (g * g)
        if group["amsgrad"]:
            v_max = state["max_exp_avg_sq"]
            xp.maximum(v_max, v, out=v_max)  # v_max = max(v_max, v)
            v = v_max

        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        step_size = group["lr"] / bias_correction1
        denom = xp.sqrt(v) / math.sqrt(bias_correction2) + group["eps"]
        p.data -= step_size * (m / denom)  # p = p - lr * m_hat / (sqrt(v_hat) + eps)

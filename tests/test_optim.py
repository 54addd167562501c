"""Tests of tinygen/optim.py: SGD and Adam follow their formulas, and their state round-trips.

What they prove:
- over 20 steps with gradients that depend on the parameters, SGD (plain,
  momentum, dampening, Nesterov, weight decay, maximize) and Adam (weight
  decay, AMSGrad, maximize) match a NumPy transcription of the textbook
  formulas (Adam with m_hat and v_hat spelled out) to float64 round-off;
- Adam's first step moves each parameter by lr in the direction of -sign(g);
- parameter groups keep their own hyperparameters; parameters without a
  gradient are left alone; updates are in place (same Parameter, same array);
- zero_grad clears or zeroes gradients;
- state_dict/load_state_dict restore an optimizer so that it continues
  exactly as the original, and reject a state that does not fit;
- bad hyperparameters and parameter lists raise clear errors.
(The trajectories against torch.optim are in test_parity_torch_nn.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygen as tg
from tinygen import nn, optim
from tinygen.nn import Parameter


def gradient_at(p: np.ndarray, step: int) -> np.ndarray:
    """A gradient that depends on the parameters and the step: that of a shifted quartic."""
    return (
        p**3 - 0.5 * p + 0.1 * math.cos(step) + 0.05 * np.sin(np.arange(p.size)).reshape(p.shape)
    )


def run(optimizer_class, steps: int = 20, start=None, **options) -> np.ndarray:
    p = Parameter(np.array([[0.3, -1.2, 2.0], [0.05, -0.4, 1.1]]) if start is None else start)
    opt = optimizer_class([p], **options)
    for t in range(steps):
        p.grad = tg.Tensor(gradient_at(p.numpy(), t))
        opt.step()
    return p.numpy()


def sgd_reference(steps, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                  maximize=False):  # fmt: skip
    p = np.array([[0.3, -1.2, 2.0], [0.05, -0.4, 1.1]])
    b = None
    for t in range(steps):
        g = gradient_at(p, t)
        g = -g if maximize else g
        g = g + weight_decay * p
        if momentum:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def adam_reference(steps, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   maximize=False):  # fmt: skip
    p = np.array([[0.3, -1.2, 2.0], [0.05, -0.4, 1.1]])
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    v_max = np.zeros_like(p)
    beta1, beta2 = betas
    for t in range(1, steps + 1):
        g = gradient_at(p, t - 1)
        g = -g if maximize else g
        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = np.maximum(v_max, v)
        m_hat = m / (1 - beta1**t)
        v_hat = (v_max if amsgrad else v) / (1 - beta2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.1},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
        {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.1},
        {"lr": 0.002, "maximize": True},
    ],
)
def test_sgd_follows_its_formula(options):
    np.testing.assert_allclose(
        run(optim.SGD, **options), sgd_reference(20, **options), rtol=1e-13, atol=1e-14
    )


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.01},
        {"lr": 2e-4, "betas": (0.5, 0.999)},
        {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
        {"lr": 0.01, "weight_decay": 0.05},
        {"lr": 0.05, "amsgrad": True},
        {"lr": 0.01, "maximize": True},
    ],
)
def test_adam_follows_its_formula(options):
    np.testing.assert_allclose(
        run(optim.Adam, **options), adam_reference(20, **options), rtol=1e-12, atol=1e-14
    )


def test_adam_first_step_moves_by_lr_against_the_gradient_sign():
    p = Parameter(np.array([1.0, -2.0, 3.0]))
    p.grad = tg.Tensor(np.array([0.5, -30.0, 1e-3]))
    optim.Adam([p], lr=0.01).step()
    # m_hat = g and v_hat = g^2 at t = 1, so the step is lr * g / (|g| + eps)
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.01, -2.0 + 0.01, 3.0 - 0.01], rtol=1e-7)


def test_amsgrad_keeps_the_running_maximum_of_v():
    p = Parameter(np.array([1.0]))
    opt = optim.Adam([p], lr=0.1, amsgrad=True)
    for g in [3.0, 0.01, 0.01]:  # v falls after the first step; v_max stays
        p.grad = tg.Tensor(np.array([g]))
        opt.step()
        state = opt.state[id(p)]
        assert np.all(state["max_exp_avg_sq"] >= state["exp_avg_sq"])
    assert state["max_exp_avg_sq"][0] == pytest.approx(0.001 * 9.0)


def test_updates_are_in_place_and_skip_parameters_without_gradient():
    layer = nn.Linear(3, 2)
    weight, data = layer.weight, layer.weight.data
    bias_before = layer.bias.numpy().copy()
    opt = optim.Adam(layer.parameters(), lr=0.1)
    layer.weight.grad = tg.ones(2, 3)
    opt.step()
    assert layer.weight is weight and layer.weight.data is data
    assert not np.allclose(layer.weight.numpy(), 0) and id(layer.bias) not in opt.state
    np.testing.assert_array_equal(layer.bias.numpy(), bias_before)


def test_parameter_groups_keep_their_own_hyperparameters():
    a, b = Parameter(np.array([1.0])), Parameter(np.array([1.0]))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad = b.grad = tg.Tensor(np.array([1.0]))
    opt.step()
    np.testing.assert_allclose([a.item(), b.item()], [0.9, 0.5])
    assert opt.param_groups[1]["momentum"] == 0.0  # defaults fill the rest


def test_zero_grad_clears_or_zeroes():
    p = Parameter(np.array([1.0, 2.0]))
    opt = optim.SGD([p], lr=0.1)
    p.grad = tg.Tensor(np.array([3.0, 4.0]))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None


def test_steps_continue_after_the_parameter_array_is_replaced():
    p = Parameter(np.array([1.0, 2.0]))
    opt = optim.Adam([p], lr=0.1)
    p.grad = tg.Tensor(np.array([1.0, 1.0]))
    opt.step()
    p.data = p.data.copy()  # what Module.to does: a new array under the same Parameter
    opt.step()
    np.testing.assert_allclose(p.numpy(), [0.8, 1.8], rtol=1e-6)


def test_training_a_regression_converges():
    tg.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    y = x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3
    model = nn.Linear(3, 1).double()
    opt = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = ((model(tg.Tensor(x)) - tg.Tensor(y)) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-4
    np.testing.assert_allclose(model.weight.numpy(), [[1.5, -2.0, 0.5]], atol=1e-2)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True),
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
    ],
)
def test_state_dict_round_trip_continues_exactly(make):
    def steps(opt, p, start, count):
        for t in range(start, start + count):
            p.grad = tg.Tensor(gradient_at(p.numpy(), t))
            opt.step()

    p = Parameter(np.array([0.3, -1.2, 2.0]))
    opt = make([p])
    steps(opt, p, 0, 5)
    saved_p, saved_state = p.numpy().copy(), opt.state_dict()
    steps(opt, p, 5, 5)

    q = Parameter(saved_p)
    other = make([q])
    other.load_state_dict(saved_state)
    steps(other, q, 5, 5)
    np.testing.assert_array_equal(q.numpy(), p.numpy())


def test_state_dict_layout_and_independence():
    p1, p2 = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = optim.Adam([{"params": [p1]}, {"params": [p2], "lr": 0.5}])
    p1.grad = tg.Tensor(np.ones(2))
    opt.step()
    state = opt.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [[0], [1]]
    assert state["param_groups"][1]["lr"] == 0.5
    assert set(state["state"]) == {0}
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    state["state"][0]["exp_avg"][...] = 99.0  # a copy: the optimizer is unaffected
    assert opt.state[id(p1)]["exp_avg"][0] != 99.0


def test_load_state_dict_rejects_a_state_that_does_not_fit():
    p = Parameter(np.ones(2))
    opt = optim.Adam([p])
    p.grad = tg.Tensor(np.ones(2))
    opt.step()
    state = opt.state_dict()
    with pytest.raises(ValueError, match="group 0 holds 1 parameters in the state but 2 here"):
        optim.Adam([Parameter(np.ones(2)), Parameter(np.ones(2))]).load_state_dict(state)
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(2,\).*\(3,\)"):
        optim.Adam([Parameter(np.ones(3))]).load_state_dict(state)
    with pytest.raises(ValueError, match="state has 1 parameter groups, this optimizer 2"):
        optim.Adam([{"params": [Parameter(np.ones(2))]}, {"params": [Parameter(np.ones(2))]}]
                   ).load_state_dict(state)  # fmt: skip


def test_bad_hyperparameters_and_parameter_lists_raise():
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="lr must be >= 0"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="nesterov needs momentum > 0"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\)"):
        optim.Adam([p], betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="empty list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="appears twice"):
        optim.Adam([p, p])
    with pytest.raises(ValueError, match="leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="must be Tensors"):
        optim.SGD([np.ones(2)], lr=0.1)


@pytest.mark.gpu
def test_adam_and_sgd_on_the_gpu_follow_the_cpu_trajectory():
    from tinygen import backend

    if not backend.gpu_available():
        pytest.skip(f"no GPU: {backend.cupy_unavailable_reason()}")
    makers = [
        lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True),
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
    ]
    for make in makers:
        p_cpu = Parameter(np.array([0.3, -1.2, 2.0]))
        p_gpu = Parameter(backend.to_device(np.array([0.3, -1.2, 2.0]), "cuda"))
        opt_cpu, opt_gpu = make([p_cpu]), make([p_gpu])
        for t in range(10):
            p_cpu.grad = tg.Tensor(gradient_at(p_cpu.numpy(), t))
            p_gpu.grad = tg.Tensor(gradient_at(p_gpu.numpy(), t)).to("cuda")
            opt_cpu.step()
            opt_gpu.step()
        assert p_gpu.device == "cuda"
        np.testing.assert_allclose(p_gpu.numpy(), p_cpu.numpy(), rtol=1e-12)
        state = opt_gpu.state_dict()["state"][0]
        assert all(isinstance(v, np.ndarray) for v in state.values() if hasattr(v, "shape"))

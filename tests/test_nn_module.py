"""Tests of tinygen/nn/module.py: Module, Parameter, Sequential, functional_call.

What they prove:
- assignment registers parameters, buffers and children, in order; names are
  dotted as PyTorch's; a shared parameter is listed once;
- state_dict has PyTorch's keys and order (parameters, then buffers, then
  children), holds no non-persistent buffer, and load_state_dict restores it,
  names every missing, unexpected and mis-shaped key in one error, and
  changes nothing when it fails;
- to(dtype) and to(device) convert in place and keep the Parameter objects;
- train()/eval() reach every submodule; zero_grad clears gradients;
- the printout of a tree has PyTorch's layout;
- functional_call swaps weights for one call and puts them back.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import tinygen as tg
from tinygen import backend, nn
from tinygen.nn import Module, Parameter, Sequential, functional_call


class Affine(Module):
    """y = x * scale + shift, with a step counter buffer: a module written in a test."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = Parameter(np.ones(n, dtype=np.float32))
        self.shift = Parameter(np.zeros(n, dtype=np.float32))
        self.register_buffer("calls", tg.zeros((), dtype=np.int64))
        self.register_buffer("scratch", tg.zeros(n), persistent=False)

    def forward(self, x):
        self.calls.data[...] += 1
        return x * self.scale + self.shift


class Net(Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = Affine(3)
        self.body = Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
        self.head = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.head(self.body(self.first(x)))


def test_parameter_is_a_tensor_that_requires_grad():
    p = Parameter(np.arange(3.0))
    assert isinstance(p, tg.Tensor)
    assert p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:\ntensor(")


def test_assignment_registers_parameters_buffers_and_children_in_order():
    net = Net()
    assert [name for name, _ in net.named_children()] == ["first", "body", "head"]
    assert [name for name, _ in net.named_parameters()] == [
        "first.scale",
        "first.shift",
        "body.0.weight",
        "body.0.bias",
        "body.1.weight",
        "body.1.bias",
        "head.weight",
    ]
    assert [name for name, _ in net.named_buffers()] == [
        "first.calls",
        "first.scratch",
        "body.1.running_mean",
        "body.1.running_var",
        "body.1.num_batches_tracked",
    ]
    assert [name for name, _ in net.named_modules()] == [
        "",
        "first",
        "body",
        "body.0",
        "body.1",
        "body.2",
        "head",
    ]
    assert net.head.bias is None


def test_state_dict_keys_follow_pytorch_order_and_skip_non_persistent_buffers():
    net = Net()
    assert list(net.state_dict()) == [
        "first.scale",
        "first.shift",
        "first.calls",
        "body.0.weight",
        "body.0.bias",
        "body.1.weight",
        "body.1.bias",
        "body.1.running_mean",
        "body.1.running_var",
        "body.1.num_batches_tracked",
        "head.weight",
    ]
    state = net.state_dict()
    assert not state["body.0.weight"].requires_grad  # detached
    assert state["body.0.weight"].data is net.body[0].weight.data  # shares memory


def test_shared_parameter_is_listed_once_but_saved_under_each_name():
    a = nn.Linear(2, 2)
    net = Sequential(a, nn.ReLU(), a)
    assert len(list(net.parameters())) == 2
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_load_state_dict_round_trip_restores_values_in_place():
    tg.manual_seed(0)
    source, target = Net(), Net()
    source.body[1].running_mean.data[...] = [1.0, 2.0, 3.0, 4.0]
    source.first.calls.data[...] = 7
    weight_object = target.body[0].weight
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target.body[0].weight is weight_object  # the same Parameter, new values
    for (k1, v1), (k2, v2) in zip(source.state_dict().items(), target.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(v1.data, v2.data)
    assert target.first.calls.dtype == np.int64
    # arrays (not only Tensors) are accepted
    target.load_state_dict({k: v.numpy() for k, v in source.state_dict().items()})


def test_load_state_dict_names_every_problem_and_changes_nothing():
    net = Net()
    state = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    del state["head.weight"]
    state["extra.weight"] = np.zeros(3)
    state["body.0.weight"] = np.zeros((5, 3))
    state["first.scale"] = np.full(3, 9.0)
    before = net.first.scale.numpy().copy()
    with pytest.raises(ValueError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    assert "'head.weight'" in message and "missing" in message
    assert "'extra.weight'" in message and "unexpected" in message
    assert "'body.0.weight' has shape (5, 3)" in message and "(4, 3)" in message
    np.testing.assert_array_equal(net.first.scale.numpy(), before)


def test_load_state_dict_not_strict_reports_missing_and_unexpected_keys():
    net = nn.Linear(3, 2)
    result = net.load_state_dict({"weight": np.ones((2, 3)), "other": np.ones(1)}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["other"]
    np.testing.assert_array_equal(net.weight.numpy(), np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        net.load_state_dict({"weight": np.ones((3, 3))}, strict=False)


def test_to_dtype_converts_in_place_and_keeps_parameter_objects():
    net = Net()
    params = list(net.parameters())
    net(tg.randn(5, 3)).sum().backward()
    assert net.double() is net
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert all(p.grad.dtype == np.float64 for p in net.parameters())
    assert net.body[1].running_var.dtype == np.float64
    assert net.body[1].num_batches_tracked.dtype == np.int64  # integers stay integers
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    with pytest.raises(TypeError):
        net.to(np.int32)
    with pytest.raises(ValueError, match="device"):
        net.to("tpu")


def test_to_cpu_is_a_no_op_that_keeps_arrays():
    net = nn.Linear(2, 2)
    data = net.weight.data
    net.to("cpu")
    assert net.weight.data is data


@pytest.mark.gpu
def test_to_cuda_moves_parameters_and_buffers_in_place():
    if not backend.gpu_available():
        pytest.skip(f"no GPU: {backend.cupy_unavailable_reason()}")
    net = Net()
    weight = net.body[0].weight
    net.to("cuda")
    assert net.body[0].weight is weight and weight.device == "cuda"
    assert all(b.device == "cuda" for b in net.buffers())
    y = net(tg.randn(4, 3, device="cuda"))
    assert y.device == "cuda"
    net.to("cpu")
    assert weight.device == "cpu"


def test_train_and_eval_reach_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_clears_or_zeroes_gradients():
    net = Net()
    net(tg.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(not p.grad.data.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_requires_grad_freezes_parameters():
    net = nn.Linear(2, 2).requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_repr_prints_the_tree_as_pytorch_does():
    net = Sequential(
        nn.Linear(3, 4),
        Sequential(nn.BatchNorm1d(4), nn.LeakyReLU(0.2)),
        nn.Dropout(0.25),
        nn.Tanh(),
    )
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, bias=True, "
        "track_running_stats=True)\n"
        "    (1): LeakyReLU(negative_slope=0.2)\n"
        "  )\n"
        "  (2): Dropout(p=0.25, inplace=False)\n"
        "  (3): Tanh()\n"
        ")"
    )


def test_sequential_indexing_slicing_iteration_and_named_entries():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = Sequential(a, b, c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    head = seq[1:]
    assert isinstance(head, Sequential) and list(head) == [b, c]
    assert list(head.state_dict()) == ["2.weight", "2.bias"]  # names kept, as PyTorch
    with pytest.raises(IndexError):
        seq[3]
    named = Sequential(OrderedDict(fc=a, act=b))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    assert named.fc is a
    x = tg.randn(4, 2)
    np.testing.assert_allclose(seq(x).numpy(), c(b(a(x))).numpy())
    with pytest.raises(TypeError, match="argument 1"):
        Sequential(a, "relu")


def test_wrong_assignments_raise_clear_errors():
    net = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        net.weight = tg.zeros(2, 2)
    with pytest.raises(TypeError, match="buffer"):
        nn.BatchNorm1d(2).running_mean = np.zeros(2)

    class Forgetful(Module):
        def __init__(self):
            self.w = Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="super"):
        Forgetful()
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = net.nothing


def test_deleting_an_attribute_unregisters_it():
    net = nn.Linear(2, 2)
    del net.bias
    assert [name for name, _ in net.named_parameters()] == ["weight"]


def test_apply_visits_children_then_the_module():
    visited = []
    net = Sequential(nn.Linear(1, 1), Sequential(nn.ReLU()))
    net.apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["Linear", "ReLU", "Sequential", "Sequential"]


def test_functional_call_swaps_parameters_for_one_call_only():
    layer = nn.Linear(2, 1)
    original = layer.weight
    w = tg.tensor([[1.0, 2.0]])
    b = tg.tensor([0.5])
    y = functional_call(layer, {"weight": w, "bias": b}, tg.tensor([[1.0, 1.0]]))
    np.testing.assert_allclose(y.numpy(), [[3.5]])
    assert layer.weight is original
    with pytest.raises(KeyError, match="nothing"):
        functional_call(layer, {"nothing": w}, tg.tensor([[1.0, 1.0]]))


def test_module_without_forward_says_so():
    with pytest.raises(NotImplementedError, match="forward"):
        Module()(tg.zeros(1))


def test_deepcopy_gives_an_independent_module():
    """copy.deepcopy(model), e.g. for an averaged copy of a generator, shares no array."""
    import copy

    net = Net()
    clone = copy.deepcopy(net)
    assert repr(clone) == repr(net)
    assert clone.body[0].weight is not net.body[0].weight
    np.testing.assert_array_equal(clone.body[0].weight.numpy(), net.body[0].weight.numpy())
    clone.body[0].weight.data[...] = 0.0
    assert net.body[0].weight.numpy().any()
    assert isinstance(clone.body[0].weight, Parameter)

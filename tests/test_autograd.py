"""Tests of tinygen/autograd.py: the graph, the backward pass, and its promises.

What they prove:
- reused nodes get the sum of their gradients (the diamond b = a + a; c = b * b);
- a chain of 10,000 operations backpropagates, and is freed, without recursion;
- backward twice raises without retain_graph and accumulates with it;
- a finished graph is freed by reference counting alone (no cycles): weakrefs
  die with the garbage collector switched off, and refcounts come back;
- no graph is recorded under no_grad, as a context manager or a decorator;
- create_graph gives correct second derivatives (Hessian-vector products
  against the analytic Hessian, a gradient penalty against finite differences);
- gradients are summed in the same order on every run (bit-identical results);
- misuse raises errors that name the operation and the shapes or dtypes.
"""

from __future__ import annotations

import gc
import sys
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygen as tg
from tinygen import gradcheck
from tinygen.autograd import Function, Tensor, observe_backward, topological_order

seeds = st.integers(0, 2**32 - 1)


def leaf(values) -> Tensor:
    return tg.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


# ---------------------------------------------------------------------------
# Reused nodes and deep graphs
# ---------------------------------------------------------------------------


def test_diamond_a_plus_a_times_itself():
    a = leaf([1.5, -2.0])
    b = a + a
    c = b * b  # c = 4 a^2, dc/da = 8 a
    c.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [12.0, -16.0])


def test_node_used_by_two_branches_of_different_depth():
    a = leaf([3.0])
    b = a + a  # 2a
    c = b + b  # 4a
    d = c * a + b.exp()  # 4a^2 + e^(2a): d' = 8a + 2 e^(2a)
    d.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [24.0 + 2 * np.exp(6.0)], rtol=1e-14)


def _frames() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def test_chain_of_10000_operations_backpropagates_without_recursion():
    x = leaf(0.5)
    c = 1.0001
    y = x
    for _ in range(10_000):
        y = y * c
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_frames() + 60)  # far too shallow for a recursive backward
    try:
        y.backward()
        del y  # freeing a 10,000-deep graph must not recurse either
    finally:
        sys.setrecursionlimit(limit)
    np.testing.assert_allclose(x.grad.item(), c**10_000, rtol=1e-12)


def test_unfinished_chain_of_10000_operations_is_freed_when_dropped():
    x = leaf(1.0)
    y = x
    for _ in range(10_000):
        y = y + 1.0
    probe = weakref.ref(y.creator)
    del y
    assert probe() is None


def test_gradients_are_summed_in_the_same_order_on_every_run():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(20) * 10.0 ** rng.integers(-8, 8, 20)

    def run() -> np.ndarray:
        x = leaf(values)
        branches = [x * float(s) for s in rng.standard_normal(30) * 1e6]
        total = branches[0]
        for b in branches[1:]:
            total = total + b.tanh() * b
        total.sum().backward()
        return x.grad.numpy()

    rng = np.random.default_rng(1)
    first = run()
    rng = np.random.default_rng(1)
    assert np.array_equal(run(), first)


def test_topological_order_lists_each_function_once_outputs_first():
    a = leaf([1.0])
    b = a * 2.0
    c = b + b
    order = topological_order(c)
    assert [type(fn).__name__ for fn in order] == ["Add", "Mul"]


# ---------------------------------------------------------------------------
# Accumulation, retain_graph, freeing
# ---------------------------------------------------------------------------


def test_backward_twice_without_retain_graph_raises_a_clear_error():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"already freed.*retain_graph=True"):
        y.backward()


def test_backward_twice_with_retain_graph_accumulates():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0])


def test_gradients_of_separate_graphs_accumulate_until_reset():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [5.0, 7.0])
    x.grad = None  # what zero_grad does for each parameter
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_leaves_never_share_a_gradient_tensor():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    upstream = tg.tensor(np.array([1.0, 1.0]))
    (a + b).backward(upstream)
    assert a.grad is not b.grad and a.grad is not upstream
    a.grad.zero_()
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(upstream.numpy(), [1.0, 1.0])


def test_gradient_has_the_dtype_of_its_input_when_operands_were_promoted():
    x = tg.tensor([1.0, 2.0], requires_grad=True)  # float32
    y = x * np.array([3.0, 4.0])  # a float64 operand: y is float64
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_backward_releases_what_each_function_held():
    x = leaf([1.0, 2.0])
    h = x.exp()
    fn = h.creator
    h.sum().backward()
    assert fn.inputs is None and fn.saved == ()


def _build_graph(x: Tensor) -> Tensor:
    h = (x * 2.0).tanh()
    return (h * h + x[0]).sum()


@pytest.mark.parametrize(
    "how", ["dropped", "backward", "retain_graph", "grad_create_graph", "backward_create_graph"]
)
def test_finished_graph_is_freed_by_reference_counting_alone(how):
    x = leaf([0.5, -1.0, 2.0])
    gc.collect()
    gc.disable()  # nothing may rely on the cycle collector
    try:
        before = sys.getrefcount(x)
        loss = _build_graph(x)
        probes = [weakref.ref(loss), weakref.ref(loss.creator)]
        fn = loss.creator
        while fn.inputs and fn.inputs[0].creator is not None:  # walk down one path
            probes += [weakref.ref(fn.inputs[0]), weakref.ref(fn.inputs[0].creator)]
            fn = fn.inputs[0].creator
        del fn
        if how == "backward":
            loss.backward()
        elif how == "retain_graph":
            loss.backward(retain_graph=True)
        elif how == "grad_create_graph":
            (g,) = tg.grad(loss, [x], create_graph=True)
            (g * g).sum().backward()
            del g
        elif how == "backward_create_graph":
            loss.backward(create_graph=True)
            x.grad = None  # x.grad's graph refers to x: drop it, as zero_grad does
        del loss

        assert len(probes) >= 6
        assert all(p() is None for p in probes), "a graph object outlived its last reference"
        x.grad = None
        assert sys.getrefcount(x) == before
    finally:
        gc.enable()


# ---------------------------------------------------------------------------
# no_grad
# ---------------------------------------------------------------------------


def test_no_grad_context_records_no_graph():
    x = leaf([1.0, 2.0])
    with tg.no_grad():
        y = (x * 2.0).exp().sum()
    assert not y.requires_grad and y.creator is None
    assert tg.is_grad_enabled()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_decorator_records_no_graph():
    @tg.no_grad()
    def evaluate(x):
        assert not tg.is_grad_enabled()
        return x * 2.0

    x = leaf([1.0])
    y = evaluate(x)
    assert not y.requires_grad and y.creator is None
    assert tg.is_grad_enabled()


def test_no_grad_decorated_function_that_calls_itself_restores_grad_mode():
    @tg.no_grad()
    def countdown(n: int) -> None:
        assert not tg.is_grad_enabled()
        if n:
            countdown(n - 1)

    countdown(3)
    assert tg.is_grad_enabled()


def test_one_no_grad_object_entered_twice_restores_grad_mode():
    context = tg.no_grad()
    with context, context:
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()


def test_enable_grad_inside_no_grad_and_state_restored_after_an_exception():
    x = leaf([1.0])
    with tg.no_grad():
        with tg.enable_grad():
            assert (x * 2.0).requires_grad
        assert not (x * 2.0).requires_grad
    with pytest.raises(KeyError), tg.no_grad():
        raise KeyError("an error inside the block")
    assert tg.is_grad_enabled()


def test_backward_without_create_graph_records_nothing():
    x = leaf([1.0, 2.0])
    (x * x).sum().backward()
    assert not x.grad.requires_grad and x.grad.creator is None


def test_forward_already_knows_which_inputs_need_a_gradient():
    # so that a forward pass can skip work for a gradient nobody will ask for
    seen = []

    class Probe(Function):
        def forward(self, a, b):
            seen.append(self.needs_input_grad)
            return a + b

        def backward(self, gy):
            return gy, gy

    a, b = tg.tensor([1.0], requires_grad=True), tg.tensor([2.0])
    Probe()(a, b)
    Probe()(b, b)
    with tg.no_grad():
        Probe()(a, a)
    assert seen == [(True, False), (False, False), (False, False)]


def test_detach_cuts_the_graph_and_shares_the_values():
    x = leaf([1.0, 2.0])
    d = x.detach()
    assert not d.requires_grad and d.creator is None
    np.testing.assert_array_equal(d.numpy(), x.numpy())
    (x * d).sum().backward()  # d is a constant: the gradient is d, not 2x
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0])


def test_operations_on_constants_record_no_graph():
    y = tg.tensor([1.0, 2.0]) * 3.0
    assert not y.requires_grad and y.creator is None


# ---------------------------------------------------------------------------
# Second derivatives with create_graph
# ---------------------------------------------------------------------------


@given(n=st.integers(1, 4), seed=seeds)
def test_hessian_vector_product_matches_the_analytic_hessian(n, seed):
    # f(x) = x^T A x / 2 + sum(x^3):  grad f = (A + A^T) x / 2 + 3 x^2,
    #                                  H = (A + A^T) / 2 + diag(6 x)
    rng = np.random.default_rng(seed)
    A, x0, v = rng.standard_normal((n, n)), rng.standard_normal(n), rng.standard_normal(n)
    x = leaf(x0)

    f = 0.5 * (x @ (tg.tensor(A) @ x)) + (x**3).sum()
    (g,) = tg.grad(f, [x], create_graph=True)
    (hv,) = tg.grad((g * tg.tensor(v)).sum(), [x])

    np.testing.assert_allclose(g.numpy(), 0.5 * (A + A.T) @ x0 + 3 * x0**2, rtol=1e-12)
    hessian = 0.5 * (A + A.T) + np.diag(6 * x0)
    np.testing.assert_allclose(hv.numpy(), hessian @ v, rtol=1e-10, atol=1e-12)


def test_backward_with_create_graph_leaves_a_differentiable_grad():
    x = leaf([0.3, -0.7])
    y = x.tanh().sum()
    y.backward(create_graph=True)
    assert x.grad.requires_grad
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 1 - t**2)
    (second,) = tg.grad(x.grad.sum(), [x])
    np.testing.assert_allclose(second.numpy(), -2 * t * (1 - t**2))  # tanh'' = -2 tanh tanh'


def test_gradient_penalty_is_differentiable_to_the_weights():
    # WGAN-GP's term: || d f(x, w) / dx ||^2, differentiated with respect to w and x.
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    def penalty(x, w):
        # gradcheck's finite differences call this under no_grad with plain tensors;
        # the inner derivative still needs a graph.
        x = x if x.requires_grad else Tensor(x.data, requires_grad=True)
        with tg.enable_grad():
            (gx,) = tg.grad((x @ w).tanh().sum(), [x], create_graph=True)
            return (gx * gx).sum()

    assert gradcheck(penalty, [x, w])


def test_grad_returns_gradients_without_touching_dot_grad():
    x, y = leaf([1.0, 2.0]), leaf([3.0])
    out = (x * y).sum()
    gx, gy = tg.grad(out, [x, y])
    np.testing.assert_array_equal(gx.numpy(), [3.0, 3.0])
    np.testing.assert_array_equal(gy.numpy(), [3.0])
    assert x.grad is None and y.grad is None


def test_grad_of_an_intermediate_and_of_the_output_itself():
    x = leaf([1.0, 2.0])
    h = x * 2.0
    out = h * h
    gh, gout = tg.grad(out, [h, out], grad_output=tg.tensor(np.ones(2)))
    np.testing.assert_array_equal(gh.numpy(), [4.0, 8.0])
    np.testing.assert_array_equal(gout.numpy(), [1.0, 1.0])


def test_grad_of_an_unused_input_raises_unless_allowed():
    x, unused = leaf([1.0]), leaf([2.0])
    with pytest.raises(ValueError, match=r"grad: inputs\[1\] was not used"):
        tg.grad((x * 2.0).sum(), [x, unused])
    gx, gu = tg.grad((x * 2.0).sum(), [x, unused], allow_unused=True)
    assert gu is None and gx.item() == 2.0


def test_grad_of_an_input_that_does_not_require_grad_raises():
    x = leaf([1.0])
    with pytest.raises(ValueError, match=r"grad: inputs\[0\] is not a Tensor that requires grad"):
        tg.grad((x * 2.0).sum(), [tg.tensor([1.0])])


def test_observe_backward_sees_each_function_once():
    x = leaf([1.0, 2.0])
    y = (x.exp() * 2.0).sum()
    seen = []
    with observe_backward(lambda fn, gy, gxs: seen.append(type(fn).__name__)):
        y.backward()
    assert seen == ["Sum", "Mul", "Exp"]


# ---------------------------------------------------------------------------
# Misuse: clear errors
# ---------------------------------------------------------------------------


def test_backward_of_a_non_scalar_without_grad_names_the_shape():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"backward: .*one-element output.*shape \(2, 3\)"):
        (x * 2.0).backward()


def test_backward_with_a_grad_of_the_wrong_shape_names_both_shapes():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"backward: grad has shape \(3,\) .* shape \(2, 3\)"):
        (x * 2.0).backward(tg.tensor(np.ones(3)))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_integer_tensor_asked_for_a_gradient_names_the_dtype(dtype):
    name = np.dtype(dtype).name
    with pytest.raises(TypeError, match=rf"requires_grad: only floating-point .* dtype {name}"):
        tg.tensor(np.array([1, 2], dtype=dtype), requires_grad=True)
    with pytest.raises(TypeError, match=rf"dtype {name}"):
        Tensor(np.array([1, 2], dtype=dtype)).requires_grad_()


def test_requires_grad_false_on_a_non_leaf_points_to_detach():
    y = leaf([1.0]) * 2.0
    with pytest.raises(RuntimeError, match=r"non-leaf.*detach"):
        y.requires_grad_(False)


class _WrongShape(Function):
    def forward(self, x):
        return x.sum(axis=0)

    def backward(self, gy):
        return gy  # forgot to spread back to the input's shape


class _TwoGradients(Function):
    def forward(self, x):
        return x * 2

    def backward(self, gy):
        return gy, gy


def test_backward_returning_a_wrong_shape_names_the_function_and_shapes():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"_WrongShape.backward .* shape \(3,\) .* \(2, 3\)"):
        _WrongShape()(x).sum().backward()


def test_backward_returning_too_many_gradients_names_the_function():
    with pytest.raises(RuntimeError, match=r"_TwoGradients.backward returned 2 gradients for 1"):
        _TwoGradients()(leaf([1.0])).sum().backward()


def test_operations_on_different_devices_name_the_function():
    class FakeGpuArray(np.ndarray):
        pass

    FakeGpuArray.__module__ = "cupy.fake"  # what backend.is_cupy_array looks at
    gpu = Tensor(np.ones(2).view(FakeGpuArray))
    with pytest.raises(ValueError, match=r"Add: arrays live on different devices \(cpu, cuda\)"):
        tg.ops.add(tg.tensor(np.ones(2)), gpu)


# ---------------------------------------------------------------------------
# What a Tensor is
# ---------------------------------------------------------------------------


def test_tensor_attributes():
    x = tg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
    assert x.dtype == np.float64 and x.device == "cpu" and x.is_leaf
    assert x.T.shape == (3, 2)
    np.testing.assert_array_equal(x.T.numpy(), np.arange(6.0).reshape(2, 3).T)
    assert isinstance(x.numpy(), np.ndarray)
    assert x.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert x[1, 2].item() == 5.0 and isinstance(x[1, 2].item(), float)
    assert x.to("cpu") is x
    assert x.float().dtype == np.float32 and x.double() is x


def test_tensor_repr_shows_values_dtype_and_graph():
    assert repr(tg.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    x = tg.tensor(np.array([1.0]), requires_grad=True)
    assert repr(x) == "tensor([1.], dtype=float64, requires_grad=True)"
    assert repr(x * 2.0) == "tensor([2.], dtype=float64, grad_fn=<MulBackward>)"


def test_python_floats_become_float32_and_numpy_arrays_keep_their_dtype():
    assert tg.tensor([1.0, 2.0]).dtype == np.float32
    assert tg.tensor(np.array([1.0])).dtype == np.float64
    assert tg.tensor([1, 2]).dtype == np.int64


def test_item_len_and_bool_of_the_wrong_size_raise():
    with pytest.raises(ValueError, match=r"item: .* shape \(2,\)"):
        tg.tensor([1.0, 2.0]).item()
    with pytest.raises(TypeError, match="len"):
        len(tg.tensor(1.0))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(tg.tensor([1.0, 2.0]))
    assert bool(tg.tensor([1.0]))


def test_numpy_conversions_give_the_values():
    t = tg.tensor([1.5, 2.5], requires_grad=True)
    array = np.asarray(t)
    assert array.dtype == np.float32 and array.tolist() == [1.5, 2.5]
    assert np.array(t, dtype=np.float64).dtype == np.float64
    assert float(t[0]) == 1.5 and int(t[1]) == 2
    assert tg.tensor([t[0], t[1]]).tolist() == [1.5, 2.5]
    with pytest.raises(ValueError, match="item: only a one-element tensor"):
        float(t)


def test_tensors_are_hashable_by_identity():
    a, b = tg.tensor([1.0]), tg.tensor([1.0])
    assert len({a, b}) == 2 and {a: 1}[a] == 1


def test_tensor_of_an_object_that_is_not_numeric_is_rejected():
    with pytest.raises(TypeError, match="cannot make a tensor from"):
        Tensor({"a": 1})

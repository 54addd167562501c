"""Tests of tinygen/ops/conv.py: conv2d and conv_transpose2d as differentiable operations.

What they prove: first and second derivatives with respect to input, weight
and bias agree with central differences over drawn configurations (groups,
non-square sizes and kernels, stride 1-3, asymmetric padding 0-2, dilation
1-2, output_padding); conv_transpose2d is the adjoint of conv2d; both equal
PyTorch (forward and gradients, output_size included) when torch is
installed; bad arguments raise a ValueError or TypeError that states the rule.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tinygen as tg
from tinygen.backend import cupy_module, cupy_unavailable_reason
from tinygen.ops.conv import conv2d, conv_transpose2d

CHECKS = settings(
    derandomize=True,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)


def _random(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------
# Drawn configurations
# ---------------------------------------------------------------------------


def _pairs(low: int, high: int):
    return st.tuples(st.integers(low, high), st.integers(low, high))


@st.composite
def conv2d_cases(draw, max_extra: int = 3):
    """Arguments of conv2d: shapes and options, the kernel always fitting the padded input."""
    groups = draw(st.integers(1, 2))
    N = draw(st.integers(1, 2))
    C = groups * draw(st.integers(1, 2))
    C_out = groups * draw(st.integers(1, 2))
    KH, KW = draw(_pairs(1, 3))
    stride, padding, dilation = draw(_pairs(1, 3)), draw(_pairs(0, 2)), draw(_pairs(1, 2))
    H_min = max(1, dilation[0] * (KH - 1) + 1 - 2 * padding[0])
    W_min = max(1, dilation[1] * (KW - 1) + 1 - 2 * padding[1])
    H = draw(st.integers(H_min, H_min + max_extra))
    W = draw(st.integers(W_min, W_min + max_extra))
    bias = draw(st.booleans())
    return {
        "x_shape": (N, C, H, W),
        "weight_shape": (C_out, C // groups, KH, KW),
        "out_channels": C_out,
        "bias": bias,
        "options": dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    }


@st.composite
def conv_transpose2d_cases(draw):
    """Arguments of conv_transpose2d, output_padding included, with a non-empty output."""
    groups = draw(st.integers(1, 2))
    N = draw(st.integers(1, 2))
    C_in = groups * draw(st.integers(1, 2))
    C_out = groups * draw(st.integers(1, 2))
    KH, KW = draw(_pairs(1, 3))
    stride, padding, dilation = draw(_pairs(1, 3)), draw(_pairs(0, 2)), draw(_pairs(1, 2))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    H, W = draw(_pairs(1, 4))
    # H_out = (H - 1)*SH - 2*PH + DH*(KH - 1) + output_padding + 1 must be >= 1
    for size, s, p, d, k, op in zip((H, W), stride, padding, dilation, (KH, KW), output_padding):
        assume((size - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1)
    bias = draw(st.booleans())
    return {
        "x_shape": (N, C_in, H, W),
        "weight_shape": (C_in, C_out // groups, KH, KW),
        "out_channels": C_out,
        "bias": bias,
        "options": dict(
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            groups=groups,
            dilation=dilation,
        ),
    }


def _inputs(case, seed=0):
    x = _random(case["x_shape"], seed)
    weight = _random(case["weight_shape"], seed + 1)
    bias = _random((case["out_channels"],), seed + 2) if case["bias"] else None
    return x, weight, bias


def _as_function(op, case):
    if case["bias"]:
        return lambda x, w, b: op(x, w, b, **case["options"])
    return lambda x, w: op(x, w, **case["options"])


def _present(*arrays):
    return [a for a in arrays if a is not None]


# ---------------------------------------------------------------------------
# Gradients and gradients of gradients
# ---------------------------------------------------------------------------


@given(conv2d_cases())
@CHECKS
def test_conv2d_gradients_match_finite_differences(case):
    x, weight, bias = _inputs(case)
    assert tg.gradcheck(_as_function(conv2d, case), _present(x, weight, bias))


@given(conv2d_cases(max_extra=2))
@CHECKS
def test_conv2d_second_derivatives_match_finite_differences(case):
    x, weight, bias = _inputs(case, seed=3)
    assert tg.gradgradcheck(_as_function(conv2d, case), _present(x, weight, bias))


@given(conv_transpose2d_cases())
@CHECKS
def test_conv_transpose2d_gradients_match_finite_differences(case):
    x, weight, bias = _inputs(case, seed=6)
    assert tg.gradcheck(_as_function(conv_transpose2d, case), _present(x, weight, bias))


@given(conv_transpose2d_cases())
@CHECKS
def test_conv_transpose2d_second_derivatives_match_finite_differences(case):
    x, weight, bias = _inputs(case, seed=9)
    assert tg.gradgradcheck(_as_function(conv_transpose2d, case), _present(x, weight, bias))


@given(st.sampled_from([conv2d, conv_transpose2d]), st.data())
@settings(derandomize=True, deadline=None, max_examples=30)
def test_gradients_hold_when_columns_are_recomputed_in_chunks(op, data):
    # Small layers keep their im2col columns from forward to backward; large ones recompute
    # them one chunk of images at a time. Force the second path on small shapes.
    from tinygen.kernels import conv_arrays

    case = data.draw(conv2d_cases() if op is conv2d else conv_transpose2d_cases())
    x, weight, bias = _inputs(case, seed=15)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_arrays, "KEEP_COLUMNS_BYTES", 0)
        patch.setattr(conv_arrays, "COLUMN_BUDGET_BYTES", 1)
        assert tg.gradgradcheck(_as_function(op, case), _present(x, weight, bias))


@given(st.sampled_from([conv2d, conv_transpose2d]), st.booleans(), st.data())
@settings(derandomize=True, deadline=None, max_examples=30)
def test_gradients_hold_when_the_products_run_one_image_at_a_time(op, keep, data):
    # Columns with few rows and many pixels per image are multiplied image by image;
    # the drawn shapes are small, so force that path (kept columns or recomputed ones).
    from tinygen.kernels import conv_arrays

    case = data.draw(conv2d_cases() if op is conv2d else conv_transpose2d_cases())
    x, weight, bias = _inputs(case, seed=16)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_arrays, "PER_IMAGE_MAX_ROWS", 10**9)
        patch.setattr(conv_arrays, "PER_IMAGE_MIN_PIXELS", 1)
        if not keep:
            patch.setattr(conv_arrays, "KEEP_COLUMNS_BYTES", 0)
            patch.setattr(conv_arrays, "COLUMN_BUDGET_BYTES", 1)
        assert tg.gradgradcheck(_as_function(op, case), _present(x, weight, bias))


@pytest.mark.parametrize("groups", [1, 2])
def test_products_one_image_at_a_time_equal_the_one_gemm_products(monkeypatch, groups):
    from tinygen.kernels import conv_arrays

    x, gy = _random((3, 4, 13, 11), 20), _random((3, 6, 13, 11), 21)
    weight, bias = _random((6, 4 // groups, 3, 3), 22), _random((6,), 23)
    options = ((1, 1), (1, 1), (1, 1), groups)

    def products():
        y = conv_arrays.conv2d_forward(x, weight, *options, bias=bias)
        gW = conv_arrays.conv2d_backward_weight(x, gy, (3, 3), *options)
        return y, gW

    monkeypatch.setattr(conv_arrays, "PER_IMAGE_MAX_ROWS", -1)
    assert not conv_arrays._per_image(4 * 9, 13 * 11, np)
    one_gemm = products()
    monkeypatch.setattr(conv_arrays, "PER_IMAGE_MAX_ROWS", 64)
    assert conv_arrays._per_image(4 * 9, 13 * 11, np)  # 36 rows, 143 pixels: per image
    for a, b in zip(products(), one_gemm):  # the same sums, in BLAS's order
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_columns_are_kept_only_when_the_weight_gradient_will_need_them(monkeypatch):
    # A frozen weight (a discriminator seen by the generator's step) or no_grad (sampling)
    # needs no weight gradient, so the forward must not hold the whole batch's columns.
    from tinygen.kernels import conv_arrays

    kept = []
    make_columns = conv_arrays.columns
    monkeypatch.setattr(
        conv_arrays, "columns", lambda *args: kept.append(1) or make_columns(*args)
    )
    x = tg.randn(2, 3, 8, 8, requires_grad=True)
    weight = tg.randn(4, 3, 3, 3, requires_grad=True)
    frozen = tg.randn(4, 3, 3, 3)
    expected = conv2d(x, frozen, padding=1).numpy()
    with tg.no_grad():
        conv2d(x, weight, padding=1)
    y = conv2d(x, frozen, padding=1)  # x still needs its gradient
    y.sum().backward()
    assert kept == []
    np.testing.assert_allclose(y.numpy(), expected)
    conv2d(x, weight, padding=1).sum().backward()
    assert kept == [1]


# ---------------------------------------------------------------------------
# Adjointness and shapes
# ---------------------------------------------------------------------------


@given(conv2d_cases())
@settings(derandomize=True, deadline=None, max_examples=60)
def test_conv_transpose_is_adjoint_of_conv(case):
    # <conv2d(x, W), y> = <x, conv_transpose2d(y, W)>, the output size chosen to be x's
    x, weight, _ = _inputs(case, seed=12)
    options = case["options"]
    y_of_x = conv2d(x, weight, **options)
    y = _random(y_of_x.shape, seed=13)
    x_of_y = conv_transpose2d(
        y,
        weight,
        stride=options["stride"],
        padding=options["padding"],
        groups=options["groups"],
        dilation=options["dilation"],
        output_size=x.shape,
    )
    assert x_of_y.shape == x.shape
    left = float((y_of_x.data * y).sum())
    right = float((x * x_of_y.data).sum())
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


def test_conv_transpose2d_output_padding_and_output_size_pick_the_same_shape():
    x, weight = _random((1, 2, 4, 5), 0), _random((2, 3, 3, 3), 1)
    by_padding = conv_transpose2d(x, weight, stride=2, padding=1, output_padding=(1, 0))
    by_size = conv_transpose2d(x, weight, stride=2, padding=1, output_size=(8, 9))
    assert by_padding.shape == by_size.shape == (1, 3, 8, 9)  # H_out = 3*2 - 2 + 2 + 1 + 1
    assert np.array_equal(by_padding.data, by_size.data)


def test_conv2d_keeps_float32_and_reference_kernels_give_the_same_result(monkeypatch):
    x, weight = _random((2, 3, 6, 5), 0, np.float32), _random((4, 3, 3, 2), 1, np.float32)
    y = conv2d(tg.Tensor(x), tg.Tensor(weight), stride=(2, 1), padding=1)
    assert y.dtype == np.float32
    monkeypatch.setenv("TINYGEN_KERNELS", "reference")
    y_reference = conv2d(tg.Tensor(x), tg.Tensor(weight), stride=(2, 1), padding=1)
    assert np.array_equal(y.data, y_reference.data)


def test_non_contiguous_inputs_give_the_same_result_as_contiguous_copies():
    x = _random((5, 6, 2, 3), 0).transpose(2, 3, 0, 1)  # (2, 3, 5, 6), not C-contiguous
    weight = _random((3, 4, 3, 2), 1).transpose(2, 0, 1, 3)[:, :, ::2]  # (3, 3, 2, 2)
    bias = _random((6,), 2)[::2]
    assert not x.flags.c_contiguous and not weight.flags.c_contiguous
    y = conv2d(x, weight, bias, padding=1)
    y_copy = conv2d(x.copy(), weight.copy(), bias.copy(), padding=1)
    assert np.array_equal(y.data, y_copy.data)
    t = conv_transpose2d(y.data.transpose(0, 1, 3, 2), weight, stride=2)
    t_copy = conv_transpose2d(y.data.transpose(0, 1, 3, 2).copy(), weight.copy(), stride=2)
    assert np.array_equal(t.data, t_copy.data)


def test_conv2d_backward_accumulates_into_leaf_grads():
    x = tg.Tensor(_random((2, 2, 5, 5), 0), requires_grad=True)
    weight = tg.Tensor(_random((3, 2, 3, 3), 1), requires_grad=True)
    bias = tg.Tensor(_random((3,), 2), requires_grad=True)
    conv2d(x, weight, bias, padding=1).sum().backward()
    # d sum(y) / d bias[o] = the number of output pixels, N*OH*OW
    np.testing.assert_allclose(bias.grad.data, np.full(3, 2 * 5 * 5))
    assert x.grad.shape == x.shape and weight.grad.shape == weight.shape


# ---------------------------------------------------------------------------
# Argument checks: each error states the rule, what was expected and what came
# ---------------------------------------------------------------------------


def test_kernel_larger_than_padded_input_is_rejected():
    with pytest.raises(ValueError, match=r"kernel must fit in the padded input.*5 > .* = 4"):
        conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 5, 3)))
    with pytest.raises(ValueError, match=r"dilated kernel width DH\*\(KH-1\)\+1 = 5 > .* = 4"):
        conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), dilation=(1, 2))


def test_channels_that_do_not_match_the_weight_are_rejected():
    with pytest.raises(ValueError, match=r"input has 3 channels but weight expects 4"):
        conv2d(np.zeros((1, 3, 5, 5)), np.zeros((8, 4, 3, 3)))
    with pytest.raises(ValueError, match=r"input has 3 channels but weight expects 4"):
        conv_transpose2d(np.zeros((1, 3, 5, 5)), np.zeros((4, 2, 3, 3)))


def test_channels_that_do_not_divide_by_groups_are_rejected():
    with pytest.raises(
        ValueError, match=r"input channels \(3\).*must both divide by groups \(2\)"
    ):
        conv2d(np.zeros((1, 3, 5, 5)), np.zeros((4, 1, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"output channels .* = 3\) must both divide by groups"):
        conv2d(np.zeros((1, 4, 5, 5)), np.zeros((3, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"input channels \(3\) must divide by groups \(2\)"):
        conv_transpose2d(np.zeros((1, 3, 5, 5)), np.zeros((3, 2, 3, 3)), groups=2)


def test_output_padding_not_smaller_than_stride_or_dilation_is_rejected():
    with pytest.raises(
        ValueError, match=r"output_padding must be smaller .* = 2\) in height, got 2"
    ):
        conv_transpose2d(
            np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), stride=2, output_padding=2
        )
    with pytest.raises(ValueError, match=r"max\(stride, dilation\) = 1\) in width, got 1"):
        conv_transpose2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), output_padding=(0, 1))


def test_output_size_out_of_reach_is_rejected():
    with pytest.raises(ValueError, match=r"output_size height 9 is not reachable: .* 7 to 8"):
        conv_transpose2d(
            np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), stride=2, padding=1, output_size=(9, 8)
        )


def test_non_4d_input_and_bad_options_are_rejected():
    with pytest.raises(
        ValueError, match=r"input must be 4-D \(N, C, H, W\), got shape \(1, 5, 5\)"
    ):
        conv2d(np.zeros((1, 5, 5)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"input must be 4-D"):
        conv_transpose2d(np.zeros((5, 5)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), stride=0)
    with pytest.raises(TypeError, match=r"padding must be an int or a pair of ints"):
        conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), padding=(1, 1, 1))
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        conv2d(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3)), np.zeros(3))
    with pytest.raises(TypeError, match=r"share one floating dtype, got float32 and float64"):
        conv2d(np.zeros((1, 1, 5, 5), np.float32), np.zeros((2, 1, 3, 3)))


# ---------------------------------------------------------------------------
# Parity with PyTorch
# ---------------------------------------------------------------------------


def _torch_parity(op, torch_op, case, torch, seed, **extra):
    x, weight, bias = _inputs(case, seed)
    options = {**case["options"], **extra}
    tensors = [tg.Tensor(a, requires_grad=True) for a in _present(x, weight, bias)]
    y = op(*tensors[:2], tensors[2] if bias is not None else None, **options)
    torch_tensors = [torch.tensor(a, requires_grad=True) for a in _present(x, weight, bias)]
    torch_options = {k: v for k, v in options.items() if k != "output_size"}
    if "output_size" in options:
        module = torch.nn.ConvTranspose2d(
            x.shape[1],
            weight.shape[1] * options["groups"],
            weight.shape[2:],
            stride=options["stride"],
            padding=options["padding"],
            groups=options["groups"],
            dilation=options["dilation"],
            bias=bias is not None,
        ).double()
        module.weight.data = torch_tensors[1]
        if bias is not None:
            module.bias.data = torch_tensors[2]
        y_torch = module(torch_tensors[0], output_size=list(options["output_size"]))
        torch_tensors = [torch_tensors[0], module.weight] + (
            [module.bias] if bias is not None else []
        )
    else:
        y_torch = torch_op(
            *torch_tensors[:2], torch_tensors[2] if bias is not None else None, **torch_options
        )
    assert y.shape == tuple(y_torch.shape)
    np.testing.assert_allclose(y.data, y_torch.detach().numpy(), rtol=1e-10, atol=1e-12)
    gy = _random(y.shape, seed + 5)
    y.backward(tg.Tensor(gy))
    y_torch.backward(torch.tensor(gy))
    for ours, theirs in zip(tensors, torch_tensors):
        np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


@given(conv2d_cases())
@settings(derandomize=True, deadline=None, max_examples=40)
def test_conv2d_matches_torch_forward_and_gradients(case):
    torch = pytest.importorskip("torch", reason="torch is needed for the parity tests")
    _torch_parity(conv2d, torch.nn.functional.conv2d, case, torch, seed=20)


@given(conv_transpose2d_cases())
@settings(derandomize=True, deadline=None, max_examples=40)
def test_conv_transpose2d_matches_torch_forward_and_gradients(case):
    torch = pytest.importorskip("torch", reason="torch is needed for the parity tests")
    _torch_parity(conv_transpose2d, torch.nn.functional.conv_transpose2d, case, torch, seed=30)


@given(conv_transpose2d_cases(), st.data())
@settings(derandomize=True, deadline=None, max_examples=30)
def test_conv_transpose2d_output_size_matches_torch_module(case, data):
    torch = pytest.importorskip("torch", reason="torch is needed for the parity tests")
    options = case["options"]
    N, _, H, W = case["x_shape"]
    _, _, KH, KW = case["weight_shape"]
    smallest = [
        (i - 1) * s - 2 * p + d * (k - 1) + 1
        for i, s, p, d, k in zip(
            (H, W), options["stride"], options["padding"], options["dilation"], (KH, KW)
        )
    ]
    assume(min(smallest) >= 1)
    size = tuple(
        data.draw(st.integers(low, low + s - 1)) for low, s in zip(smallest, options["stride"])
    )
    case = {**case, "options": {k: v for k, v in options.items() if k != "output_padding"}}
    _torch_parity(
        conv_transpose2d, torch.nn.functional.conv_transpose2d, case, torch, 40, output_size=size
    )


# ---------------------------------------------------------------------------
# GPU: the same operations on cupy arrays (skipped without cupy and a GPU)
# ---------------------------------------------------------------------------


@pytest.mark.gpu
@given(conv2d_cases())
@settings(derandomize=True, deadline=None, max_examples=20)
def test_conv2d_on_gpu_matches_cpu_forward_and_gradients(case):
    cp = cupy_module()
    if cp is None:
        pytest.skip(f"cupy or a CUDA GPU is not available: {cupy_unavailable_reason()}")
    arrays = _present(*_inputs(case, seed=50))
    results = []
    for device_arrays in (arrays, [cp.asarray(a) for a in arrays]):
        tensors = [tg.Tensor(a, requires_grad=True) for a in device_arrays]
        bias = tensors[2] if len(tensors) == 3 else None
        y = conv2d(tensors[0], tensors[1], bias, **case["options"])
        (y * y).sum().backward()
        results.append([tg.Tensor(y.data).numpy()] + [t.grad.numpy() for t in tensors])
    for cpu_value, gpu_value in zip(*results):
        np.testing.assert_allclose(gpu_value, cpu_value, rtol=1e-10, atol=1e-12)

"""Tests of tinygen/kernels/winograd.py: 3x3, stride-1 convolutions through Winograd's tiles.

What they prove: one tile's 16-multiplication formula is the 2x2 correlation; the
forward pass, the input gradient and the weight gradient equal the im2col path's to
float64 round-off over drawn sizes, paddings, dilations and biases, with one lane or
two; conv2d and conv_transpose2d keep correct first and second derivatives through
it; float32 stays close to float64; and the path is taken only where it is exact.

The path normally waits for 32 channels (winograd.MIN_CHANNELS); the tests lower
that to 1 so that small, quickly checked shapes run through it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tinygen as tg
from tinygen.kernels import conv_arrays, lanes, winograd
from tinygen.kernels.reference import conv_output_size
from tinygen.ops.conv import conv2d, conv_transpose2d

DRAWN = settings(
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _random(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@st.composite
def winograd_cases(draw):
    """A 3x3, stride-1, one-group convolution with padding 0..2D (per side of each axis)."""
    N, C, C_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 2 * d)) for d in dilation)
    # the smallest input the kernel fits, then up to 5 more (odd and even output sizes)
    H, W = (max(1, 2 * d + 1 - 2 * p) + draw(st.integers(0, 5)) for p, d in zip(padding, dilation))
    # a kernel covering the whole unpadded input is a plain GEMM (conv_arrays), not tiles
    assume((H, W, padding, dilation) != (3, 3, (0, 0), (1, 1)))
    return {
        "x_shape": (N, C, H, W),
        "weight_shape": (C_out, C, 3, 3),
        "padding": padding,
        "dilation": dilation,
        "bias": draw(st.booleans()),
    }


def _products(case, seed=0):
    """conv_arrays' forward (with bias), input gradient and weight gradient of the case."""
    x = _random(case["x_shape"], seed)
    weight = _random(case["weight_shape"], seed + 1)
    bias = _random(case["weight_shape"][:1], seed + 2) if case["bias"] else None
    options = ((1, 1), case["padding"], case["dilation"], 1)
    y = conv_arrays.conv2d_forward(x, weight, *options, bias=bias)
    gy = _random(y.shape, seed + 3)
    gx = conv_arrays.conv2d_backward_input(gy, weight, case["x_shape"][2:], *options)
    gW = conv_arrays.conv2d_backward_weight(x, gy, (3, 3), *options)
    return y, gx, gW


# ---------------------------------------------------------------------------
# One tile
# ---------------------------------------------------------------------------


def test_one_tile_is_the_2x2_correlation_of_a_4x4_block_with_a_3x3_kernel():
    d, g = _random((4, 4), 1), _random((3, 3), 2)
    direct = np.array([[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(winograd.tile(d, g), direct, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("size, dilation", [(7, 1), (8, 1), (9, 2), (4, 2), (1, 3)])
def test_tiles_cover_every_output_row_once(size, dilation):
    bases = winograd.tile_bases(size, dilation)
    covered = sorted([r for r in bases if r < size] + [r + dilation for r in bases])
    assert [r for r in covered if r < size] == list(range(size))
    assert all(r + dilation < size + dilation for r in bases)  # a tile's second row: r + D
    assert not bases.flags.writeable


# ---------------------------------------------------------------------------
# The three products against im2col's
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_lanes", [1, 2])
@given(case=winograd_cases())
@DRAWN
def test_products_equal_the_im2col_products(monkeypatch, n_lanes, case):
    probe = np.empty(0)
    options = ((1, 1), case["padding"], case["dilation"], 1)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 10**9)
    assert conv_arrays.plan(case["x_shape"], case["weight_shape"], *options, 8)["path"] != (
        "winograd"
    )
    expected = _products(case)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "TILE_BUDGET_BYTES", 1)  # one image per chunk
    assert winograd.path(probe, case["weight_shape"], *options) == "winograd"
    assert conv_arrays.plan(case["x_shape"], case["weight_shape"], *options, 8)["path"] == (
        "winograd"
    )
    with lanes.threads(n_lanes):
        got = _products(case)
    for name, a, b in zip(("y", "gx", "gW"), got, expected):
        assert a.shape == b.shape, name
        scale = np.abs(b).max(initial=1.0)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * scale, err_msg=name)


def test_float32_stays_within_round_off_of_float64():
    # At the default MIN_CHANNELS: 32 channels, as a real layer would take this path.
    x, weight = _random((2, 32, 10, 9), 30), _random((40, 32, 3, 3), 31)
    options = ((1, 1), (1, 1), (1, 1), 1)
    assert winograd.path(x.astype(np.float32), weight.shape, *options) == "winograd"
    exact = conv_arrays.conv2d_forward(x, weight, *options)
    y = conv_arrays.conv2d_forward(x.astype(np.float32), weight.astype(np.float32), *options)
    gy = _random(exact.shape, 32)
    exact_gW = conv_arrays.conv2d_backward_weight(x, gy, (3, 3), *options)
    gW = conv_arrays.conv2d_backward_weight(
        x.astype(np.float32), gy.astype(np.float32), (3, 3), *options
    )
    assert y.dtype == np.float32 and gW.dtype == np.float32
    np.testing.assert_allclose(y, exact, rtol=0, atol=2e-6 * np.abs(exact).max())
    np.testing.assert_allclose(gW, exact_gW, rtol=0, atol=2e-6 * np.abs(exact_gW).max())


# ---------------------------------------------------------------------------
# Derivatives through the path, as conv2d and conv_transpose2d
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", [conv2d, conv_transpose2d])
@given(case=winograd_cases())
@settings(DRAWN, max_examples=30)
def test_second_derivatives_hold_through_winograd(monkeypatch, op, case):
    # conv_transpose2d runs the case's convolution backwards: its input has the case's
    # output shape, its weight (C_in, C_out, 3, 3) is the case's weight, read the other way.
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    N, C, H, W = case["x_shape"]
    C_out = case["weight_shape"][0]
    (PH, PW), (DH, DW) = case["padding"], case["dilation"]
    if op is conv2d:
        x_shape, bias_shape = (N, C, H, W), (C_out,)
    else:
        x_shape, bias_shape = (N, C_out, H + 2 * PH - 2 * DH, W + 2 * PW - 2 * DW), (C,)
    x, weight = _random(x_shape, 40), _random(case["weight_shape"], 41)
    options = dict(stride=1, padding=case["padding"], dilation=case["dilation"])
    if case["bias"]:
        bias = _random(bias_shape, 42)
        assert tg.gradgradcheck(lambda a, w, b: op(a, w, b, **options), [x, weight, bias])
    else:
        assert tg.gradgradcheck(lambda a, w: op(a, w, **options), [x, weight])


# ---------------------------------------------------------------------------
# Where the path is taken
# ---------------------------------------------------------------------------


def test_path_is_taken_only_where_it_is_exact(monkeypatch):
    x = np.empty(0, dtype=np.float32)
    weight_shape, one = (32, 32, 3, 3), (1, 1)
    assert winograd.path(x, weight_shape, one, one, one, 1) == "winograd"
    assert winograd.path(x, weight_shape, one, (2, 0), one, 1) == "winograd"  # padding up to 2D
    assert winograd.path(x, weight_shape, (2, 2), one, one, 1) is None  # stride 2
    assert winograd.path(x, (32, 16, 3, 3), one, one, one, 2) is None  # two groups
    assert winograd.path(x, weight_shape, one, (3, 1), one, 1) is None  # padding above 2D
    assert winograd.path(x, (32, 32, 5, 5), one, one, one, 1) is None  # not 3x3
    assert winograd.path(x, (32, 16, 3, 3), one, one, one, 1) is None  # too few channels
    assert winograd.path(x.astype(np.float16), weight_shape, one, one, one, 1) is None
    monkeypatch.setenv("TINYGEN_KERNELS", "reference")  # the NumPy path stays im2col
    assert winograd.path(x, weight_shape, one, one, one, 1) is None


def test_transposed_convolution_with_output_padding_at_stride_1(monkeypatch):
    # stride 1, dilation 2, output_padding 1: ops/conv.py pads the input by a row and a
    # column so that the tiles' input gradient has the asked-for size
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    x, weight = _random((1, 2, 4, 5), 50), _random((2, 3, 3, 3), 51)
    options = dict(stride=1, padding=1, dilation=2, output_padding=1)
    y = conv_transpose2d(tg.tensor(x), tg.tensor(weight), **options)
    assert y.shape == (1, 3, 7, 8)
    assert tg.gradgradcheck(lambda a, w: conv_transpose2d(a, w, **options), [x, weight])


# ---------------------------------------------------------------------------
# 4x4 kernels with stride 2: F(2x2, 2x2) on the four phases
# ---------------------------------------------------------------------------


@st.composite
def strided_cases(draw):
    """A 4x4, stride-2, one-group convolution with padding 0..3, and an input size for the
    input gradient that may be one larger (what output_padding asks for) where it maps back."""
    N, C, C_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    H, W = (max(1, 4 - 2 * p) + draw(st.integers(0, 6)) for p in padding)
    assume((H, W, padding) != (4, 4, (0, 0)))  # whole-input: a plain GEMM
    extra = [draw(st.integers(0, 1)) for _ in range(2)]
    gx_hw = tuple(
        size + e
        if conv_output_size(size + e, 4, 2, p, 1) == conv_output_size(size, 4, 2, p, 1)
        else size
        for size, e, p in zip((H, W), extra, padding)
    )
    return {
        "x_shape": (N, C, H, W),
        "weight_shape": (C_out, C, 4, 4),
        "padding": padding,
        "gx_hw": gx_hw,
        "bias": draw(st.booleans()),
    }


def _strided_products(case, seed=0):
    """conv_arrays' forward and input gradient (each with a bias) and weight gradient."""
    x = _random(case["x_shape"], seed)
    weight = _random(case["weight_shape"], seed + 1)
    C_out, C = case["weight_shape"][:2]
    bias, bias_in = (
        (_random((C_out,), seed + 2), _random((C,), seed + 3)) if case["bias"] else (None, None)
    )
    options = ((2, 2), case["padding"], (1, 1), 1)
    y = conv_arrays.conv2d_forward(x, weight, *options, bias=bias)
    gy = _random(y.shape, seed + 4)
    gx = conv_arrays.conv2d_backward_input(gy, weight, case["gx_hw"], *options, bias=bias_in)
    gW = conv_arrays.conv2d_backward_weight(x, gy, (4, 4), *options)
    return y, gx, gW


def test_one_pair_tile_is_the_2x2_correlation_of_a_3x3_block_with_a_2x2_kernel():
    d, g = _random((3, 3), 3), _random((2, 2), 4)
    direct = np.array([[np.sum(d[i : i + 2, j : j + 2] * g) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(winograd.tile2(d, g), direct, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n_lanes", [1, 2])
@given(case=strided_cases())
@DRAWN
def test_strided_products_equal_the_im2col_products(monkeypatch, n_lanes, case):
    options = ((2, 2), case["padding"], (1, 1), 1)
    monkeypatch.setattr(winograd, "STRIDED_MIN_CHANNELS", 10**9)
    assert conv_arrays.plan(case["x_shape"], case["weight_shape"], *options, 8)["path"] == (
        "im2col"
    )
    expected = _strided_products(case)
    monkeypatch.setattr(winograd, "STRIDED_MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "STRIDED_TILE_BUDGET_BYTES", 1)  # one image per chunk
    assert conv_arrays.plan(case["x_shape"], case["weight_shape"], *options, 8)["path"] == (
        "winograd-phases"
    )
    with lanes.threads(n_lanes):
        got = _strided_products(case)
    for name, a, b in zip(("y", "gx", "gW"), got, expected):
        assert a.shape == b.shape, name
        scale = np.abs(b).max(initial=1.0)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * scale, err_msg=name)


@pytest.mark.parametrize("op", [conv2d, conv_transpose2d])
@given(case=strided_cases())
@settings(DRAWN, max_examples=30)
def test_second_derivatives_hold_through_the_phases(monkeypatch, op, case):
    # As above: conv_transpose2d's input has the convolution's output shape, and its
    # output_padding picks the larger input size where the case drew one.
    monkeypatch.setattr(winograd, "STRIDED_MIN_CHANNELS", 1)
    N, C, H, W = case["x_shape"]
    C_out = case["weight_shape"][0]
    options = dict(stride=2, padding=case["padding"])
    OH, OW = (conv_output_size(s, 4, 2, p, 1) for s, p in zip((H, W), case["padding"]))
    if op is conv2d:
        x_shape, bias_shape = (N, C, H, W), (C_out,)
    else:
        x_shape, bias_shape = (N, C_out, OH, OW), (C,)
        smallest = (2 * OH - 2 * case["padding"][0] + 2, 2 * OW - 2 * case["padding"][1] + 2)
        options["output_padding"] = (
            case["gx_hw"][0] - smallest[0],
            case["gx_hw"][1] - smallest[1],
        )
    x, weight = _random(x_shape, 43), _random(case["weight_shape"], 44)
    if case["bias"]:
        bias = _random(bias_shape, 45)
        assert tg.gradgradcheck(lambda a, w, b: op(a, w, b, **options), [x, weight, bias])
    else:
        assert tg.gradgradcheck(lambda a, w: op(a, w, **options), [x, weight])


def test_strided_float32_stays_within_round_off_of_float64():
    # At the default STRIDED_MIN_CHANNELS: 32 channels, as DCGAN's and the VAE's layers.
    x, weight = _random((3, 32, 14, 14), 60), _random((40, 32, 4, 4), 61)
    options = ((2, 2), (1, 1), (1, 1), 1)
    assert winograd.path(x.astype(np.float32), weight.shape, *options) == "winograd-phases"
    exact = conv_arrays.conv2d_forward(x, weight, *options)
    gy = _random(exact.shape, 62)
    exact_gx = conv_arrays.conv2d_backward_input(gy, weight, (14, 14), *options)
    exact_gW = conv_arrays.conv2d_backward_weight(x, gy, (4, 4), *options)
    x32, w32, gy32 = (a.astype(np.float32) for a in (x, weight, gy))
    y = conv_arrays.conv2d_forward(x32, w32, *options)
    gx = conv_arrays.conv2d_backward_input(gy32, w32, (14, 14), *options)
    gW = conv_arrays.conv2d_backward_weight(x32, gy32, (4, 4), *options)
    for got, want in ((y, exact), (gx, exact_gx), (gW, exact_gW)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_strided_path_is_taken_only_where_it_is_exact(monkeypatch):
    x = np.empty(0, dtype=np.float32)
    weight_shape, one, two = (32, 32, 4, 4), (1, 1), (2, 2)
    assert winograd.path(x, weight_shape, two, one, one, 1) == "winograd-phases"
    assert winograd.path(x, weight_shape, two, (0, 3), one, 1) == "winograd-phases"
    assert winograd.path(x, weight_shape, one, one, one, 1) is None  # stride 1
    assert winograd.path(x, weight_shape, (2, 1), one, one, 1) is None
    assert winograd.path(x, (32, 32, 3, 3), two, one, one, 1) is None  # not 4x4
    assert winograd.path(x, weight_shape, two, one, two, 1) is None  # dilation 2
    assert winograd.path(x, (32, 16, 4, 4), two, one, one, 2) is None  # two groups
    assert winograd.path(x, weight_shape, two, (4, 1), one, 1) is None  # padding 4
    assert winograd.path(x, (32, 16, 4, 4), two, one, one, 1) is None  # few channels
    assert winograd.path(x.astype(np.float16), weight_shape, two, one, one, 1) is None
    monkeypatch.setenv("TINYGEN_KERNELS", "reference")
    assert winograd.path(x, weight_shape, two, one, one, 1) is None

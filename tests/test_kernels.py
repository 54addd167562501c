"""Tests of tinygen/kernels: im2col and col2im three ways, and the array-level convolutions.

What they prove: the Numba kernels equal the NumPy reference bit for bit in
float64; the parallel and serial Numba paths are equal; col2im is the adjoint
of im2col; the array convolutions equal naive loops (groups, chunks and the
two GEMM-only shortcuts included); the dispatch, the setting and the report
behave as documented. GPU tests run the same checks on cupy and skip without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygen.kernels as kernels
from tinygen.backend import cupy_module, cupy_unavailable_reason
from tinygen.kernels import conv_arrays, lanes, reference
from tinygen.kernels.reference import conv_output_size

cpu = pytest.importorskip("tinygen.kernels.cpu", reason="Numba is not importable here")

SETTINGS = settings(
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------------------
# Drawn geometries
# ---------------------------------------------------------------------------


@st.composite
def geometries(draw, max_size: int = 9):
    """(x_shape, kernel_size, stride, padding, dilation), always with OH, OW >= 1."""
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 4))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    PH, PW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    DH, DW = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    # The dilated kernel DH*(KH-1)+1 must fit in H + 2PH.
    H = draw(st.integers(max(1, DH * (KH - 1) + 1 - 2 * PH), max_size + 2))
    W = draw(st.integers(max(1, DW * (KW - 1) + 1 - 2 * PW), max_size + 2))
    return (N, C, H, W), (KH, KW), (SH, SW), (PH, PW), (DH, DW)


def _random(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _col_shape(x_shape, kernel_size, stride, padding, dilation):
    N, C, H, W = x_shape
    OH = conv_output_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    return (C * kernel_size[0] * kernel_size[1], N * OH * OW)


# ---------------------------------------------------------------------------
# The index convention, checked against its own definition
# ---------------------------------------------------------------------------


@given(geometries())
@SETTINGS
def test_reference_im2col_follows_the_documented_index_convention(geometry):
    x_shape, (KH, KW), (SH, SW), (PH, PW), (DH, DW) = geometry
    N, C, H, W = x_shape
    x = _random(x_shape)
    col = reference.im2col(x, (KH, KW), (SH, SW), (PH, PW), (DH, DW))
    OH = conv_output_size(H, KH, SH, PH, DH)
    OW = conv_output_size(W, KW, SW, PW, DW)
    col6 = col.reshape(C, KH, KW, N, OH, OW)
    for c, kh, kw, n, oh, ow in np.ndindex(col6.shape):
        ih, iw = oh * SH - PH + kh * DH, ow * SW - PW + kw * DW
        inside = 0 <= ih < H and 0 <= iw < W
        assert col6[c, kh, kw, n, oh, ow] == (x[n, c, ih, iw] if inside else 0.0)


# ---------------------------------------------------------------------------
# Numba equals the reference, and its two paths equal each other
# ---------------------------------------------------------------------------


@given(geometries())
@SETTINGS
def test_numba_kernels_equal_reference_bit_for_bit_in_float64(geometry):
    x_shape, *options = geometry
    x = _random(x_shape, seed=1)
    col = _random(_col_shape(x_shape, *options), seed=2)
    expected_col = reference.im2col(x, *options)
    expected_x = reference.col2im(col, x_shape, *options)
    for parallel in (True, False):
        assert np.array_equal(cpu.im2col(x, *options, parallel=parallel), expected_col)
        assert np.array_equal(cpu.col2im(col, x_shape, *options, parallel=parallel), expected_x)


@given(geometries(max_size=14), st.sampled_from([np.float32, np.float64]))
@SETTINGS
def test_numba_parallel_and_serial_paths_are_equal(geometry, dtype):
    x_shape, *options = geometry
    x = _random(x_shape, dtype, seed=3)
    col = _random(_col_shape(x_shape, *options), dtype, seed=4)
    serial_col = cpu.im2col(x, *options, parallel=False)
    serial_x = cpu.col2im(col, x_shape, *options, parallel=False)
    for _ in range(3):  # repeated: a race would show as a difference between runs
        assert np.array_equal(cpu.im2col(x, *options, parallel=True), serial_col)
        assert np.array_equal(cpu.col2im(col, x_shape, *options, parallel=True), serial_x)
    assert serial_col.dtype == dtype and serial_x.dtype == dtype


def test_numba_kernels_overwrite_out_whatever_it_held():
    options = ((3, 3), (2, 2), (1, 1), (1, 1))
    x = _random((2, 3, 7, 6), seed=5)
    col_shape = _col_shape(x.shape, *options)
    col = cpu.im2col(x, *options, out=np.full(col_shape, np.nan))
    assert np.array_equal(col, reference.im2col(x, *options))
    back = cpu.col2im(col, x.shape, *options, out=np.full(x.shape, np.nan))
    assert np.array_equal(back, reference.col2im(col, x.shape, *options))


# ---------------------------------------------------------------------------
# col2im is the adjoint of im2col, and adds overlapping windows
# ---------------------------------------------------------------------------


@given(geometries())
@SETTINGS
def test_im2col_and_col2im_are_adjoint(geometry):
    # <im2col(x), c> = <x, col2im(c)> for every x and c
    x_shape, *options = geometry
    x = _random(x_shape, seed=6)
    c = _random(_col_shape(x_shape, *options), seed=7)
    left = np.vdot(kernels.im2col(x, *options), c)
    right = np.vdot(x, kernels.col2im(c, x_shape, *options))
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("implementation", ["reference", "numba-parallel", "numba-serial"])
def test_col2im_adds_overlapping_windows(implementation):
    # Kernel 3 > stride 1: col2im of all ones counts how many windows cover each pixel.
    x_shape, options = (1, 1, 5, 4), ((3, 3), (1, 1), (1, 1), (1, 1))
    ones = np.ones(_col_shape(x_shape, *options))
    if implementation == "reference":
        counts = reference.col2im(ones, x_shape, *options)
    else:
        counts = cpu.col2im(ones, x_shape, *options, parallel=implementation == "numba-parallel")
    expected = np.zeros(x_shape)
    for ih, iw in np.ndindex(5, 4):
        # windows are centred on every pixel (3x3, padding 1): the 3x3 neighbours inside
        rows = min(ih + 1, 4) - max(ih - 1, 0) + 1
        cols = min(iw + 1, 3) - max(iw - 1, 0) + 1
        expected[0, 0, ih, iw] = rows * cols
    assert np.array_equal(counts, expected)
    assert counts.max() == 9


# ---------------------------------------------------------------------------
# Argument checks and dispatch
# ---------------------------------------------------------------------------


def test_kernel_larger_than_padded_input_is_rejected_before_any_kernel_runs():
    x = np.zeros((1, 1, 3, 3))
    with pytest.raises(ValueError, match="must fit in the padded input"):
        kernels.im2col(x, (5, 3), (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="must fit in the padded input"):
        kernels.col2im(np.zeros((9, 1)), (1, 1, 3, 3), (3, 3), (1, 1), (0, 0), (2, 1))


def test_col2im_rejects_a_column_matrix_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"col must have shape .*\(9, 18\).* got \(9, 17\)"):
        kernels.col2im(np.zeros((9, 17)), (2, 1, 3, 3), (3, 3), (1, 1), (1, 1), (1, 1))


def test_kernels_reject_non_4d_input_and_bad_options():
    with pytest.raises(ValueError, match="4-D"):
        kernels.im2col(np.zeros((3, 3, 3)), (1, 1), (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="stride must be two ints >= 1"):
        kernels.im2col(np.zeros((1, 1, 3, 3)), (1, 1), (0, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="padding must be two ints >= 0"):
        kernels.im2col(np.zeros((1, 1, 3, 3)), (1, 1), (1, 1), (-1, 0), (1, 1))


def test_dispatch_sends_numpy_to_numba_and_the_setting_forces_the_reference(monkeypatch):
    x = np.zeros((1, 1, 2, 2))
    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    assert kernels.kernel_choice(x) == "numba"
    assert kernels.info()["cpu_kernels"] == "numba"
    monkeypatch.setenv("TINYGEN_KERNELS", "reference")
    assert kernels.kernel_choice(x) == "reference"
    assert "forced" in kernels.info()["cpu_kernels"]
    col = kernels.im2col(_random((1, 2, 4, 4)), (2, 2), (1, 1), (0, 0), (1, 1))
    assert col.shape == (8, 9)
    monkeypatch.setenv("TINYGEN_KERNELS", "fastest")
    with pytest.raises(ValueError, match="TINYGEN_KERNELS must be 'auto' or 'reference'"):
        kernels.kernel_choice(x)


def test_info_reports_numba_version_threading_layer_and_cache_dir(monkeypatch):
    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    report = kernels.info()
    import numba

    assert report["numba"] == numba.__version__
    assert report["numba_threading_layer"]
    assert report["numba_cache_dir"]
    assert report["numba_cache"].startswith(("on", "off"))


def test_missing_numba_falls_back_to_reference_with_one_warning(monkeypatch):
    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    monkeypatch.setitem(sys.modules, "tinygen.kernels.cpu", None)  # makes the import fail
    monkeypatch.setattr(kernels, "_cpu", None)
    monkeypatch.setattr(kernels, "_cpu_error", None)
    x = _random((1, 2, 4, 4))
    with pytest.warns(RuntimeWarning, match="Numba could not be imported"):
        assert kernels.kernel_choice(x) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail here
        col = kernels.im2col(x, (2, 2), (1, 1), (0, 0), (1, 1))
    assert np.array_equal(col, reference.im2col(x, (2, 2), (1, 1), (0, 0), (1, 1)))
    assert kernels.info()["cpu_kernels"].startswith("reference (Numba unavailable")


def test_unusable_numba_cache_falls_back_to_compiling_without_cache(monkeypatch):
    # Numba raises RuntimeError ("no locator available") at decoration time when no cache
    # folder is writable; simulated here, since the test runs where every folder is writable.
    import numba

    real_njit = numba.njit

    def njit_without_cache_folder(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real_njit(**options)

    monkeypatch.setattr(cpu.numba, "njit", njit_without_cache_folder)
    monkeypatch.setattr(cpu, "CACHE_ERROR", None)

    def add_one(a):
        return a + 1

    compiled = cpu._compile(add_one, parallel=False)
    assert compiled(np.float32(1.5)) == np.float32(2.5)
    assert "no locator available" in cpu.CACHE_ERROR
    assert kernels.info()["numba_cache"].startswith("off (RuntimeError")


def test_serial_kernel_loaded_from_the_cache_starts_no_threads(tmp_path):
    # Numba's cache does not tell a parallel compile from a serial one of the same function;
    # the serial kernel must still be serial when a fresh process loads it from the cache.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    fill_cache = (
        "import numpy as np\n"
        "from tinygen.kernels import cpu\n"
        "x = np.ones((1, 1, 3, 3))\n"
        "for parallel in (True, False):\n"
        "    cpu.im2col(x, (2, 2), (1, 1), (0, 0), (1, 1), parallel=parallel)\n"
    )
    use_serial = (
        "import numba, numpy as np\n"
        "from tinygen.kernels import cpu\n"
        "x = np.ones((1, 1, 3, 3))\n"
        "cpu.im2col(x, (2, 2), (1, 1), (0, 0), (1, 1), parallel=False)\n"
        "print('LAYER', cpu.threading_layer())\n"
    )
    for program in (fill_cache, use_serial):
        result = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
    assert "LAYER not started yet" in result.stdout


def test_clear_cache_removes_only_this_modules_cached_kernels(tmp_path, monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    folder = tmp_path / "some_path_tinygen_kernels"  # Numba mirrors the source path here
    folder.mkdir()
    ours = [folder / "cpu._im2col_body-66.py311.nbi", folder / "cpu._im2col_body-66.py311.1.nbc"]
    theirs = folder / "other_module.f-3.py311.nbi"
    for path in [*ours, theirs]:
        path.write_bytes(b"")
    assert cpu.cache_dir() == str(tmp_path)
    assert kernels.clear_cache() == 2
    assert not any(path.exists() for path in ours)
    assert theirs.exists()


# ---------------------------------------------------------------------------
# The array-level convolutions against naive loops
# ---------------------------------------------------------------------------


def naive_conv2d(x, weight, stride, padding, dilation, groups):
    """y[n, o, oh, ow] = sum over c, kh, kw of x[n, c, ih, iw] * weight[o, c', kh, kw]."""
    N, C, H, W = x.shape
    C_out, Cg, KH, KW = weight.shape
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    y = np.zeros((N, C_out, OH, OW))
    for n, o, oh, ow in np.ndindex(N, C_out, OH, OW):
        g = o // (C_out // groups)
        for ci, kh, kw in np.ndindex(Cg, KH, KW):
            ih = oh * stride[0] - padding[0] + kh * dilation[0]
            iw = ow * stride[1] - padding[1] + kw * dilation[1]
            if 0 <= ih < H and 0 <= iw < W:
                y[n, o, oh, ow] += x[n, g * Cg + ci, ih, iw] * weight[o, ci, kh, kw]
    return y


def naive_conv2d_gradients(x, weight, gy, stride, padding, dilation, groups):
    """gx and gW of naive_conv2d by the chain rule, loop by loop."""
    N, C, H, W = x.shape
    C_out, Cg, KH, KW = weight.shape
    gx, gW = np.zeros_like(x), np.zeros_like(weight)
    for n, o, oh, ow in np.ndindex(gy.shape):
        g = o // (C_out // groups)
        for ci, kh, kw in np.ndindex(Cg, KH, KW):
            ih = oh * stride[0] - padding[0] + kh * dilation[0]
            iw = ow * stride[1] - padding[1] + kw * dilation[1]
            if 0 <= ih < H and 0 <= iw < W:
                gx[n, g * Cg + ci, ih, iw] += gy[n, o, oh, ow] * weight[o, ci, kh, kw]
                gW[o, ci, kh, kw] += gy[n, o, oh, ow] * x[n, g * Cg + ci, ih, iw]
    return gx, gW


@st.composite
def conv_cases(draw):
    x_shape, kernel_size, stride, padding, dilation = draw(geometries(max_size=6))
    N, _, H, W = x_shape
    groups = draw(st.integers(1, 3))
    C = groups * draw(st.integers(1, 2))
    C_out = groups * draw(st.integers(1, 2))
    weight_shape = (C_out, C // groups, *kernel_size)
    return (N, C, H, W), weight_shape, stride, padding, dilation, groups


def _check_against_naive(x_shape, weight_shape, stride, padding, dilation, groups):
    x = _random(x_shape, seed=8)
    weight = _random(weight_shape, seed=9)
    y = conv_arrays.conv2d_forward(x, weight, stride, padding, dilation, groups)
    np.testing.assert_allclose(
        y, naive_conv2d(x, weight, stride, padding, dilation, groups), rtol=1e-12, atol=1e-12
    )
    gy = _random(y.shape, seed=10)
    gx = conv_arrays.conv2d_backward_input(
        gy, weight, x_shape[2:], stride, padding, dilation, groups
    )
    gW = conv_arrays.conv2d_backward_weight(
        x, gy, weight_shape[2:], stride, padding, dilation, groups
    )
    gx_naive, gW_naive = naive_conv2d_gradients(x, weight, gy, stride, padding, dilation, groups)
    np.testing.assert_allclose(gx, gx_naive, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gW, gW_naive, rtol=1e-12, atol=1e-12)


@given(conv_cases())
@settings(derandomize=True, deadline=None, max_examples=40)
def test_array_conv2d_and_its_gradients_equal_naive_loops(case):
    _check_against_naive(*case)


@pytest.mark.parametrize(
    "x_shape, weight_shape, stride, padding, dilation, groups",
    [
        ((3, 4, 5, 6), (5, 4, 1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1: per-image GEMM
        ((3, 4, 5, 6), (5, 4, 5, 6), (1, 1), (0, 0), (1, 1), 1),  # whole input: one GEMM
        ((3, 4, 5, 6), (5, 4, 5, 6), (2, 3), (0, 0), (1, 1), 1),  # whole input, any stride
        ((2, 4, 5, 6), (6, 2, 1, 1), (1, 1), (0, 0), (1, 1), 2),  # 1x1 with groups: general
        ((2, 3, 5, 5), (2, 3, 1, 1), (2, 2), (0, 0), (1, 1), 1),  # 1x1 strided: general
    ],
)
def test_array_conv2d_shortcuts_equal_naive_loops(
    x_shape, weight_shape, stride, padding, dilation, groups
):
    _check_against_naive(x_shape, weight_shape, stride, padding, dilation, groups)


def test_array_conv2d_in_several_batch_chunks_equals_one_chunk(monkeypatch):
    case = ((7, 3, 9, 8), (4, 3, 3, 2), (2, 1), (1, 2), (2, 1), 1)
    monkeypatch.setattr(conv_arrays, "COLUMN_BUDGET_BYTES", 1)  # one image per chunk
    assert conv_arrays.column_bytes(case[0], case[1][2:], *case[2:5], 8)[1] == 1
    _check_against_naive(*case)


@given(conv_cases())
@settings(derandomize=True, deadline=None, max_examples=30)
def test_array_conv2d_with_kept_columns_equals_chunked_recomputation(case):
    x_shape, weight_shape, stride, padding, dilation, groups = case
    x, weight = _random(x_shape, seed=18), _random(weight_shape, seed=19)
    options = (stride, padding, dilation, groups)
    columns = conv_arrays.columns(x, weight_shape[2:], stride, padding, dilation)
    y = conv_arrays.conv2d_forward(x, weight, *options, columns=columns)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_arrays, "COLUMN_BUDGET_BYTES", 1)  # one image per chunk
        y_chunked = conv_arrays.conv2d_forward(x, weight, *options)
        gy = _random(y.shape, seed=20)
        gW_chunked = conv_arrays.conv2d_backward_weight(x, gy, weight_shape[2:], *options)
    gW = conv_arrays.conv2d_backward_weight(x, gy, weight_shape[2:], *options, columns=columns)
    np.testing.assert_allclose(y, y_chunked, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gW, gW_chunked, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_lanes", [1, 2])
@given(conv_cases(), st.booleans())
@settings(derandomize=True, deadline=None, max_examples=30)
def test_array_bias_added_in_the_lanes_equals_adding_it_afterwards(n_lanes, case, kept):
    """The bias each lane adds as its images leave the GEMM (or col2im) is the same
    addition, bit for bit, as adding it to the whole output afterwards."""
    x_shape, weight_shape, stride, padding, dilation, groups = case
    x, weight = _random(x_shape, seed=21), _random(weight_shape, seed=22)
    options = (stride, padding, dilation, groups)
    columns = conv_arrays.columns(x, weight_shape[2:], *options[:3]) if kept else None
    with pytest.MonkeyPatch.context() as patch, lanes.threads(n_lanes):
        patch.setattr(conv_arrays, "COLUMN_BUDGET_BYTES", 1)  # one image per chunk, ...
        patch.setattr(conv_arrays, "LANE_MIN_BYTES", 0)  # ... shared out even when tiny
        y = conv_arrays.conv2d_forward(x, weight, *options, columns=columns)
        bias = _random((y.shape[1],), seed=23)
        y_biased = conv_arrays.conv2d_forward(x, weight, *options, columns=columns, bias=bias)
        gx = conv_arrays.conv2d_backward_input(y, weight, x_shape[2:], *options)
        bias_in = _random((x_shape[1],), seed=24)
        gx_biased = conv_arrays.conv2d_backward_input(
            y, weight, x_shape[2:], *options, bias=bias_in
        )
    np.testing.assert_array_equal(y_biased, y + bias.reshape(1, -1, 1, 1))
    np.testing.assert_array_equal(gx_biased, gx + bias_in.reshape(1, -1, 1, 1))


@pytest.mark.parametrize(
    "x_shape, weight_shape",
    [((3, 4, 5, 5), (6, 4, 1, 1)), ((3, 4, 5, 5), (6, 4, 5, 5))],
    ids=["pointwise", "whole-input"],
)
def test_array_bias_on_the_paths_without_columns(x_shape, weight_shape):
    x, weight = _random(x_shape, seed=25), _random(weight_shape, seed=26)
    options = ((1, 1), (0, 0), (1, 1), 1)
    y = conv_arrays.conv2d_forward(x, weight, *options)
    bias = _random((weight_shape[0],), seed=27)
    y_biased = conv_arrays.conv2d_forward(x, weight, *options, bias=bias)
    np.testing.assert_array_equal(y_biased, y + bias.reshape(1, -1, 1, 1))
    gx = conv_arrays.conv2d_backward_input(y, weight, x_shape[2:], *options)
    bias_in = _random((x_shape[1],), seed=28)
    gx_biased = conv_arrays.conv2d_backward_input(y, weight, x_shape[2:], *options, bias=bias_in)
    np.testing.assert_array_equal(gx_biased, gx + bias_in.reshape(1, -1, 1, 1))


@pytest.mark.parametrize("n_lanes", [1, 2])
def test_pointwise_products_in_lanes_are_the_channel_sums(monkeypatch, n_lanes):
    # A 1x1 convolution needs no columns; its batch is still shared out between the lanes.
    x, gy = _random((3, 4, 5, 6), seed=29), _random((3, 6, 5, 6), seed=30)
    weight, bias = _random((6, 4, 1, 1), seed=31), _random((6,), seed=32)
    options = ((1, 1), (0, 0), (1, 1), 1)
    monkeypatch.setattr(conv_arrays, "LANE_MIN_BYTES", 0)
    with lanes.threads(n_lanes):
        assert conv_arrays._lane_pieces(x, np)[0] == n_lanes
        y = conv_arrays.conv2d_forward(x, weight, *options, bias=bias)
        gx = conv_arrays.conv2d_backward_input(gy, weight, (5, 6), *options)
        gW = conv_arrays.conv2d_backward_weight(x, gy, (1, 1), *options)
    W = weight[:, :, 0, 0]
    expected_y = np.einsum("oc,nchw->nohw", W, x) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(y, expected_y, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gx, np.einsum("oc,nohw->nchw", W, gy), rtol=1e-13, atol=1e-13)
    expected_gW = np.einsum("nohw,nchw->oc", gy, x).reshape(6, 4, 1, 1)
    np.testing.assert_allclose(gW, expected_gW, rtol=1e-13, atol=1e-13)


def test_array_conv2d_keeps_float32():
    x = _random((2, 3, 6, 6), np.float32)
    weight = _random((4, 3, 3, 3), np.float32)
    y = conv_arrays.conv2d_forward(x, weight, (1, 1), (1, 1), (1, 1), 1)
    assert y.dtype == np.float32
    gx = conv_arrays.conv2d_backward_input(y, weight, (6, 6), (1, 1), (1, 1), (1, 1), 1)
    gW = conv_arrays.conv2d_backward_weight(x, y, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert gx.dtype == np.float32 and gW.dtype == np.float32
    y64 = naive_conv2d(x.astype(np.float64), weight.astype(np.float64), (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# The CUDA source, compiled for the host CPU (checks its index logic without a GPU)
# ---------------------------------------------------------------------------


_HOST_PRELUDE = r"""
#define __device__
#define __global__
struct Dim { long long x; };
static Dim blockIdx = {0}, blockDim = {1}, gridDim = {1}, threadIdx = {0};
"""


@pytest.fixture(scope="module")
def cuda_source_on_host(tmp_path_factory):
    """The kernels of gpu.py built as a host library: one 'thread' walks the whole grid."""
    import ctypes

    from tinygen.kernels import gpu

    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the CUDA source for the host")
    folder = tmp_path_factory.mktemp("cuda_host")
    source = folder / "kernels.cpp"
    source.write_text(_HOST_PRELUDE + gpu._CUDA_SOURCE)
    library = folder / "kernels.so"
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-std=c++14", str(source), "-o", str(library)],
        check=True,
        capture_output=True,
    )
    return ctypes.CDLL(str(library))


def _run_on_host(library, name, source_array, target_shape, x_shape, options):
    import ctypes

    N, C, H, W = x_shape
    (KH, KW), stride, padding, dilation = options
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    target = np.full(target_shape, np.nan)
    pointer = ctypes.POINTER(ctypes.c_double)
    geometry = [N, C, H, W, KH, KW, OH, OW, *stride, *padding, *dilation]
    getattr(library, name + "_float64")(
        np.ascontiguousarray(source_array).ctypes.data_as(pointer),
        target.ctypes.data_as(pointer),
        ctypes.c_longlong(target.size),
        *(ctypes.c_int(v) for v in geometry),
    )
    return target


@given(geometries(max_size=7))
@settings(derandomize=True, deadline=None, max_examples=40)
def test_cuda_source_compiled_for_host_equals_reference(cuda_source_on_host, geometry):
    x_shape, *options = geometry
    x = _random(x_shape, seed=11)
    col_shape = _col_shape(x_shape, *options)
    col = _random(col_shape, seed=12)
    got_col = _run_on_host(cuda_source_on_host, "im2col", x, col_shape, x_shape, options)
    got_x = _run_on_host(cuda_source_on_host, "col2im", col, x_shape, x_shape, options)
    assert np.array_equal(got_col, reference.im2col(x, *options))
    assert np.array_equal(got_x, reference.col2im(col, x_shape, *options))


# ---------------------------------------------------------------------------
# GPU (cupy): the same agreement, skipped without cupy and a GPU
# ---------------------------------------------------------------------------


def _cupy_or_skip():
    cp = cupy_module()
    if cp is None:
        pytest.skip(f"cupy or a CUDA GPU is not available: {cupy_unavailable_reason()}")
    return cp


@pytest.mark.gpu
@given(geometries())
@settings(derandomize=True, deadline=None, max_examples=30)
def test_gpu_kernels_equal_reference_bit_for_bit_in_float64(geometry):
    cp = _cupy_or_skip()
    from tinygen.kernels import gpu

    x_shape, *options = geometry
    x = _random(x_shape, seed=13)
    col = _random(_col_shape(x_shape, *options), seed=14)
    assert np.array_equal(gpu.im2col(cp.asarray(x), *options).get(), reference.im2col(x, *options))
    got = gpu.col2im(cp.asarray(col), x_shape, *options).get()
    assert np.array_equal(got, reference.col2im(col, x_shape, *options))


@pytest.mark.gpu
@given(conv_cases())
@settings(derandomize=True, deadline=None, max_examples=20)
def test_gpu_array_conv2d_equals_cpu(case):
    cp = _cupy_or_skip()
    x_shape, weight_shape, stride, padding, dilation, groups = case
    x, weight = _random(x_shape, seed=15), _random(weight_shape, seed=16)
    y = conv_arrays.conv2d_forward(x, weight, stride, padding, dilation, groups)
    y_gpu = conv_arrays.conv2d_forward(
        cp.asarray(x), cp.asarray(weight), stride, padding, dilation, groups
    )
    np.testing.assert_allclose(y_gpu.get(), y, rtol=1e-12, atol=1e-12)
    gy = _random(y.shape, seed=17)
    gx = conv_arrays.conv2d_backward_input(
        cp.asarray(gy), cp.asarray(weight), x_shape[2:], stride, padding, dilation, groups
    )
    np.testing.assert_allclose(
        gx.get(),
        conv_arrays.conv2d_backward_input(
            gy, weight, x_shape[2:], stride, padding, dilation, groups
        ),
        rtol=1e-12,
        atol=1e-12,
    )

"""Tests of tinygen/kernels/fused.py: the Numba kernels against the array formulas.

What they prove: on numpy arrays the fused Numba kernels for LeakyReLU, ReLU's
gradient and batch normalization compute what the array formulas (the
definitions, which also serve cupy) compute, in float64 and float32, on
contiguous and strided inputs and on 0-d and 2-D ones; batch normalization's
statistics survive a large mean; ReLU keeps NumPy's NaN and zero; split over
two lanes, every kernel gives the one-lane result bit for bit; and
TINYGEN_KERNELS=reference switches the kernels off. The gradients of the
layers built on them are checked against finite differences in
test_ops_elementwise.py and test_nn_functional.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygen.kernels import fused

cpu = pytest.importorskip("tinygen.kernels.cpu", reason="Numba is not importable here")

SETTINGS = settings(derandomize=True, deadline=None, max_examples=40)
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}  # float32: the kernels sum in float64


def _both(monkeypatch, fn, *args, **kwargs):
    """(result on the Numba kernels, result on the array formulas)."""
    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    fast = fn(*args, **kwargs)
    monkeypatch.setenv("TINYGEN_KERNELS", "reference")
    slow = fn(*args, **kwargs)
    monkeypatch.delenv("TINYGEN_KERNELS")
    return fast, slow


def _random(shape, dtype, seed=0, loc=0.0):
    return (loc + np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


shapes = st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64])
slopes = st.sampled_from([0.0, 0.01, 0.2, 1.0, 1.5])


@given(shape=shapes, dtype=dtypes, slope=slopes, seed=st.integers(0, 99))
@SETTINGS
def test_leaky_relu_kernels_equal_the_definition(shape, dtype, slope, seed):
    with pytest.MonkeyPatch.context() as patch:
        x, gy = _random(shape, dtype, seed), _random(shape, dtype, seed + 1)
        x.reshape(-1)[:1] = 0  # the kink itself: derivative taken as the slope side
        y, y_ref = _both(patch, fused.leaky_relu, x, slope)
        gx, gx_ref = _both(patch, fused.leaky_relu_backward, x, gy, slope)
    s = dtype(slope)
    np.testing.assert_array_equal(y, np.where(x > 0, x, s * x))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx, np.where(x > 0, gy, s * gy))
    np.testing.assert_allclose(gx, gx_ref, rtol=TOLERANCE[dtype], atol=0)
    assert y.shape == gx.shape == x.shape and y.dtype == gx.dtype == dtype


def test_relu_is_numpys_maximum_with_nan_and_negative_zero(monkeypatch):
    x = np.array([-1.0, np.nan, -0.0, 0.0, 2.0, -np.inf, np.inf], dtype=np.float32)
    y, y_ref = _both(monkeypatch, fused.relu, x)
    expected = np.maximum(x, 0)
    for result in (y, y_ref):
        np.testing.assert_array_equal(result, expected)  # NaN where x is NaN
        assert not np.signbit(result[~np.isnan(result)]).any()  # -0.0 became 0.0
        assert result.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rectifiers_and_batch_norm_split_over_lanes_equal_the_one_lane_results(monkeypatch, dtype):
    from tinygen.kernels import lanes

    x, gy = _random((3, 5, 67), dtype, seed=2), _random((3, 5, 67), dtype, seed=3)
    gamma, beta = _random((5,), dtype, seed=4), _random((5,), dtype, seed=5)

    def results():
        rectified = [fused.relu(x), fused.leaky_relu(x, 0.2)]
        rectified.append(fused.leaky_relu_backward(x, gy, 0.2))
        y, xhat, mean, invstd, var = fused.batch_norm(x, gamma, beta, 1e-5)
        gx, ggamma, gbeta = fused.batch_norm_backward(gy, xhat, gamma, invstd, need_gx=True)
        return rectified + [y, xhat, mean, invstd, var, gx, ggamma, gbeta]

    one = results()
    monkeypatch.setattr(lanes, "RANGE_MIN_ELEMENTS", 1)
    with lanes.threads(2):
        split = results()  # flat halves for the rectifiers, channels 0-1 and 2-4 for the norm
    for a, b in zip(one, split):
        np.testing.assert_array_equal(a, b)


def test_leaky_relu_kernels_read_strided_inputs(monkeypatch):
    x = _random((4, 6), np.float32).T  # not C-contiguous
    gy = _random((6, 4), np.float32, seed=1)
    y, y_ref = _both(monkeypatch, fused.leaky_relu, x, 0.2)
    gx, gx_ref = _both(monkeypatch, fused.leaky_relu_backward, x, gy, 0.2)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(gx, gx_ref, rtol=TOLERANCE[np.float32])


@st.composite
def batch_norm_inputs(draw):
    N = draw(st.integers(1, 4))
    C = draw(st.integers(1, 5))
    trailing = draw(st.lists(st.integers(1, 6), min_size=0, max_size=2))
    shape = (max(N, 2 if not trailing else 1), C, *trailing)
    return shape, draw(dtypes), draw(st.integers(0, 99))


@given(batch_norm_inputs())
@SETTINGS
def test_batch_norm_kernels_equal_the_array_formulas(case):
    shape, dtype, seed = case
    C = shape[1]
    x = _random(shape, dtype, seed, loc=0.5)
    gamma, beta = _random(C, dtype, seed + 1), _random(C, dtype, seed + 2)
    gy = _random(shape, dtype, seed + 3)
    with pytest.MonkeyPatch.context() as patch:
        out, out_ref = _both(patch, fused.batch_norm, x, gamma, beta, 1e-5)
        _, xhat, _, invstd, _ = out
        grads, grads_ref = _both(patch, fused.batch_norm_backward, gy, xhat, gamma, invstd)
    for name, a, b in zip(("y", "xhat", "mean", "invstd", "var"), out, out_ref):
        assert a.shape == b.shape and a.dtype == dtype, name
        np.testing.assert_allclose(
            a, b, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype], err_msg=name
        )
    for name, a, b in zip(("gx", "ggamma", "gbeta"), grads, grads_ref):
        assert a.shape == b.shape and a.dtype == dtype, name
        np.testing.assert_allclose(
            a, b, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype], err_msg=name
        )


def test_batch_norm_backward_without_the_input_gradient(monkeypatch):
    x = _random((3, 2, 4), np.float64)
    _, xhat, _, invstd, _ = fused.batch_norm(x, np.ones(2), np.zeros(2), 1e-5)
    gy = _random((3, 2, 4), np.float64, seed=1)
    (gx, ggamma, gbeta), (_, ggamma_ref, gbeta_ref) = _both(
        monkeypatch, fused.batch_norm_backward, gy, xhat, np.ones(2), invstd, need_gx=False
    )
    assert gx is None
    np.testing.assert_allclose(ggamma, ggamma_ref, rtol=1e-12)
    np.testing.assert_allclose(gbeta, gbeta_ref, rtol=1e-12)


def test_batch_norm_statistics_survive_a_large_mean():
    # float32 values 1000 + N(0, 1): the sum of squares minus the squared sum would lose
    # the variance to cancellation; centred values in float64 keep it.
    x = _random((64, 3, 7, 7), np.float32, loc=1000.0)
    _, xhat, mean, invstd, var = cpu.batch_norm(
        x, np.ones(3, np.float32), np.zeros(3, np.float32), 1e-5
    )
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(var, exact.var(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(xhat.std(axis=(0, 2, 3)), 1.0, rtol=1e-4)


def test_the_reference_setting_switches_the_kernels_off(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu, "leaky_relu", lambda *args: calls.append(1))
    x = _random((5,), np.float32)
    fused.leaky_relu(x, 0.1)
    assert calls == [1]
    monkeypatch.setenv("TINYGEN_KERNELS", "reference")
    np.testing.assert_array_equal(
        fused.leaky_relu(x, 0.1), np.where(x > 0, x, np.float32(0.1) * x)
    )
    assert calls == [1]

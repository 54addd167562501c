"""Tests of tinygen/nn/init.py: each initializer draws from the distribution its formula says.

What they prove:
- uniform_, normal_, kaiming_uniform_, kaiming_normal_, xavier_uniform_ and
  xavier_normal_ give samples whose mean and variance match the formulas
  within sampling error (5 standard errors, on tens of thousands of samples),
  and the uniform ones stay inside their bound;
- fan_in / fan_out and calculate_gain follow PyTorch's definitions;
- constant_, zeros_, ones_ fill exactly; every initializer writes in place,
  keeps the dtype, returns the tensor, and draws from the seeded generator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygen as tg
from tinygen.nn import Parameter, init


def weight(*shape: int, dtype=np.float64) -> Parameter:
    return Parameter(np.zeros(shape, dtype=dtype))


def assert_moments(values: np.ndarray, mean: float, var: float, kurtosis: float) -> None:
    """Sample mean and variance within 5 standard errors of the given moments.

    The standard error of the mean is sqrt(var / n); that of the sample
    variance sqrt(var^2 (kurtosis - 1) / n), with kurtosis = E[(x - mean)^4] / var^2
    (3 for a normal, 9/5 for a uniform).
    """
    values = values.astype(np.float64).ravel()
    n = values.size
    assert abs(values.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(values.var() - var) < 5 * math.sqrt(var**2 * (kurtosis - 1) / n)


NORMAL_KURTOSIS, UNIFORM_KURTOSIS = 3.0, 9.0 / 5.0


def test_uniform_and_normal_match_their_moments():
    tg.manual_seed(0)
    w = init.uniform_(weight(200, 200), -0.5, 1.5)
    assert w.numpy().min() >= -0.5 and w.numpy().max() < 1.5
    assert_moments(w.numpy(), 0.5, 2.0**2 / 12, UNIFORM_KURTOSIS)
    w = init.normal_(weight(200, 200), 1.0, 0.02)
    assert_moments(w.numpy(), 1.0, 0.02**2, NORMAL_KURTOSIS)


@pytest.mark.parametrize(
    "shape, fan_in, fan_out",
    [((30, 20), 20, 30), ((8, 4, 3, 5), 60, 120), ((4, 8, 2, 2), 32, 16), ((5, 7, 3), 21, 15)],
)
def test_fans_follow_pytorch(shape, fan_in, fan_out):
    assert init.fan_in_and_fan_out(weight(*shape)) == (fan_in, fan_out)


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.fan_in_and_fan_out(weight(5))


def test_calculate_gain_values():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("a, nonlinearity", [(0.0, "relu"), (0.2, "leaky_relu"), (0, "tanh")])
def test_kaiming_initializers_match_their_formulas(mode, a, nonlinearity):
    tg.manual_seed(1)
    shape = (64, 32, 3, 3)
    fan = 32 * 9 if mode == "fan_in" else 64 * 9
    std = init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    w = init.kaiming_uniform_(weight(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    assert np.abs(w.numpy()).max() <= math.sqrt(3) * std
    assert_moments(w.numpy(), 0.0, std**2, UNIFORM_KURTOSIS)
    w = init.kaiming_normal_(weight(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    assert_moments(w.numpy(), 0.0, std**2, NORMAL_KURTOSIS)


def test_kaiming_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be"):
        init.kaiming_uniform_(weight(3, 3), mode="fan_avg")


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier_initializers_match_their_formulas(gain):
    tg.manual_seed(2)
    shape = (50, 30, 2, 2)
    std = gain * math.sqrt(2.0 / (30 * 4 + 50 * 4))
    w = init.xavier_uniform_(weight(*shape), gain=gain)
    assert np.abs(w.numpy()).max() <= math.sqrt(3) * std
    assert_moments(w.numpy(), 0.0, std**2, UNIFORM_KURTOSIS)
    w = init.xavier_normal_(weight(*shape), gain=gain)
    assert_moments(w.numpy(), 0.0, std**2, NORMAL_KURTOSIS)


def test_constant_fills_work_in_place_and_keep_dtype():
    w = weight(3, 4, dtype=np.float32)
    data = w.data
    assert init.constant_(w, 0.25) is w and w.data is data
    np.testing.assert_array_equal(w.numpy(), 0.25)
    np.testing.assert_array_equal(init.ones_(w).numpy(), 1.0)
    np.testing.assert_array_equal(init.zeros_(w).numpy(), 0.0)
    init.normal_(w)
    assert w.dtype == np.float32 and w.data is data


def test_initializers_draw_from_the_seeded_generator():
    tg.manual_seed(4)
    a = init.kaiming_uniform_(weight(5, 5)).numpy().copy()
    tg.manual_seed(4)
    b = init.kaiming_uniform_(weight(5, 5)).numpy().copy()
    np.testing.assert_array_equal(a, b)


def test_bad_distribution_arguments_raise():
    with pytest.raises(ValueError, match="must not exceed"):
        init.uniform_(weight(2, 2), 1.0, 0.0)
    with pytest.raises(ValueError, match="std must be non-negative"):
        init.normal_(weight(2, 2), 0.0, -1.0)

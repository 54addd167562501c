"""Tests of tinygen/nn/layers.py: every layer's gradients, options, statistics and printout.

What they prove:
- gradcheck (float64, central differences) of every layer with respect to
  its input and each of its parameters, over Hypothesis-drawn shapes and
  options: Linear, Conv2d (stride, padding, dilation, groups), ConvTranspose2d
  (also with output_size), BatchNorm1d/2d in training and eval mode (and the
  second derivative in training mode), the activations, Flatten, Unflatten,
  Dropout with a fixed mask;
- BatchNorm's running statistics follow their formula (unbiased variance,
  momentum, the cumulative average when momentum=None), eval mode uses them,
  track_running_stats=False always uses the batch;
- Dropout keeps a fraction 1 - p of the elements (within sampling error),
  scales them by 1 / (1 - p), keeps the mean, and is the identity in eval mode;
- the default initialization lies within PyTorch's bounds with the variance
  of a uniform distribution on them;
- wrong inputs raise errors that name the layer, the expected and the actual.

Inputs keep away from kinks: activations see values at least 0.1 from 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygen as tg
from tinygen import backend, gradcheck, gradgradcheck, nn
from tinygen.nn import functional_call

seeds = st.integers(0, 2**32 - 1)


def rng_for(seed: int) -> np.random.Generator:
    """A generator for test data whose stream differs from gradcheck's own (seeded 0): with
    the same stream, the upstream gradient would equal x, a degenerate direction for
    BatchNorm (its input gradient along xhat is zero)."""
    return np.random.default_rng([seed, 2026])


def array(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape)


def away_from_zero(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values with |v| in [0.1, 2]: no element sits on the kink of ReLU or LeakyReLU."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 2.0, size=shape)


def check_layer(layer: nn.Module, x: np.ndarray, second_order: bool = False) -> None:
    """gradcheck the layer with respect to its input and every parameter, in float64."""
    layer.double()
    names = [name for name, _ in layer.named_parameters()]

    def fn(x, *params):
        return functional_call(layer, dict(zip(names, params)), x)

    inputs = [tg.Tensor(x, requires_grad=True)]
    inputs += [tg.Tensor(p.data.copy(), requires_grad=True) for p in layer.parameters()]
    gradcheck(fn, inputs)
    if second_order:
        gradgradcheck(fn, inputs)


# ---------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------


@given(
    seed=seeds,
    batch=st.sampled_from([(), (1,), (3,), (2, 3)]),
    n_in=st.integers(1, 4),
    n_out=st.integers(1, 4),
    bias=st.booleans(),
)
def test_linear_gradcheck_input_weight_bias(seed, batch, n_in, n_out, bias):
    rng = rng_for(seed)
    tg.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias)
    check_layer(layer, array(rng, *batch, n_in))


def test_linear_output_shape_and_error_names_the_features():
    layer = nn.Linear(3, 5)
    assert layer(tg.randn(2, 4, 3)).shape == (2, 4, 5)
    with pytest.raises(ValueError, match="input has 4 features.*weight expects 3"):
        layer(tg.randn(2, 4))


# ---------------------------------------------------------------------------
# Convolutions (tinygen.ops.conv does the arithmetic; here: the layer's wiring)
# ---------------------------------------------------------------------------


@settings(max_examples=20)
@given(
    seed=seeds,
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
    kernel=st.sampled_from([1, 2, 3, (2, 3)]),
)
def test_conv2d_gradcheck_input_weight_bias(seed, stride, padding, dilation, groups, bias, kernel):
    rng = rng_for(seed)
    tg.manual_seed(seed)
    layer = nn.Conv2d(2, 2, kernel, stride, padding, dilation, groups, bias)
    check_layer(layer, array(rng, 2, 2, 5, 6))


@settings(max_examples=20)
@given(
    seed=seeds,
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
    kernel=st.sampled_from([2, 3, (3, 2)]),
)
def test_conv_transpose2d_gradcheck_input_weight_bias(seed, stride, padding, groups, bias, kernel):
    rng = rng_for(seed)
    tg.manual_seed(seed)
    output_padding = stride - 1
    layer = nn.ConvTranspose2d(2, 4, kernel, stride, padding, output_padding, groups, bias)
    check_layer(layer, array(rng, 2, 2, 3, 4))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Linear(3, 2), (2, 3)),
        (lambda: nn.Conv2d(2, 2, 3, stride=2, padding=1), (1, 2, 4, 4)),
        (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1), (1, 2, 2, 3)),
    ],
)
def test_linear_and_conv_layers_second_derivative(make, shape):
    """Gradients of gradients (a WGAN-GP gradient penalty needs them) through the layers."""
    tg.manual_seed(0)
    check_layer(make(), array(rng_for(1), *shape), second_order=True)


def test_conv_transpose2d_output_size_picks_the_output_padding():
    layer = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1)
    x = tg.randn(1, 3, 7, 7)
    assert layer(x).shape == (1, 2, 14, 14)
    assert layer(x, output_size=(15, 15)).shape == (1, 2, 15, 15)
    rng = rng_for(0)
    layer.double()

    def fn(x, w, b):
        values = {"weight": w, "bias": b}
        return functional_call(layer, values, x, output_size=(7, 6))

    inputs = [array(rng, 1, 3, 3, 3)] + [p.data.copy() for p in layer.parameters()]
    gradcheck(fn, [tg.Tensor(a, requires_grad=True) for a in inputs])


def test_conv_layers_weight_shapes_match_pytorch():
    assert nn.Conv2d(4, 6, (3, 5), groups=2).weight.shape == (6, 2, 3, 5)
    assert nn.ConvTranspose2d(4, 6, 3, groups=2).weight.shape == (4, 3, 3, 3)
    assert nn.Conv2d(4, 6, 3, bias=False).bias is None


def test_conv_layers_reject_bad_options():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(NotImplementedError, match="padding_mode"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(NotImplementedError, match="'same'"):
        nn.Conv2d(3, 4, 3, padding="same")
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv2d(3, 4, (1, 2, 3))


def test_conv_reprs_match_pytorch():
    assert repr(nn.Conv2d(1, 64, 4, 2, 1, bias=False)) == (
        "Conv2d(1, 64, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)"
    )
    assert repr(nn.ConvTranspose2d(64, 128, 7, 1, 0, bias=False)) == (
        "ConvTranspose2d(64, 128, kernel_size=(7, 7), stride=(1, 1), bias=False)"
    )
    assert repr(nn.ConvTranspose2d(4, 2, 3, 2, 1, 1, groups=2, dilation=2)) == (
        "ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
        "dilation=(2, 2), output_padding=(1, 1), groups=2)"
    )


# ---------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------

bn_shapes = st.sampled_from(
    [
        (nn.BatchNorm1d, (4, 3)),
        (nn.BatchNorm1d, (2, 3, 4)),
        (nn.BatchNorm2d, (2, 3, 2, 3)),
        (nn.BatchNorm2d, (3, 2, 1, 1)),
    ]
)


AFFINE_OPTIONS = {
    "scale and shift": {"affine": True},
    "scale only": {"affine": True, "bias": False},
    "none": {"affine": False},
}


@settings(max_examples=30)
@given(
    seed=seeds,
    kind_shape=bn_shapes,
    affine=st.sampled_from(sorted(AFFINE_OPTIONS)),
    training=st.booleans(),
)
def test_batchnorm_gradcheck_train_and_eval(seed, kind_shape, affine, training):
    kind, shape = kind_shape
    rng = rng_for(seed)
    layer = kind(shape[1], **AFFINE_OPTIONS[affine]).double()
    if layer.weight is not None:  # move gamma and beta away from 1 and 0 so that they matter
        layer.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(shape[1])
    layer.running_mean.data[...] = rng.standard_normal(shape[1])
    layer.running_var.data[...] = rng.uniform(0.5, 2.0, shape[1])
    layer.train(training)
    if layer.weight is not None:
        check_layer(layer, array(rng, *shape))
    else:
        gradcheck(layer, [tg.Tensor(array(rng, *shape), requires_grad=True)])


@settings(max_examples=10)
@given(seed=seeds, kind_shape=bn_shapes)
def test_batchnorm_training_second_derivative(seed, kind_shape):
    kind, shape = kind_shape
    rng = rng_for(seed)
    layer = kind(shape[1])
    layer.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    check_layer(layer, array(rng, *shape), second_order=True)


def test_batchnorm_training_normalizes_each_channel():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (8, 3, 4, 4))
    y = nn.BatchNorm2d(3).double()(tg.Tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1 - 1e-5 / x.var(axis=(0, 2, 3)), rtol=1e-4)


def test_batchnorm_running_statistics_follow_the_momentum_formula():
    rng = np.random.default_rng(2)
    layer = nn.BatchNorm2d(3, momentum=0.3).double()
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(4):
        x = rng.normal(1.0, 3.0, (5, 3, 2, 2))
        layer(tg.Tensor(x))
        M = 5 * 2 * 2
        mean = 0.7 * mean + 0.3 * x.mean(axis=(0, 2, 3))
        var = 0.7 * var + 0.3 * x.var(axis=(0, 2, 3)) * M / (M - 1)  # unbiased
    np.testing.assert_allclose(layer.running_mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var.numpy(), var, rtol=1e-12)
    assert layer.num_batches_tracked.item() == 4


def test_batchnorm_momentum_none_keeps_a_cumulative_average():
    rng = np.random.default_rng(3)
    layer = nn.BatchNorm1d(2, momentum=None).double()
    batches = [rng.normal(size=(6, 2)) for _ in range(3)]
    for x in batches:
        layer(tg.Tensor(x))
    np.testing.assert_allclose(
        layer.running_mean.numpy(), np.mean([b.mean(axis=0) for b in batches], axis=0)
    )
    np.testing.assert_allclose(
        layer.running_var.numpy(), np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0)
    )


def test_batchnorm_eval_uses_running_statistics_and_changes_nothing():
    layer = nn.BatchNorm1d(2).double()
    layer.running_mean.data[...] = [1.0, -1.0]
    layer.running_var.data[...] = [4.0, 0.25]
    layer.weight.data[...] = [2.0, 1.0]
    layer.bias.data[...] = [0.5, 0.0]
    layer.eval()
    y = layer(tg.Tensor(np.array([[3.0, 0.0]]))).numpy()
    expected = [(3 - 1) / math.sqrt(4 + 1e-5) * 2 + 0.5, (0 + 1) / math.sqrt(0.25 + 1e-5)]
    np.testing.assert_allclose(y, [expected], rtol=1e-12)
    assert layer.num_batches_tracked.item() == 0


def test_batchnorm_without_running_stats_uses_the_batch_in_eval_mode():
    layer = nn.BatchNorm1d(2, track_running_stats=False).double().eval()
    assert list(layer.state_dict()) == ["weight", "bias"]
    y = layer(tg.Tensor(np.array([[1.0, 2.0], [3.0, 6.0]]))).numpy()
    np.testing.assert_allclose(np.abs(y), 1.0, rtol=1e-4)


def test_batchnorm_errors_name_the_problem():
    with pytest.raises(ValueError, match="3 channels .* built for 4"):
        nn.BatchNorm2d(4)(tg.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match="4-D input"):
        nn.BatchNorm2d(3)(tg.randn(2, 3))
    layer = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(tg.randn(1, 3))
    assert layer.num_batches_tracked.item() == 0


def test_batchnorm_keys_and_repr_match_pytorch():
    layer = nn.BatchNorm2d(8)
    assert list(layer.state_dict()) == [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    assert repr(layer) == (
        "BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"
    )


# ---------------------------------------------------------------------------
# Activations, Flatten, Unflatten
# ---------------------------------------------------------------------------


@given(
    seed=seeds,
    layer=st.sampled_from(
        [nn.ReLU(), nn.LeakyReLU(), nn.LeakyReLU(0.2), nn.Tanh(), nn.Sigmoid(), nn.ReLU(True)]
    ),
    shape=st.sampled_from([(3,), (2, 3), (2, 1, 2, 2)]),
)
def test_activation_layers_gradcheck(seed, layer, shape):
    rng = rng_for(seed)
    gradcheck(layer, [tg.Tensor(away_from_zero(rng, *shape), requires_grad=True)])


def test_activation_reprs_match_pytorch():
    assert repr(nn.ReLU()) == "ReLU()"
    assert repr(nn.ReLU(True)) == "ReLU(inplace=True)"
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nn.Tanh()) == "Tanh()" and repr(nn.Sigmoid()) == "Sigmoid()"


@given(seed=seeds, start=st.integers(0, 2), end=st.sampled_from([-1, 2, 3]))
def test_flatten_gradcheck_and_shape(seed, start, end):
    rng = rng_for(seed)
    layer = nn.Flatten(start, end)
    x = array(rng, 2, 3, 2, 2)
    expected = np.reshape(x, x.shape[:start] + (-1,) + x.shape[(end % 4) + 1 :]).shape
    assert layer(tg.Tensor(x)).shape == expected
    gradcheck(layer, [tg.Tensor(x, requires_grad=True)])


def test_unflatten_inverts_flatten_and_checks_its_size():
    rng = rng_for(0)
    x = tg.Tensor(array(rng, 2, 12), requires_grad=True)
    layer = nn.Unflatten(1, (3, 2, 2))
    assert layer(x).shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(nn.Flatten()(layer(x)).numpy(), x.numpy())
    gradcheck(layer, [x])
    assert repr(layer) == "Unflatten(dim=1, unflattened_size=(3, 2, 2))"
    with pytest.raises(ValueError, match="holds 12"):
        nn.Unflatten(1, (3, 4))(tg.randn(2, 10))


# ---------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------


def test_dropout_gradcheck_with_a_fixed_mask():
    rng = rng_for(0)
    layer = nn.Dropout(0.3)

    def fn(x):
        tg.manual_seed(5)  # the same mask on every call
        return layer(x)

    gradcheck(fn, [tg.Tensor(array(rng, 4, 5), requires_grad=True)])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_a_fraction_one_minus_p_and_scales_by_its_inverse(p):
    tg.manual_seed(0)
    n = 40_000
    y = nn.Dropout(p)(tg.ones(n, dtype=np.float64)).numpy()
    kept = y != 0
    # the kept count is Binomial(n, 1 - p): allow 5 standard deviations
    assert abs(kept.sum() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-12)
    # E[y] = x: the mean of y is 1 within 5 standard errors (sd of y is sqrt(p / (1 - p)))
    assert abs(y.mean() - 1) < 5 * math.sqrt(p / (1 - p) / n)


def test_dropout_masks_come_from_the_seeded_generator():
    tg.manual_seed(3)
    a = nn.Dropout(0.5)(tg.ones(100)).numpy()
    tg.manual_seed(3)
    b = nn.Dropout(0.5)(tg.ones(100)).numpy()
    c = nn.Dropout(0.5)(tg.ones(100)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_dropout_is_the_identity_in_eval_mode_and_at_the_extremes():
    x = tg.randn(10)
    layer = nn.Dropout(0.5).eval()
    assert layer(x) is x
    assert nn.Dropout(0.0)(x) is x
    assert not nn.Dropout(1.0)(x).numpy().any()
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)


# ---------------------------------------------------------------------------
# Default initialization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda: nn.Linear(200, 300), 200),
        (lambda: nn.Conv2d(16, 64, 3), 16 * 9),
        (lambda: nn.Conv2d(16, 64, 3, groups=4), 4 * 9),
        (lambda: nn.ConvTranspose2d(64, 32, 4), 32 * 16),  # PyTorch counts weight.shape[1]
    ],
)
def test_default_initialization_is_uniform_within_one_over_sqrt_fan_in(make, fan_in):
    tg.manual_seed(0)
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    for param in (layer.weight, layer.bias):
        values = param.numpy().astype(np.float64).ravel()
        assert np.abs(values).max() <= bound
        # U(-b, b) has variance b^2 / 3; the sample variance's sd is about b^2 * 0.3 / sqrt(n)
        n = values.size
        assert abs(values.var() - bound**2 / 3) < 5 * bound**2 * 0.3 / math.sqrt(n)


# ---------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------


@pytest.mark.gpu
def test_layers_on_the_gpu_match_the_cpu():
    if not backend.gpu_available():
        pytest.skip(f"no GPU: {backend.cupy_unavailable_reason()}")

    def build():
        return nn.Sequential(
            nn.ConvTranspose2d(6, 4, 4, 2, 1, bias=False),  # (N, 4, 6, 6)
            nn.BatchNorm2d(4),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4, 2, 3, 1, 1),  # (N, 2, 6, 6)
            nn.Flatten(),
            nn.Linear(72, 3),
            nn.BatchNorm1d(3),
            nn.Sigmoid(),
        ).double()

    tg.manual_seed(0)
    cpu, gpu = build(), build()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    x = rng_for(0).standard_normal((4, 6, 3, 3))
    for mode in (True, False):
        cpu.train(mode)
        gpu.train(mode)
        xc = tg.Tensor(x, requires_grad=True)
        xg = tg.Tensor(x, requires_grad=True).to("cuda")
        yc, yg = cpu(xc), gpu(xg)
        assert yg.device == "cuda"
        np.testing.assert_allclose(yg.numpy(), yc.numpy(), rtol=1e-10, atol=1e-12)
        yc.sum().backward()
        yg.sum().backward()
        for (name, pc), pg in zip(cpu.named_parameters(), gpu.parameters()):
            np.testing.assert_allclose(pg.grad.numpy(), pc.grad.numpy(), rtol=1e-9, err_msg=name)
        cpu.zero_grad()
        gpu.zero_grad()
    for (name, bc), bg in zip(cpu.named_buffers(), gpu.buffers()):
        np.testing.assert_allclose(bg.numpy(), bc.numpy(), rtol=1e-12, err_msg=name)
    tg.manual_seed(1)
    kept = nn.Dropout(0.5)(tg.ones(1000, device="cuda"))
    assert kept.device == "cuda" and 300 < int((kept.numpy() != 0).sum()) < 700

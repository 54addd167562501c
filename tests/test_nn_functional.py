"""Tests of tinygen/nn/functional.py and tinygen/nn/losses.py: losses, batch_norm, softmax.

What they prove:
- gradcheck (float64) of every loss with respect to its input and target,
  under each reduction, over Hypothesis-drawn shapes; gradgradcheck of the
  smooth ones;
- each loss equals its defining formula computed with NumPy;
- BCE with logits is finite, and accurate to round-off, at logits of +-100 and +-1e4, where
  the naive formula gives inf or nan; BCE on probabilities is clamped at a
  loss of 100 for p = 0 and 1, with finite gradients;
- gaussian_kl equals the closed form and agrees with a Monte-Carlo estimate of
  E_q[log q(z) - log p(z)] within sampling error;
- functional batch_norm: gradcheck and gradgradcheck in training mode,
  gradcheck in eval mode, running statistics with the unbiased variance;
- bad arguments raise errors that name the function and the problem.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygen as tg
import tinygen.nn.functional as F  # noqa: N812  (the name PyTorch users know)
from tinygen import gradcheck, gradgradcheck

seeds = st.integers(0, 2**32 - 1)
shapes = st.sampled_from([(1,), (5,), (2, 3), (2, 1, 3), (3, 2, 2)])
reductions = st.sampled_from(["mean", "sum", "none"])


def rng_for(seed: int) -> np.random.Generator:
    """Test data from a stream different from gradcheck's own upstream gradients."""
    return np.random.default_rng([seed, 7])


def leaf(values: np.ndarray) -> tg.Tensor:
    return tg.Tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


# ---------------------------------------------------------------------------
# Binary cross-entropy
# ---------------------------------------------------------------------------


@given(seed=seeds, shape=shapes, reduction=reductions, weighted=st.booleans())
def test_bce_with_logits_gradcheck_logits_and_targets(seed, shape, reduction, weighted):
    rng = rng_for(seed)
    x, z = rng.normal(0, 3, shape), rng.uniform(0, 1, shape)
    weight = rng.uniform(0.5, 2, shape) if weighted else None

    def fn(x, z):
        return F.binary_cross_entropy_with_logits(x, z, weight=weight, reduction=reduction)

    gradcheck(fn, [leaf(x), leaf(z)])
    gradgradcheck(fn, [leaf(x), leaf(z)])


def test_bce_with_logits_equals_the_definition_at_moderate_logits():
    rng = rng_for(0)
    x, z = rng.normal(0, 3, (4, 5)), rng.uniform(0, 1, (4, 5))
    p = 1 / (1 + np.exp(-x))
    expected = -(z * np.log(p) + (1 - z) * np.log(1 - p))
    loss = F.binary_cross_entropy_with_logits(tg.Tensor(x), tg.Tensor(z), reduction="none")
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("logit", [100.0, -100.0, 1e4, -1e4, 1e30, -1e30])
def test_bce_with_logits_is_finite_and_accurate_at_extreme_logits(logit, dtype):
    x = tg.Tensor(np.array([logit, logit, logit], dtype=dtype), requires_grad=True)
    z = tg.Tensor(np.array([0.0, 1.0, 0.5], dtype=dtype))
    loss = F.binary_cross_entropy_with_logits(x, z, reduction="none")
    # max(x, 0) - x z + log(1 + e^-|x|), the last term e^-100 or less here
    targets = np.array([0.0, 1.0, 0.5])
    expected = np.maximum(logit, 0) - logit * targets + np.log1p(np.exp(-abs(logit)))
    assert np.all(np.isfinite(loss.numpy()))
    # exact up to the rounding of numbers as large as |x| (x - x z cancels when z = 1)
    rounding = 4 * np.finfo(dtype).eps * abs(logit)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6, atol=rounding)
    loss.sum().backward()
    # gradient sigmoid(x) - z, with sigmoid(x) = 0 or 1 here
    gradient = float(logit > 0) - np.array([0.0, 1.0, 0.5])
    np.testing.assert_allclose(x.grad.numpy(), gradient, atol=1e-6)


def test_bce_with_logits_extreme_gradcheck():
    x = leaf([100.0, -100.0, 30.0, -30.0])
    z = leaf([0.2, 0.7, 1.0, 0.0])
    gradcheck(lambda x, z: F.binary_cross_entropy_with_logits(x, z, reduction="sum"), [x, z])


@given(seed=seeds, shape=shapes, reduction=reductions)
def test_bce_on_probabilities_gradcheck(seed, shape, reduction):
    rng = rng_for(seed)
    p, z = rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape)

    def fn(p, z):
        return F.binary_cross_entropy(p, z, reduction=reduction)

    gradcheck(fn, [leaf(p), leaf(z)])
    gradgradcheck(fn, [leaf(p), leaf(z)])


def test_bce_on_probabilities_equals_the_definition():
    rng = rng_for(1)
    p, z = rng.uniform(0.01, 0.99, (3, 4)), rng.uniform(0, 1, (3, 4))
    expected = -(z * np.log(p) + (1 - z) * np.log(1 - p)).mean()
    np.testing.assert_allclose(F.binary_cross_entropy(tg.Tensor(p), tg.Tensor(z)).item(), expected)


def test_bce_on_probabilities_clamps_the_log_at_minus_100():
    p = leaf([0.0, 1.0, 0.0, 1.0])
    z = tg.Tensor(np.array([1.0, 0.0, 0.0, 1.0]))
    loss = F.binary_cross_entropy(p, z, reduction="none")
    np.testing.assert_array_equal(loss.numpy(), [100.0, 100.0, 0.0, 0.0])
    loss.sum().backward()
    assert np.all(np.isfinite(p.grad.numpy()))
    # d/dp = (p - z) / max(p (1 - p), 1e-12)
    np.testing.assert_allclose(p.grad.numpy(), [-1e12, 1e12, 0.0, 0.0], rtol=1e-8)


def test_bce_weight_scales_each_element():
    x, z = tg.Tensor(np.array([0.3, -1.2])), tg.Tensor(np.array([1.0, 0.0]))
    w = np.array([2.0, 0.5])
    plain = F.binary_cross_entropy_with_logits(x, z, reduction="none").numpy()
    weighted = F.binary_cross_entropy_with_logits(x, z, weight=w, reduction="none").numpy()
    np.testing.assert_allclose(weighted, plain * w)


def test_bce_rejects_bad_arguments():
    x = tg.Tensor(np.array([0.5, 2.0]))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*with_logits"):
        F.binary_cross_entropy(x, tg.zeros(2, dtype=np.float64))
    with pytest.raises(
        ValueError, match="target shape \\(3,\\) differs from input shape \\(2,\\)"
    ):
        F.binary_cross_entropy_with_logits(x, tg.zeros(3, dtype=np.float64))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.binary_cross_entropy_with_logits(x, x, reduction="average")
    with pytest.raises(NotImplementedError, match="pos_weight"):
        F.binary_cross_entropy_with_logits(x, x, pos_weight=x)


# ---------------------------------------------------------------------------
# MSE and L1
# ---------------------------------------------------------------------------


@given(seed=seeds, shape=shapes, reduction=reductions)
def test_mse_loss_gradcheck_and_formula(seed, shape, reduction):
    rng = rng_for(seed)
    x, z = rng.normal(size=shape), rng.normal(size=shape)

    def fn(x, z):
        return F.mse_loss(x, z, reduction=reduction)

    gradcheck(fn, [leaf(x), leaf(z)])
    gradgradcheck(fn, [leaf(x), leaf(z)])
    expected = {"none": (x - z) ** 2, "mean": ((x - z) ** 2).mean(), "sum": ((x - z) ** 2).sum()}
    np.testing.assert_allclose(fn(tg.Tensor(x), tg.Tensor(z)).numpy(), expected[reduction])


@given(seed=seeds, shape=shapes, reduction=reductions)
def test_l1_loss_gradcheck_away_from_the_kink(seed, shape, reduction):
    rng = rng_for(seed)
    z = rng.normal(size=shape)
    x = z + rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 1.0, shape)  # |x - z| >= 0.1

    def fn(x, z):
        return F.l1_loss(x, z, reduction=reduction)

    gradcheck(fn, [leaf(x), leaf(z)])
    expected = {"none": abs(x - z), "mean": abs(x - z).mean(), "sum": abs(x - z).sum()}
    np.testing.assert_allclose(fn(tg.Tensor(x), tg.Tensor(z)).numpy(), expected[reduction])


# ---------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------


def numpy_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@given(
    seed=seeds,
    shape=st.sampled_from([(4, 3), (2, 5), (2, 3, 2), (2, 3, 2, 2)]),
    reduction=reductions,
    weighted=st.booleans(),
)
def test_cross_entropy_gradcheck_and_formula(seed, shape, reduction, weighted):
    rng = rng_for(seed)
    x = rng.normal(0, 2, shape)
    C = shape[1]
    t = rng.integers(0, C, (shape[0], *shape[2:]))
    w = rng.uniform(0.5, 2, C) if weighted else None

    def fn(x):
        return F.cross_entropy(x, t, weight=w, reduction=reduction)

    gradcheck(fn, [leaf(x)])
    gradgradcheck(fn, [leaf(x)])

    logp = numpy_log_softmax(x, 1)
    picked = np.take_along_axis(logp, t[:, None], axis=1)[:, 0]  # (N, *)
    wt = w[t] if weighted else np.ones(t.shape)
    losses = -picked * wt
    expected = {"none": losses, "sum": losses.sum(), "mean": losses.sum() / wt.sum()}
    np.testing.assert_allclose(fn(tg.Tensor(x)).numpy(), expected[reduction], rtol=1e-12)


def test_cross_entropy_with_probability_targets_and_unbatched_input():
    rng = rng_for(3)
    x = rng.normal(size=(3, 4))
    q = rng.dirichlet(np.ones(4), size=3)
    expected = -(q * numpy_log_softmax(x, 1)).sum(axis=1).mean()
    np.testing.assert_allclose(F.cross_entropy(tg.Tensor(x), tg.Tensor(q)).item(), expected)
    gradcheck(lambda x, q: F.cross_entropy(x, q), [leaf(x), leaf(q)])
    single = F.cross_entropy(tg.Tensor(x[0]), np.array(2))
    np.testing.assert_allclose(single.item(), -numpy_log_softmax(x[0], 0)[2])


def test_cross_entropy_is_stable_for_huge_logits():
    x = tg.Tensor(np.array([[1e4, 0.0, -1e4]]), requires_grad=True)
    loss = F.cross_entropy(x, np.array([1]))
    np.testing.assert_allclose(loss.item(), 1e4)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1.0, -1.0, 0.0]], atol=1e-12)


def test_cross_entropy_rejects_bad_targets():
    x = tg.randn(2, 3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\].*3 classes"):
        F.cross_entropy(x, np.array([0, 3]))
    with pytest.raises(ValueError, match="target shape"):
        F.cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.nll_loss(x, np.array([0.0, 1.0]))


def test_softmax_and_log_softmax():
    rng = rng_for(4)
    x = rng.normal(size=(2, 5))
    np.testing.assert_allclose(F.log_softmax(tg.Tensor(x)).numpy(), numpy_log_softmax(x, -1))
    np.testing.assert_allclose(F.softmax(tg.Tensor(x), dim=0).numpy().sum(axis=0), 1.0)
    gradcheck(lambda x: F.softmax(x, dim=1), [leaf(x)])


# ---------------------------------------------------------------------------
# Gaussian KL
# ---------------------------------------------------------------------------


@given(
    seed=seeds, shape=st.sampled_from([(1, 1), (3, 2), (2, 4), (2, 2, 3)]), reduction=reductions
)
def test_gaussian_kl_gradcheck_and_closed_form(seed, shape, reduction):
    rng = rng_for(seed)
    mu, logvar = rng.normal(size=shape), rng.normal(0, 0.5, shape)

    def fn(mu, logvar):
        return F.gaussian_kl(mu, logvar, reduction=reduction)

    gradcheck(fn, [leaf(mu), leaf(logvar)])
    gradgradcheck(fn, [leaf(mu), leaf(logvar)])
    axes = tuple(range(1, len(shape)))
    per_sample = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(axis=axes)
    expected = {"none": per_sample, "mean": per_sample.mean(), "sum": per_sample.sum()}
    np.testing.assert_allclose(fn(tg.Tensor(mu), tg.Tensor(logvar)).numpy(), expected[reduction])


def test_gaussian_kl_is_zero_for_the_prior_and_positive_otherwise():
    zeros = tg.zeros(2, 3, dtype=np.float64)
    np.testing.assert_array_equal(F.gaussian_kl(zeros, zeros, reduction="none").numpy(), 0.0)
    rng = rng_for(5)
    kl = F.gaussian_kl(tg.Tensor(rng.normal(size=(50, 4))), tg.Tensor(rng.normal(size=(50, 4))))
    assert kl.item() > 0


def test_gaussian_kl_agrees_with_a_monte_carlo_estimate():
    """KL(q || p) = E_q[log q(z) - log p(z)], estimated from samples of q."""
    rng = rng_for(6)
    mu = np.array([[0.5, -1.0, 0.2]])
    logvar = np.array([[-0.3, 0.4, 0.0]])
    std = np.exp(0.5 * logvar)
    n = 200_000
    z = mu + std * rng.standard_normal((n, 3))
    log_q = (-0.5 * ((z - mu) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)
    log_p = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(1)
    samples = log_q - log_p
    estimate, standard_error = samples.mean(), samples.std() / math.sqrt(n)
    kl = F.gaussian_kl(tg.Tensor(mu), tg.Tensor(logvar)).item()
    assert abs(kl - estimate) < 5 * standard_error


def test_gaussian_kl_needs_a_batch_axis():
    with pytest.raises(ValueError, match="one row per sample"):
        F.gaussian_kl(tg.zeros(3), tg.zeros(3))


# ---------------------------------------------------------------------------
# batch_norm, linear, dropout
# ---------------------------------------------------------------------------


@settings(max_examples=25)
@given(seed=seeds, shape=st.sampled_from([(4, 2), (3, 2, 3), (2, 3, 2, 2)]))
def test_batch_norm_training_gradcheck_first_and_second_order(seed, shape):
    rng = rng_for(seed)
    C = shape[1]
    x, w, b = rng.normal(size=shape), rng.uniform(0.5, 1.5, C), rng.normal(size=C)

    def fn(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True, eps=1e-3)

    gradcheck(fn, [leaf(x), leaf(w), leaf(b)])
    gradgradcheck(fn, [leaf(x), leaf(w), leaf(b)])


@given(seed=seeds, shape=st.sampled_from([(4, 2), (3, 2, 3), (2, 3, 2, 2)]))
def test_batch_norm_eval_gradcheck(seed, shape):
    rng = rng_for(seed)
    C = shape[1]
    x, w, b = rng.normal(size=shape), rng.uniform(0.5, 1.5, C), rng.normal(size=C)
    mean, var = tg.Tensor(rng.normal(size=C)), tg.Tensor(rng.uniform(0.5, 2, C))

    def fn(x, w, b):
        return F.batch_norm(x, mean, var, w, b, training=False)

    gradcheck(fn, [leaf(x), leaf(w), leaf(b)])
    gradgradcheck(fn, [leaf(x), leaf(w), leaf(b)])


def test_batch_norm_updates_running_statistics_with_the_unbiased_variance():
    rng = rng_for(7)
    x = rng.normal(2.0, 3.0, (6, 2, 3))
    mean, var = tg.zeros(2, dtype=np.float64), tg.ones(2, dtype=np.float64)
    F.batch_norm(tg.Tensor(x), mean, var, training=True, momentum=0.25)
    np.testing.assert_allclose(mean.numpy(), 0.25 * x.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), 0.75 + 0.25 * x.var(axis=(0, 2), ddof=1), rtol=1e-12)


def test_batch_norm_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.batch_norm(tg.randn(4, 3), None, None, tg.ones(2), training=True)
    with pytest.raises(ValueError, match="needs running_mean"):
        F.batch_norm(tg.randn(4, 3), None, None, training=False)


@given(seed=seeds, bias=st.booleans())
def test_linear_gradcheck(seed, bias):
    rng = rng_for(seed)
    x, w, b = rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), rng.normal(size=2)
    if bias:
        gradcheck(F.linear, [leaf(x), leaf(w), leaf(b)])
    else:
        gradcheck(F.linear, [leaf(x), leaf(w)])
    expected = x @ w.T + (b if bias else 0)
    got = F.linear(tg.Tensor(x), tg.Tensor(w), tg.Tensor(b) if bias else None)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_functional_exports_the_convolutions_and_activations():
    for name in ("conv2d", "conv_transpose2d", "relu", "leaky_relu", "sigmoid", "tanh"):
        assert callable(getattr(F, name))
    x = tg.randn(1, 2, 5, 5)
    w = tg.randn(3, 2, 3, 3)
    assert F.conv2d(x, w, padding=1).shape == (1, 3, 5, 5)
    assert F.conv_transpose2d(tg.randn(1, 3, 5, 5), w, stride=2).shape == (1, 2, 11, 11)


def test_dropout_functional_obeys_training_flag():
    x = tg.randn(20)
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(x, -0.1)


@pytest.mark.parametrize(
    "loss",
    [
        F.binary_cross_entropy_with_logits,
        lambda x, z: F.binary_cross_entropy(F.sigmoid(x), z),
        F.mse_loss,
        F.l1_loss,
        lambda x, z: F.cross_entropy(x, z / z.sum(axis=1, keepdims=True)),
        lambda x, z: F.cross_entropy(x, np.array([0, 2]), weight=np.ones(3)),
        lambda x, z: F.gaussian_kl(x, z),
    ],
)
def test_losses_keep_the_input_dtype_for_float64_or_integer_targets(loss):
    x = tg.Tensor(np.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]], dtype=np.float32))
    assert loss(x, np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.5]])).dtype == np.float32
    assert loss(x, np.array([[1, 0, 1], [0, 1, 1]])).dtype == np.float32

"""Tests for tinygen.models: DCGAN-28 and ConvVAE-28, their init, their steps, their statistics."""

from __future__ import annotations

import numpy as np
import pytest

import tinygen as tg
from tinygen import nn, optim
from tinygen.data import load_dataset
from tinygen.models import (
    ConvVAE,
    Discriminator,
    Generator,
    build_dcgan,
    discriminator_step,
    gan_step,
    generator_step,
    gradient_norm,
    kl_weight_at,
    negative_elbo,
    reparameterize,
    sample_noise,
    vae_loss,
    vae_step,
)
from tinygen.models.vae import LOGVAR_MAX, LOGVAR_MIN
from tinygen.nn import functional as F


def small_gan(seed: int = 0, width: int = 8, latent: int = 8):
    tg.manual_seed(seed)
    G, D = build_dcgan(latent_dim=latent, width=width)
    opt_g = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    return G, D, opt_g, opt_d


def snapshot(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------


def test_dcgan_reference_shapes_and_ranges():
    tg.manual_seed(0)
    G, D = build_dcgan()
    z = sample_noise(5, 64)
    assert z.shape == (5, 64, 1, 1)
    with tg.no_grad():
        x = G(z)
        assert x.shape == (5, 1, 28, 28)
        assert np.abs(x.numpy()).max() <= 1.0  # tanh output
        assert D(x).shape == (5,)
        assert G(tg.randn(5, 64)).shape == (5, 1, 28, 28)  # (N, latent) is accepted too


def test_dcgan_reference_layers_have_no_bias_and_the_documented_sizes():
    G, D = Generator(), Discriminator()
    shapes = {k: v.shape for k, v in G.state_dict().items() if k.endswith("weight")}
    assert shapes["net.0.weight"] == (64, 128, 7, 7)
    assert shapes["net.3.weight"] == (128, 64, 4, 4)
    assert shapes["net.6.weight"] == (64, 1, 4, 4)
    shapes = {k: v.shape for k, v in D.state_dict().items() if k.endswith("weight")}
    assert shapes["net.0.weight"] == (64, 1, 4, 4)
    assert shapes["net.2.weight"] == (128, 64, 4, 4)
    assert shapes["net.5.weight"] == (1, 128, 7, 7)
    for module in (*G.modules(), *D.modules()):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            assert module.bias is None


def test_vae_reference_shapes():
    model = ConvVAE()
    keys = {k: v.shape for k, v in model.state_dict().items()}
    assert keys["encoder.5.weight"] == (32, 3136)
    assert keys["decoder_input.0.weight"] == (3136, 16)
    tg.manual_seed(0)
    logits, mu, logvar = model(tg.rand(3, 1, 28, 28))
    assert logits.shape == (3, 1, 28, 28)
    assert mu.shape == logvar.shape == (3, 16)


def test_models_accept_other_widths_latent_sizes_and_image_sizes():
    tg.manual_seed(0)
    G, D = build_dcgan(latent_dim=10, width=4, image_size=32)
    with tg.no_grad():
        x = G(sample_noise(2, 10))
        assert x.shape == (2, 1, 32, 32)
        assert D(x).shape == (2,)
    model = ConvVAE(latent_dim=3, width=4, image_size=16)
    logits, mu, _ = model(tg.rand(2, 1, 16, 16))
    assert logits.shape == (2, 1, 16, 16) and mu.shape == (2, 3)


def test_models_reject_bad_sizes_with_a_message():
    with pytest.raises(ValueError, match="multiple of 4"):
        Generator(image_size=30)
    with pytest.raises(ValueError, match="multiple of 4"):
        ConvVAE(image_size=30)
    with pytest.raises(ValueError, match=r"Generator: z must have shape \(N, 64, 1, 1\)"):
        Generator()(tg.randn(2, 32, 1, 1))


def test_dcgan_init_statistics():
    """Conv weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02), BatchNorm biases 0.

    The big layers hold 131,072 weights, so the sample mean and standard deviation sit
    within 5 standard errors (0.02 / sqrt(n), and about 0.02 / sqrt(2 n) for the std)."""
    tg.manual_seed(1)
    G, D = build_dcgan()
    for module in (*G.modules(), *D.modules()):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            w = module.weight.numpy().astype(np.float64)
            n = w.size
            assert abs(w.mean()) < 5 * 0.02 / np.sqrt(n)
            assert abs(w.std() - 0.02) < 5 * 0.02 / np.sqrt(2 * n)
        elif isinstance(module, nn.BatchNorm2d):
            w = module.weight.numpy().astype(np.float64)
            assert abs(w.mean() - 1.0) < 5 * 0.02 / np.sqrt(w.size)
            assert np.all(module.bias.numpy() == 0)


# ---------------------------------------------------------------------------
# The GAN step
# ---------------------------------------------------------------------------


def test_discriminator_step_sends_no_gradient_into_the_generator():
    G, D, _, opt_d = small_gan()
    real = tg.rand(6, 1, 28, 28) * 2 - 1
    fake = G(sample_noise(6, 8))  # attached to G's graph, as in gan_step
    before_d = snapshot(D)
    discriminator_step(D, opt_d, real, fake)
    for name, p in G.named_parameters():
        assert p.grad is None, f"the D step reached G's {name}"
    changed = [k for k, v in snapshot(D).items() if not np.array_equal(v, before_d[k])]
    assert any(k.endswith("weight") for k in changed)  # and D did learn


def test_generator_step_leaves_the_discriminator_parameters_unchanged():
    G, D, opt_g, _ = small_gan()
    fake = G(sample_noise(6, 8))
    params_d = {k: p.numpy().copy() for k, p in D.named_parameters()}
    params_g = {k: p.numpy().copy() for k, p in G.named_parameters()}
    generator_step(G, D, opt_g, fake)
    for k, p in D.named_parameters():
        np.testing.assert_array_equal(p.numpy(), params_d[k], err_msg=k)
    assert any(not np.array_equal(p.numpy(), params_g[k]) for k, p in G.named_parameters())


def test_generator_step_computes_no_discriminator_gradient_and_restores_its_flags():
    G, D, opt_g, _ = small_gan()
    frozen_by_user = next(iter(D.parameters()))
    frozen_by_user.requires_grad_(False)
    generator_step(G, D, opt_g, G(sample_noise(6, 8)))
    for name, p in D.named_parameters():
        assert p.grad is None, f"the G step computed a gradient for D's {name}"
        assert p.requires_grad == (p is not frozen_by_user), name
    assert all(p.grad is not None for p in G.parameters())  # the gradient went through D


def test_gradient_norm_is_the_norm_of_all_parameter_gradients():
    G, D, _, opt_d = small_gan()
    discriminator_step(D, opt_d, tg.rand(4, 1, 28, 28), G(sample_noise(4, 8)))
    grads = [p.grad.numpy().astype(np.float64).ravel() for p in D.parameters()]
    assert gradient_norm(D) == pytest.approx(np.linalg.norm(np.concatenate(grads)), rel=1e-6)
    assert gradient_norm(G) == 0.0  # no gradient reached G


def test_generator_loss_is_the_non_saturating_one():
    """loss_G = BCE(D(G(z)), 1) = mean softplus(-logit) = -mean log D(G(z))."""
    G, D, opt_g, _ = small_gan()
    fake = G(sample_noise(4, 8))
    with tg.no_grad():
        logits = D(fake).numpy().astype(np.float64)
    stats = generator_step(G, D, opt_g, fake)
    expected = np.mean(np.log1p(np.exp(-logits)))
    assert stats["loss_g"] == pytest.approx(expected, rel=1e-5)


def test_gan_step_reports_finite_statistics_in_range():
    G, D, opt_g, opt_d = small_gan()
    stats = gan_step(G, D, opt_g, opt_d, tg.rand(8, 1, 28, 28) * 2 - 1)
    assert set(stats) == {"loss_d", "loss_g", "d_x", "d_g_z1", "d_g_z2"} | {
        "grad_norm_d",
        "grad_norm_g",
    }
    assert all(np.isfinite(v) for v in stats.values())
    assert stats["grad_norm_d"] > 0 and stats["grad_norm_g"] > 0
    assert all(0 < stats[k] < 1 for k in ("d_x", "d_g_z1", "d_g_z2"))


# ---------------------------------------------------------------------------
# The VAE: reparameterization, KL, loss, step
# ---------------------------------------------------------------------------


def test_reparameterization_has_mean_mu_and_variance_exp_logvar():
    """z = mu + exp(logvar / 2) eps: over n draws the sample mean is within 5 standard errors
    sqrt(var / n) of mu, and the sample variance within 5 of its standard error
    var * sqrt(2 / (n - 1)) of exp(logvar). A sampler that used the variance in place of
    the standard deviation would miss by far more."""
    n = 200_000
    mu_values = np.array([-1.5, 0.0, 2.0, 0.3], dtype=np.float64)
    logvar_values = np.array([-2.0, 0.0, 1.0, 2.5], dtype=np.float64)
    tg.manual_seed(3)
    mu = tg.tensor(np.tile(mu_values, (n, 1)))  # (n, 4)
    logvar = tg.tensor(np.tile(logvar_values, (n, 1)))
    z = reparameterize(mu, logvar).numpy()  # (n, 4)
    var = np.exp(logvar_values)
    assert np.all(np.abs(z.mean(axis=0) - mu_values) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(z.var(axis=0, ddof=1) - var) < 5 * var * np.sqrt(2 / (n - 1)))


def test_reparameterization_passes_gradients_to_mu_and_logvar():
    rng = np.random.default_rng(0)
    mu = tg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    logvar = tg.tensor(rng.standard_normal((3, 4)), requires_grad=True)

    def sample(mu, logvar):
        tg.manual_seed(7)  # the same eps at every evaluation of the finite differences
        return reparameterize(mu, logvar)

    assert tg.gradcheck(sample, [mu, logvar])


def test_closed_form_kl_matches_a_monte_carlo_estimate():
    """KL(q || p) = E_q[log q(z) - log p(z)], estimated from 400,000 draws of z ~ q, agrees
    with 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2) within 5 standard errors."""
    mu = np.array([[0.5, -1.0, 0.0]])  # (1, 3)
    logvar = np.array([[-0.5, 0.3, 0.0]])
    with tg.no_grad():
        closed = float(F.gaussian_kl(tg.tensor(mu), tg.tensor(logvar), reduction="sum").item())
    _, _, kl_from_loss = vae_loss(
        tg.zeros(1, 1, 2, 2), tg.zeros(1, 1, 2, 2), tg.tensor(mu), tg.tensor(logvar)
    )
    assert float(kl_from_loss.item()) == pytest.approx(closed, rel=1e-12)

    rng = np.random.default_rng(11)
    n = 400_000
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * rng.standard_normal((n, 3))  # (n, 3) ~ q
    log_q = -0.5 * (((z - mu) / sigma) ** 2 + logvar + np.log(2 * np.pi))
    log_p = -0.5 * (z**2 + np.log(2 * np.pi))
    samples = (log_q - log_p).sum(axis=1)  # (n,)
    standard_error = samples.std(ddof=1) / np.sqrt(n)
    assert abs(samples.mean() - closed) < 5 * standard_error


def test_vae_loss_sums_over_pixels_and_latents_and_averages_over_the_batch():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 1, 4, 4))
    x = rng.random((3, 1, 4, 4))
    mu, logvar = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    loss, recon, kl = vae_loss(*(tg.tensor(a) for a in (logits, x, mu, logvar)), kl_weight=0.5)
    bce = np.logaddexp(0, logits) - logits * x  # per pixel
    expected_recon = bce.reshape(3, -1).sum(axis=1).mean()
    expected_kl = (0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)).sum(axis=1).mean()
    assert float(recon.item()) == pytest.approx(expected_recon, rel=1e-12)
    assert float(kl.item()) == pytest.approx(expected_kl, rel=1e-12)
    assert float(loss.item()) == pytest.approx(expected_recon + 0.5 * expected_kl, rel=1e-12)


def test_logvar_is_clamped_so_the_loss_stays_finite():
    tg.manual_seed(0)
    model = ConvVAE(latent_dim=2, width=4)
    linear = model.encoder[5]
    with tg.no_grad():
        linear.weight.data[...] = 0
        linear.bias.data[...] = np.array([0, 0, 1e4, -1e4], dtype=np.float32)  # mu, logvar
    mu, logvar = model.encode(tg.rand(2, 1, 28, 28))
    np.testing.assert_array_equal(logvar.numpy()[0], [LOGVAR_MAX, LOGVAR_MIN])
    logits, mu, logvar = model(tg.rand(2, 1, 28, 28))
    loss, _, _ = vae_loss(logits, tg.rand(2, 1, 28, 28), mu, logvar)
    assert np.isfinite(loss.item())


def test_kl_warm_up_rises_linearly_then_holds():
    assert kl_weight_at(0, 1.0, 0) == 1.0
    assert kl_weight_at(0, 1.0, 4) == 0.25
    assert kl_weight_at(1, 2.0, 4) == 1.0
    assert kl_weight_at(3, 1.0, 4) == 1.0
    assert kl_weight_at(100, 0.5, 4) == 0.5


def test_vae_step_lowers_the_loss_on_a_repeated_batch():
    tg.manual_seed(0)
    model = ConvVAE(latent_dim=4, width=4)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = tg.tensor(load_dataset("shapes", "train", n=16).images)  # (16, 1, 28, 28)
    first = vae_step(model, opt, x)
    for _ in range(30):
        last = vae_step(model, opt, x)
    assert set(first) == {"loss", "recon", "kl", "kl_weight"}
    assert last["loss"] < first["loss"] - 20  # nats per image


def test_negative_elbo_is_the_sum_of_its_parts_and_records_no_graph():
    tg.manual_seed(0)
    model = ConvVAE(latent_dim=4, width=4)
    total, recon, kl = negative_elbo(model, tg.rand(5, 1, 28, 28))
    assert total == pytest.approx(recon + kl)
    assert kl >= 0 and recon > 0
    assert all(p.grad is None for p in model.parameters())

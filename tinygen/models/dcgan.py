"""DCGAN-28: a generator and a discriminator for 28x28 images, and one training step.

The reference architecture (shapes for the defaults: latent 64, width 64, 28x28x1 images
in [-1, 1]; N is the batch size):

    Generator                                  output
    z ~ N(0, I)                                (N, 64, 1, 1)
    ConvTranspose2d(64, 128, 7, 1, 0), BN, ReLU (N, 128, 7, 7)
    ConvTranspose2d(128, 64, 4, 2, 1), BN, ReLU (N, 64, 14, 14)
    ConvTranspose2d(64, 1, 4, 2, 1), Tanh      (N, 1, 28, 28)

    Discriminator                              output
    x                                          (N, 1, 28, 28)
    Conv2d(1, 64, 4, 2, 1), LeakyReLU(0.2)     (N, 64, 14, 14)
    Conv2d(64, 128, 4, 2, 1), BN, LeakyReLU    (N, 128, 7, 7)
    Conv2d(128, 1, 7, 1, 0)                    (N, 1, 1, 1) -> (N,) logits

Every convolution is without bias (BatchNorm's shift plays that role). Weights are drawn
from N(0, 0.02), BatchNorm scales from N(1, 0.02), BatchNorm shifts are 0 (`dcgan_init_`).

The training step (`gan_step`) is the one of Radford et al. (2016) with the non-saturating
generator loss of Goodfellow et al. (2014); the objective of each half is written above it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import tinygen as tg
from tinygen import nn
from tinygen.nn import functional as F


class Generator(nn.Module):
    """Map noise z (N, latent_dim, 1, 1) or (N, latent_dim) to images (N, channels, S, S).

    The images are in [-1, 1] (tanh output).

    S = image_size must be a multiple of 4: the first layer makes an (S/4)x(S/4) map, and two
    stride-2 transposed convolutions double it twice. `width` is the number of channels of the
    last hidden layer; the first has 2 * width.
    """

    def __init__(
        self, latent_dim: int = 64, width: int = 64, channels: int = 1, image_size: int = 28
    ) -> None:
        super().__init__()
        base = _base_size(image_size, "Generator")
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * width, base, 1, 0, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),  # (N, 2 width, S/4, S/4)
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),  # (N, width, S/2, S/2)
            nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False),
            nn.Tanh(),  # (N, channels, S, S)
        )

    def forward(self, z: tg.Tensor) -> tg.Tensor:
        if z.ndim == 2:
            z = z.reshape(z.shape[0], z.shape[1], 1, 1)  # (N, latent_dim, 1, 1)
        if z.ndim != 4 or z.shape[1:] != (self.latent_dim, 1, 1):
            raise ValueError(
                f"Generator: z must have shape (N, {self.latent_dim}, 1, 1) or "
                f"(N, {self.latent_dim}), got {z.shape}"
            )
        return self.net(z)


class Discriminator(nn.Module):
    """Map images (N, channels, S, S) to one logit each, shape (N,): log D(x) / (1 - D(x))."""

    def __init__(self, width: int = 64, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        base = _base_size(image_size, "Discriminator")
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),  # (N, width, S/2, S/2)
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),  # (N, 2 width, S/4, S/4)
            nn.Conv2d(2 * width, 1, base, 1, 0, bias=False),  # (N, 1, 1, 1)
        )

    def forward(self, x: tg.Tensor) -> tg.Tensor:
        return self.net(x).reshape(x.shape[0])  # (N,)


def dcgan_init_(module: nn.Module) -> nn.Module:
    """The DCGAN initialization, in place: conv weights ~ N(0, 0.02), BatchNorm weight ~
    N(1, 0.02) and bias = 0. Draws from tinygen's seeded generator, module by module in the
    order of `module.modules()`. Returns the module."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
    return module


def build_dcgan(
    latent_dim: int = 64, width: int = 64, channels: int = 1, image_size: int = 28
) -> tuple[Generator, Discriminator]:
    """A generator and a discriminator with the DCGAN initialization (G first, then D)."""
    G = dcgan_init_(Generator(latent_dim, width, channels, image_size))
    D = dcgan_init_(Discriminator(width, channels, image_size))
    return G, D


# ---------------------------------------------------------------------------
# The training step
# ---------------------------------------------------------------------------


def sample_noise(n: int, latent_dim: int, device: str = "cpu") -> tg.Tensor:
    """z ~ N(0, I), shape (n, latent_dim, 1, 1), drawn from tinygen's seeded generator."""
    return tg.randn(n, latent_dim, 1, 1, device=device)


def discriminator_step(
    D: Discriminator, opt_d: Any, real: tg.Tensor, fake: tg.Tensor
) -> dict[str, float]:
    """One Adam step of D on a real batch and a fake batch, each (N, C, S, S).

    Objective: D maximizes  E_x[log D(x)] + E_z[log(1 - D(G(z)))],  i.e. minimizes the
    binary cross-entropy of its logits against label 1 for real and 0 for fake images:

        loss_D = BCE(D(x), 1) + BCE(D(G(z)), 0)          (each a mean over the batch)

    The fake batch is detached, so this step sends no gradient into the generator, and the
    two batches go through D in separate forward passes, so that BatchNorm normalizes each
    batch with its own statistics (a mixed batch would let D tell them apart by those).
    """
    fake = fake.detach()  # cut the graph: the D step must not reach G's parameters
    opt_d.zero_grad()
    logits_real = D(real)  # (N,)
    logits_fake = D(fake)  # (N,)
    loss_real = F.binary_cross_entropy_with_logits(logits_real, tg.ones_like(logits_real))
    loss_fake = F.binary_cross_entropy_with_logits(logits_fake, tg.zeros_like(logits_fake))
    loss_d = loss_real + loss_fake
    loss_d.backward()
    grad_norm = gradient_norm(D)  # a diagnostic: near 0 when D has won and learns nothing
    opt_d.step()
    return {
        "loss_d": float(loss_d.item()),
        "d_x": _mean_probability(logits_real),
        "d_g_z1": _mean_probability(logits_fake),
        "grad_norm_d": grad_norm,
    }


def generator_step(
    G: Generator, D: Discriminator, opt_g: Any, fake: tg.Tensor
) -> dict[str, float]:
    """One Adam step of G, given the fake batch G(z) still attached to G's graph.

    Objective (non-saturating): G maximizes  E_z[log D(G(z))],  i.e. minimizes

        loss_G = BCE(D(G(z)), 1)

    instead of minimizing E_z[log(1 - D(G(z)))], whose gradient vanishes exactly when D
    rejects the fakes confidently, early in training. The gradient flows through D to the
    fake images, but D's own parameters are frozen for this pass (requires_grad off): only
    opt_g steps, so their gradients would be computed for nothing (PyTorch's DCGAN example
    computes them and lets D's next step clear them; the result is the same, a third of D's
    weight-gradient GEMMs slower).
    """
    opt_g.zero_grad()
    trainable = [p for p in D.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        logits_fake = D(fake)  # (N,), with D already updated on this batch
        loss_g = F.binary_cross_entropy_with_logits(logits_fake, tg.ones_like(logits_fake))
        loss_g.backward()
    finally:
        for p in trainable:
            p.requires_grad_(True)
    grad_norm = gradient_norm(G)  # vanishing here means G gets no signal from D
    opt_g.step()
    return {
        "loss_g": float(loss_g.item()),
        "d_g_z2": _mean_probability(logits_fake),
        "grad_norm_g": grad_norm,
    }


def gan_step(
    G: Generator, D: Discriminator, opt_g: Any, opt_d: Any, real: tg.Tensor
) -> dict[str, float]:
    """One DCGAN training step on a real batch (N, C, S, S) in [-1, 1]: D step, then G step on
    the same fake batch. Returns loss_d, loss_g, d_x = mean D(x), d_g_z1 = mean D(G(z)) before
    D's update and d_g_z2 after it, and the gradient norms grad_norm_d and grad_norm_g."""
    z = sample_noise(real.shape[0], G.latent_dim, real.device)  # (N, latent_dim, 1, 1)
    fake = G(z)  # (N, C, S, S)
    stats = discriminator_step(D, opt_d, real, fake)
    stats.update(generator_step(G, D, opt_g, fake))
    return stats


def gradient_norm(module: nn.Module) -> float:
    """sqrt(sum of squared gradients) over the module's parameters (those that have one)."""
    total = 0.0
    for p in module.parameters():
        if p.grad is not None:
            g = p.grad.data
            total += float((g * g).sum())
    return math.sqrt(total)


def _mean_probability(logits: tg.Tensor) -> float:
    """mean(sigmoid(logits)), computed on the raw array (no graph)."""
    values = np.asarray(logits.numpy(), dtype=np.float64)
    return float(np.mean(0.5 * (1.0 + np.tanh(0.5 * values))))  # sigmoid, without overflow


def _base_size(image_size: int, caller: str) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"{caller}: image_size must be an int >= 4, got {image_size!r}")
    if image_size % 4:
        raise ValueError(
            f"{caller}: image_size must be a multiple of 4 (two stride-2 layers), got {image_size}"
        )
    return image_size // 4

"""ConvVAE-28: a convolutional variational autoencoder for 28x28 images in [0, 1], and its step.

The reference architecture (defaults: width 32, latent 16; N is the batch size):

    Encoder                                    output
    x                                          (N, 1, 28, 28)
    Conv2d(1, 32, 4, 2, 1), ReLU               (N, 32, 14, 14)
    Conv2d(32, 64, 4, 2, 1), ReLU              (N, 64, 7, 7)
    flatten                                    (N, 3136)
    Linear(3136, 32) -> mu, logvar             (N, 16) each

    Decoder
    z                                          (N, 16)
    Linear(16, 3136), ReLU, reshape            (N, 64, 7, 7)
    ConvTranspose2d(64, 32, 4, 2, 1), ReLU     (N, 32, 14, 14)
    ConvTranspose2d(32, 1, 4, 2, 1)            (N, 1, 28, 28) logits of Bernoulli pixels

All layers have biases and PyTorch's default initialization.

The loss is the negative evidence lower bound (ELBO) of Kingma and Welling (2014), per image:

    -ELBO(x) = E_q(z|x)[-log p(x|z)] + KL(q(z|x) || N(0, I))
             ~ BCE(decoder(z), x) summed over the pixels           z = mu + sigma * eps
               + 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)  over the latent dims

with one sample eps ~ N(0, I) and sigma = exp(0.5 logvar); the batch loss is its mean over the
batch. Both parts are in nats per image, so the figure compares across batch sizes.
"""

from __future__ import annotations

from typing import Any

import tinygen as tg
from tinygen import nn
from tinygen.nn import functional as F

# log-variance is clamped to this interval: exp(0.5 * 20) = 2.2e4 is far beyond any useful
# posterior width, and exp(-30) far below; outside it float32 overflows or underflows.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class ConvVAE(nn.Module):
    """The encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))) and the decoder p(x|z) (logits).

    `width` is the channel count of the first convolution (the second has 2 * width);
    image_size S must be a multiple of 4.
    """

    def __init__(
        self, latent_dim: int = 16, width: int = 32, channels: int = 1, image_size: int = 28
    ) -> None:
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size % 4:
            raise ValueError(f"ConvVAE: image_size must be a multiple of 4, got {image_size!r}")
        self.latent_dim = latent_dim
        self.hidden_shape = (2 * width, image_size // 4, image_size // 4)  # (64, 7, 7)
        hidden = 2 * width * (image_size // 4) ** 2  # 3136
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.ReLU(),  # (N, width, S/2, S/2)
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.ReLU(),  # (N, 2 width, S/4, S/4)
            nn.Flatten(),  # (N, hidden)
            nn.Linear(hidden, 2 * latent_dim),  # (N, 2 latent): mu then logvar
        )
        self.decoder_input = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.ReLU(),  # (N, width, S/2, S/2)
            nn.ConvTranspose2d(width, channels, 4, 2, 1),  # (N, channels, S, S) logits
        )

    def encode(self, x: tg.Tensor) -> tuple[tg.Tensor, tg.Tensor]:
        """x (N, C, S, S) in [0, 1] -> mu (N, L) and logvar (N, L), logvar clamped."""
        h = self.encoder(x)  # (N, 2 L)
        L = self.latent_dim
        mu = h[:, :L]  # (N, L)
        logvar = h[:, L:].clamp(LOGVAR_MIN, LOGVAR_MAX)  # (N, L)
        return mu, logvar

    def decode(self, z: tg.Tensor) -> tg.Tensor:
        """z (N, L) -> pixel logits (N, C, S, S); sigmoid(logits) is the mean image."""
        h = self.decoder_input(z)  # (N, hidden)
        h = h.reshape(z.shape[0], *self.hidden_shape)  # (N, 2 width, S/4, S/4)
        return self.decoder(h)

    def forward(self, x: tg.Tensor) -> tuple[tg.Tensor, tg.Tensor, tg.Tensor]:
        """Encode, draw z by reparameterization, decode: returns (logits, mu, logvar)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)  # (N, L)
        return self.decode(z), mu, logvar


def reparameterize(mu: tg.Tensor, logvar: tg.Tensor) -> tg.Tensor:
    """z = mu + sigma * eps with sigma = exp(0.5 * logvar) and eps ~ N(0, I), shape of mu.

    Written this way, z is a differentiable function of mu and logvar (the randomness sits in
    eps, drawn from tinygen's seeded generator), so gradients reach the encoder. Note that the
    standard deviation, not the variance exp(logvar), multiplies eps.
    """
    eps = tg.randn(*mu.shape, dtype=mu.dtype, device=mu.device)
    return mu + (0.5 * logvar).exp() * eps


def vae_loss(
    logits: tg.Tensor,
    x: tg.Tensor,
    mu: tg.Tensor,
    logvar: tg.Tensor,
    kl_weight: float = 1.0,
) -> tuple[tg.Tensor, tg.Tensor, tg.Tensor]:
    """The batch loss mean_n [recon_n + kl_weight * kl_n] and its two parts (batch means).

    recon_n = sum over pixels of BCE(logits, x)                 = -log p(x_n | z_n), in nats
    kl_n    = sum over latent dims of KL(N(mu, sigma^2) || N(0, 1))

    With kl_weight = 1 the loss is the negative ELBO per image; a weight below 1 (the KL
    warm-up) trades it for a sharper reconstruction early in training.
    """
    N = x.shape[0]
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")  # (N, C, S, S)
    recon = bce.reshape(N, -1).sum(axis=1).mean()  # sum over pixels, mean over the batch
    kl = F.gaussian_kl(mu, logvar, reduction="mean")  # sum over latent dims, mean over batch
    return recon + kl_weight * kl, recon, kl


def kl_weight_at(step: int, kl_weight: float = 1.0, warmup_steps: int = 0) -> float:
    """The KL weight at a 0-based training step.

    With warmup_steps > 0 it rises linearly, kl_weight * (step + 1) / warmup_steps, and stays at
    kl_weight from step warmup_steps - 1 on; with warmup_steps = 0 it is kl_weight throughout.
    """
    if warmup_steps <= 0:
        return float(kl_weight)
    return float(kl_weight) * min(1.0, (step + 1) / warmup_steps)


def vae_step(model: ConvVAE, opt: Any, x: tg.Tensor, kl_weight: float = 1.0) -> dict[str, float]:
    """One Adam step on a batch x (N, C, S, S) in [0, 1].

    Objective: minimize  mean_n [ -E_q[log p(x_n|z)] + kl_weight * KL(q(z|x_n) || N(0, I)) ],
    the negative ELBO when kl_weight = 1. Returns loss, recon and kl (nats per image).
    """
    opt.zero_grad()
    logits, mu, logvar = model(x)
    loss, recon, kl = vae_loss(logits, x, mu, logvar, kl_weight)
    loss.backward()
    opt.step()
    return {
        "loss": float(loss.item()),
        "recon": float(recon.item()),
        "kl": float(kl.item()),
        "kl_weight": float(kl_weight),
    }


def negative_elbo(model: ConvVAE, x: tg.Tensor) -> tuple[float, float, float]:
    """-ELBO, recon and KL summed over the batch x (one sample of z per image), in nats.

    Divide by the number of images for nats per image. Runs without a graph; the model is
    expected in eval mode (it has no layer that differs between the modes, but callers should
    not rely on that).
    """
    with tg.no_grad():
        logits, mu, logvar = model(x)
        N = x.shape[0]
        _, recon, kl = vae_loss(logits, x, mu, logvar)
    recon_sum, kl_sum = float(recon.item()) * N, float(kl.item()) * N
    return recon_sum + kl_sum, recon_sum, kl_sum

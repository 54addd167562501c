"""The two generative models tinygen trains, and their training steps.

    from tinygen.models import build_dcgan, gan_step, ConvVAE, vae_step

dcgan.py: DCGAN-28 (Generator, Discriminator, the DCGAN init, the D and G steps).
vae.py:   ConvVAE-28 (encoder, reparameterization, decoder, the negative ELBO and its step).
"""

from tinygen.models.dcgan import (
    Discriminator,
    Generator,
    build_dcgan,
    dcgan_init_,
    discriminator_step,
    gan_step,
    generator_step,
    gradient_norm,
    sample_noise,
)
from tinygen.models.vae import (
    ConvVAE,
    kl_weight_at,
    negative_elbo,
    reparameterize,
    vae_loss,
    vae_step,
)

__all__ = [
    "ConvVAE",
    "Discriminator",
    "Generator",
    "build_dcgan",
    "dcgan_init_",
    "discriminator_step",
    "gan_step",
    "generator_step",
    "gradient_norm",
    "kl_weight_at",
    "negative_elbo",
    "reparameterize",
    "sample_noise",
    "vae_loss",
    "vae_step",
]

"""A residual convolutional VAE (the encoder / decoder of `ae_resnet`, a Gaussian code of `latent_dim` numbers),
trained on the ELBO or on the importance-weighted bound of Burda et al. (2015).

objective=elbo   loss = -ELBO (reconstruction + beta * KL, warm-up and free bits as in every VAE here)
objective=iwae   loss = -log (1/K sum_k w_k), w_k = p(x, z_k) / q(z_k | x), z_k ~ q(z | x), K = iwae_samples:
                 the IWAE bound, in nats per image, tighter than the ELBO for K > 1 (K = 1 is the ELBO);
                 `recon_loss` and `kl_loss` are still logged as the single-sample ELBO terms (one draw, no
                 gradient), so they compare across objectives. The IWAE bound needs the Bernoulli decoder
                 (recon_loss=bce) and has no beta / warm-up / free bits.
                 elbo_warmup_epochs=N trains the first N epochs on the ELBO instead (its step decodes once, not
                 K times, and a VAE is the usual start for IWAE training); validation and test always score
                 the IWAE bound, so val/loss is one quantity over the whole run.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from aelab.errors import check
from aelab.models.base import Batch, LossTerms, VariationalAutoencoder
from aelab.models.layers import Norm, ResNetDecoder, ResNetEncoder, check_stages
from aelab.types import NonNegativeInt, PositiveInt


class ResNetVAE(VariationalAutoencoder):
    """channels / blocks / norm as in ResNetAutoencoder; objective elbo | iwae; iwae_samples: K."""

    # one Gaussian latent layer, N(0, I) prior, Bernoulli decoder (recon_loss=bce, checked by
    # VariationalAutoencoder.capabilities): the importance-sampling estimator of base.py holds
    likelihood = True

    def __init__(self, *args, channels: list[PositiveInt] = (16, 32, 64), blocks: list[NonNegativeInt] = (0, 1, 1),
                 norm: Norm = "none", objective: Literal["elbo", "iwae"] = "elbo", iwae_samples: PositiveInt = 5,
                 elbo_warmup_epochs: NonNegativeInt = 0, **kwargs):
        super().__init__(*args, **kwargs)
        channels, blocks = check_stages(channels, blocks)
        if objective == "iwae":
            check(self.recon_kind == "bce", "model.objective=iwae needs the Bernoulli decoder: model.recon_loss=bce")
            check(self.kl.is_plain,
                  "model.objective=iwae has no beta, kl_warmup_steps or free_bits: leave them at 1.0, 0, 0.0")
        check(elbo_warmup_epochs == 0 or objective == "iwae",
              f"model.elbo_warmup_epochs={elbo_warmup_epochs} needs model.objective=iwae (the ELBO objective has no "
              "other bound to warm up for)")
        self.elbo_warmup_epochs = elbo_warmup_epochs
        self.objective, self.iwae_samples = objective, iwae_samples
        conv = ResNetEncoder(self.input_shape[0], channels, blocks, norm)
        spatial = conv.out_shape(self.input_shape)
        self.encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(math.prod(spatial), 2 * self.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(self.latent_dim, math.prod(spatial)), nn.Unflatten(1, spatial),
                                     ResNetDecoder(spatial, channels[::-1], blocks[::-1], self.output_shape, norm))

    def capture_blocker(self) -> str | None:
        if self.elbo_warmup_epochs:
            return "its objective switches from the ELBO to the IWAE bound after model.elbo_warmup_epochs"
        return super().capture_blocker()

    def training_loss(self, batch: Batch, step: int, epoch: int) -> LossTerms:
        if epoch < self.elbo_warmup_epochs:
            return self.elbo_loss(batch, step)
        return self.loss(batch, step)

    def elbo_loss(self, batch: Batch, step: int = 0) -> LossTerms:
        """-ELBO, whatever the objective (the warm-up epochs of objective=iwae)."""
        return super().loss(batch, step)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        if self.objective == "elbo":
            return self.elbo_loss(batch, step)
        log_w = self.log_importance_weights(batch.input, batch.target, batch.label, self.iwae_samples)  # [K, B]
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.iwae_samples)  # per image
        with torch.no_grad():  # the single-sample terms, logged for comparison with the ELBO runs (a subclass
            single = self.elbo_loss(batch, step)  # with another prior logs its own through elbo_loss)
        return LossTerms(loss=-bound.mean(), output=single.output, terms=single.terms)

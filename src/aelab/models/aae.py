"""Adversarial autoencoder (Makhzani et al., 2015): a deterministic autoencoder whose codes are pushed towards the
prior N(0, I) by a discriminator on latent codes, instead of a KL term.

The discriminator really trains: the model owns its training step (two optimizers, manual optimisation) and, per
training batch, first steps the discriminator on `discriminator_loss(batch)` (prior samples = real, encoded codes =
fake), then steps encoder + decoder on `loss(batch)` = reconstruction + adv_weight * generator loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import check
from aelab.models.base import RECON_TERM, Autoencoder, Batch, LossTerms, TwoOptimizerTraining, reconstruction_loss
from aelab.models.contract import Term
from aelab.models.latent import standard_normal
from aelab.models.layers import ConvDecoder, ConvEncoder, mlp
from aelab.types import NonNegativeFloat, PositiveInt


class AdversarialAutoencoder(TwoOptimizerTraining, Autoencoder):
    """Encoder -> code of `latent_dim` -> decoder, plus an MLP discriminator on codes.

    arch=conv: conv stages (`channels`) + dense bottleneck; arch=dense: `hidden` widths. `adv_weight` scales the
    generator (non-saturating) loss against the reconstruction loss, so its meaning depends on `reduction`: the
    default (sum over pixels, per image) with adv_weight=1 matched the codes to N(0, I) on MNIST within a few hundred
    steps; with reduction=mean and adv_weight=1 the discriminator won (d_acc ~ 1).
    """

    terms = (RECON_TERM,
             Term("g_loss", "generator loss: BCE of the discriminator calling the codes prior draws (the loss adds "
                            "adv_weight times it)"),
             Term("d_loss", "the discriminator's BCE, prior draws against codes (its own optimizer minimises it)",
                  better=None),
             Term("d_acc", "the discriminator's accuracy, prior draws against codes (0.5: it cannot tell them apart)",
                  better=None))
    prior = "standard_normal"

    def __init__(self, *args, arch: Literal["conv", "dense"] = "conv", latent_dim: PositiveInt = 8,
                 channels: list[PositiveInt] = (32, 64), hidden: list[PositiveInt] = (512,),
                 disc_hidden: list[PositiveInt] = (256, 256), adv_weight: NonNegativeFloat = 1.0,
                 batch_norm: bool = False, reduction: str = "sum", **kwargs):
        super().__init__(*args, reduction=reduction, **kwargs)
        channels, hidden, disc_hidden = list(channels), list(hidden), list(disc_hidden)
        self.arch, self.latent_dim, self.adv_weight = arch, latent_dim, float(adv_weight)
        if arch == "conv":
            check(len(channels) >= 1, f"model.channels must list at least one stage, got {channels}")
            conv = ConvEncoder(self.input_shape[0], channels, batch_norm)
            spatial = conv.out_shape(self.input_shape)
            self.encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(math.prod(spatial), latent_dim))
            self.decoder = nn.Sequential(nn.Linear(latent_dim, math.prod(spatial)), nn.ReLU(),
                                         nn.Unflatten(1, spatial),
                                         ConvDecoder(spatial, channels[::-1], self.output_shape, batch_norm))
        else:
            self.encoder = nn.Sequential(nn.Flatten(), mlp([math.prod(self.input_shape), *hidden, latent_dim]))
            self.decoder = nn.Sequential(mlp([latent_dim, *hidden[::-1], math.prod(self.output_shape)]),
                                         nn.Unflatten(1, self.output_shape))
        self.discriminator = mlp([latent_dim, *disc_hidden, 1])  # one logit: "drawn from the prior"

    # --- optimisation: one optimizer for the autoencoder, one for the discriminator -------------------------------
    def parameter_groups(self) -> list[list[nn.Parameter]]:
        return [[*self.encoder.parameters(), *self.decoder.parameters()], list(self.discriminator.parameters())]

    def discriminator_terms(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        d_loss, d_acc = self.discriminator_loss(batch)
        return d_loss, {"d_loss": d_loss.detach(), "d_acc": d_acc}

    # --- losses -------------------------------------------------------------------------------------------------
    def _discriminate(self, z_prior: torch.Tensor, z_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy) of the discriminator: prior samples are labelled 1, encoded codes 0."""
        real, fake = self.discriminator(z_prior), self.discriminator(z_code)
        loss = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                      + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        acc = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean())
        return loss, acc

    def discriminator_loss(self, batch: Batch,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy) of the discriminator's objective; the codes are detached, so only the discriminator
        learns from it."""
        with torch.no_grad():
            z = self.encode(batch.input)
        return self._discriminate(standard_normal(z.shape, z, generator), z)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        z = self.encode(batch.input, batch.label)
        logits = self.decode(z)
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        fooled = self.discriminator(z)
        # non-saturating generator loss: the encoder wants its codes classified as prior samples
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        terms = {"recon_loss": recon, "g_loss": g_loss.detach()}
        if not self.training:  # evaluation: how well the discriminator separates codes from the prior (cheap MLP)
            with torch.no_grad():
                d_loss, d_acc = self._discriminate(standard_normal(z.shape, z), z)
            terms.update(d_loss=d_loss, d_acc=d_acc)
        return LossTerms(loss=recon + self.adv_weight * g_loss, output=torch.sigmoid(logits), terms=terms)

"""Autoencoders whose codes are matched to the prior N(0, I) by a maximum mean discrepancy instead of (or beside) a
KL term: the Wasserstein autoencoder (WAE-MMD; Tolstikhin et al., 2018) and InfoVAE / MMD-VAE (Zhao et al., 2017).

WAE-MMD      deterministic encoder; loss = recon + mmd_weight * MMD(codes of the batch, as many N(0, I) draws)
             with the inverse-multiquadratic kernel. The MMD acts on the aggregate posterior q(z) (all codes of a
             batch), not on each image's code, so codes keep their information.
InfoVAE      a VAE (Gaussian posterior) whose objective is recon + (1 - alpha) * KL + (alpha + lambda - 1) *
             MMD(sampled codes, prior) with the RBF kernel; alpha = 1 drops the per-image KL (the MMD-VAE).
             The generative model is the VAE's, so the importance-sampled NLL holds (recon_loss=bce).

The MMD is in the codes' own units (a discrepancy between distributions, 0 for equal ones); its weight is relative to
the reconstruction term, whose size depends on model.reduction (sum: per image, the default here).
"""

from __future__ import annotations

import torch

from aelab.models.base import KL_TERM, RECON_TERM, Autoencoder, Batch, LossTerms, VariationalAutoencoder
from aelab.models.base import reconstruction_loss
from aelab.models.contract import Term
from aelab.models.latent import gaussian_kl, mmd, reparameterize, standard_normal
from aelab.models.layers import conv_coder
from aelab.types import NonNegativeFloat, PositiveInt

MMD_TERM = Term("mmd", "MMD^2 between the batch's codes and as many N(0, I) draws (unweighted; 0 when they match)")


class WassersteinAutoencoder(Autoencoder):
    """Conv encoder -> `latent_dim` numbers -> conv decoder (the conv VAE's nets); `mmd_weight` multiplies the
    MMD against the reconstruction term (Tolstikhin et al. use 10 on MNIST with a per-image squared error)."""

    terms = (RECON_TERM, MMD_TERM)
    prior = "standard_normal"

    def __init__(self, *args, latent_dim: PositiveInt = 8, channels: list[PositiveInt] = (32, 64),
                 hidden: PositiveInt = 128, mmd_weight: NonNegativeFloat = 10.0, batch_norm: bool = False,
                 reduction: str = "sum", **kwargs):
        super().__init__(*args, reduction=reduction, **kwargs)
        self.latent_dim, self.mmd_weight = latent_dim, float(mmd_weight)
        self.encoder, self.decoder = conv_coder(self.input_shape, self.output_shape, list(channels), hidden,
                                                latent_dim, latent_dim, batch_norm)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        z = self.encode(batch.input, batch.label)
        logits = self.decode(z, batch.label)
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        discrepancy = mmd(z, standard_normal(z.shape, z), "imq")
        return LossTerms(loss=recon + self.mmd_weight * discrepancy, output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "mmd": discrepancy})


class InfoVAE(VariationalAutoencoder):
    """alpha: 1 - alpha weighs the KL (alpha = 1: no per-image KL); mmd_lambda: the MMD's weight is
    alpha + mmd_lambda - 1 (Zhao et al.'s lambda). beta, kl_warmup_steps and free_bits act on the KL that remains."""

    terms = (RECON_TERM, KL_TERM, MMD_TERM)
    likelihood = True  # the VAE's generative model and posterior: the importance-sampling estimator holds

    def __init__(self, *args, channels: list[PositiveInt] = (32, 64), hidden: PositiveInt = 128,
                 alpha: NonNegativeFloat = 1.0, mmd_lambda: NonNegativeFloat = 100.0, batch_norm: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha, self.mmd_lambda = float(alpha), float(mmd_lambda)
        self.encoder, self.decoder = conv_coder(self.input_shape, self.output_shape, list(channels), hidden,
                                                2 * self.latent_dim, self.latent_dim, batch_norm)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        mean, log_var = self.posterior(batch.input, batch.label)
        z = reparameterize(mean, log_var)
        logits = self.decode(z, batch.label)
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        kl, weighted = self.kl(gaussian_kl(mean, log_var), step)
        discrepancy = mmd(z, standard_normal(z.shape, z), "rbf")
        loss = recon + (1 - self.alpha) * weighted + (self.alpha + self.mmd_lambda - 1) * discrepancy
        return LossTerms(loss=loss, output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "kl_loss": kl, "mmd": discrepancy})

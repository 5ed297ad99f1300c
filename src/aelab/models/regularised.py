"""Deterministic autoencoders with a regulariser on the code or the decoder, on the conv VAE's nets with a flat code
of `latent_dim` numbers. Each weight below multiplies its term against the reconstruction term (whose size depends on
model.reduction: sum per image, the default here, or mean per pixel).

RAE (Ghosh et al., 2020)   recon + code_weight * |z|^2 / 2 + decoder_weight * R(decoder): R is the squared L2 norm
                           of the decoder's weights ("l2") or the squared norm of the decoder's gradient with respect
                           to the code ("gp"). No prior of its own: it is sampled ex post, by a density fitted on the
                           training codes (a Gaussian mixture).
Sparse AE                  recon + sparsity_weight * S(z): S is the mean |z| ("l1") or, for codes squashed into (0, 1)
                           by a sigmoid, the KL between a Bernoulli of the target activity and each unit's mean
                           activity over the batch ("kl", Ng's sparse autoencoder).
Contractive AE (Rifai et    recon + contraction_weight * |dz/dx|_F^2, the encoder Jacobian's squared Frobenius norm per
al., 2011)                  image, estimated without bias by one vector-Jacobian product per random direction
                           (E_v |v^T J|^2 = |J|_F^2 for v ~ N(0, I)); it needs gradients, so only training steps
                           compute it.
"""

from __future__ import annotations

from typing import Literal

import torch

from aelab.models.base import RECON_TERM, Autoencoder, Batch, LossTerms, reconstruction_loss
from aelab.models.contract import Term
from aelab.models.latent import standard_normal
from aelab.models.layers import conv_coder
from aelab.types import Fraction, NonNegativeFloat, PositiveInt


class FlatCodeAutoencoder(Autoencoder):
    """The conv VAE's encoder and decoder around a deterministic code of `latent_dim` numbers."""

    def __init__(self, *args, latent_dim: PositiveInt = 16, channels: list[PositiveInt] = (32, 64),
                 hidden: PositiveInt = 128, batch_norm: bool = False, reduction: str = "sum", **kwargs):
        super().__init__(*args, reduction=reduction, **kwargs)
        self.latent_dim = latent_dim
        self.encoder, self.decoder = conv_coder(self.input_shape, self.output_shape, list(channels), hidden,
                                                latent_dim, latent_dim, batch_norm)

    def reconstruction(self, batch: Batch, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, reconstruction loss) of decoding `z` against the batch's target."""
        logits = self.decode(z, batch.label)
        return logits, reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)


class RegularizedAutoencoder(FlatCodeAutoencoder):
    """code_weight: beta of the code's squared norm; decoder: l2 | gp; decoder_weight: lambda of that term."""

    terms = (RECON_TERM, Term("code_norm", "|z|^2 / 2 per image (the loss adds code_weight times it)"),
             Term("decoder_reg", "the decoder regulariser (l2: squared weight norm; gp: squared gradient norm "
                                 "per image), unweighted", stages=("train",)))

    def __init__(self, *args, code_weight: NonNegativeFloat = 1.0, decoder: Literal["l2", "gp"] = "l2",
                 decoder_weight: NonNegativeFloat = 1e-3, **kwargs):
        super().__init__(*args, **kwargs)
        self.code_weight, self.decoder_kind, self.decoder_weight = float(code_weight), decoder, float(decoder_weight)

    def capture_blocker(self) -> str | None:
        if self.decoder_kind == "gp":
            return "its gradient penalty differentiates through a gradient (double backward)"
        return super().capture_blocker()

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        z = self.encode(batch.input, batch.label)
        logits, recon = self.reconstruction(batch, z)
        code_norm = 0.5 * z.square().sum(1).mean()
        loss = recon + self.code_weight * code_norm
        terms = {"recon_loss": recon, "code_norm": code_norm}
        if self.training:
            if self.decoder_kind == "l2":
                reg = sum(p.square().sum() for p in self.decoder.parameters())
            else:  # squared norm of d(sum of logits)/dz per image
                (grad,) = torch.autograd.grad(logits.sum(), z, create_graph=True)
                reg = grad.square().sum(1).mean()
            loss = loss + self.decoder_weight * reg
            terms["decoder_reg"] = reg.detach()
        return LossTerms(loss=loss, output=torch.sigmoid(logits), terms=terms)


class SparseAutoencoder(FlatCodeAutoencoder):
    """sparsity: l1 | kl; sparsity_weight: its weight; target: the mean activity kl aims at (code units in (0, 1))."""

    terms = (RECON_TERM, Term("sparsity", "the sparsity penalty (l1: mean |z|; kl: summed Bernoulli KL), unweighted"),
             Term("active", "fraction of code units above 0.1 in absolute value (a diagnostic)", better=None))

    def __init__(self, *args, sparsity: Literal["l1", "kl"] = "l1", sparsity_weight: NonNegativeFloat = 1.0,
                 target: Fraction = 0.05, **kwargs):
        super().__init__(*args, **kwargs)
        self.sparsity, self.sparsity_weight, self.target = sparsity, float(sparsity_weight), float(target)

    def encode(self, x, labels=None):
        z = self.encoder(x)
        return torch.sigmoid(z) if self.sparsity == "kl" else z

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        z = self.encode(batch.input, batch.label)
        logits, recon = self.reconstruction(batch, z)
        if self.sparsity == "l1":
            penalty = z.abs().mean()
        else:
            rho, rho_hat = self.target, z.mean(0).clamp(1e-6, 1 - 1e-6)
            penalty = (rho * (rho / rho_hat).log() + (1 - rho) * ((1 - rho) / (1 - rho_hat)).log()).sum()
        active = (z.detach().abs() > 0.1).float().mean()
        return LossTerms(loss=recon + self.sparsity_weight * penalty, output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "sparsity": penalty, "active": active})


class ContractiveAutoencoder(FlatCodeAutoencoder):
    """contraction_weight: lambda of the Jacobian penalty; projections: random directions per step of its
    estimate (more: less noise, one more backward pass each)."""

    terms = (RECON_TERM, Term("contraction", "|dz/dx|_F^2 per image, estimated (unweighted)", stages=("train",)))

    def __init__(self, *args, contraction_weight: NonNegativeFloat = 0.1, projections: PositiveInt = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.contraction_weight, self.projections = float(contraction_weight), projections

    def capture_blocker(self) -> str | None:
        return "its Jacobian penalty differentiates through a gradient (double backward)"

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        x = batch.input.detach().requires_grad_(True) if self.training else batch.input
        z = self.encode(x, batch.label)
        logits, recon = self.reconstruction(batch, z)
        terms = {"recon_loss": recon}
        loss = recon
        if self.training:
            total = 0.0
            for _ in range(self.projections):
                v = standard_normal(z.shape, z)
                (vjp,) = torch.autograd.grad(z, x, grad_outputs=v, create_graph=True)
                total = total + vjp.flatten(1).square().sum(1).mean()
            contraction = total / self.projections
            loss = loss + self.contraction_weight * contraction
            terms["contraction"] = contraction.detach()
        return LossTerms(loss=loss, output=torch.sigmoid(logits), terms=terms)

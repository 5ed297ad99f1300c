"""The interface every model shares, and the VAE machinery (reparameterisation, KL, warm-up, free bits).

Models take the shapes from the data: `input_shape` is the corrupted image (C, H, W), `output_shape` the clean
target. Decoders produce logits; `forward` returns images in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import check

Shape = tuple[int, int, int]
RECON_LOSSES = ("bce", "mse", "l1")
REDUCTIONS = ("mean", "sum")


@dataclass
class Batch:
    """What a model learns from: corrupted `input` -> clean `target`; `label` for plots and conditional models."""

    input: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor | None = None


@dataclass
class LossTerms:
    """Named loss terms: `loss` is minimised; everything else is logged under its own name."""

    loss: torch.Tensor
    recon_loss: torch.Tensor
    output: torch.Tensor
    kl_loss: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def logged(self) -> dict[str, torch.Tensor]:
        terms = {"loss": self.loss, "recon_loss": self.recon_loss}
        if self.kl_loss is not None:
            terms["kl_loss"] = self.kl_loss
        return {**terms, **self.extras}


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: str, reduction: str) -> torch.Tensor:
    """Per-pixel loss; reduction "mean" averages over pixels and batch (Keras' convention, the lesson's BCE),
    "sum" sums over pixels and averages over the batch (per-image, as an ELBO needs)."""
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif kind == "mse":
        per_pixel = (torch.sigmoid(logits) - target).square()
    else:
        per_pixel = (torch.sigmoid(logits) - target).abs()
    return per_pixel.mean() if reduction == "mean" else per_pixel.flatten(1).sum(1).mean()


def as_shape(shape) -> Shape:
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


class Autoencoder(nn.Module):
    """Base class: subclasses build `encoder`/`decoder` nets and may override encode/decode/loss."""

    generative = False  # has a prior to sample from (VAEs, AAE)
    conditional = False  # encode/decode take the class label

    def __init__(self, input_shape: Shape, output_shape: Shape, num_classes: int | None = None,
                 recon_loss: str = "bce", reduction: str = "mean"):
        super().__init__()
        check(recon_loss in RECON_LOSSES, f"model.recon_loss={recon_loss!r} is not one of {list(RECON_LOSSES)}")
        check(reduction in REDUCTIONS, f"model.reduction={reduction!r} is not one of {list(REDUCTIONS)}")
        self.input_shape, self.output_shape = as_shape(input_shape), as_shape(output_shape)
        self.num_classes, self.recon_kind, self.reduction = num_classes, recon_loss, reduction

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code of a batch (the posterior mean for VAEs)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the reconstruction at `output_shape`."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(self.encode(x)))

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        """Images in [0, 1] for a batch (conditional models also read the label)."""
        return self(batch.input)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        logits = self.decode(self.encode(batch.input))
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        return LossTerms(loss=recon, recon_loss=recon, output=torch.sigmoid(logits))

    @property
    def latent_size(self) -> int:
        """Number of latent dimensions (for PCA baselines and figures)."""
        with torch.no_grad():
            dummy = torch.zeros(1, *self.input_shape, device=next(self.parameters()).device)
            return self.encode(dummy).flatten(1).shape[1]


class VariationalAutoencoder(Autoencoder):
    """Encoder outputs (z_mean, z_log_var); z = mean + sigma * eps. KL summed over latent dims, averaged over the
    batch. With recon_loss=bce and reduction=sum, `loss` is the negative ELBO in nats per image (at beta=1).

    `beta` weights the KL (beta-VAE); `kl_warmup_steps` ramps that weight linearly from 0; `free_bits` (nats per
    latent dim) stops the optimiser from pushing a dimension's batch-averaged KL below that floor.
    """

    generative = True

    def __init__(self, *args, latent_dim: int = 2, beta: float = 1.0, kl_warmup_steps: int = 0,
                 free_bits: float = 0.0, reduction: str = "sum", **kwargs):
        super().__init__(*args, reduction=reduction, **kwargs)
        check(isinstance(latent_dim, int) and latent_dim >= 1, f"model.latent_dim must be an integer >= 1, got {latent_dim!r}")
        check(beta >= 0, f"model.beta must be >= 0, got {beta!r}")
        check(kl_warmup_steps >= 0, f"model.kl_warmup_steps must be >= 0, got {kl_warmup_steps!r}")
        check(free_bits >= 0, f"model.free_bits must be >= 0, got {free_bits!r}")
        self.latent_dim, self.beta, self.kl_warmup_steps, self.free_bits = latent_dim, beta, kl_warmup_steps, free_bits

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def encode(self, x):
        return self.posterior(x)[0]

    @staticmethod
    def reparameterize(mean, log_var, generator=None):
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * log_var) * eps

    @staticmethod
    def kl_per_dim(mean, log_var):
        """KL(q(z|x) || N(0, I)) per example and latent dimension."""
        return -0.5 * (1 + log_var - mean.square() - log_var.exp())

    def kl_weight(self, step: int) -> float:
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_warmup_steps)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        mean, log_var = self.posterior(batch.input)
        z = self.reparameterize(mean, log_var)
        return self.elbo_terms(mean, log_var, self.decode(z), batch.target, step)

    def elbo_terms(self, mean, log_var, logits, target, step: int = 0) -> LossTerms:
        """Reconstruction + weighted KL (beta, warm-up, free bits); shared by subclasses that encode/decode
        differently (the conditional VAE adds the label)."""
        recon = reconstruction_loss(logits, target, self.recon_kind, self.reduction)
        kl_dims = self.kl_per_dim(mean, log_var)
        kl = kl_dims.sum(1).mean()
        # free bits act on the batch-averaged KL of each dimension
        kl_opt = kl_dims.mean(0).clamp(min=self.free_bits).sum() if self.free_bits > 0 else kl
        return LossTerms(loss=recon + self.kl_weight(step) * kl_opt, recon_loss=recon, kl_loss=kl,
                         output=torch.sigmoid(logits))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images decoded from z ~ N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn((n, self.latent_dim), generator=generator, device=device)
        return torch.sigmoid(self.decode(z))

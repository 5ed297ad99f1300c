"""Latent layers: Gaussian draws and densities, the KL against a Gaussian prior, the KL regulariser a VAE's objective
applies to each of its latent layers (weight, warm-up, free bits), and the MMD that matches codes to a prior without
a KL (WAE, InfoVAE). One implementation each, shared by every family."""

from __future__ import annotations

import math

import torch


def standard_normal(shape: tuple[int, ...], like: torch.Tensor | torch.nn.Module,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws from N(0, I) of `shape` on the device and in the dtype of `like` (a tensor, or a module's first
    parameter), from `generator` when given (a seeded figure or sampler stream)."""
    ref = like if isinstance(like, torch.Tensor) else next(like.parameters())
    return torch.randn(shape, generator=generator, device=ref.device, dtype=ref.dtype)


def reparameterize(mean: torch.Tensor, log_var: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mean + sigma * eps, eps ~ N(0, I): a draw from N(mean, sigma^2) that gradients pass through."""
    return mean + torch.exp(0.5 * log_var) * standard_normal(mean.shape, mean, generator)


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor, prior_mean: torch.Tensor | float = 0.0,
                prior_log_var: torch.Tensor | float = 0.0) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(prior_mean, exp(prior_log_var))) per element, in nats; the default prior is
    N(0, I). A hierarchical model passes the top-down prior of each layer."""
    prior_log_var = torch.as_tensor(prior_log_var, dtype=mean.dtype, device=mean.device)
    return 0.5 * (prior_log_var - log_var + (log_var.exp() + (mean - prior_mean).square()) / prior_log_var.exp() - 1)


class KLRegulariser:
    """The KL of one latent layer as it enters the objective.

    beta          weight of the KL against the reconstruction term: with recon_loss=bce, reduction=sum and beta=1
                  the objective is the negative ELBO in nats per image; beta > 1 is the beta-VAE
    warmup_steps  the weight ramps linearly from 0 to beta over this many optimizer steps (0: beta from the start)
    free_bits     nats per latent dimension: a dimension's batch-averaged KL below this floor adds no gradient, so the
                  optimiser stops closing dimensions early (Kingma et al., 2016)

    `__call__(kl_per_dim, step)` takes the per-example, per-dimension KL [B, D] and returns (kl, weighted): `kl`,
    the KL summed over dimensions and averaged over the batch (what is logged), and `weighted`, what the loss adds.

    The values arrive checked: a model's constructor annotations (NonNegativeFloat, ...) are its config's schema.
    """

    def __init__(self, beta: float = 1.0, warmup_steps: int = 0, free_bits: float = 0.0):
        self.beta, self.warmup_steps, self.free_bits = float(beta), int(warmup_steps), float(free_bits)

    @property
    def depends_on_step(self) -> bool:
        return self.warmup_steps > 0

    @property
    def is_plain(self) -> bool:
        """beta=1 without warm-up or free bits: the weighted term is the KL itself (the ELBO's)."""
        return self.beta == 1.0 and self.warmup_steps == 0 and self.free_bits == 0.0

    def weight(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, step / self.warmup_steps)

    def __call__(self, kl_per_dim: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        kl_per_dim = kl_per_dim.flatten(1)
        kl = kl_per_dim.sum(1).mean()
        # free bits act on the batch-averaged KL of each dimension
        kl_opt = kl_per_dim.mean(0).clamp(min=self.free_bits).sum() if self.free_bits > 0 else kl
        return kl, self.weight(step) * kl_opt


def log_normal(z: torch.Tensor, mean: torch.Tensor | float = 0.0, log_var: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(z; mean, exp(log_var)) summed over the last dimension, in nats (2*pi included: densities of different
    priors compare)."""
    log_var = torch.as_tensor(log_var, dtype=z.dtype, device=z.device)
    return -0.5 * (math.log(2 * math.pi) + log_var + (z - mean).square() / log_var.exp()).sum(-1)


# The inverse-multiquadratic kernel's scales, as multiples of C = 2 * dim (the prior's 2 d sigma^2 with sigma = 1):
# Tolstikhin et al. (2018) sum the kernel over this range so that codes far from and close to the prior both
# see a gradient.
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq") -> torch.Tensor:
    """Unbiased estimate of the squared maximum mean discrepancy between the samples x [n, d] and y [m, d]:
    mean k(x, x') + mean k(y, y') - 2 mean k(x, y), the diagonals left out. kernel "imq": sum over IMQ_SCALES of
    C / (C + |a - b|^2), C = 2 d s (WAE-MMD); "rbf": exp(-|a - b|^2 / (2 d)) (InfoVAE)."""
    n, m, d = len(x), len(y), x.shape[1]
    both = torch.cat([x, y])
    sq = torch.cdist(both, both).square()
    if kernel == "imq":
        k = sum(2 * d * s / (2 * d * s + sq) for s in IMQ_SCALES)
    else:
        k = torch.exp(-sq / (2 * d))
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    off = lambda block, size: (block.sum() - block.diagonal().sum()) / (size * (size - 1))  # noqa: E731
    return off(kxx, n) + off(kyy, m) - 2 * kxy.mean()

"""VAEs built to separate the factors of variation into separate code dimensions, on the conv VAE's nets: β-TCVAE
(Chen et al., 2018), DIP-VAE-I and -II (Kumar et al., 2018) and Burgess et al.'s (2018) capacity-annealed β-VAE.
FactorVAE, which needs a discriminator, is aelab.models.factorvae. Each weight multiplies its term against the
reconstruction term (per image with reduction=sum, the default). The generative model is the VAE's (N(0, I) prior,
Bernoulli decoder), so every figure and sampler of a VAE applies; `kl_loss` is always the analytic KL, logged for
comparison whatever the objective adds.

β-TCVAE   the KL split into index-code mutual information, total correlation and dimension-wise KL, each estimated
          by minibatch-weighted sampling: log q(z) ~ logsumexp_j log q(z | x_j) - log(N M) over the batch's M
          posteriors (N: the training set's size, `dataset_size`; it shifts the logged mi/tc/dim_kl by constants,
          never their gradients); loss = recon + alpha mi + beta tc + gamma dim_kl.
DIP-VAE   the ELBO plus a penalty moving the covariance C of the codes towards I: lambda_od sum_{i != j} C_ij^2 +
          lambda_d sum_i (C_ii - 1)^2, with C = Cov[posterior means] (I) or that plus the mean posterior variance (II).
Capacity  recon + gamma |KL - C|, the capacity C growing linearly from 0 to capacity_max nats over capacity_steps
          optimizer steps, so the code is allowed more information as training goes on.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from aelab.errors import check
from aelab.models.base import KL_TERM, RECON_TERM, Batch, LossTerms, VariationalAutoencoder, reconstruction_loss
from aelab.models.contract import Term
from aelab.models.latent import gaussian_kl, reparameterize
from aelab.models.layers import conv_coder
from aelab.types import NonNegativeFloat, NonNegativeInt, PositiveInt


class ConvCodeVAE(VariationalAutoencoder):
    """The conv VAE's encoder and decoder (conv stages, a dense layer of `hidden`, a Gaussian code of latent_dim)."""

    def __init__(self, *args, channels: list[PositiveInt] = (32, 32, 64, 64), hidden: PositiveInt = 256,
                 batch_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder, self.decoder = conv_coder(self.input_shape, self.output_shape, list(channels), hidden,
                                                2 * self.latent_dim, self.latent_dim, batch_norm)

    def sampled(self, batch: Batch):
        """(mean, log_var, z, logits, reconstruction loss, analytic KL [B, D]) of one posterior draw."""
        mean, log_var = self.posterior(batch.input, batch.label)
        z = reparameterize(mean, log_var)
        logits = self.decode(z, batch.label)
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        return mean, log_var, z, logits, recon, gaussian_kl(mean, log_var)


def log_density_per_dim(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """[B, B, D]: log N(z_i,d; mean_j,d, exp(log_var_j,d)), image i's draw under image j's posterior."""
    z, mean, log_var = z[:, None], mean[None], log_var[None]
    return -0.5 * (math.log(2 * math.pi) + log_var + (z - mean).square() / log_var.exp())


class BetaTCVAE(ConvCodeVAE):
    """alpha, beta, gamma: weights of the mutual information, total correlation (model.beta) and dimension-wise
    KL; dataset_size: N of the minibatch-weighted estimate."""

    terms = (RECON_TERM, KL_TERM,
             Term("mi", "index-code mutual information I(x; z), minibatch-weighted estimate (nats)"),
             Term("tc", "total correlation KL(q(z) || prod_d q(z_d)), minibatch-weighted estimate (nats)"),
             Term("dim_kl", "dimension-wise KL sum_d KL(q(z_d) || p(z_d)), minibatch-weighted estimate (nats)"))

    def __init__(self, *args, alpha: NonNegativeFloat = 1.0, gamma: NonNegativeFloat = 1.0,
                 dataset_size: PositiveInt = 50000, **kwargs):
        super().__init__(*args, **kwargs)
        check(self.kl.warmup_steps == 0 and self.kl.free_bits == 0.0,
              "model=beta_tcvae weighs its three KL parts (alpha, beta, gamma): leave model.kl_warmup_steps and "
              "model.free_bits at 0")
        self.alpha, self.gamma, self.dataset_size = float(alpha), float(gamma), dataset_size

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        mean, log_var, z, logits, recon, kl_dims = self.sampled(batch)
        m = len(z)
        log_nm = math.log(self.dataset_size * m)
        per_dim = log_density_per_dim(z, mean, log_var)                       # [M, M, D]
        log_qz_x = per_dim.diagonal(dim1=0, dim2=1).T.sum(1)                   # log q(z_i | x_i)
        log_qz = torch.logsumexp(per_dim.sum(2), dim=1) - log_nm               # log q(z_i)
        log_prod = (torch.logsumexp(per_dim, dim=1) - log_nm).sum(1)           # log prod_d q(z_i,d)
        log_pz = (-0.5 * (math.log(2 * math.pi) + z.square())).sum(1)          # log N(z_i; 0, I)
        mi, tc, dim_kl = (log_qz_x - log_qz).mean(), (log_qz - log_prod).mean(), (log_prod - log_pz).mean()
        loss = recon + self.alpha * mi + self.kl.beta * tc + self.gamma * dim_kl
        return LossTerms(loss=loss, output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "kl_loss": kl_dims.sum(1).mean(), "mi": mi, "tc": tc,
                                "dim_kl": dim_kl})


class DIPVAE(ConvCodeVAE):
    """kind: i (covariance of the posterior means) | ii (plus the mean posterior variance); lambda_od, lambda_d:
    weights of the off-diagonal and diagonal penalties."""

    terms = (RECON_TERM, KL_TERM, Term("dip", "the covariance penalty sum_{i != j} C_ij^2 weighted lambda_od / "
                                              "lambda_d plus sum_i (C_ii - 1)^2, as the loss adds it"))

    def __init__(self, *args, kind: Literal["i", "ii"] = "ii", lambda_od: NonNegativeFloat = 10.0,
                 lambda_d: NonNegativeFloat = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind, self.lambda_od, self.lambda_d = kind, float(lambda_od), float(lambda_d)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        mean, log_var, z, logits, recon, kl_dims = self.sampled(batch)
        kl, weighted = self.kl(kl_dims, step)
        centred = mean - mean.mean(0, keepdim=True)
        cov = centred.T @ centred / max(1, len(mean) - 1)
        if self.kind == "ii":
            cov = cov + torch.diag(log_var.exp().mean(0))
        diag = torch.diagonal(cov)
        dip = self.lambda_od * (cov - torch.diag(diag)).square().sum() + self.lambda_d * (diag - 1).square().sum()
        return LossTerms(loss=recon + weighted + dip, output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "kl_loss": kl, "dip": dip})


class CapacityBetaVAE(ConvCodeVAE):
    """capacity_gamma: weight of |KL - C|; capacity_max: C's final value in nats; capacity_steps: optimizer steps
    over which C grows from 0."""

    terms = (RECON_TERM, KL_TERM, Term("capacity", "the capacity C the KL is pulled to at this step (nats)",
                                       reduce="max", better=None))

    def __init__(self, *args, capacity_gamma: NonNegativeFloat = 100.0, capacity_max: NonNegativeFloat = 25.0,
                 capacity_steps: NonNegativeInt = 100000, **kwargs):
        super().__init__(*args, **kwargs)
        check(self.kl.is_plain, "model=capacity_vae pulls the KL to its capacity (capacity_gamma, capacity_max): "
                                "leave model.beta at 1 and model.kl_warmup_steps, model.free_bits at 0")
        self.capacity_gamma, self.capacity_max = float(capacity_gamma), float(capacity_max)
        self.capacity_steps = capacity_steps

    def capture_blocker(self) -> str | None:
        return "its capacity grows with the step number (model.capacity_steps)"

    def capacity(self, step: int) -> float:
        if self.capacity_steps <= 0:
            return self.capacity_max
        return self.capacity_max * min(1.0, step / self.capacity_steps)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        _, _, _, logits, recon, kl_dims = self.sampled(batch)
        kl = kl_dims.sum(1).mean()
        c = self.capacity(step)
        return LossTerms(loss=recon + self.capacity_gamma * (kl - c).abs(), output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "kl_loss": kl, "capacity": kl.new_tensor(c)})

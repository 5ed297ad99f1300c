"""The VampPrior VAE (Tomczak & Welling, 2018): the prior is a mixture of the posteriors of K learned pseudo-inputs,
p(z) = 1/K sum_k q(z | u_k), instead of N(0, I).

The KL of a mixture prior has no closed form: the loss uses the one-sample estimate log q(z|x) - log p(z) at the
sampled z (logged as kl_loss, nats per image; unbiased, noisier than the analytic KL of a Gaussian prior). The
importance weights of the NLL use the same p(z), so test/nll is a correct estimate for this model (Bernoulli
decoder). Pseudo-inputs live in the input space (the corrupted image's shape) and are kept in [0, 1] by a hard
clamp, as the paper's hardtanh does.

Two models carry it: `vamp_vae` (the conv VAE's nets, the ELBO) and `vamp_resnet` (vae_resnet's residual nets and
objectives: the ELBO, or the IWAE bound, whose importance weights are this prior's).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import check
from aelab.models.base import RECON_TERM, Batch, LossTerms, VariationalAutoencoder, reconstruction_loss
from aelab.models.contract import Term
from aelab.models.latent import log_normal, reparameterize, standard_normal
from aelab.models.layers import conv_coder
from aelab.models.vae_resnet import ResNetVAE
from aelab.types import PositiveInt


class VampPrior(VariationalAutoencoder):
    """A VAE whose prior is the VampPrior: a subclass builds its nets, then calls `add_pseudo_inputs`. beta and
    kl_warmup_steps weight the KL estimate; free_bits needs a KL per dimension, which a mixture prior does not give,
    and is refused."""

    terms = (RECON_TERM, Term("kl_loss", "log q(z|x) - log p(z) at the sampled z, nats per image: a one-sample "
                                         "estimate of the KL to the VampPrior (the loss adds beta times it)"))
    prior = "learned"

    def add_pseudo_inputs(self, count: int) -> None:
        check(self.kl.free_bits == 0.0, "model.free_bits must be 0 with a VampPrior (model=vamp_vae, vamp_resnet): a "
                                        "mixture prior has no KL per latent dimension for the floor to act on")
        # initialised around grey, as the paper's N(0.5, 0.01) pseudo-inputs
        self.pseudo = nn.Parameter(0.5 + 0.01 * torch.randn(count, *self.input_shape))

    def pseudo_posteriors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(means, log-variances) [K, D] of q(z | u_k)."""
        return self.posterior(self.pseudo.clamp(0, 1))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_k log q(z | u_k) - log K, over the last dimension of z [..., D]."""
        means, log_vars = self.pseudo_posteriors()
        per_component = log_normal(z.unsqueeze(-2), means, log_vars)  # [..., K]
        return torch.logsumexp(per_component, dim=-1) - math.log(len(means))

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        """-ELBO with the one-sample KL estimate."""
        mean, log_var = self.posterior(batch.input, batch.label)
        z = reparameterize(mean, log_var)
        logits = self.decode(z, batch.label)
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        kl = (log_normal(z, mean, log_var) - self.log_prior(z)).mean()
        return LossTerms(loss=recon + self.kl.weight(step) * kl, output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "kl_loss": kl})

    def prior_codes(self, n: int, generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
        """A pseudo-input drawn uniformly for each code, then z ~ q(z | u_k)."""
        means, log_vars = self.pseudo_posteriors()
        pick = torch.randint(len(means), (n,), generator=generator, device=means.device)
        return means[pick] + torch.exp(0.5 * log_vars[pick]) * standard_normal((n, means.shape[1]), means, generator)

    def log_importance_weights(self, inputs, targets, labels, k, generator=None):
        mean, log_var = (t.float() for t in self.posterior(inputs, labels))
        b, d = mean.shape
        z = mean + torch.exp(0.5 * log_var) * standard_normal((k, b, d), mean, generator)  # [k, b, d]
        logits = self.decode(z.reshape(k * b, d), None if labels is None else labels.repeat(k)).float()
        log_px_z = -F.binary_cross_entropy_with_logits(logits, targets.float().repeat(k, 1, 1, 1), reduction="none")
        log_ratio = self.log_prior(z) - log_normal(z, mean, log_var)  # [k, b]
        return log_px_z.flatten(1).sum(1).view(k, b) + log_ratio


class VampPriorVAE(VampPrior):
    """The conv VAE's nets (channels, hidden, batch_norm) with a VampPrior of `pseudo_inputs` components."""

    likelihood = True  # VampPrior's importance weights, with the mixture prior (declared per class: not inherited)

    def __init__(self, *args, channels: list[PositiveInt] = (32, 64), hidden: PositiveInt = 128,
                 pseudo_inputs: PositiveInt = 100, batch_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder, self.decoder = conv_coder(self.input_shape, self.output_shape, list(channels), hidden,
                                                2 * self.latent_dim, self.latent_dim, batch_norm)
        self.add_pseudo_inputs(pseudo_inputs)


class VampResNetVAE(ResNetVAE, VampPrior):
    """vae_resnet's nets and objectives (channels, blocks, norm; objective elbo | iwae, iwae_samples,
    elbo_warmup_epochs) with a VampPrior of `pseudo_inputs` components: its ELBO is VampPrior.loss, and the IWAE
    bound's weights are VampPrior.log_importance_weights (ResNetVAE calls both through the method order)."""

    likelihood = True  # VampPrior's importance weights, with the mixture prior (declared per class: not inherited)

    def __init__(self, *args, pseudo_inputs: PositiveInt = 100, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_pseudo_inputs(pseudo_inputs)

"""A hierarchical VAE with top-down inference (the ladder VAE of Sønderby et al., 2016), trained on the ELBO or on
the importance-weighted bound (Burda et al., 2015).

    bottom-up   x -> h_1 -> ... -> h_L (dense), each h_i giving a Gaussian estimate (m_i, s_i^2) of layer i
    generative  z_L ~ N(0, I), z_i ~ p(z_i | z_{i+1}) = N(mu_i, sigma_i^2) by an MLP of z_{i+1}, x ~ p(x | z_1)
    inference   q(z_L | x) = N(m_L, s_L^2); q(z_i | z_{i+1}, x): the precision-weighted merge of (m_i, s_i^2) with
                the prior's (mu_i, sigma_i^2), so the top-down pass shares the generative model's path

Each layer's KL (analytic, given the sampled layer above) goes through its own KLRegulariser: beta, warm-up and free
bits apply per layer. The importance weights use the whole hierarchy, log p(x, z_1..L) - log q(z_1..L | x), so
test/nll is a correct estimate for several layers (the one-layer estimator of VariationalAutoencoder is replaced,
not inherited). The code a probe reads is layer 1's posterior mean (a deterministic top-down pass on means).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import check
from aelab.models.base import RECON_TERM, Batch, LossTerms, VariationalAutoencoder, reconstruction_loss
from aelab.models.contract import Term
from aelab.models.latent import KLRegulariser, gaussian_kl, log_normal, standard_normal
from aelab.models.layers import mlp
from aelab.types import PositiveInt


def kl_term(i: int) -> Term:
    return Term(f"kl_{i}", f"KL of latent layer {i} (1: next to the image) to its prior given the layer above, nats "
                           "per image, unweighted")


class HierarchicalVAE(VariationalAutoencoder):
    """latent_dims: sizes of z_1..z_L (z_1 next to the image); hidden: the bottom-up width before each layer (the
    top-down MLPs use the same); objective elbo | iwae, iwae_samples: K. beta / kl_warmup_steps / free_bits apply to
    every layer's KL."""

    terms = (RECON_TERM, Term("kl_loss", "sum of the layers' KLs, nats per image, unweighted"), kl_term(1), kl_term(2))
    prior = "learned"
    likelihood = True  # its own importance weights over every layer
    latent_layers = 2

    def __init__(self, *args, latent_dims: list[PositiveInt] = (32, 16), hidden: list[PositiveInt] = (512, 256),
                 objective: Literal["elbo", "iwae"] = "elbo", iwae_samples: PositiveInt = 5, **kwargs):
        latent_dims, hidden = [int(d) for d in latent_dims], [int(h) for h in hidden]
        super().__init__(*args, latent_dim=latent_dims[0], **kwargs)
        check(len(latent_dims) >= 2, f"model.latent_dims must list at least two layers, got {latent_dims}")
        check(len(hidden) == len(latent_dims), f"model.hidden must give one width per latent layer "
                                               f"({len(latent_dims)}), got {hidden}")
        check(objective == "elbo" or self.recon_kind == "bce",
              "model.objective=iwae needs the Bernoulli decoder: model.recon_loss=bce")
        self.latent_dims, self.objective, self.iwae_samples = latent_dims, objective, iwae_samples
        self.terms = (RECON_TERM, type(self).terms[1], *(kl_term(i + 1) for i in range(len(latent_dims))))
        self.latent_layers = len(latent_dims)
        self.kls = [KLRegulariser(self.kl.beta, self.kl.warmup_steps, self.kl.free_bits) for _ in latent_dims]
        widths = [math.prod(self.input_shape), *hidden]
        self.up = nn.ModuleList(mlp([a, b], final_activation=True) for a, b in zip(widths[:-1], widths[1:]))
        self.up_heads = nn.ModuleList(nn.Linear(h, 2 * d) for h, d in zip(hidden, latent_dims))
        self.down = nn.ModuleList(mlp([latent_dims[i + 1], hidden[i], 2 * latent_dims[i]])
                                  for i in range(len(latent_dims) - 1))
        self.decoder = nn.Sequential(mlp([latent_dims[0], hidden[0], math.prod(self.output_shape)]),
                                     nn.Unflatten(1, self.output_shape))

    def capture_blocker(self) -> str | None:
        if any(k.depends_on_step for k in self.kls):
            return "its KL weights warm up with the step number (model.kl_warmup_steps)"
        return super().capture_blocker()

    # --- the two passes -----------------------------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(m_i, log s_i^2) of every layer, i = 1..L."""
        h, out = x.flatten(1), []
        for layer, head in zip(self.up, self.up_heads):
            h = layer(h)
            out.append(tuple(head(h).chunk(2, dim=1)))
        return out

    def top_down(self, estimates, sample: bool = True, generator=None):
        """Per layer from the top: (z, q mean, q log-var, prior mean, prior log-var); the top layer's prior is
        N(0, I). Without `sample` each z is its posterior mean."""
        layers = [None] * len(estimates)
        z = None
        for i in reversed(range(len(estimates))):
            m, log_s = estimates[i]
            if z is None:
                p_mean, p_log_var = torch.zeros_like(m), torch.zeros_like(m)
                q_mean, q_log_var = m, log_s
            else:
                p_mean, p_log_var = self.down[i](z).chunk(2, dim=1)
                precision = torch.exp(-log_s) + torch.exp(-p_log_var)
                q_log_var = -torch.log(precision)
                q_mean = (m * torch.exp(-log_s) + p_mean * torch.exp(-p_log_var)) / precision
            z = q_mean + torch.exp(0.5 * q_log_var) * standard_normal(q_mean.shape, q_mean, generator) \
                if sample else q_mean
            layers[i] = (z, q_mean, q_log_var, p_mean, p_log_var)
        return layers

    def encode(self, x, labels=None):
        return self.top_down(self.bottom_up(x), sample=False)[0][0]

    def posterior(self, x, labels=None):
        _, mean, log_var, _, _ = self.top_down(self.bottom_up(x), sample=False)[0]
        return mean, log_var

    # --- objectives -----------------------------------------------------------------------------------------------
    def log_weights(self, x: torch.Tensor, target: torch.Tensor, k: int, generator=None) -> torch.Tensor:
        """[k, B] log p(target, z) - log q(z | x) over every layer, k draws per image."""
        layers = self.top_down([(m.repeat(k, 1), s.repeat(k, 1)) for m, s in self.bottom_up(x)], True, generator)
        logits = self.decode(layers[0][0]).float()
        log_px = -F.binary_cross_entropy_with_logits(logits, target.float().repeat(k, 1, 1, 1), reduction="none")
        log_w = log_px.flatten(1).sum(1)
        for z, q_mean, q_log_var, p_mean, p_log_var in layers:
            log_w = log_w + log_normal(z, p_mean, p_log_var) - log_normal(z, q_mean, q_log_var)
        return log_w.view(k, len(x))

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        layers = self.top_down(self.bottom_up(batch.input))
        logits = self.decode(layers[0][0])
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        kls, weighted = [], []
        for regulariser, (_, q_mean, q_log_var, p_mean, p_log_var) in zip(self.kls, layers):
            kl, w = regulariser(gaussian_kl(q_mean, q_log_var, p_mean, p_log_var), step)
            kls.append(kl)
            weighted.append(w)
        terms = {"recon_loss": recon, "kl_loss": sum(kls), **{f"kl_{i + 1}": kl for i, kl in enumerate(kls)}}
        loss = recon + sum(weighted)
        if self.objective == "iwae":
            log_w = self.log_weights(batch.input, batch.target, self.iwae_samples)
            loss = -(torch.logsumexp(log_w, dim=0) - math.log(self.iwae_samples)).mean()
            terms = {k: v.detach() for k, v in terms.items()}  # the single-sample ELBO terms, for comparison
        return LossTerms(loss=loss, output=torch.sigmoid(logits), terms=terms)

    def log_importance_weights(self, inputs, targets, labels, k, generator=None):
        return self.log_weights(inputs, targets, k, generator)

    def prior_codes(self, n: int, generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
        """Ancestral draws z_L ~ N(0, I), ..., z_1 ~ p(z_1 | z_2): layer-1 codes, as `generate` decodes them."""
        z = standard_normal((n, self.latent_dims[-1]), self, generator)
        for i in reversed(range(len(self.latent_dims) - 1)):
            mean, log_var = self.down[i](z).chunk(2, dim=1)
            z = mean + torch.exp(0.5 * log_var) * standard_normal(mean.shape, mean, generator)
        return z

"""A model family aelab does not ship, written against its contract alone: a VAE with two stochastic layers.

    q(z1 | x), q(z2 | z1)          bottom-up inference
    p(z2) = N(0, I), p(z1 | z2)    a learned, hierarchical prior
    p(x | z1)                      Bernoulli decoder

It declares its loss terms (aelab.models.Term) and aelab logs each under train/, val/ and test/, lists it in
HPARAMS, CUSTOM SCALARS, metrics.json and aelab-compare without knowing this class. Besides the reconstruction it
reports three terms: the KL of each layer (each through its own aelab.models.KLRegulariser, so warm-up and free bits
apply per layer) and `z2_drift`, the distance between the batch's mean top code and a running average of it. That
running average is state outside the gradient: `training_loss` hands the batch's top codes over in
`LossTerms.state`, and `after_step`, which aelab calls once the optimizer has stepped, folds them into it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aelab.models import (Batch, KLRegulariser, LossTerms, Term, VariationalAutoencoder, gaussian_kl,
                          reconstruction_loss, reparameterize, standard_normal)


def gaussian_head(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """An MLP giving (mean, log-variance) of n_out Gaussian numbers."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 2 * n_out))


class LadderVAE(VariationalAutoencoder):
    """latent_dims: sizes of z1 and z2; hidden: width of every MLP; beta / kl_warmup_steps / free_bits apply to both
    layers' KL; ema: the running average's decay per step."""

    terms = (Term("recon_loss", "-log p(x | z1) in nats per image (Bernoulli decoder)"),
             Term("kl_1", "KL(q(z1 | x) || p(z1 | z2)) in nats per image; the loss adds it through the layer's "
                          "regulariser (beta, warm-up, free bits)"),
             Term("kl_2", "KL(q(z2 | z1) || N(0, I)) in nats per image, regularised like kl_1"),
             Term("z2_drift", "distance of the batch's mean top code from its running average (a diagnostic)",
                  reduce="max", better=None))
    prior = "learned"
    latent_layers = 2
    likelihood = False  # the one-layer importance-sampling estimator does not hold for two layers

    def __init__(self, *args, latent_dims: list[int] = (16, 4), hidden: int = 128, ema: float = 0.9, **kwargs):
        super().__init__(*args, latent_dim=int(latent_dims[0]), **kwargs)
        (d1, d2), pixels = (int(d) for d in latent_dims), math.prod(self.input_shape)
        self.d2, self.ema = d2, float(ema)
        self.encoder = nn.Sequential(nn.Flatten(), gaussian_head(pixels, hidden, d1))  # q(z1 | x)
        self.up = gaussian_head(d1, hidden, d2)                                        # q(z2 | z1)
        self.down = gaussian_head(d2, hidden, d1)                                      # p(z1 | z2)
        self.decoder = nn.Sequential(nn.Linear(d1, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(self.output_shape)),
                                     nn.Unflatten(1, self.output_shape))               # p(x | z1)
        self.kl_layers = [self.kl, KLRegulariser(self.kl.beta, self.kl.warmup_steps, self.kl.free_bits)]
        self.register_buffer("z2_average", torch.zeros(d2))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # after_step calls, for all to see

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        mean1, log_var1 = self.posterior(batch.input)
        z1 = reparameterize(mean1, log_var1)
        mean2, log_var2 = self.up(z1).chunk(2, dim=1)
        z2 = reparameterize(mean2, log_var2)
        prior_mean1, prior_log_var1 = self.down(z2).chunk(2, dim=1)
        logits = self.decode(z1)
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        kl_1, weighted_1 = self.kl_layers[0](gaussian_kl(mean1, log_var1, prior_mean1, prior_log_var1), step)
        kl_2, weighted_2 = self.kl_layers[1](gaussian_kl(mean2, log_var2), step)
        drift = (mean2.detach().mean(0) - self.z2_average).norm()
        return LossTerms(loss=recon + weighted_1 + weighted_2, output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "kl_1": kl_1, "kl_2": kl_2, "z2_drift": drift},
                         state={"z2_mean": mean2.detach().mean(0)})

    def after_step(self, terms: LossTerms, step: int) -> None:
        self.z2_average.mul_(self.ema).add_((1 - self.ema) * terms.state["z2_mean"])
        self.updates.add_(1)

    def prior_codes(self, n: int, generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
        """z1 codes drawn from the hierarchical prior: z2 ~ N(0, I), then z1 ~ p(z1 | z2)."""
        z2 = standard_normal((n, self.d2), self, generator)
        mean1, log_var1 = self.down(z2).chunk(2, dim=1)
        return reparameterize(mean1, log_var1, generator)

"""FactorVAE (Kim & Mnih, 2018): the ELBO plus gamma times the total correlation of the aggregate posterior, estimated
by a discriminator that tells codes of the batch (z ~ q(z|x)) from codes whose dimensions were shuffled across the
batch (draws from prod_d q(z_d)): TC ~ E[logit D(z)], the density-ratio trick. The discriminator trains through the
two-optimizer family (TwoOptimizerTraining, as the adversarial AE's): each batch steps it first, then the VAE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aelab.models.base import KL_TERM, RECON_TERM, Batch, LossTerms, TwoOptimizerTraining
from aelab.models.contract import Term
from aelab.models.disentangle import ConvCodeVAE
from aelab.models.layers import mlp
from aelab.types import NonNegativeFloat, PositiveInt


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each code dimension shuffled independently across the batch: samples of the product of the marginals."""
    return torch.stack([z[torch.randperm(len(z), device=z.device), d] for d in range(z.shape[1])], dim=1)


class FactorVAE(TwoOptimizerTraining, ConvCodeVAE):
    """tc_gamma: weight of the total-correlation estimate; disc_hidden: the discriminator's widths."""

    terms = (RECON_TERM, KL_TERM,
             Term("tc", "total correlation estimated by the discriminator, E[logit D(z)] (nats; the loss adds "
                        "tc_gamma times it)"),
             Term("d_loss", "the discriminator's BCE, codes against dimension-shuffled codes", better=None),
             Term("d_acc", "the discriminator's accuracy (0.5: it cannot tell them apart)", better=None))

    def __init__(self, *args, tc_gamma: NonNegativeFloat = 10.0, disc_hidden: list[PositiveInt] = (256, 256),
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.tc_gamma = float(tc_gamma)
        self.discriminator = mlp([self.latent_dim, *disc_hidden, 1])  # one logit: "a joint draw, not shuffled"

    def parameter_groups(self):
        disc = {id(p) for p in self.discriminator.parameters()}
        return [[p for p in self.parameters() if id(p) not in disc], list(self.discriminator.parameters())]

    def _discriminate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint, shuffled = self.discriminator(z), self.discriminator(permute_dims(z))
        loss = 0.5 * (F.binary_cross_entropy_with_logits(joint, torch.ones_like(joint))
                      + F.binary_cross_entropy_with_logits(shuffled, torch.zeros_like(shuffled)))
        acc = 0.5 * ((joint > 0).float().mean() + (shuffled < 0).float().mean())
        return loss, acc

    def discriminator_terms(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            mean, log_var = self.posterior(batch.input, batch.label)
            z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        loss, acc = self._discriminate(z)
        return loss, {"d_loss": loss.detach(), "d_acc": acc}

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        mean, log_var, z, logits, recon, kl_dims = self.sampled(batch)
        kl, weighted = self.kl(kl_dims, step)
        tc = self.discriminator(z).mean()
        terms = {"recon_loss": recon, "kl_loss": kl, "tc": tc.detach()}
        if not self.training:  # evaluation: how well the discriminator tells the two apart (cheap MLP)
            with torch.no_grad():
                d_loss, d_acc = self._discriminate(z)
            terms.update(d_loss=d_loss, d_acc=d_acc)
        return LossTerms(loss=recon + weighted + self.tc_gamma * tc, output=torch.sigmoid(logits), terms=terms)

"""VQ-VAE (van den Oord et al., 2017): a conv encoder gives a map of code vectors, each replaced by its nearest
codebook entry; the decoder reconstructs from the quantised map. Gradients pass the quantiser straight through (the
decoder's gradient at the quantised map is handed to the encoder's output unchanged).

The codebook learns by exponential moving averages (`codebook_update=ema`, the default) or by its own loss term
(`codebook_update=loss`). The averages are state outside the gradient: `training_loss` hands the step's encoder
outputs and their code indices over in `LossTerms.state`, and `after_step` (called once the optimizer has stepped)
folds them into the codebook and restarts codes no batch has used for `restart_after` steps.

Sampling needs a prior over the index map: the second stage, `aelab.models.vqvae_prior.VQVAEPrior`, learns one from
this model's checkpoint. This first stage declares no prior.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.models.base import Autoencoder, reconstruction_loss
from aelab.models.contract import Batch, LossTerms, Term
from aelab.models.layers import ResNetDecoder, ResNetEncoder
from aelab.types import Fraction, NonNegativeFloat, NonNegativeInt, PositiveInt

RECON = Term("recon_loss", "reconstruction loss of the output against the clean target (model.recon_loss; "
                           "model.reduction=mean: per pixel, sum: per image); weight 1 in the loss")
COMMITMENT = Term("commitment", "squared distance of the encoder outputs to their codebook vectors (mean per code "
                                "element for reduction=mean, summed over the code map for sum); the loss adds "
                                "model.commitment_weight times it, and only the encoder learns from it")
CODEBOOK = Term("codebook_loss", "the commitment distance with the gradient sent to the codebook instead "
                                 "(codebook_update=loss); the loss adds model.codebook_weight times it")
PERPLEXITY = Term("perplexity", "exp(entropy) of the batch's code assignments: the number of equally used codes it "
                                "amounts to (codebook_size at most)", better="higher")
USAGE = Term("usage", "fraction of the codebook the batch's code map uses", better="higher")


def code_statistics(indices: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(counts [K], perplexity, usage) of a batch of code indices."""
    flat = indices.flatten()
    # a scatter, not bincount: bincount reads the largest index back to the host, which a CUDA graph cannot hold
    counts = torch.zeros(codebook_size, device=flat.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=counts.dtype))
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return counts, entropy.exp(), (counts > 0).float().mean()


def ema_update(codebook: torch.Tensor, counts_ema: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor,
               decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One EMA step of the codebook, as (new codebook, new counts).

    Each code k keeps a count N_k and the sum m_k = N_k e_k of the encoder outputs it stands for; a step that assigns
    it n_k outputs summing to s_k moves them to N_k' = d N_k + (1 - d) n_k and m_k' = d m_k + (1 - d) s_k, and the
    code to their ratio: e_k' = (d N_k e_k + (1 - d) s_k) / N_k'. A code the step does not use keeps its vector
    (the ratio is unchanged); its count decays. Starting at N_k = 1, a code used once moves to d e_k + (1 - d) z.
    """
    new_counts = decay * counts_ema + (1 - decay) * counts
    moved = (decay * counts_ema[:, None] * codebook + (1 - decay) * sums) / new_counts.clamp_min(1e-12)[:, None]
    return torch.where(counts[:, None] > 0, moved, codebook), new_counts


class VQVAE(Autoencoder):
    """Encoder (`channels`: one stride-2 stage each, then `res_blocks` residual blocks) -> 1x1 conv to `code_dim`
    numbers per position -> nearest of `codebook_size` codes -> the mirrored decoder.

    Weights in the loss (recon_loss has weight 1):
      commitment_weight  multiplies `commitment`, the squared distance from each encoder output to its code (its units
                         follow model.reduction: mean per code element, or summed over one image's code map)
      codebook_weight    multiplies `codebook_loss`, the same distance pulling the codes (codebook_update=loss only)
    Codebook:
      codebook_update    ema: codes follow moving averages of their encoder outputs (after_step); loss: by gradient
      decay              the EMA's weight of the past per step (ema only)
      restart_after      a code no training batch has used for this many steps is set to a random encoder output of
                         the current batch (0: never); before training every code counts as that long unused, so the
                         first step places the codebook on its encoder outputs

    Its code for the probes is the quantised map, flattened (channel-major: code_dim x h x w); `generate` decodes such
    a flat map as it is (off-codebook points, as latent noise and interpolation make, are not snapped to codes).
    """

    terms = (RECON, COMMITMENT, PERPLEXITY, USAGE)
    code_pooling = "flatten (the quantised code map: code_dim x h x w codebook vectors)"

    def __init__(self, *args, channels: list[PositiveInt] = (16,), res_blocks: NonNegativeInt = 2,
                 code_dim: PositiveInt = 8, codebook_size: PositiveInt = 256,
                 commitment_weight: NonNegativeFloat = 0.25, codebook_update: Literal["ema", "loss"] = "ema",
                 codebook_weight: NonNegativeFloat = 1.0, decay: Fraction = 0.99,
                 restart_after: NonNegativeInt = 100, norm: Literal["batch", "none"] = "none", **kwargs):
        super().__init__(*args, **kwargs)
        channels = list(channels)
        self.code_dim, self.codebook_size = code_dim, codebook_size
        self.commitment_weight, self.codebook_weight = float(commitment_weight), float(codebook_weight)
        self.codebook_update, self.decay, self.restart_after = codebook_update, float(decay), restart_after
        stages = [channels[0], *channels]  # the stem's width, then one width per stride-2 stage
        body = ResNetEncoder(self.input_shape[0], stages, [0] * len(channels) + [res_blocks], norm)
        self.encoder = nn.Sequential(body, nn.Conv2d(channels[-1], code_dim, 1))
        map_shape = body.out_shape(self.input_shape)[1:]
        self.decoder = ResNetDecoder((code_dim, *map_shape), stages[::-1], [res_blocks] + [0] * len(channels),
                                     self.output_shape, norm)
        # placeholders: every code counts as unused since before the first step, so the first after_step restarts
        # all the codes that step did not use at its encoder outputs (a codebook drawn at random leaves most codes
        # far from the encoder's outputs, and a map of one code tells the decoder nothing)
        codebook = torch.randn(codebook_size, code_dim)
        if codebook_update == "ema":
            self.register_buffer("codebook", codebook)
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("counts", torch.ones(codebook_size))  # EMA counts N_k (each code starts as one output)
        self.register_buffer("last_used", torch.full((codebook_size,), -restart_after, dtype=torch.long))
        self.terms = (RECON, COMMITMENT, *((CODEBOOK,) if codebook_update == "loss" else ()), PERPLEXITY, USAGE)

    # --- quantisation ---------------------------------------------------------------------------------------------
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared Euclidean distance) of each row of `flat` [N, code_dim]."""
        book = self.codebook.float()
        flat = flat.float()
        distance = flat.square().sum(1, keepdim=True) - 2 * flat @ book.T + book.square().sum(1)[None]
        return distance.argmin(1)

    def indices(self, x: torch.Tensor) -> torch.Tensor:
        """The index map [B, h, w] of a batch of inputs."""
        z = self.encoder(x)
        b, d, h, w = z.shape
        return self.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The quantised map [B, code_dim, h, w] of an index map [B, h, w]."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2).contiguous()

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The quantised code map [B, code_dim, h, w]."""
        return self.lookup(self.indices(x))

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Squared distance of two code maps, in the units model.reduction gives the reconstruction."""
        per_element = (a - b).square()
        return per_element.mean() if self.reduction == "mean" else per_element.flatten(1).sum(1).mean()

    # --- the objective ----------------------------------------------------------------------------------------------
    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        z = self.encoder(batch.input)
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.nearest(flat.detach())
        quantised = self.lookup(idx.view(b, h, w)).to(z.dtype)
        commitment = self._distance(z, quantised.detach())
        straight_through = z + (quantised - z).detach()  # forward: the codes; backward: identity to the encoder
        logits = self.decoder(straight_through)
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        _, perplexity, usage = code_statistics(idx, self.codebook_size)
        loss = recon + self.commitment_weight * commitment
        terms = {"recon_loss": recon, "commitment": commitment.detach(), "perplexity": perplexity, "usage": usage}
        if self.codebook_update == "loss":
            codebook_loss = self._distance(quantised, z.detach())
            loss = loss + self.codebook_weight * codebook_loss
            terms["codebook_loss"] = codebook_loss.detach()
        return LossTerms(loss=loss, output=torch.sigmoid(logits), terms=terms,
                         state={"encoded": flat.detach(), "indices": idx})

    # --- state outside the gradient -------------------------------------------------------------------------------
    def after_step(self, terms: LossTerms, step: int) -> None:
        """EMA codebook update from the step's encoder outputs, then restarts of codes unused for `restart_after`
        steps. Restarts draw from torch's RNG, which the training loop reseeds every step: a seeded run restarts
        the same codes with the same outputs."""
        encoded, idx = terms.state["encoded"].float(), terms.state["indices"]
        counts = code_statistics(idx, self.codebook_size)[0]
        self.last_used.masked_fill_(counts > 0, step)
        if self.codebook_update == "ema":
            sums = torch.zeros_like(self.codebook, dtype=torch.float32).index_add_(0, idx, encoded)
            book, n = ema_update(self.codebook.float(), self.counts, counts, sums, self.decay)
            self.codebook.copy_(book)
            self.counts.copy_(n)
        if self.restart_after:
            self.restart_dead(encoded, step)

    def restart_dead(self, encoded: torch.Tensor, step: int) -> None:
        """Codes unused for `restart_after` steps take the place of random rows of `encoded` (distinct rows while
        there are enough) and count as one fresh observation."""
        dead = (step - self.last_used >= self.restart_after).nonzero().flatten()
        if len(dead) == 0 or len(encoded) == 0:
            return
        if len(dead) <= len(encoded):
            rows = torch.randperm(len(encoded), device=encoded.device)[:len(dead)]
        else:
            rows = torch.randint(len(encoded), (len(dead),), device=encoded.device)
        with torch.no_grad():
            self.codebook[dead] = encoded[rows].to(self.codebook.dtype)
        self.counts[dead] = 1.0
        self.last_used[dead] = step

    @property
    def map_shape(self) -> tuple[int, int]:
        """(h, w) of the index map."""
        return tuple(self.code_shape[1:])  # type: ignore[return-value]

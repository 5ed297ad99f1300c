"""The written contract between a model and the rest of aelab: what a step hands over (`Batch` in, `LossTerms` out),
which terms a model logs (`Term`), and what it offers beyond reconstruction (`Capabilities`).

Shared code (the Lightning module, the captured step, TensorBoard's HPARAMS and CUSTOM SCALARS, metrics.json,
aelab-compare, the results report) reads these declarations and never names a model's term itself: a new model
family declares its terms and capabilities here and needs no edit anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from aelab.errors import ConfigError
from aelab.terms import STAGES, Term

Prior = Literal["standard_normal", "learned"]
__all__ = ["Batch", "Capabilities", "Embedding", "LossTerms", "Prior", "STAGES", "Term", "check_terms"]


@dataclass
class Batch:
    """What a model learns from: corrupted `input` -> clean `target`; `label` for plots and conditional models;
    `factors`, on data with ground-truth factors of variation (dSprites), their indices [B, K] for each image
    (data.factor_names names the columns)."""

    input: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor | None = None
    factors: torch.Tensor | None = None


@dataclass
class LossTerms:
    """What one step of a model returns.

    loss    the scalar minimised (logged as `loss`: each family's own objective, its units differ between families)
    output  the reconstruction as images in [0, 1] (scored with BCE / MSE / PSNR / SSIM against the target)
    terms   every declared term of this stage, by name (scalars; logged, never minimised by shared code)
    state   tensors the model's `after_step` hook reads once the optimizer has stepped (codes for an EMA codebook,
            say); never logged
    """

    loss: torch.Tensor
    output: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def logged(self) -> dict[str, torch.Tensor]:
        return {"loss": self.loss, **self.terms}


def check_terms(model_name: str, declared: tuple[Term, ...], terms: LossTerms, stage: str) -> None:
    """A step's terms are exactly the ones its model declares for that stage: a missing or undeclared name would
    reach some views (the logs) and not others (HPARAMS, CUSTOM SCALARS, aelab-compare)."""
    expected = {t.name for t in declared if stage in t.stages}
    got = set(terms.terms)
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise ConfigError(f"{model_name}: its {stage} step returned terms {sorted(got)} but the model declares "
                          f"{sorted(expected)} for {stage} (missing: {missing}, undeclared: {extra}); list every term "
                          "in the model's `terms` with its stages")


@dataclass(frozen=True)
class Embedding:
    """A flat code per image, for the probes, k-NN and the PCA baseline: `size` numbers made by `pooling`."""

    size: int
    pooling: str = "flatten"  # how embed() makes the code flat: "flatten", "posterior mean", "mean over tokens", ...


@dataclass(frozen=True)
class Capabilities:
    """What a model offers beyond reconstruct / loss; each field means one thing (aelab.models.base lists the
    methods each promises).

    embedding       embed(x) -> [B, size] codes (probes, k-NN, PCA baseline); None: no code (a super-resolution
                    net's feature maps)
    decodes_codes   generate(codes) / interpolate decode flat codes of embedding.size back to images
    prior           the distribution sample(n) draws codes from: "standard_normal" (N(0, I) over embedding.size),
                    "learned" (a prior the model fits), None (no sampler of its own)
    conditional     embed / generate / sample read the class label
    likelihood      `nll` is a correct importance-sampling estimate for this exact model
    latent_layers   stochastic latent layers (0 for a deterministic code, 1 for a VAE, more for a hierarchy)
    own_training_step  trains with its own optimizers in `training_step` (manual optimisation)
    not_capturable  why its training loss cannot be recorded once as a CUDA graph (aelab.capture), None if it can
    """

    embedding: Embedding | None = None
    decodes_codes: bool = False
    prior: Prior | None = None
    conditional: bool = False
    likelihood: bool = False
    latent_layers: int = 0
    own_training_step: bool = False
    not_capturable: str | None = None

    @property
    def capturable(self) -> bool:
        return self.not_capturable is None

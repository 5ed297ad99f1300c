"""The contract every model keeps, and the VAE machinery (reparameterisation, KL, warm-up, free bits).

Models take their shapes from the data: `input_shape` is the corrupted image (C, H, W), `output_shape` the clean
target. Decoders produce logits.

What a model can do is declared, not guessed: callers (callbacks, baselines, the NLL estimator, the trainer) read
`model.capabilities` and call the public methods it promises:

    reconstruct(batch)                 images in [0, 1] for a Batch                      every model
    loss(batch, step) -> LossTerms     what training minimises and logs                  every model
    embed(x, labels) -> [B, code]      the flat latent code (posterior mean for VAEs)    capabilities.code_size
    generate(codes, labels)            images in [0, 1] from flat codes                  capabilities.code_size
    interpolate(x_a, x_b, steps)       decoded straight lines between two codes          capabilities.code_size
    sample(n, generator, labels)       images decoded from prior draws                   capabilities.samples
    nll(inputs, targets, labels, ...)  importance-sampled -log p(target), nats per image  capabilities.likelihood
    training_step(batch, step, module) one step with the model's own optimizers          capabilities.own_training_step

Unconditional models accept and ignore `labels`, so callers pass them without asking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import ConfigError, check
from aelab.types import NonNegativeFloat, NonNegativeInt, PositiveInt

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


@dataclass(frozen=True)
class Capabilities:
    """What a model offers beyond reconstruct / loss (see the module docstring for the methods each one promises).

    code_size          flat size of the latent code, or None for a model without a bottleneck (a super-resolution
                       net's feature maps are no code: no latent figures, no PCA baseline, no probes)
    samples            decodes draws from a prior (VAEs, the adversarial AE)
    conditional        embed / generate / sample read the class label
    likelihood         `nll` is a correct importance-sampling estimate for this exact model
    own_training_step  trains with its own optimizers in `training_step` (manual optimisation)
    capturable         its `loss` can be recorded once as a CUDA graph and replayed (aelab.capture): tensors in,
                       tensors out, nothing that depends on the step number
    """

    code_size: int | None = None
    samples: bool = False
    conditional: bool = False
    likelihood: bool = False
    own_training_step: bool = False
    capturable: bool = False


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
    """Base class: subclasses build `encoder` / `decoder` nets (or override encode / decode) and declare what they
    offer with the class flags below; `capabilities` turns them into the contract callers read.

    `likelihood` is never inherited: a subclass that changes the generative model (a hierarchical VAE, say) would
    otherwise get an estimator that no longer matches it. Each class that keeps a correct one states it again.
    """

    has_code: ClassVar[bool] = True  # False: encode() gives feature maps, not a bottleneck code
    samples: ClassVar[bool] = False
    conditional: ClassVar[bool] = False
    likelihood: ClassVar[bool] = False
    own_training_step: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.likelihood = bool(cls.__dict__.get("likelihood", False))

    def __init__(self, input_shape: Shape, output_shape: Shape, num_classes: int | None = None,
                 recon_loss: Literal["bce", "mse", "l1"] = "bce", reduction: Literal["mean", "sum"] = "mean"):
        super().__init__()
        check(recon_loss in RECON_LOSSES, f"model.recon_loss={recon_loss!r} is not one of {list(RECON_LOSSES)}")
        check(reduction in REDUCTIONS, f"model.reduction={reduction!r} is not one of {list(REDUCTIONS)}")
        self.input_shape, self.output_shape = as_shape(input_shape), as_shape(output_shape)
        self.num_classes, self.recon_kind, self.reduction = num_classes, recon_loss, reduction
        self._code_shape: tuple[int, ...] | None = None

    # --- the contract ---------------------------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(code_size=math.prod(self.code_shape) if self.has_code else None,
                            samples=self.samples, conditional=self.conditional, likelihood=self.likelihood,
                            own_training_step=self.own_training_step, capturable=not self.own_training_step)

    @property
    def code_shape(self) -> tuple[int, ...]:
        """Shape of one image's code as `encode` returns it (the spatial 8x4x4 of the lesson's conv AE), measured
        once on two blank images in eval mode (batch-norm statistics stay untouched)."""
        if self._code_shape is None:
            was_training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    param = next(self.parameters())
                    blank = torch.zeros(2, *self.input_shape, device=param.device, dtype=param.dtype)
                    labels = torch.zeros(2, dtype=torch.long, device=param.device)
                    self._code_shape = tuple(self.encode(blank, labels).shape[1:])
            finally:
                self.train(was_training)
        return self._code_shape

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latent code of a batch as the decoder takes it (the posterior mean for VAEs)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the reconstruction at `output_shape`."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decode(self.encode(x, labels), labels))

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        """Images in [0, 1] for a batch (conditional models also read the label)."""
        return self(batch.input, batch.label)

    def embed(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Flat codes [B, code_size] of a batch of (corrupted) inputs."""
        self._require("code_size", "embed")
        return self.encode(x, labels).flatten(1)

    def generate(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] decoded from flat codes [B, code_size]."""
        self._require("code_size", "generate")
        return torch.sigmoid(self.decode(codes.reshape(len(codes), *self.code_shape), labels))

    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B, steps, C, H, W] decoded along the straight line from the code of each x_a to that of x_b."""
        a, b = self.embed(x_a, labels), self.embed(x_b, labels)
        t = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype).view(1, -1, 1)
        line = ((1 - t) * a[:, None] + t * b[:, None]).flatten(0, 1)
        line_labels = None if labels is None else labels.repeat_interleave(steps)
        return self.generate(line, line_labels).unflatten(0, (len(a), steps))

    def sample(self, n: int, generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images decoded from `n` prior draws."""
        self._require("samples", "sample")
        raise NotImplementedError(f"{type(self).__name__} declares samples=True but does not implement sample()")

    def log_importance_weights(self, inputs: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor | None,
                               k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[k, B] log p(target, z_j) - log q(z_j | input) for k draws z_j ~ q(z | input) of each image."""
        self._require("likelihood", "nll")
        raise NotImplementedError(f"{type(self).__name__} declares likelihood=True but has no importance weights")

    @torch.no_grad()
    def nll(self, inputs: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor | None = None,
            samples: int = 1000, batch_size: int = 1024, generator: torch.Generator | None = None) -> torch.Tensor:
        """-log p(target) per image in nats, from `samples` importance samples (Burda et al., 2015): a stochastic
        upper bound of the true NLL that tightens as `samples` grows; at most `batch_size` decoder evaluations
        (images x samples) per pass bound the memory."""
        self._require("likelihood", "nll")
        images_per_pass = max(1, batch_size // samples)
        chunk = min(samples, max(1, batch_size // images_per_pass))
        out = []
        for i in range(0, len(targets), images_per_pass):
            sl = slice(i, i + images_per_pass)
            y = None if labels is None else labels[sl]
            log_w = [self.log_importance_weights(inputs[sl], targets[sl], y, min(chunk, samples - s), generator)
                     for s in range(0, samples, chunk)]
            out.append(math.log(samples) - torch.logsumexp(torch.cat(log_w), dim=0))
        return torch.cat(out)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        logits = self.decode(self.encode(batch.input, batch.label), batch.label)
        recon = reconstruction_loss(logits, batch.target, self.recon_kind, self.reduction)
        return LossTerms(loss=recon, recon_loss=recon, output=torch.sigmoid(logits))

    # --- optimisation: one optimizer over every parameter, unless a model owns its training step -------------------
    def configure_optimizers(self, optimizer: Callable[..., torch.optim.Optimizer],
                             scheduler: Callable[..., Any] | None = None):
        """What LightningModule.configure_optimizers returns, from the run's optimizer and scheduler factories."""
        opt = optimizer(params=self.parameters())
        if scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler(optimizer=opt), "monitor": "val/loss"}}

    def training_step(self, batch: Batch, step: int, module) -> LossTerms:
        """One training step's terms. Lightning optimises `loss` automatically unless the model declares
        `own_training_step`; such a model steps its own optimizers here through `module`'s manual-optimisation
        API (optimizers(), manual_backward, toggled_optimizer)."""
        return self.loss(batch, step)

    def on_train_epoch_end(self, module) -> None:
        """Per-epoch work of models that own their training step (schedulers, for instance)."""

    def _require(self, capability: str, method: str) -> None:
        caps = self.capabilities
        if not getattr(caps, capability):
            raise ConfigError(f"{type(self).__name__}.{method}() is not available: the model does not declare "
                              f"capabilities.{capability}")


class VariationalAutoencoder(Autoencoder):
    """Encoder outputs (z_mean, z_log_var); z = mean + sigma * eps. KL summed over latent dims, averaged over the
    batch. With recon_loss=bce and reduction=sum, `loss` is the negative ELBO in nats per image (at beta=1).

    `beta` weights the KL (beta-VAE); `kl_warmup_steps` ramps that weight linearly from 0; `free_bits` (nats per
    latent dim) stops the optimiser from pushing a dimension's batch-averaged KL below that floor.

    The importance-sampling estimator (`likelihood`) holds for one Gaussian latent layer with a standard normal
    prior and a Bernoulli decoder (recon_loss=bce); subclasses that keep that model declare `likelihood = True`.
    """

    samples = True
    likelihood = True

    def __init__(self, *args, latent_dim: PositiveInt = 2, beta: NonNegativeFloat = 1.0,
                 kl_warmup_steps: NonNegativeInt = 0, free_bits: NonNegativeFloat = 0.0, reduction: str = "sum",
                 **kwargs):
        super().__init__(*args, reduction=reduction, **kwargs)
        check(isinstance(latent_dim, int) and latent_dim >= 1, f"model.latent_dim must be an integer >= 1, got {latent_dim!r}")
        check(beta >= 0, f"model.beta must be >= 0, got {beta!r}")
        check(kl_warmup_steps >= 0, f"model.kl_warmup_steps must be >= 0, got {kl_warmup_steps!r}")
        check(free_bits >= 0, f"model.free_bits must be >= 0, got {free_bits!r}")
        self.latent_dim, self.beta, self.kl_warmup_steps, self.free_bits = latent_dim, beta, kl_warmup_steps, free_bits

    @property
    def capabilities(self) -> Capabilities:
        caps = super().capabilities
        # a Gaussian-likelihood (mse / l1) decoder gives no probability for the Bernoulli estimator to score; a KL
        # warm-up weighs the KL by the step number, which a recorded graph would freeze
        return Capabilities(**{**vars(caps), "likelihood": caps.likelihood and self.recon_kind == "bce",
                               "capturable": caps.capturable and self.kl_warmup_steps == 0})

    def posterior(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def encode(self, x, labels=None):
        return self.posterior(x, labels)[0]

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
        mean, log_var = self.posterior(batch.input, batch.label)
        z = self.reparameterize(mean, log_var)
        return self.elbo_terms(mean, log_var, self.decode(z, batch.label), batch.target, step)

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

    def log_importance_weights(self, inputs, targets, labels, k, generator=None):
        mean, log_var = (t.float() for t in self.posterior(inputs, labels))
        b, d = mean.shape
        eps = torch.randn((k, b, d), generator=generator, device=mean.device)
        z = mean + torch.exp(0.5 * log_var) * eps  # [k, b, d]; flattened row j*b + i = sample j of image i
        logits = self.decode(z.reshape(k * b, d), None if labels is None else labels.repeat(k)).float()
        log_px_z = -F.binary_cross_entropy_with_logits(logits, targets.float().repeat(k, 1, 1, 1), reduction="none")
        # log N(z; 0, I) - log N(z; mean, sigma): the 2*pi terms cancel
        log_ratio = -0.5 * (z.square() - eps.square() - log_var).sum(-1)
        return log_px_z.flatten(1).sum(1).view(k, b) + log_ratio

    def sample(self, n: int, generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
        """Images decoded from z ~ N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn((n, self.latent_dim), generator=generator, device=device)
        return torch.sigmoid(self.decode(z, labels))


class TwoOptimizerTraining:
    """Mixin for models trained with two optimizers (manual optimisation): they build their parameter groups'
    optimizers and step them in `training_step`; Lightning leaves the schedulers to them, stepped here once per
    epoch, after validation ran."""

    own_training_step = True

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        raise NotImplementedError

    def configure_optimizers(self, optimizer, scheduler=None):
        optimizers = [optimizer(params=group) for group in self.parameter_groups()]
        if scheduler is None:
            return optimizers
        return optimizers, [scheduler(optimizer=o) for o in optimizers]

    def on_train_epoch_end(self, module) -> None:
        schedulers = module.lr_schedulers()
        for s in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if (value := module.trainer.callback_metrics.get("val/loss")) is not None:
                    s.step(value)
            else:
                s.step()

"""The base classes every model builds on: `Autoencoder` (the contract's default methods) and `VariationalAutoencoder`
(one Gaussian latent layer with its KL regulariser); `TwoOptimizerTraining` for models with two optimizers.

Models take their shapes from the data: `input_shape` is the corrupted image (C, H, W), `output_shape` the clean
target. Decoders produce logits. What a model logs and offers is declared (aelab.models.contract): `terms` lists
its loss terms, `capabilities` what callers may ask of it; callers read those and call the public methods promised:

    reconstruct(batch)                 images in [0, 1] for a Batch                      every model
    loss(batch, step) -> LossTerms     validation / test objective and terms             every model
    training_loss(batch, step, epoch)  a training batch's objective (default: loss)      automatic optimisation
    training_step(batch, step, module) one step with the model's own optimizers          capabilities.own_training_step
    after_step(terms, step)            state updates once the optimizer stepped          every model (default: none)
    parameter_groups()                 one parameter list per optimizer                  every model
    embed(x, labels) -> [B, size]      the flat code (posterior mean for VAEs)           capabilities.embedding
    generate(codes, labels)            images in [0, 1] from flat codes                  capabilities.decodes_codes
    interpolate(x_a, x_b, steps)       decoded straight lines between two codes          capabilities.decodes_codes
    prior_codes(n, generator, labels)  codes drawn from the model's prior                capabilities.prior
    sample(n, generator, labels)       images decoded from prior draws                   capabilities.prior
    nll(inputs, targets, labels, ...)  importance-sampled -log p(target), nats per image  capabilities.likelihood

Both training paths honour one contract: an automatically optimised model's batch runs `training_loss` (eagerly, or
recorded once as a CUDA graph by aelab.capture when `capabilities.not_capturable` is None), a model that owns its
training step runs `training_step`; then `after_step` receives the step's terms. Unconditional models accept and
ignore `labels`, so callers pass them without asking.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import ConfigError
from aelab.models.contract import Batch, Capabilities, Embedding, LossTerms, Prior, Term
from aelab.models.latent import KLRegulariser, gaussian_kl, reparameterize, standard_normal
from aelab.types import NonNegativeFloat, NonNegativeInt, PositiveInt

Shape = tuple[int, int, int]
RECON_LOSSES = ("bce", "mse", "l1")
REDUCTIONS = ("mean", "sum")
RECON_TERM = Term("recon_loss", "reconstruction loss of the output against the clean target (model.recon_loss; "
                                "model.reduction=mean: per pixel, sum: per image)")
KL_TERM = Term("kl_loss", "KL(q(z|x) || prior) in nats per image, unweighted (the loss adds beta times it, after "
                          "warm-up and free bits)")


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
    offer with the class attributes below; `capabilities` turns them into the contract callers read.

    `terms` lists every term `loss` reports besides the objective itself (aelab.models.contract.Term); a model whose
    terms depend on its settings (one KL per latent layer) sets `self.terms` in `__init__` (the class attribute then
    names the terms at its default settings).

    `likelihood` is never inherited: a subclass that changes the generative model (a hierarchical VAE, say) would
    otherwise get an estimator that no longer matches it. Each class that keeps a correct one states it again.
    """

    terms: tuple[Term, ...] = (RECON_TERM,)
    has_code: ClassVar[bool] = True  # False: encode() gives feature maps, not a bottleneck code
    code_pooling: ClassVar[str] = "flatten"  # how embed() makes encode()'s output flat
    prior: ClassVar[Prior | None] = None
    conditional: ClassVar[bool] = False
    likelihood: ClassVar[bool] = False
    latent_layers: ClassVar[int] = 0
    own_training_step: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.likelihood = bool(cls.__dict__.get("likelihood", False))

    def __init__(self, input_shape: Shape, output_shape: Shape, num_classes: int | None = None,
                 recon_loss: Literal["bce", "mse", "l1"] = "bce", reduction: Literal["mean", "sum"] = "mean"):
        super().__init__()
        self.input_shape, self.output_shape = as_shape(input_shape), as_shape(output_shape)
        self.num_classes, self.recon_kind, self.reduction = num_classes, recon_loss, reduction
        self._code_shape: tuple[int, ...] | None = None

    # --- the contract ---------------------------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        embedding = Embedding(math.prod(self.code_shape), self.code_pooling) if self.has_code else None
        return Capabilities(embedding=embedding, decodes_codes=self.has_code, prior=self.prior,
                            conditional=self.conditional, likelihood=self.likelihood,
                            latent_layers=self.latent_layers, own_training_step=self.own_training_step,
                            not_capturable=self.capture_blocker())

    def capture_blocker(self) -> str | None:
        """Why `training_loss` cannot be recorded once and replayed as a CUDA graph, or None: the recorded graph
        holds tensors only, so anything that changes with the step or epoch number, or any Python-side state, would
        be frozen at its first value."""
        if self.own_training_step:
            return "it steps its own optimizers (training_step)"
        return None

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
        """Flat codes [B, embedding.size] of a batch of (corrupted) inputs."""
        self._require("embedding", "embed")
        return self.encode(x, labels).flatten(1)

    def generate(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] decoded from flat codes [B, embedding.size]."""
        self._require("decodes_codes", "generate")
        return torch.sigmoid(self.decode(codes.reshape(len(codes), *self.code_shape), labels))

    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B, steps, C, H, W] decoded along the straight line from the code of each x_a to that of x_b."""
        a, b = self.embed(x_a, labels), self.embed(x_b, labels)
        t = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype).view(1, -1, 1)
        line = ((1 - t) * a[:, None] + t * b[:, None]).flatten(0, 1)
        line_labels = None if labels is None else labels.repeat_interleave(steps)
        return self.generate(line, line_labels).unflatten(0, (len(a), steps))

    def prior_codes(self, n: int, generator: torch.Generator | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """`n` flat codes drawn from the model's prior (N(0, I) for prior="standard_normal"; a model with a learned
        prior overrides this)."""
        self._require("prior", "prior_codes")
        if self.prior != "standard_normal":
            raise NotImplementedError(f"{type(self).__name__} declares prior={self.prior!r} but does not override "
                                      "prior_codes()")
        return standard_normal((n, self.capabilities.embedding.size), self, generator)

    def sample(self, n: int, generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images decoded from `n` prior draws."""
        return self.generate(self.prior_codes(n, generator, labels), labels)

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
        return LossTerms(loss=recon, output=torch.sigmoid(logits), terms={"recon_loss": recon})

    # --- training: one contract for the eager and the captured path -----------------------------------------------
    def training_loss(self, batch: Batch, step: int, epoch: int) -> LossTerms:
        """A training batch's terms under automatic optimisation (Lightning steps the optimizer on `loss`). A model
        whose training objective changes with `step` or `epoch` says so in `capture_blocker`."""
        return self.loss(batch, step)

    def training_step(self, batch: Batch, step: int, module) -> LossTerms:
        """One training step of a model that declares `own_training_step`: it steps its own optimizers here through
        `module`'s manual-optimisation API (optimizers(), manual_backward, toggled_optimizer)."""
        raise NotImplementedError(f"{type(self).__name__} declares own_training_step but has no training_step()")

    def after_step(self, terms: LossTerms, step: int) -> None:
        """State updates outside the gradient, once the step's optimizer has stepped (an EMA codebook, dead-code
        restarts): `terms` is the step's LossTerms, its `state` what `training_loss` / `training_step` put there."""

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        """One parameter list per optimizer: every parameter in one, unless the model owns its training step."""
        return [list(self.parameters())]

    def _require(self, capability: str, method: str) -> None:
        if not getattr(self.capabilities, capability):
            raise ConfigError(f"{type(self).__name__}.{method}() is not available: the model does not declare "
                              f"capabilities.{capability}")


class VariationalAutoencoder(Autoencoder):
    """Encoder outputs (z_mean, z_log_var); z = mean + sigma * eps. KL summed over latent dims, averaged over the
    batch. With recon_loss=bce and reduction=sum, `loss` is the negative ELBO in nats per image (at beta=1).

    `beta`, `kl_warmup_steps` and `free_bits` configure the KL regulariser (aelab.models.latent.KLRegulariser:
    weight, linear warm-up of that weight, a floor per latent dimension).

    The importance-sampling estimator (`likelihood`) holds for one Gaussian latent layer with a standard normal
    prior and a Bernoulli decoder (recon_loss=bce); subclasses that keep that model declare `likelihood = True`.
    """

    terms = (RECON_TERM, KL_TERM)
    prior = "standard_normal"
    likelihood = True
    latent_layers = 1

    def __init__(self, *args, latent_dim: PositiveInt = 2, beta: NonNegativeFloat = 1.0,
                 kl_warmup_steps: NonNegativeInt = 0, free_bits: NonNegativeFloat = 0.0, reduction: str = "sum",
                 **kwargs):
        super().__init__(*args, reduction=reduction, **kwargs)
        self.latent_dim = latent_dim
        self.kl = KLRegulariser(beta, kl_warmup_steps, free_bits)

    @property
    def capabilities(self) -> Capabilities:
        caps = super().capabilities
        # a Gaussian-likelihood (mse / l1) decoder gives no probability for the Bernoulli estimator to score
        likelihood = caps.likelihood and self.recon_kind == "bce"
        return Capabilities(**{**vars(caps), "likelihood": likelihood})

    def capture_blocker(self) -> str | None:
        if self.kl.depends_on_step:
            return "its KL weight warms up with the step number (model.kl_warmup_steps)"
        return super().capture_blocker()

    def posterior(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def encode(self, x, labels=None):
        return self.posterior(x, labels)[0]

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        mean, log_var = self.posterior(batch.input, batch.label)
        z = reparameterize(mean, log_var)
        return self.elbo_terms(mean, log_var, self.decode(z, batch.label), batch.target, step)

    def elbo_terms(self, mean, log_var, logits, target, step: int = 0) -> LossTerms:
        """Reconstruction + the regularised KL; shared by subclasses that encode/decode differently (the
        conditional VAE adds the label)."""
        recon = reconstruction_loss(logits, target, self.recon_kind, self.reduction)
        kl, weighted = self.kl(gaussian_kl(mean, log_var), step)
        return LossTerms(loss=recon + weighted, output=torch.sigmoid(logits),
                         terms={"recon_loss": recon, "kl_loss": kl})

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


class TwoOptimizerTraining:
    """Mixin for models with a discriminator (manual optimisation): `parameter_groups` gives [the model's
    parameters, the discriminator's] (the module builds an optimizer and scheduler for each from the run's config),
    `discriminator_terms(batch)` the discriminator's loss and logged terms. Each training batch first steps the
    discriminator, then the model on `loss` with the discriminator's parameters frozen."""

    own_training_step = True

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        raise NotImplementedError

    def discriminator_terms(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the discriminator's loss, the terms its step logs)."""
        raise NotImplementedError

    def training_step(self, batch: Batch, step: int, module) -> LossTerms:
        from aelab.adapters import step_uncounted

        opt_model, opt_d = module.optimizers()
        d_loss, d_terms = self.discriminator_terms(batch)
        opt_d.zero_grad()
        module.manual_backward(d_loss)
        step_uncounted(module.trainer, opt_d)  # global_step counts batches, as with one optimizer
        with module.toggled_optimizer(opt_model):  # no gradients into the discriminator from the model's loss
            terms = self.loss(batch, step=step)
            opt_model.zero_grad()
            module.manual_backward(terms.loss)
            opt_model.step()
        terms.terms.update(d_terms)
        return terms

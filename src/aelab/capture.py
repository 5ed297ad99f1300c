"""`capture_step=true`: each full-size training batch's forward, loss and backward replayed as CUDA graphs.

A small model's training step is a few dozen tiny kernels, and on a GPU it waits on Python launching them; replayed
from a graph, the launches cost one call. `torch.cuda.make_graphed_callables` records the model's loss (forward
and backward) once and returns an autograd-compatible replacement, so Lightning's loop, gradient clipping, the NaN
guard and the optimizer step (use `optimizer.fused=true` for one kernel) stay as they are. The corruption runs
before the graph from its seeded stream; a VAE's noise comes from the CUDA generator the step reseeds, which a
replay honours.

What a graph cannot hold falls back to the eager step with one warning: no CUDA, a model that owns its training
step or whose loss depends on the step number (capabilities.capturable), mixed precision. Batches of another
shape (an epoch's last, smaller batch) run eagerly.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from aelab.models import Batch, LossTerms

log = logging.getLogger("aelab")


def why_not(module) -> str | None:
    """Why this run cannot capture its training step, or None."""
    if module.device.type != "cuda":
        return f"it needs CUDA and the run is on {module.device.type}"
    if not module.model.capabilities.capturable:
        return (f"{type(module.model).__name__} cannot be captured (it owns its training step or its loss depends on "
                "the step number, e.g. a KL warm-up)")
    precision = str(getattr(module.trainer, "precision", "32-true")) if module._trainer is not None else "32-true"
    if precision not in ("32-true", "32"):
        return f"trainer.precision={precision} (autocast inside a graph): use 32-true"
    return None


class LossOutputs(nn.Module):
    """The model's loss as a module of tensors only, as make_graphed_callables needs: its parameters are the
    model's, its outputs (loss, recon_loss, kl_loss, output) the LossTerms fields a step reads."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs, target, labels):
        terms = self.model.loss(Batch(inputs, target, labels), step=0)
        kl = terms.kl_loss if terms.kl_loss is not None else terms.loss.new_zeros(())
        return terms.loss, terms.recon_loss, kl, terms.output


class CapturedLoss:
    """Drop-in for `model.loss` on training batches: graphed for the first batch's shape, eager otherwise."""

    def __init__(self, model):
        self.model, self.has_kl = model, None
        self.graphed: nn.Module | None = None
        self.shape: torch.Size | None = None

    def _capture(self, batch: Batch) -> None:
        # the warm-up iterations run the forward pass several times: keep batch-norm statistics as they were
        buffers = {k: v.clone() for k, v in self.model.state_dict().items() if not k.endswith("num_batches_tracked")}
        sample = (batch.input.clone(), batch.target.clone(), batch.label.clone())
        self.has_kl = self.model.loss(batch).kl_loss is not None
        self.graphed = torch.cuda.make_graphed_callables(LossOutputs(self.model), sample, allow_unused_input=True)
        self.model.load_state_dict(buffers, strict=False)
        self.shape = batch.input.shape

    def __call__(self, batch: Batch, step: int) -> LossTerms:
        if self.graphed is None:
            self._capture(batch)
        if batch.input.shape != self.shape or batch.label is None:
            return self.model.loss(batch, step)
        loss, recon, kl, output = self.graphed(batch.input, batch.target, batch.label)
        return LossTerms(loss=loss, recon_loss=recon, output=output, kl_loss=kl if self.has_kl else None)


def training_loss(module, enabled: bool):
    """The callable a module's training steps compute their terms with: the model's own step, or a captured loss
    when `enabled` and possible (else one warning saying why not)."""
    if not enabled:
        return None
    reason = why_not(module)
    if reason is not None:
        log.warning("capture_step=true: training eagerly, because %s", reason)
        return None
    return CapturedLoss(module.model)

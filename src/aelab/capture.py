"""`capture_step=true`: each full-size training batch's forward, loss and backward replayed as CUDA graphs.

A small model's training step is a few dozen tiny kernels, and on a GPU it waits on Python launching them; replayed
from a graph, the launches cost one call. `torch.cuda.make_graphed_callables` records the model's `training_loss`
(forward and backward) once and returns an autograd-compatible replacement, so Lightning's loop, gradient clipping,
the NaN guard, the optimizer step (use `optimizer.fused=true` for one kernel) and the model's `after_step` stay as
they are. The corruption runs before the graph from its seeded stream; a VAE's noise comes from the CUDA generator
the step reseeds, which a replay honours.

The graph returns the step's LossTerms as tensors in a fixed order: loss, output, then the terms and the state the
model's first (eager) call returned, by name; whatever a model declares travels through it. What a graph cannot
hold falls back to the eager step: no CUDA, a model that declares `capabilities.not_capturable` (its own training
step, an objective that changes with the step), mixed precision. `capture_step=true` says so once as a warning;
`capture_step=auto` captures where it can and trains eagerly elsewhere without a warning (the reason goes to the
log at INFO). Batches of another shape (an epoch's last, smaller batch) run eagerly.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from aelab.adapters import attached_trainer
from aelab.errors import ConfigError
from aelab.models import Batch, LossTerms

log = logging.getLogger("aelab")


def capture_mode(value) -> bool | str:
    """The config value of `capture_step`: true, false or "auto"; anything else is the user's mistake, named in one
    line."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ConfigError(f"capture_step={value!r}: allowed are true, false and auto")


def why_not(module) -> str | None:
    """Why this run cannot capture its training step, or None."""
    if module.device.type != "cuda":
        return f"it needs CUDA and the run is on {module.device.type}"
    reason = module.model.capabilities.not_capturable
    if reason is not None:
        return f"{type(module.model).__name__} cannot be captured: {reason}"
    trainer = attached_trainer(module)
    precision = str(getattr(trainer, "precision", "32-true")) if trainer is not None else "32-true"
    if precision not in ("32-true", "32"):
        return f"trainer.precision={precision} (autocast inside a graph): use 32-true"
    return None


class LossOutputs(nn.Module):
    """The model's training loss as a module of tensors only, as make_graphed_callables needs: its parameters are
    the model's, its outputs the LossTerms fields in the order `names` fixes."""

    def __init__(self, model, terms: tuple[str, ...], state: tuple[str, ...]):
        super().__init__()
        self.model, self.terms, self.state = model, terms, state

    def forward(self, inputs, target, labels):
        out = self.model.training_loss(Batch(inputs, target, labels), step=0, epoch=0)
        return (out.loss, out.output, *(out.terms[n] for n in self.terms), *(out.state[n] for n in self.state))


class CapturedLoss:
    """Drop-in for `model.training_loss` on training batches: graphed for the first batch's shape, eager
    otherwise."""

    def __init__(self, model):
        self.model = model
        self.graphed: nn.Module | None = None
        self.shape: torch.Size | None = None
        self.terms: tuple[str, ...] = ()
        self.state: tuple[str, ...] = ()

    def _capture(self, batch: Batch) -> None:
        # the warm-up iterations run the forward pass several times: keep batch-norm statistics as they were
        buffers = {k: v.clone() for k, v in self.model.state_dict().items() if not k.endswith("num_batches_tracked")}
        sample = (batch.input.clone(), batch.target.clone(), batch.label.clone())
        first = self.model.training_loss(batch, step=0, epoch=0)  # the names the graph's outputs carry
        self.terms, self.state = tuple(first.terms), tuple(first.state)
        outputs = LossOutputs(self.model, self.terms, self.state)
        self.graphed = torch.cuda.make_graphed_callables(outputs, sample, allow_unused_input=True)
        self.model.load_state_dict(buffers, strict=False)
        self.shape = batch.input.shape

    def __call__(self, batch: Batch, step: int) -> LossTerms:
        if self.graphed is None:
            self._capture(batch)
        if batch.input.shape != self.shape or batch.label is None:
            return self.model.training_loss(batch, step, 0)
        loss, output, *rest = self.graphed(batch.input, batch.target, batch.label)
        k = len(self.terms)
        return LossTerms(loss=loss, output=output, terms=dict(zip(self.terms, rest[:k])),
                         state=dict(zip(self.state, rest[k:])))


def training_loss(module, mode: bool | str):
    """The callable a module's training steps compute their terms with: None (the model's own path) or a captured
    loss when `mode` asks for one and the run allows it (else, for `True`, one warning saying why not)."""
    if not mode:
        return None
    reason = why_not(module)
    if reason is not None:
        if mode == "auto":
            log.info("capture_step=auto: training eagerly, because %s", reason)
        else:
            log.warning("capture_step=true: training eagerly, because %s", reason)
        return None
    return CapturedLoss(module.model)
